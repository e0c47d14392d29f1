module safe-termination.example/go-drain

go 1.22
