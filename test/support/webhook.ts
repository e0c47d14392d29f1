/** A real webhook on a loopback TLS port, and an HTTPS client that trusts its CA. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request, Agent } from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { parseServeConfig } from '../../src/cli/config.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { startWebhook } from '../../src/server/serve.ts';
import type { FactsWiring } from '../../src/core/facts.ts';
import type { RunningWebhook, ServeConfig } from '../../src/server/serve.ts';
import type { Logger } from '../../src/shared/logger.ts';
import type { ServerTimeouts } from '../../src/server/app.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
const GENERATE = join(REPO_ROOT, 'certs/generate.sh');

export interface CertDir {
  readonly dir: string;
  readonly ca: Buffer;
  readonly certFile: string;
  readonly keyFile: string;
  remove(): void;
}

/** A fresh CA and serving certificate (localhost, 127.0.0.1) in a temp dir. */
export function makeCerts(args: readonly string[] = []): CertDir {
  const dir = mkdtempSync(join(tmpdir(), 'st-certs-'));
  execFileSync('bash', [GENERATE, '--out', dir, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  return {
    dir,
    ca: readFileSync(join(dir, 'ca.crt')),
    certFile: join(dir, 'tls.crt'),
    keyFile: join(dir, 'tls.key'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * A serving certificate valid only from `notBefore` to `notAfter` (openssl ca, which
 * takes explicit dates), signed by a fresh CA; for expired and not-yet-valid pairs.
 */
export function makeCertsValid(notBefore: Date, notAfter: Date): CertDir {
  const certs = makeCerts();
  const dir = certs.dir;
  const stamp = (d: Date): string => `${d.toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    ['[ca]', 'default_ca = ca_default', '[ca_default]', `database = ${dir}/index.txt`, `new_certs_dir = ${dir}`, `serial = ${dir}/serial`, 'default_md = sha256', 'policy = any', '[any]', 'commonName = supplied'].join('\n'),
  );
  writeFileSync(join(dir, 'ext.cnf'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
  const quiet = { stdio: ['ignore', 'ignore', 'pipe'] as ('ignore' | 'pipe')[] };
  execFileSync('openssl', ['req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-keyout', certs.keyFile, '-out', join(dir, 'tls.csr'), '-subj', '/CN=localhost'], quiet);
  execFileSync(
    'openssl',
    ['ca', '-batch', '-notext', '-config', join(dir, 'ca.cnf'), '-cert', join(dir, 'ca.crt'), '-keyfile', join(dir, 'ca.key'), '-in', join(dir, 'tls.csr'), '-out', certs.certFile, '-startdate', stamp(notBefore), '-enddate', stamp(notAfter), '-extfile', join(dir, 'ext.cnf')],
    quiet,
  );
  return certs;
}

/** Log lines captured from the webhook's logger. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly raw: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      this.raw.push(line);
      this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    cb();
  }
}

export interface TestWebhook {
  readonly url: string;
  readonly metricsUrl: string;
  readonly ca: Buffer;
  readonly certs: CertDir;
  readonly webhook: RunningWebhook;
  readonly config: ServeConfig;
  readonly logs: LogCapture;
  readonly agent: Agent;
  post(body: unknown, path?: string, headers?: Record<string, string>): Promise<HttpAnswer>;
  get(path: string): Promise<HttpAnswer>;
  close(): Promise<void>;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  json<T = unknown>(): T;
}

export interface TestWebhookOptions {
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  readonly certs?: CertDir;
  readonly wireFacts?: (config: ServeConfig, log: Logger) => Promise<FactsWiring>;
  /** Shorter slow-client limits than the production defaults. */
  readonly timeouts?: Partial<ServerTimeouts>;
}

export async function startTestWebhook(o: TestWebhookOptions = {}): Promise<TestWebhook> {
  const certs = o.certs ?? makeCerts();
  const config = parseServeConfig(
    [
      '--port', '0',
      '--metrics-port', '0',
      '--bind-address', '127.0.0.1',
      '--tls-cert-file', certs.certFile,
      '--tls-private-key-file', certs.keyFile,
      '--shutdown-delay', '0',
      '--log-level', 'debug',
      ...(o.args ?? []),
    ],
    o.env ?? {},
  );
  const logs = new LogCapture();
  const webhook = await startWebhook(config, createLogger(config.logLevel, logs), o.wireFacts, { timeouts: o.timeouts });
  const url = `https://127.0.0.1:${webhook.port}`;
  const agent = new Agent({ keepAlive: true, ca: certs.ca, maxSockets: 16 });
  const post = (body: unknown, path = '/mutate?timeout=10s', headers: Record<string, string> = {}): Promise<HttpAnswer> =>
    httpsRequest(`${url}${path}`, { method: 'POST', agent, headers: { 'content-type': 'application/json', ...headers } }, typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
  const get = (path: string): Promise<HttpAnswer> => httpsRequest(`${url}${path}`, { method: 'GET', agent });
  return {
    url,
    metricsUrl: `http://127.0.0.1:${webhook.metricsPort}/metrics`,
    ca: certs.ca,
    certs,
    webhook,
    config,
    logs,
    agent,
    post,
    get,
    close: async () => {
      agent.destroy();
      await webhook.shutdown(0);
      if (o.certs === undefined) certs.remove();
    },
  };
}

export function httpsRequest(
  url: string,
  options: { method: string; agent?: Agent; ca?: Buffer; headers?: Record<string, string>; rejectUnauthorized?: boolean },
  body?: string | Buffer,
): Promise<HttpAnswer> {
  return new Promise((resolvePromise, reject) => {
    const req = request(url, { ...options, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolvePromise({ status: res.statusCode ?? 0, headers: res.headers, text, json: <T>() => JSON.parse(text) as T });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}
