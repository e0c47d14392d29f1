/**
 * The agent's API access without @kubernetes/client-node (lean-api.ts says why),
 * resolved as kubeconfig.ts does for the webhook:
 * - `--kubeconfig FILE` (`default`: $KUBECONFIG, else ~/.kube/config): the current
 *   context's server, CA (file or data), insecure-skip-tls-verify, tls-server-name,
 *   and the user's token, tokenFile, client certificate and key (files or data) or
 *   username/password. Anything else there (exec and auth-provider plugins, a
 *   proxy-url, impersonation, several files in $KUBECONFIG) is left to client-node's
 *   KubeConfig, loaded only then;
 * - else, in a pod: the service account, as client-node's loadFromCluster (the CA
 *   file; the token file read again when older than a minute: bound tokens rotate);
 * - else none.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { RequestOptions } from 'node:https';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { UsageError } from '../shared/errors.ts';
import { accessKind, SERVICE_ACCOUNT_DIR } from './in-pod.ts';
import type { Access, AccessOptions } from './in-pod.ts';
import type { ApiCredentials } from './lean-api.ts';

export type AgentAccess = Access<ApiCredentials>;

/** Static credentials: one server, TLS material, and a bearer token (fixed, or a file read again every minute). */
export interface StaticCredentials {
  readonly server: string;
  readonly ca?: Buffer | undefined;
  readonly cert?: Buffer | undefined;
  readonly key?: Buffer | undefined;
  readonly insecure?: boolean;
  readonly tlsServerName?: string | undefined;
  readonly token?: string | undefined;
  readonly tokenFile?: string | undefined;
  readonly basicAuth?: string | undefined;
  /** Read the token file again when the last read is older (default a minute, as client-node and client-go). */
  readonly tokenMaxAgeMs?: number;
}

const TOKEN_MAX_AGE_MS = 60_000;

export class LeanKubeConfig implements ApiCredentials {
  readonly #c: StaticCredentials;
  readonly #agent: HttpAgent | HttpsAgent;
  #token: { value: string; readAt: number } | undefined;

  constructor(c: StaticCredentials) {
    if (c.server.startsWith('http:') && c.insecure !== true) {
      // As client-node: plain HTTP only when TLS verification is explicitly off.
      throw new Error('HTTP protocol is not allowed when skipTLSVerify is not set or false');
    }
    this.#c = c;
    this.#agent = c.server.startsWith('http:')
      ? new HttpAgent({ keepAlive: true })
      : new HttpsAgent({
          keepAlive: true,
          ...(c.ca === undefined ? {} : { ca: c.ca }),
          ...(c.cert === undefined ? {} : { cert: c.cert }),
          ...(c.key === undefined ? {} : { key: c.key }),
          ...(c.insecure === true ? { rejectUnauthorized: false } : {}),
          ...(c.tlsServerName === undefined ? {} : { servername: c.tlsServerName }),
        });
  }

  getCurrentCluster(): { readonly server: string } {
    return { server: this.#c.server };
  }

  applyToHTTPSOptions(opts: RequestOptions): Promise<void> {
    opts.agent = this.#agent;
    const token = this.#bearer();
    if (token !== undefined) opts.headers = { ...(opts.headers as Record<string, string> | undefined), Authorization: `Bearer ${token}` };
    else if (this.#c.basicAuth !== undefined) opts.auth = this.#c.basicAuth;
    return Promise.resolve();
  }

  #bearer(): string | undefined {
    if (this.#c.tokenFile === undefined) return this.#c.token;
    const now = Date.now();
    if (this.#token === undefined || now - this.#token.readAt > (this.#c.tokenMaxAgeMs ?? TOKEN_MAX_AGE_MS)) {
      this.#token = { value: readFileSync(this.#c.tokenFile, 'utf8'), readAt: now };
    }
    return this.#token.value;
  }
}

/** Resolve and load the agent's API access. Throws UsageError when an explicit kubeconfig cannot be loaded. */
export async function resolveAgentAccess(o: AccessOptions): Promise<AgentAccess> {
  const kind = accessKind(o.kubeconfig, o.env, o.inClusterRoot);
  if (kind === 'kubeconfig' && o.kubeconfig !== undefined) {
    const isDefault = o.kubeconfig === 'default';
    const listed = isDefault ? o.env['KUBECONFIG'] : o.kubeconfig;
    const path = isDefault ? (listed ?? '~/.kube/config') : o.kubeconfig;
    const files = isDefault ? (listed ?? join(homedir(), '.kube', 'config')).split(':').filter((f) => f !== '') : [o.kubeconfig];
    let creds: ApiCredentials | 'no-cluster';
    try {
      const parsed = files.length === 1 && (!isDefault || existsSync(files[0]!)) ? await readKubeconfig(files[0]!) : undefined;
      creds = parsed ?? (await viaClientNode(isDefault ? undefined : o.kubeconfig));
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new UsageError('KUBECONFIG_UNLOADABLE', { path, reason: error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error) });
    }
    const server = creds === 'no-cluster' ? undefined : creds.getCurrentCluster()?.server;
    if (creds === 'no-cluster' || server === undefined) throw new UsageError('KUBECONFIG_NO_CLUSTER', path);
    return { kind: 'kubeconfig', kubeConfig: creds, server, path };
  }
  if (kind === 'in-cluster') {
    const host = o.env['KUBERNETES_SERVICE_HOST'] ?? '';
    const port = o.env['KUBERNETES_SERVICE_PORT'] ?? '';
    const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
    const server = `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
    const dir = `${o.inClusterRoot ?? ''}${SERVICE_ACCOUNT_DIR}`;
    const caFile = join(dir, 'ca.crt');
    const creds = new LeanKubeConfig({ server, ca: existsSync(caFile) ? readFileSync(caFile) : undefined, tokenFile: join(dir, 'token'), insecure: scheme === 'http' });
    return { kind: 'in-cluster', kubeConfig: creds, server };
  }
  return { kind: 'none' };
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** The user fields read here; any other non-empty field sends the file to client-node. */
const USER_FIELDS = new Set(['token', 'tokenFile', 'client-certificate', 'client-certificate-data', 'client-key', 'client-key-data', 'username', 'password']);
const CLUSTER_FIELDS = new Set(['server', 'certificate-authority', 'certificate-authority-data', 'insecure-skip-tls-verify', 'tls-server-name', 'extensions']);

/** A kubeconfig file read here; undefined when it needs client-node (see the header). */
export async function readKubeconfig(file: string): Promise<LeanKubeConfig | 'no-cluster' | undefined> {
  const text = readFileSync(file, 'utf8');
  const { parse } = await import('yaml');
  const doc = obj(parse(text) as unknown);
  if (doc === undefined) throw new Error('not a kubeconfig (no mapping at the top)');
  const named = (list: unknown, name: string | undefined, field: string): Json | undefined =>
    name === undefined ? undefined : obj((Array.isArray(list) ? list : []).map(obj).find((e) => e?.['name'] === name)?.[field]);
  const context = named(doc['contexts'], str(doc['current-context']), 'context');
  const cluster = named(doc['clusters'], str(context?.['cluster']), 'cluster');
  const server = str(cluster?.['server']);
  if (context === undefined || cluster === undefined || server === undefined) return 'no-cluster';
  const user = named(doc['users'], str(context['user']), 'user') ?? {};
  const used = (o: Json, known: Set<string>): boolean => Object.entries(o).some(([k, v]) => !known.has(k) && v !== undefined && v !== null && v !== '');
  if (used(user, USER_FIELDS) || used(cluster, CLUSTER_FIELDS) || str(cluster['proxy-url']) !== undefined) return undefined;
  const base = dirname(file);
  const material = (o: Json, fileKey: string, dataKey: string): Buffer | undefined => {
    const f = str(o[fileKey]);
    if (f !== undefined) return readFileSync(isAbsolute(f) ? f : join(base, f));
    const d = str(o[dataKey]);
    return d === undefined ? undefined : Buffer.from(d, 'base64');
  };
  const tokenFile = str(user['tokenFile']);
  const username = str(user['username']);
  return new LeanKubeConfig({
    server,
    ca: material(cluster, 'certificate-authority', 'certificate-authority-data'),
    cert: material(user, 'client-certificate', 'client-certificate-data'),
    key: material(user, 'client-key', 'client-key-data'),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: str(cluster['tls-server-name']),
    token: str(user['token']),
    tokenFile: tokenFile === undefined ? undefined : isAbsolute(tokenFile) ? tokenFile : join(base, tokenFile),
    basicAuth: username === undefined ? undefined : `${username}:${str(user['password']) ?? ''}`,
  });
}

/** client-node's KubeConfig, for what readKubeconfig leaves to it. */
async function viaClientNode(file: string | undefined): Promise<ApiCredentials> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (file === undefined) kc.loadFromDefault();
  else kc.loadFromFile(file);
  return kc;
}
