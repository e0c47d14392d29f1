/**
 * Load generators: autocannon (closed loop, HTTP/1.1 keep-alive, optionally rate
 * limited) and a paced open-loop client. Latencies are recorded per response with
 * sub-millisecond precision (autocannon's own histogram has 1 ms resolution).
 */
import { connect as tlsConnect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import autocannon from 'autocannon';

export interface LoadTarget {
  readonly url: string;
  readonly body: Buffer;
  readonly ca: Buffer;
}

export interface LoadResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  /** Latency percentiles in ms. */
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
  /** Non-2xx answers. */
  readonly non2xx: number;
  /** Socket errors and timeouts. */
  readonly socketErrors: number;
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/** Growable list of latencies (ms). */
export class Latencies {
  private data = new Float64Array(1 << 16);
  private n = 0;
  add(ms: number): void {
    if (this.n === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.n++] = ms;
  }
  get count(): number {
    return this.n;
  }
  sorted(): Float64Array {
    return this.data.slice(0, this.n).sort();
  }
}

export interface AutocannonOptions {
  readonly connections: number;
  readonly durationSeconds: number;
  readonly overallRate?: number;
  /** autocannon worker threads; 0: in this process (then latencies are exact to the µs). */
  readonly workers?: number;
  /** Bodies each connection cycles through (default: the target's one body). */
  readonly bodies?: readonly Buffer[];
}

export async function runAutocannon(t: LoadTarget, o: AutocannonOptions): Promise<LoadResult> {
  const latencies = new Latencies();
  const workers = o.workers ?? 0;
  const instance = autocannon({
    url: `${t.url}/mutate?timeout=10s`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: t.body,
    connections: o.connections,
    duration: o.durationSeconds,
    timeout: 10,
    tlsOptions: { ca: t.ca },
    ...(o.overallRate !== undefined ? { overallRate: Math.max(1, Math.round(o.overallRate)) } : {}),
    ...(workers > 0 ? { workers } : {}),
    ...(o.bodies !== undefined ? { requests: o.bodies.map((body) => ({ method: 'POST', path: '/mutate?timeout=10s', headers: { 'content-type': 'application/json' }, body })) } : {}),
  });
  if (workers === 0) {
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status >= 200 && status < 300) latencies.add(ms);
    });
  }
  const raw = await instance;
  const requests = raw.requests.total;
  const seconds = raw.duration;
  const common = { requests, seconds, rps: requests / seconds, non2xx: raw.non2xx, socketErrors: raw.errors + raw.timeouts };
  if (workers > 0) {
    // Only autocannon's own histogram is available across worker threads (1 ms resolution).
    return { ...common, p50: raw.latency.p50, p99: raw.latency.p99, p999: raw.latency.p99_9, max: raw.latency.max };
  }
  const s = latencies.sorted();
  return { ...common, p50: percentile(s, 50), p99: percentile(s, 99), p999: percentile(s, 99.9), max: s[s.length - 1] ?? Number.NaN };
}

export interface PacedOptions {
  readonly rate: number;
  readonly durationSeconds: number;
  /** Keep-alive connections the client holds (a request waits for a free one: that wait counts). */
  readonly connections: number;
}

export interface PacedResult extends LoadResult {
  /** Percentiles measured from the moment the request was written (the wait for a free connection and timer lag excluded). */
  readonly fromSend: { readonly p50: number; readonly p99: number; readonly p999: number };
}

interface PacedConnection {
  readonly socket: TLSSocket;
  busy: boolean;
  due: number;
  sentAt: number;
  chunks: Buffer[];
  bytes: number;
}

/**
 * Open loop at a constant rate over raw keep-alive TLS connections: request i is
 * due at start + i/rate and its latency counts from that due time, so a slow
 * server cannot hide its queue (no coordinated omission). Responses are framed
 * by Content-Length; the client does little work per request.
 */
export async function runPaced(t: LoadTarget, o: PacedOptions): Promise<PacedResult> {
  const url = new URL(t.url);
  const port = Number(url.port);
  const request = Buffer.concat([
    Buffer.from(`POST /mutate?timeout=10s HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\nContent-Length: ${t.body.length}\r\n\r\n`),
    t.body,
  ]);
  const fromDue = new Latencies();
  const fromSend = new Latencies();
  let non2xx = 0;
  let socketErrors = 0;
  let done = 0;
  const queue: number[] = [];
  const idle: PacedConnection[] = [];
  const send = (c: PacedConnection, due: number): void => {
    c.busy = true;
    c.due = due;
    c.sentAt = performance.now();
    c.socket.write(request);
  };
  const conns = await Promise.all(
    Array.from({ length: o.connections }, () =>
      new Promise<PacedConnection>((resolve, reject) => {
        const socket = tlsConnect({ host: url.hostname, port, ca: t.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => resolve(c));
        const c: PacedConnection = { socket, busy: false, due: 0, sentAt: 0, chunks: [], bytes: 0 };
        socket.setNoDelay(true);
        socket.once('error', reject);
        socket.on('data', (d: Buffer) => {
          c.chunks.push(d);
          c.bytes += d.length;
          const buf = c.chunks.length === 1 ? c.chunks[0]! : Buffer.concat(c.chunks, c.bytes);
          const headerEnd = buf.indexOf('\r\n\r\n');
          if (headerEnd < 0) return;
          const head = buf.subarray(0, headerEnd).toString('latin1');
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          const total = headerEnd + 4 + length;
          if (buf.length < total) {
            c.chunks = [buf];
            return;
          }
          const now = performance.now();
          const status = Number(head.slice(9, 12));
          if (status >= 200 && status < 300) {
            fromDue.add(now - c.due);
            fromSend.add(now - c.sentAt);
          } else non2xx++;
          done++;
          const rest = buf.subarray(total);
          c.chunks = rest.length > 0 ? [rest] : [];
          c.bytes = rest.length;
          c.busy = false;
          const next = queue.shift();
          if (next !== undefined) send(c, next);
          else idle.push(c);
        });
      }),
    ),
  );
  for (const c of conns) {
    c.socket.on('error', () => socketErrors++);
    idle.push(c);
  }
  const total = Math.round(o.rate * o.durationSeconds);
  const start = performance.now();
  let scheduled = 0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - start) / 1000) * o.rate) + 1);
      while (scheduled < due) {
        const at = start + (scheduled * 1000) / o.rate;
        scheduled++;
        const c = idle.pop();
        if (c) send(c, at);
        else queue.push(at);
      }
      if (scheduled < total) setTimeout(tick, 0);
      else resolve();
    };
    tick();
  });
  const deadline = performance.now() + 15_000;
  while (done + socketErrors < scheduled && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const seconds = (performance.now() - start) / 1000;
  for (const c of conns) c.socket.destroy();
  const s = fromDue.sorted();
  const s2 = fromSend.sorted();
  return {
    requests: done,
    seconds,
    rps: done / seconds,
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    p999: percentile(s, 99.9),
    max: s[s.length - 1] ?? Number.NaN,
    non2xx,
    socketErrors: socketErrors + Math.max(0, scheduled - done - socketErrors),
    fromSend: { p50: percentile(s2, 50), p99: percentile(s2, 99), p999: percentile(s2, 99.9) },
  };
}
