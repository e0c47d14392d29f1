/**
 * A lab backend "pod": a real process in its own network namespace serving
 *   UDP  a DNS-like request/answer: "Q <id>" → "A <id> <name>";
 *   TCP  an HTTP/1.1-like server with keep-alive; the body names the backend; each
 *        request takes --work-ms of (simulated) work before its answer.
 * On SIGTERM:
 *   --mode unprotected  exit at once (what most apps do: the default signal action);
 *   --mode drain-only,  shut down gracefully: close UDP, stop accepting, answer each
 *   --mode protected    open keep-alive connection once more with `Connection: close`,
 *                       then exit (bounded by --drain-ms). The two modes are the same
 *                       app: the preStop sleep before SIGTERM (protected only) is the
 *                       kubelet's job (the lab's), not the app's.
 * Prints JSON lines: {"event":"ready"}, {"event":"sigterm"}, {"event":"exit"}.
 *
 * Usage: node lab/backend.ts --name b1 --mode protected [--udp-port 53] [--tcp-port 8080] [--drain-ms 1500] [--work-ms 20]
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { exitWithParent } from './child.ts';

exitWithParent();

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    mode: { type: 'string', default: 'unprotected' },
    'udp-port': { type: 'string', default: '53' },
    'tcp-port': { type: 'string', default: '8080' },
    'drain-ms': { type: 'string', default: '1500' },
    'work-ms': { type: 'string', default: '20' },
  },
});
const name = values.name ?? 'backend';
if (!['unprotected', 'drain-only', 'protected'].includes(values.mode)) {
  process.stderr.write(`${name}: --mode must be unprotected, drain-only or protected\n`);
  process.exit(2);
}
const drains = values.mode !== 'unprotected';
const drainMs = Number(values['drain-ms']);
const workMs = Number(values['work-ms']);

const emit = (event: string, extra: Record<string, unknown> = {}): void => {
  process.stdout.write(JSON.stringify({ event, at: Date.now(), name, ...extra }) + '\n');
};

// UDP: answer every query from the address it came from.
const udp = createSocket('udp4');
udp.on('message', (msg, rinfo) => {
  const m = /^Q (\S+)$/.exec(msg.toString('utf8'));
  if (m === null) return;
  udp.send(`A ${m[1]} ${name}`, rinfo.port, rinfo.address);
});
udp.on('error', () => undefined);

// TCP: minimal HTTP/1.1. Requests are bodiless GETs; one response per request.
let draining = false;
const sockets = new Set<Socket>();
const tcp = createServer((socket) => {
  sockets.add(socket);
  socket.on('close', () => {
    sockets.delete(socket);
    maybeExit();
  });
  socket.on('error', () => undefined);
  let buf = '';
  let busy = false;
  socket.setEncoding('utf8');
  // One request at a time per connection (the clients do not pipeline).
  const next = (): void => {
    if (busy) return;
    const end = buf.indexOf('\r\n\r\n');
    if (end === -1) return;
    const head = buf.slice(0, end);
    buf = buf.slice(end + 4);
    busy = true;
    setTimeout(() => {
      busy = false;
      if (socket.destroyed) return;
      const close = /\r\nconnection:\s*close/i.test(head) || draining;
      const body = `${name}\n`;
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: ${close ? 'close' : 'keep-alive'}\r\n\r\n${body}`);
      if (close) socket.end();
      else next();
    }, workMs);
  };
  socket.on('data', (chunk: string) => {
    buf += chunk;
    next();
  });
});
tcp.on('error', (error) => {
  process.stderr.write(`${name}: ${error.message}\n`);
  process.exit(1);
});

let exiting = false;
function maybeExit(): void {
  if (!draining || exiting || sockets.size > 0) return;
  exiting = true;
  emit('exit');
  process.exit(0);
}

process.on('SIGTERM', () => {
  emit('sigterm');
  if (!drains) {
    emit('exit');
    process.exit(0);
  }
  draining = true;
  udp.close();
  tcp.close();
  // Idle keep-alive connections get their last answer on their next request; those
  // still idle after drain-ms are closed.
  setTimeout(() => {
    for (const s of sockets) s.end();
    setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 200).unref();
  }, drainMs).unref();
  maybeExit();
});

let pending = 2;
const ready = (): void => {
  if (--pending === 0) emit('ready');
};
udp.bind(Number(values['udp-port']), '0.0.0.0', ready);
tcp.listen(Number(values['tcp-port']), '0.0.0.0', ready);
