/** examples/node-drain: the drain scenarios (drain.ts) on the Node.js server and client. */
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { drainTests } from './drain.ts';

const DIR = fileURLToPath(new URL('../../examples/node-drain/', import.meta.url));

t.setTimeout(120_000);
drainTests(t, {
  cwd: DIR,
  server: (addr, budget) => [process.execPath, ['server.js', '--addr', addr, '--shutdown-budget', String(budget)]],
  client: (hostPort, calls, attempts) => [
    process.execPath,
    ['client.js', `--url=http://${hostPort}/work?ms=5`, `--udp=${hostPort}`, '--n', String(calls), '--interval', '40', '--attempts', String(attempts)],
  ],
});
