// A client that rides out pods coming and going behind a Service: idempotent
// calls retried with backoff on the errors churn causes, a fresh connection after
// a failure, and a short-lived UDP socket per lookup.
//
//   node client.js --url http://svc/work?ms=10 --udp svc:8080 --n 20 --interval 50
//
// One JSON line per call on stdout; exit 1 if any call failed for good.
// Node.js standard library only; retryable(), backoff() and withRetries() are
// exported for reuse.
/* global AbortSignal */
import { Buffer } from 'node:buffer';
import dgram from 'node:dgram';
import http from 'node:http';
import process from 'node:process';
import { clearTimeout, setTimeout } from 'node:timers';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** 5 tries, 50 ms doubling to 1 s at most between them, each wait jittered. */
export const DEFAULT_POLICY = { attempts: 5, baseMs: 50, maxMs: 1000 };

/** The wait before try n+1 (n ≥ 1): between half and all of base·2^(n−1), capped. */
export function backoff(policy, n) {
  const d = Math.min(policy.maxMs, policy.baseMs * 2 ** (n - 1));
  return d / 2 + Math.random() * (d / 2);
}

const RETRYABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ETIMEDOUT', 'ABORT_ERR', 'UPSTREAM_UNAVAILABLE']);

/**
 * Errors a Service's churn causes and a new connection can cure: refused (the
 * pod's port is closed), reset (it went away mid-connection), unreachable (its
 * IP is gone), a timeout (packets blackholed by a stale conntrack entry), or a
 * 502/503 from a draining backend. The write-up retried "connection refused"
 * only: stale entries mostly show as timeouts and resets.
 */
export function retryable(error) {
  return error instanceof Error && RETRYABLE_CODES.has(error.code ?? error.name);
}

/** Call fn(attempt) until it resolves, throws what retryable() refuses, or the attempts run out. Idempotent calls only. */
export async function withRetries(policy, fn) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (!retryable(error) || attempt >= policy.attempts) throw error;
      await sleep(backoff(policy, attempt));
    }
  }
}

/** GET url, reading the body; rejects on a timeout (code ABORT_ERR), a 502/503 (UPSTREAM_UNAVAILABLE) or another status. */
function get(agent, url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode === 200) return resolve(Buffer.concat(chunks).toString());
        const error = new Error(`HTTP ${res.statusCode}`);
        if (res.statusCode === 502 || res.statusCode === 503) error.code = 'UPSTREAM_UNAVAILABLE';
        reject(error);
      });
    });
    req.on('error', (error) => reject(error.name === 'AbortError' || error.name === 'TimeoutError' ? Object.assign(error, { code: 'ABORT_ERR' }) : error));
  });
}

/**
 * One datagram from a socket of its own, and its answer. The socket lives for
 * this lookup only: a long-lived one keeps its conntrack entry alive (each packet
 * refreshes it) and with it a pod that may be gone.
 */
export function lookup(host, port, timeoutMs) {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const done = (error, value) => {
      clearTimeout(timer);
      socket.close();
      if (error) reject(error);
      else resolve(value);
    };
    const timer = setTimeout(() => done(Object.assign(new Error('UDP lookup timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
    socket.on('error', (error) => done(error)); // ECONNREFUSED: ICMP port unreachable on a connected socket
    socket.on('message', (msg) => done(undefined, { answer: msg.toString(), localPort: socket.address().port }));
    socket.connect(port, host, () => socket.send('ping'));
  });
}

async function main() {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      udp: { type: 'string' },
      n: { type: 'string', default: '10' },
      interval: { type: 'string', default: '50' },
      timeout: { type: 'string', default: '2000' },
      attempts: { type: 'string', default: String(DEFAULT_POLICY.attempts) },
    },
  });
  const policy = { ...DEFAULT_POLICY, attempts: Number(values.attempts) };
  const n = Number(values.n);
  const timeoutMs = Number(values.timeout);
  // One keep-alive pool for the normal case; after a failed attempt it is
  // replaced so the retry opens a new connection: a new source port, so a new
  // conntrack entry and a fresh choice of pod.
  let agent = new http.Agent({ keepAlive: true });
  let failed = false;
  const print = (r) => process.stdout.write(`${JSON.stringify(r)}\n`);
  for (let call = 1; call <= n; call++) {
    if (values.url !== undefined) {
      const r = { call, kind: 'http', ok: true, attempts: 0 };
      try {
        await withRetries(policy, (attempt) => {
          r.attempts = attempt;
          if (attempt > 1) {
            agent.destroy();
            agent = new http.Agent({ keepAlive: true });
          }
          return get(agent, values.url, timeoutMs);
        });
      } catch (error) {
        Object.assign(r, { ok: false, error: String(error) });
        failed = true;
      }
      print(r);
    }
    if (values.udp !== undefined) {
      const colon = values.udp.lastIndexOf(':');
      const r = { call, kind: 'udp', ok: true, attempts: 0 };
      try {
        await withRetries(policy, async (attempt) => {
          r.attempts = attempt;
          r.localPort = (await lookup(values.udp.slice(0, colon), Number(values.udp.slice(colon + 1)), timeoutMs)).localPort;
        });
      } catch (error) {
        Object.assign(r, { ok: false, error: String(error) });
        failed = true;
      }
      print(r);
    }
    await sleep(Number(values.interval));
  }
  agent.destroy();
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
