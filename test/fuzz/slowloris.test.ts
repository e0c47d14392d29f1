/**
 * Slow senders (slowloris): clients that trickle the TLS handshake, the headers or
 * the body are cut off by the server's timeouts, while ordinary clients are served
 * as usual meanwhile. The timeouts are shortened here (production: 10 s handshake,
 * 10 s headers, 30 s request) through buildApp's `timeouts` option.
 */
import t from 'tap';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';

const TIMEOUTS = { handshakeMs: 1000, headersMs: 1000, requestMs: 2000, checkIntervalMs: 200 };
/** Leeway on a shared CI machine. */
const SLACK_MS = 1500;
const PER_KIND = 15;
const TRICKLE_MS = 100;

type Kind = 'handshake' | 'headers' | 'body';
interface Slow {
  readonly kind: Kind;
  /** ms from connect to the server closing the connection. */
  readonly closedAfter: Promise<number>;
  readonly received: () => string;
  destroy(): void;
}

t.test('slow senders are cut off by the timeouts; other clients are served meanwhile', async (t) => {
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', '/nonexistent', '--log-level', 'info'], timeouts: TIMEOUTS });
  t.teardown(() => w.close());
  const port = w.webhook.port;
  const body = Buffer.from(JSON.stringify(reviewOf(defaultedPod(), { uid: 'slow-0001' })));
  const head = `POST /mutate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;

  const open = (kind: Kind): Slow => {
    const start = performance.now();
    let received = '';
    let timer: NodeJS.Timeout | undefined;
    // A raw TCP connection that never starts TLS, or TLS that trickles the request.
    const socket: Socket = kind === 'handshake' ? netConnect({ host: '127.0.0.1', port }) : tlsConnect({ host: '127.0.0.1', port, ca: w.ca, servername: 'localhost' });
    const trickle = (bytes: Buffer): void => {
      let i = 0;
      timer = setInterval(() => {
        if (socket.destroyed || i >= bytes.length) return;
        socket.write(bytes.subarray(i, i + 1));
        i++;
      }, TRICKLE_MS);
    };
    if (kind === 'headers') socket.once('secureConnect', () => trickle(Buffer.from(head)));
    if (kind === 'body') {
      socket.once('secureConnect', () => {
        socket.write(head);
        trickle(body);
      });
    }
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    const closedAfter = new Promise<number>((resolve) =>
      socket.once('close', () => {
        clearInterval(timer);
        resolve(performance.now() - start);
      }),
    );
    return { kind, closedAfter, received: () => received, destroy: () => socket.destroy() };
  };

  const slow: Slow[] = [];
  for (const kind of ['handshake', 'headers', 'body'] as const) for (let i = 0; i < PER_KIND; i++) slow.push(open(kind));
  t.teardown(() => slow.forEach((s) => s.destroy()));

  // Ordinary traffic while the slow clients hold their connections.
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  const until = performance.now() + TIMEOUTS.requestMs + SLACK_MS;
  while (performance.now() < until) {
    const t0 = performance.now();
    const res = await w.post(body);
    latencies.push(performance.now() - t0);
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
  }
  let giveUp: NodeJS.Timeout | undefined;
  const never = new Promise<number>((r) => (giveUp = setTimeout(() => r(Number.POSITIVE_INFINITY), 10_000)));
  const closed = await Promise.all(slow.map((s) => Promise.race([s.closedAfter, never])));
  clearTimeout(giveUp);

  for (const kind of ['handshake', 'headers', 'body'] as const) {
    const limit = kind === 'body' ? TIMEOUTS.requestMs : kind === 'headers' ? TIMEOUTS.headersMs : TIMEOUTS.handshakeMs;
    const times = closed.filter((_, i) => slow[i]!.kind === kind);
    const latest = Math.max(...times);
    const earliest = Math.min(...times);
    t.ok(latest <= limit + TIMEOUTS.checkIntervalMs + SLACK_MS, `${kind}: all ${times.length} cut off by ${latest.toFixed(0)} ms (limit ${limit} ms)`);
    t.ok(earliest >= limit * 0.9, `${kind}: none cut before the limit (earliest ${earliest.toFixed(0)} ms)`);
    const answers = slow.filter((s) => s.kind === kind).map((s) => s.received());
    if (kind !== 'handshake') {
      t.ok(answers.every((a) => a === '' || a.startsWith('HTTP/1.1 408')), `${kind}: told 408 Request Timeout or just closed (${answers.filter((a) => a.startsWith('HTTP/1.1 408')).length} of ${answers.length} got a 408)`);
    }
  }

  latencies.sort((a, b) => a - b);
  t.same([...statuses.keys()], [200], `every ordinary request answered 200 (${latencies.length} requests)`);
  t.ok(latencies.length >= 20, `ordinary client kept going: ${latencies.length} requests in ${(TIMEOUTS.requestMs + SLACK_MS) / 1000} s`);
  const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? Number.POSITIVE_INFINITY;
  t.ok(p99 < 500, `ordinary latency stays low: p50 ${latencies[Math.floor(latencies.length / 2)]?.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`);
  t.equal((await w.get('/healthz')).status, 200, 'still healthy');
});
