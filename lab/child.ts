/** What the lab's child processes (backend.ts, client.ts) share. */

/** If the lab dies without stopping this process (SIGKILL), do not outlive it. */
export function exitWithParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(1);
  }, 500).unref();
}
