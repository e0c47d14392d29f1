/**
 * A counting load client for fault tests: sequential keep-alive requests per
 * worker, every request accounted for — answered (by status), refused (the
 * connection was never accepted), cut before the request was fully written, or
 * LOST (written, then the connection failed without an answer).
 */
import { Agent, request } from 'node:https';
import { TLSSocket } from 'node:tls';

export type Fate = 'answered' | 'refused' | 'unwritten' | 'lost';

export interface RequestRecord {
  /** ms since the client's epoch. */
  readonly startedAt: number;
  readonly endedAt: number;
  readonly fate: Fate;
  readonly status?: number;
  readonly error?: string;
  /** SHA-256 fingerprint of the server certificate, when the request opened a new connection. */
  readonly newConnectionCert?: string;
  /** The server asked to close the connection after this answer. */
  readonly closeAsked?: boolean;
}

export interface CountingClientOptions {
  readonly url: string;
  readonly ca: Buffer | Buffer[];
  readonly body: Buffer;
  readonly workers: number;
  /** Ask the server to close after every Nth request of a worker (0: never): new TLS handshakes keep coming. */
  readonly newConnectionEvery?: number;
  /** Pause between a worker's requests, ms (0: back to back). */
  readonly pauseMs?: number;
  /** Stop a worker after this many refusals in a row (the server is gone). */
  readonly stopAfterRefusals?: number;
  readonly epoch?: number;
}

export class CountingClient {
  readonly records: RequestRecord[] = [];
  readonly epoch: number;
  private running = true;
  private readonly done: Promise<void>;
  private readonly agents: Agent[] = [];

  constructor(o: CountingClientOptions) {
    this.epoch = o.epoch ?? performance.now();
    const workers: Array<Promise<void>> = [];
    for (let i = 0; i < o.workers; i++) {
      const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: o.ca });
      this.agents.push(agent);
      workers.push(this.worker(o, agent));
    }
    this.done = Promise.all(workers).then(() => undefined);
  }

  private now(): number {
    return performance.now() - this.epoch;
  }

  private async worker(o: CountingClientOptions, agent: Agent): Promise<void> {
    let n = 0;
    let refusals = 0;
    while (this.running) {
      n++;
      const close = (o.newConnectionEvery ?? 0) > 0 && n % o.newConnectionEvery! === 0;
      const r = await this.one(o, agent, close);
      this.records.push(r);
      refusals = r.fate === 'refused' ? refusals + 1 : 0;
      if (o.stopAfterRefusals !== undefined && refusals >= o.stopAfterRefusals) return;
      if (r.fate === 'refused') await new Promise((res) => setTimeout(res, 20));
      else if ((o.pauseMs ?? 0) > 0) await new Promise((res) => setTimeout(res, o.pauseMs));
    }
  }

  private one(o: CountingClientOptions, agent: Agent, close: boolean): Promise<RequestRecord> {
    const startedAt = this.now();
    return new Promise((resolve) => {
      let written = false;
      let connected = false;
      let cert: string | undefined;
      let settled = false;
      const settle = (r: Omit<RequestRecord, 'startedAt' | 'endedAt'>): void => {
        if (settled) return;
        settled = true;
        resolve({ startedAt, endedAt: this.now(), ...r, ...(cert ? { newConnectionCert: cert } : {}) });
      };
      const req = request(
        `${o.url}/mutate?timeout=10s`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': String(o.body.length), ...(close ? { connection: 'close' } : {}) }, timeout: 15_000 },
        (res) => {
          res.on('data', () => {});
          res.on('end', () => settle({ fate: 'answered', status: res.statusCode ?? 0, closeAsked: res.headers.connection === 'close' }));
          res.on('error', (e) => settle({ fate: 'lost', error: (e as NodeJS.ErrnoException).code ?? e.message }));
        },
      );
      req.on('socket', (socket) => {
        if (req.reusedSocket) {
          connected = true;
          return;
        }
        socket.once('secureConnect', () => {
          connected = true;
          if (socket instanceof TLSSocket) cert = socket.getPeerCertificate().fingerprint256;
        });
      });
      req.on('finish', () => (written = true));
      req.on('timeout', () => req.destroy(new Error('client timeout')));
      req.on('error', (e: NodeJS.ErrnoException) => {
        const code = e.code ?? e.message;
        if (!connected && (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EPIPE')) settle({ fate: 'refused', error: code });
        else if (!written) settle({ fate: 'unwritten', error: code });
        else settle({ fate: 'lost', error: code });
      });
      req.end(o.body);
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    for (const a of this.agents) a.destroy();
  }

  /** Resolves when every worker has stopped by itself (stopAfterRefusals). */
  finished(): Promise<void> {
    return this.done;
  }

  summary(): Record<Fate, number> & { total: number; non200: number } {
    const out = { total: this.records.length, answered: 0, refused: 0, unwritten: 0, lost: 0, non200: 0 };
    for (const r of this.records) {
      out[r.fate]++;
      if (r.fate === 'answered' && r.status !== 200) out.non200++;
    }
    return out;
  }
}
