/**
 * Run inside a test's network namespace (`ip netns exec NS node netns-bridge.ts SOCKET`):
 * forwards TCP connections on the namespace's own 127.0.0.1 to a Unix socket,
 * which is reachable across network namespaces (it lives in the filesystem).
 * Prints the port it listens on, then runs until SIGTERM.
 */
import { connect, createServer } from 'node:net';
import { splice } from './splice.ts';

const socketPath = process.argv[2];
if (socketPath === undefined) {
  process.stderr.write('usage: netns-bridge.ts SOCKET\n');
  process.exit(2);
}
const server = createServer((client) => splice(client, connect(socketPath)));
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${typeof address === 'object' && address !== null ? address.port : 0}\n`);
});
process.on('SIGTERM', () => process.exit(0));
