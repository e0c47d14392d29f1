/**
 * The lab's clients, one process in the client namespace, talking to the Service
 * VIP the whole run. Each request prints one JSON line:
 *   {"t": <send time ms>, "d": <ms to the outcome>, "k": <kind>, "o": <outcome>, "b": <backend that answered>}
 * Kinds:
 *   udp         DNS-like lookups: a fresh socket (new source port) per lookup, a few
 *               queries on it spaced --udp-interval-ms for up to --udp-session-ms
 *               (retries, A+AAAA, search domains), then closed.
 *   udp-pinned  (--pinned-udp N) one socket per worker for the whole run, never idle:
 *               a flow whose conntrack entry never expires.
 *   tcp-ka      HTTP keep-alive: one connection per worker, reused; half the workers
 *               recycle it after up to --ka-lifetime-ms (a pool with a max age), the
 *               others keep it; reopened when the server says `Connection: close`
 *               or closes it.
 *   tcp-short   HTTP with a new connection per request.
 *   tcp-stream  (--stream-workers N) a long-lived connection per worker, never
 *               recycled (a gRPC stream, a WebSocket): a request on it every
 *               --tcp-interval-ms; reopened only when the server closes it.
 *   tcp-long    (--long-workers N) the same, but with no timeout of its own: a request
 *               waits for its answer or for the kernel to report the connection
 *               dead (a RST), as a stream relying on TCP does; `d` is then the time
 *               to detect. One unanswered for --timeout-ms or more when the client
 *               stops counts as a timeout (never detected).
 * Outcomes: ok, refused (ICMP port unreachable / RST on connect), reset (connection
 * reset or closed before the answer), unreachable (ICMP host/net unreachable),
 * timeout, wrong (an answer that does not match the request).
 */
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { exitWithParent } from './child.ts';

exitWithParent();

const { values } = parseArgs({
  options: {
    vip: { type: 'string', default: '10.96.0.10' },
    'udp-port': { type: 'string', default: '53' },
    'tcp-port': { type: 'string', default: '80' },
    'duration-ms': { type: 'string', default: '20000' },
    'udp-workers': { type: 'string', default: '6' },
    'udp-interval-ms': { type: 'string', default: '150' },
    'udp-session-ms': { type: 'string', default: '4000' },
    'pinned-udp': { type: 'string', default: '0' },
    'ka-workers': { type: 'string', default: '4' },
    'ka-lifetime-ms': { type: 'string', default: '3000' },
    'short-workers': { type: 'string', default: '4' },
    'stream-workers': { type: 'string', default: '0' },
    'long-workers': { type: 'string', default: '0' },
    'long-interval-ms': { type: 'string', default: '500' },
    'tcp-interval-ms': { type: 'string', default: '100' },
    'timeout-ms': { type: 'string', default: '2000' },
  },
});
const VIP = values.vip;
const UDP_PORT = Number(values['udp-port']);
const TCP_PORT = Number(values['tcp-port']);
const UDP_INTERVAL = Number(values['udp-interval-ms']);
const UDP_SESSION = Number(values['udp-session-ms']);
const TCP_INTERVAL = Number(values['tcp-interval-ms']);
const LONG_INTERVAL = Number(values['long-interval-ms']);
const TIMEOUT = Number(values['timeout-ms']);
const KA_LIFETIME = Number(values['ka-lifetime-ms']);
const deadline = Date.now() + Number(values['duration-ms']);

type Outcome = 'ok' | 'refused' | 'reset' | 'unreachable' | 'timeout' | 'wrong';
let running = true;
let stopped!: () => void;
const whenStopped = new Promise<Response>((r) => (stopped = () => r({ o: 'timeout' })));
let seq = 0;

function record(t: number, k: string, o: Outcome, b?: string): void {
  const d = Date.now() - t;
  process.stdout.write(JSON.stringify(b === undefined ? { t, d, k, o } : { t, d, k, o, b }) + '\n');
}

function outcomeOf(error: NodeJS.ErrnoException): Outcome {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return 'unreachable';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return 'reset';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const jitter = (ms: number): number => ms * (0.75 + Math.random() * 0.5);

// ---------- UDP ----------

class UdpFlow {
  readonly socket: UdpSocket;
  #waiting: { id: string; resolve: (r: { o: Outcome; b?: string }) => void } | undefined;

  constructor() {
    this.socket = createSocket('udp4');
    this.socket.on('message', (msg) => {
      const w = this.#waiting;
      if (w === undefined) return; // a late answer to a query already timed out
      const m = /^A (\S+) (\S+)$/.exec(msg.toString('utf8'));
      if (m === null || m[1] !== w.id) {
        this.#finish({ o: 'wrong' });
        return;
      }
      this.#finish({ o: 'ok', b: m[2]! });
    });
    // On a connected UDP socket the kernel reports ICMP errors (port/host unreachable).
    this.socket.on('error', (error: NodeJS.ErrnoException) => this.#finish({ o: outcomeOf(error) }));
  }

  open(): Promise<void> {
    return new Promise((resolve) => this.socket.connect(UDP_PORT, VIP, () => resolve()));
  }

  #finish(r: { o: Outcome; b?: string }): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.resolve(r);
  }

  query(kind: string): Promise<void> {
    const id = String(++seq);
    const t = Date.now();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#finish({ o: 'timeout' }), TIMEOUT);
      this.#waiting = {
        id,
        resolve: (r) => {
          clearTimeout(timer);
          record(t, kind, r.o, r.b);
          resolve();
        },
      };
      try {
        this.socket.send(`Q ${id}`);
      } catch (error) {
        this.#finish({ o: outcomeOf(error as NodeJS.ErrnoException) });
      }
    });
  }

  close(): void {
    this.socket.close();
  }
}

async function udpLookups(): Promise<void> {
  while (running) {
    const flow = new UdpFlow();
    await flow.open();
    const sessionMs = Math.random() * UDP_SESSION;
    const started = Date.now();
    do {
      await flow.query('udp');
      await sleep(jitter(UDP_INTERVAL));
    } while (running && Date.now() - started < sessionMs);
    flow.close();
  }
}

async function udpPinned(): Promise<void> {
  const flow = new UdpFlow();
  await flow.open();
  while (running) {
    await flow.query('udp-pinned');
    await sleep(jitter(UDP_INTERVAL));
  }
  flow.close();
}

// ---------- TCP (HTTP/1.1-like) ----------

const REQUEST = (id: string, close: boolean): string =>
  `GET /?id=${id} HTTP/1.1\r\nHost: echo.lab\r\nConnection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`;

interface Response {
  readonly o: Outcome;
  readonly b?: string;
  readonly close?: boolean;
}

class HttpConn {
  readonly socket: Socket;
  closed = false;
  #buf = '';
  #waiting: ((r: Response) => void) | undefined;
  #connected: Promise<Outcome | undefined>;

  constructor() {
    this.socket = connect({ host: VIP, port: TCP_PORT });
    this.socket.setEncoding('utf8');
    this.#connected = new Promise((resolve) => {
      this.socket.once('connect', () => resolve(undefined));
      this.socket.once('error', (error: NodeJS.ErrnoException) => resolve(outcomeOf(error)));
    });
    this.socket.on('error', (error: NodeJS.ErrnoException) => {
      this.closed = true;
      this.#finish({ o: outcomeOf(error) });
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.#finish({ o: 'reset' });
    });
    this.socket.on('end', () => {
      this.closed = true;
    });
    this.socket.on('data', (d: string) => {
      this.#buf += d;
      this.#parse();
    });
  }

  #parse(): void {
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end === -1) return;
    const head = this.#buf.slice(0, end);
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 'NaN');
    if (!Number.isFinite(length)) {
      this.#finish({ o: 'wrong' });
      return;
    }
    if (this.#buf.length < end + 4 + length) return;
    const body = this.#buf.slice(end + 4, end + 4 + length);
    this.#buf = this.#buf.slice(end + 4 + length);
    const ok = head.startsWith('HTTP/1.1 200 ');
    this.#finish(ok ? { o: 'ok', b: body.trim(), close: /\r\nconnection:\s*close/i.test(head) } : { o: 'wrong' });
  }

  #finish(r: Response): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    w?.(r);
  }

  /** One request; resolves with the outcome (never rejects). `timeoutMs` Infinity: until the client stops. */
  async request(close: boolean, timeoutMs = TIMEOUT): Promise<Response> {
    const timer = Number.isFinite(timeoutMs) ? new Promise<Response>((resolve) => setTimeout(() => resolve({ o: 'timeout' }), timeoutMs).unref()) : whenStopped;
    const connectOutcome = await Promise.race([this.#connected, timer.then((r) => r.o)]);
    if (connectOutcome !== undefined) {
      this.closed = true;
      this.socket.destroy();
      return { o: connectOutcome };
    }
    if (this.closed) return { o: 'reset' };
    const answer = new Promise<Response>((resolve) => {
      this.#waiting = resolve;
    });
    this.socket.write(REQUEST(String(++seq), close));
    const r = await Promise.race([answer, timer]);
    if (r.o !== 'ok') {
      this.closed = true;
      this.socket.destroy();
    }
    return r;
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

let kaWorkers = 0;
async function keepAlive(kind = 'tcp-ka'): Promise<void> {
  const long = kind === 'tcp-long';
  const recycles = kind === 'tcp-ka' && kaWorkers++ % 2 === 0;
  let conn: HttpConn | undefined;
  let retireAt = 0;
  while (running) {
    if (conn !== undefined && Date.now() >= retireAt) conn.close();
    // A well-behaved client: a connection the server closed is not reused.
    if (conn === undefined || conn.closed) {
      conn = new HttpConn();
      retireAt = recycles ? Date.now() + KA_LIFETIME * (0.5 + Math.random() * 0.5) : Infinity;
    }
    const t = Date.now();
    const r = await conn.request(false, long ? Infinity : TIMEOUT);
    // A long stream's request cut short by the client's own stop is no failure.
    if (long && !running && r.o === 'timeout' && Date.now() - t < TIMEOUT) break;
    record(t, kind, r.o, r.b);
    if (r.close === true) conn.close();
    await sleep(jitter(long ? LONG_INTERVAL : TCP_INTERVAL));
  }
  conn?.close();
}

async function shortConnections(): Promise<void> {
  while (running) {
    const conn = new HttpConn();
    const t = Date.now();
    const r = await conn.request(true);
    record(t, 'tcp-short', r.o, r.b);
    conn.close();
    await sleep(jitter(TCP_INTERVAL));
  }
}

// ---------- main ----------

const workers: Promise<void>[] = [];
const start = (n: string | undefined, fn: () => Promise<void>): void => {
  for (let i = 0; i < Number(n ?? 0); i++) workers.push(sleep(Math.random() * 100).then(fn));
};
start(values['udp-workers'], udpLookups);
start(values['pinned-udp'], udpPinned);
start(values['ka-workers'], () => keepAlive());
start(values['stream-workers'], () => keepAlive('tcp-stream'));
start(values['long-workers'], () => keepAlive('tcp-long'));
start(values['short-workers'], shortConnections);

const stop = (): void => {
  running = false;
  stopped();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, Math.max(0, deadline - Date.now()));
await Promise.all(workers);
process.stdout.write(JSON.stringify({ event: 'done', at: Date.now() }) + '\n');
process.exit(0);
