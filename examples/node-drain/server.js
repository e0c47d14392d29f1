// A server that drains on SIGTERM within a budget: the application's half of a
// safe termination. The other half is the preStop sleep safe-termination
// injects: by the time the kubelet sends SIGTERM, the pod has left the Service's
// endpoints and its conntrack entries have had time to expire, so the server can
// stop taking connections at once and finish what it has.
//
//   node server.js --addr 127.0.0.1:8080 --shutdown-budget 20
//
// HTTP on addr: GET /work?ms=N answers "done" after N ms; GET /healthz is 200
// until SIGTERM, then 503. UDP on the same port answers each datagram with
// "pong <client address>". On SIGTERM: readiness off; listener closed (new
// connections are refused); idle keep-alive connections closed, busy ones after
// their answer (Connection: close); in-flight requests finish; exit 0. Past the
// budget (seconds; set it a little under terminationGracePeriodSeconds minus the
// sleep, and annotate safe-termination.io/shutdown-budget with it) the remaining
// connections are cut and it exits 1, before the kubelet's SIGKILL would.
// Node.js standard library only.
import dgram from 'node:dgram';
import http from 'node:http';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';
import { URL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    addr: { type: 'string', default: '127.0.0.1:8080' },
    'shutdown-budget': { type: 'string', default: '20' },
  },
});
const colon = values.addr.lastIndexOf(':');
const host = values.addr.slice(0, colon);
const budgetSeconds = Number.parseFloat(values['shutdown-budget']);
const log = (message) => process.stderr.write(`${new Date().toISOString()} ${message}\n`);

let draining = false;
let inFlight = 0;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  // While draining, every answer closes its connection: a keep-alive client
  // reconnects, and reaches a pod that is still in the Service.
  if (draining) res.setHeader('Connection', 'close');
  if (req.method === 'GET' && url.pathname === '/healthz') {
    res.writeHead(draining ? 503 : 200).end(draining ? 'draining\n' : 'ok\n');
    return;
  }
  if (req.method === 'GET' && url.pathname === '/work') {
    inFlight++;
    const timer = setTimeout(() => res.end('done\n'), Number(url.searchParams.get('ms') ?? 0));
    res.on('close', () => {
      clearTimeout(timer);
      inFlight--;
    });
    return;
  }
  res.writeHead(404).end();
});
server.headersTimeout = 5000;

const udp = dgram.createSocket('udp4');
udp.on('message', (_msg, from) => udp.send(`pong ${from.address}:${from.port}`, from.port, from.address));

// Before listening: a SIGTERM during start-up must not kill the process mid-way.
process.once('SIGTERM', drain);
process.once('SIGINT', drain);

server.listen(Number(values.addr.slice(colon + 1)), host, () => {
  const { port } = server.address();
  udp.bind(port, host, () => process.stdout.write(`listening ${host}:${port}\n`)); // the line the tests wait for
});

function drain() {
  log(`SIGTERM: draining ${inFlight} requests, budget ${budgetSeconds}s`);
  draining = true;
  const budget = setTimeout(() => {
    log(`shutdown budget ${budgetSeconds}s exceeded: cutting ${inFlight} requests`);
    server.closeAllConnections();
    process.exit(1);
  }, budgetSeconds * 1000);
  // close() stops accepting at once and calls back when every connection has
  // ended; idle keep-alive connections are closed now, not at their timeout.
  server.close(() => {
    clearTimeout(budget);
    udp.close();
    log('drained');
  });
  server.closeIdleConnections();
}
