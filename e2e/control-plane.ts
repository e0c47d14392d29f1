/**
 * A real Kubernetes control plane on loopback for the e2e tests and the lab:
 * etcd, kube-apiserver (Node,RBAC authorization, the default admission plugins plus
 * NodeRestriction), kube-controller-manager and kube-scheduler, each with its own
 * certificate and kubeconfig, from the binaries `npm run kube:build` caches.
 * There is no kubelet: Nodes are objects the tests create, and pods are scheduled
 * and stored, not run.
 *
 * Every process is started under `setpriv --pdeathsig KILL`, so it dies with the
 * test process even when that is killed; stop() ends them and removes the folder.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtKubeBinDir, KUBE_VERSION } from '../scripts/kube-build.ts';
import { toolPath } from '../scripts/helm.ts';

export const SERVICE_CIDR = '10.96.0.0/24';

/** The controllers this project's tests need (kube-controller-manager --controllers). */
export const CONTROLLERS = [
  'deployment-controller',
  'daemonset-controller',
  'replicaset-controller',
  'job-controller',
  'endpointslice-controller',
  'namespace-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'garbage-collector-controller',
] as const;

export type Component = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kube-scheduler';

/** Why the control plane cannot start here, or false when it can. */
export function controlPlaneSkipReason(): string | false {
  if (process.platform !== 'linux') return 'the control plane needs Linux';
  if (builtKubeBinDir() === undefined) return `Kubernetes ${KUBE_VERSION} is not built: run \`npm run kube:build\``;
  return false;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

function openssl(args: readonly string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

interface Pki {
  readonly caFile: string;
  readonly caKey: string;
  issue(name: string, subject: string, extensions: string): { cert: string; key: string };
}

function makePki(dir: string): Pki {
  mkdirSync(dir, { recursive: true });
  const caFile = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  openssl(['req', '-x509', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-keyout', caKey, '-out', caFile, '-days', '7', '-subj', '/CN=safe-termination-e2e-ca'], dir);
  let serial = 1;
  return {
    caFile,
    caKey,
    issue(name, subject, extensions) {
      const key = join(dir, `${name}.key`);
      const csr = join(dir, `${name}.csr`);
      const cert = join(dir, `${name}.crt`);
      const ext = join(dir, `${name}.ext`);
      writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n${extensions}\n`);
      openssl(['req', '-new', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-keyout', key, '-out', csr, '-subj', subject], dir);
      openssl(['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(++serial), '-out', cert, '-days', '7', '-extfile', ext], dir);
      return { cert, key };
    },
  };
}

export interface KubeconfigUser {
  readonly clientCertificate?: string;
  readonly clientKey?: string;
  readonly token?: string;
}

export function kubeconfigFor(server: string, caFile: string, user: KubeconfigUser, name = 'e2e'): string {
  const userEntry: Record<string, string> = {};
  if (user.clientCertificate !== undefined) userEntry['client-certificate'] = user.clientCertificate;
  if (user.clientKey !== undefined) userEntry['client-key'] = user.clientKey;
  if (user.token !== undefined) userEntry['token'] = user.token;
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'e2e', cluster: { server, 'certificate-authority': caFile } }],
      users: [{ name, user: userEntry }],
      contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: name } }],
      'current-context': 'e2e',
    },
    null,
    2,
  );
}

export interface ApiResponse {
  readonly status: number;
  readonly body: unknown;
  readonly text: string;
}

export interface ApiOptions {
  readonly contentType?: string;
  readonly token?: string;
  readonly timeoutMs?: number;
}

export interface NodeOptions {
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly taints?: ReadonlyArray<{ key: string; value?: string; effect: string }>;
}

interface Managed {
  readonly component: Component;
  readonly args: readonly string[];
  child?: ChildProcess;
}

export class ControlPlane {
  readonly server: string;
  readonly caFile: string;
  readonly adminKubeconfig: string;
  private readonly processes = new Map<Component, Managed>();
  private readonly clientCert: Buffer;
  private readonly clientKey: Buffer;
  private readonly ca: Buffer;
  private stopped = false;

  readonly dir: string;
  readonly binDir: string;
  readonly apiPort: number;
  readonly etcdPort: number;
  private readonly pki: Pki;

  constructor(dir: string, binDir: string, apiPort: number, etcdPort: number, pki: Pki, admin: { cert: string; key: string }) {
    this.dir = dir;
    this.binDir = binDir;
    this.apiPort = apiPort;
    this.etcdPort = etcdPort;
    this.pki = pki;
    this.server = `https://127.0.0.1:${apiPort}`;
    this.caFile = pki.caFile;
    this.ca = readFileSync(pki.caFile);
    this.clientCert = readFileSync(admin.cert);
    this.clientKey = readFileSync(admin.key);
    this.adminKubeconfig = join(dir, 'admin.kubeconfig');
    writeFileSync(this.adminKubeconfig, kubeconfigFor(this.server, pki.caFile, { clientCertificate: admin.cert, clientKey: admin.key }, 'admin'));
  }

  /** The CA's certificate and key: a test may sign a serving certificate with it. */
  get caKeyFile(): string {
    return this.pki.caKey;
  }

  /** Issue a certificate from the control plane's CA (e.g. a webhook's serving pair). */
  issue(name: string, subject: string, extensions: string): { cert: string; key: string } {
    return this.pki.issue(name, subject, extensions);
  }

  logFile(component: Component): string {
    return join(this.dir, 'logs', `${component}.log`);
  }

  /** The last lines a component wrote, for a failure message. */
  tail(component: Component, lines = 30): string {
    try {
      return readFileSync(this.logFile(component), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  register(component: Component, args: readonly string[]): void {
    this.processes.set(component, { component, args });
  }

  start(component: Component): void {
    const managed = this.processes.get(component);
    if (managed === undefined) throw new Error(`${component} is not part of this control plane`);
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    const log = createWriteStream(this.logFile(component), { flags: 'a' });
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', join(this.binDir, component), ...managed.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    managed.child = child;
  }

  /** Stop one component (SIGTERM, SIGKILL after 5 s) and wait for it. */
  async stopComponent(component: Component): Promise<void> {
    const child = this.processes.get(component)?.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  /** Stop and start kube-apiserver on the same port; resolves when it is ready again. */
  async restartApiServer(): Promise<void> {
    await this.stopComponent('kube-apiserver');
    this.start('kube-apiserver');
    await this.waitReady(60_000);
  }

  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const apiserver = this.processes.get('kube-apiserver')?.child;
      if (apiserver !== undefined && apiserver.exitCode !== null) {
        throw new Error(`kube-apiserver exited ${apiserver.exitCode}:\n${this.tail('kube-apiserver')}`);
      }
      try {
        const r = await this.api('GET', '/readyz', undefined, { timeoutMs: 2000 });
        if (r.status === 200) return;
        last = `${r.status} ${r.text.slice(-500)}`;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
      await sleep(250);
    }
    throw new Error(`kube-apiserver not ready after ${timeoutMs} ms: ${last}\n${this.tail('kube-apiserver')}`);
  }

  /** One request to the API server as the admin (client certificate), or with `token`. */
  api(method: string, path: string, body?: unknown, options: ApiOptions = {}): Promise<ApiResponse> {
    const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (payload !== undefined) {
      headers['Content-Type'] = options.contentType ?? 'application/json';
      // Node sends a DELETE's body without a length otherwise, and the API server
      // then answers the next request on the connection with a bare 400.
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    if (options.token !== undefined) headers['Authorization'] = `Bearer ${options.token}`;
    return new Promise((resolveResponse, reject) => {
      const req = httpsRequest(
        `${this.server}${path}`,
        {
          method,
          headers,
          ca: this.ca,
          ...(options.token === undefined ? { cert: this.clientCert, key: this.clientKey } : {}),
          timeout: options.timeoutMs ?? 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = undefined;
            }
            resolveResponse({ status: res.statusCode ?? 0, body: parsed, text });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** As api(), but throws unless the status is 2xx; returns the parsed body. */
  async call<T = Record<string, unknown>>(method: string, path: string, body?: unknown, options: ApiOptions = {}): Promise<T> {
    const r = await this.api(method, path, body, options);
    if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
    return r.body as T;
  }

  /**
   * A Node object as a kubelet would register it: Ready, with room for pods. The
   * TaintNodesByCondition plugin adds node.kubernetes.io/not-ready at creation, which
   * the node lifecycle controller (not run here) would remove once Ready: removed here.
   */
  async createNode(name: string, options: NodeOptions = {}): Promise<void> {
    await this.call('POST', '/api/v1/nodes', {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name,
        labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', ...(options.labels ?? {}) },
        annotations: options.annotations ?? {},
      },
      spec: options.taints === undefined ? {} : { taints: options.taints },
    });
    const resources = { cpu: '8', memory: '32Gi', pods: '250' };
    await this.call(
      'PATCH',
      `/api/v1/nodes/${name}/status`,
      {
        status: {
          capacity: resources,
          allocatable: resources,
          conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'e2e node', lastHeartbeatTime: new Date().toISOString(), lastTransitionTime: new Date().toISOString() }],
          addresses: [{ type: 'InternalIP', address: '127.0.0.1' }, { type: 'Hostname', address: name }],
        },
      },
      { contentType: 'application/strategic-merge-patch+json' },
    );
    await this.call('PATCH', `/api/v1/nodes/${name}`, { spec: { taints: options.taints ?? null } }, { contentType: 'application/merge-patch+json' });
  }

  /** Wait until kube-controller-manager has made `namespace`'s `default` ServiceAccount (pods need one). */
  async waitForDefaultServiceAccount(namespace: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if ((await this.api('GET', `/api/v1/namespaces/${namespace}/serviceaccounts/default`)).status === 200) return;
      await sleep(250);
    }
    throw new Error(`kube-controller-manager did not create ${namespace}/default within ${timeoutMs} ms:\n${this.tail('kube-controller-manager')}`);
  }

  /** A Namespace, once its `default` ServiceAccount exists. */
  async createNamespace(name: string, labels: Record<string, string> = {}, timeoutMs = 60_000): Promise<void> {
    await this.call('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
    await this.waitForDefaultServiceAccount(name, timeoutMs);
  }

  /** A token for a ServiceAccount from the TokenRequest API. */
  async serviceAccountToken(namespace: string, name: string, options: { expirationSeconds?: number; boundPod?: { name: string; uid: string } } = {}): Promise<string> {
    const spec: Record<string, unknown> = { expirationSeconds: options.expirationSeconds ?? 3600 };
    if (options.boundPod !== undefined) spec['boundObjectRef'] = { kind: 'Pod', apiVersion: 'v1', ...options.boundPod };
    const r = await this.call<{ status: { token: string } }>('POST', `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`, {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec,
    });
    return r.status.token;
  }

  /** Write a kubeconfig that authenticates with `token`; returns its path. */
  writeTokenKubeconfig(fileName: string, token: string): string {
    const path = join(this.dir, fileName);
    writeFileSync(path, kubeconfigFor(this.server, this.caFile, { token }, fileName), { mode: 0o600 });
    return path;
  }

  /** Run the real kubectl against this control plane as the admin. */
  kubectl(args: readonly string[], input?: string): string {
    return execFileSync(toolPath('kubectl'), ['--kubeconfig', this.adminKubeconfig, ...args], {
      encoding: 'utf8',
      input,
      timeout: 60_000,
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
  }

  /** etcd's current revision, through its JSON gateway. */
  async etcdRevision(): Promise<number> {
    const r = (await etcdGateway(this.etcdPort, '/v3/kv/range', { key: Buffer.from('/').toString('base64') })) as { header?: { revision?: string } };
    return Number(r.header?.revision ?? NaN);
  }

  /** Compact etcd up to its current revision: older resourceVersions expire (410). */
  async compactEtcd(): Promise<number> {
    const revision = await this.etcdRevision();
    await etcdGateway(this.etcdPort, '/v3/kv/compaction', { revision: String(revision), physical: true });
    return revision;
  }

  async stop(options: { keepDir?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const component of ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'] as const) {
      await this.stopComponent(component);
    }
    if (options.keepDir !== true) rmSync(this.dir, { recursive: true, force: true });
  }
}

function etcdGateway(port: number, path: string, body: unknown): Promise<unknown> {
  return new Promise((resolveBody, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'Content-Type': 'application/json' }, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`etcd ${path}: ${res.statusCode} ${text}`));
        else resolveBody(JSON.parse(text));
      });
    });
    req.on('timeout', () => req.destroy(new Error(`etcd ${path}: timed out`)));
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface StartOptions {
  /** Also run kube-controller-manager (default true). */
  readonly controllerManager?: boolean;
  /** Also run kube-scheduler (default true). */
  readonly scheduler?: boolean;
  readonly controllers?: readonly string[];
  /** Extra kube-apiserver flags. */
  readonly apiServerArgs?: readonly string[];
  readonly readyTimeoutMs?: number;
}

/** Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler; resolves once /readyz answers 200. */
export async function startControlPlane(options: StartOptions = {}): Promise<ControlPlane> {
  const binDir = builtKubeBinDir();
  if (binDir === undefined) throw new Error(`Kubernetes ${KUBE_VERSION} is not built: run \`npm run kube:build\``);
  const dir = mkdtempSync(join(tmpdir(), 'st-kube-'));
  const pkiDir = join(dir, 'pki');
  const pki = makePki(pkiDir);
  const [apiPort, etcdPort, etcdPeerPort, kcmPort, schedulerPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const apiserverPair = pki.issue(
    'apiserver',
    '/CN=kube-apiserver',
    'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1',
  );
  const client = (name: string, subject: string): { cert: string; key: string } => pki.issue(name, subject, 'extendedKeyUsage=clientAuth');
  const admin = client('admin', '/O=system:masters/CN=e2e-admin');
  const kcm = client('kube-controller-manager', '/CN=system:kube-controller-manager');
  const scheduler = client('kube-scheduler', '/CN=system:kube-scheduler');
  const apiserverKubeletClient = client('apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client');
  const saKey = join(pkiDir, 'sa.key');
  const saPub = join(pkiDir, 'sa.pub');
  openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', saKey], pkiDir);
  openssl(['pkey', '-in', saKey, '-pubout', '-out', saPub], pkiDir);

  const plane = new ControlPlane(dir, binDir, apiPort, etcdPort, pki, admin);
  const server = plane.server;
  const writeKubeconfig = (name: string, pair: { cert: string; key: string }): string => {
    const path = join(dir, `${name}.kubeconfig`);
    writeFileSync(path, kubeconfigFor(server, pki.caFile, { clientCertificate: pair.cert, clientKey: pair.key }, name));
    return path;
  };
  const kcmKubeconfig = writeKubeconfig('kube-controller-manager', kcm);
  const schedulerKubeconfig = writeKubeconfig('kube-scheduler', scheduler);

  plane.register('etcd', [
    '--name=e2e',
    `--data-dir=${join(dir, 'etcd')}`,
    `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
    `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-cluster=e2e=http://127.0.0.1:${etcdPeerPort}`,
    '--unsafe-no-fsync',
    '--log-level=warn',
  ]);
  plane.register('kube-apiserver', [
    `--etcd-servers=http://127.0.0.1:${etcdPort}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${apiPort}`,
    `--cert-dir=${join(dir, 'apiserver-certs')}`,
    `--tls-cert-file=${apiserverPair.cert}`,
    `--tls-private-key-file=${apiserverPair.key}`,
    `--client-ca-file=${pki.caFile}`,
    `--kubelet-client-certificate=${apiserverKubeletClient.cert}`,
    `--kubelet-client-key=${apiserverKubeletClient.key}`,
    `--service-account-key-file=${saPub}`,
    `--service-account-signing-key-file=${saKey}`,
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    '--api-audiences=https://kubernetes.default.svc.cluster.local',
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    '--endpoint-reconciler-type=none',
    '--allow-privileged=true',
    '--v=1',
    ...(options.apiServerArgs ?? []),
  ]);
  const controllerFlags = (kubeconfig: string, port: number, certDir: string): string[] => [
    `--kubeconfig=${kubeconfig}`,
    `--authentication-kubeconfig=${kubeconfig}`,
    `--authorization-kubeconfig=${kubeconfig}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${certDir}`,
    '--leader-elect=false',
    '--v=1',
  ];
  plane.register('kube-controller-manager', [
    ...controllerFlags(kcmKubeconfig, kcmPort, join(dir, 'kcm-certs')),
    `--controllers=${(options.controllers ?? CONTROLLERS).join(',')}`,
    `--service-account-private-key-file=${saKey}`,
    `--root-ca-file=${pki.caFile}`,
    '--use-service-account-credentials=true',
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
  ]);
  plane.register('kube-scheduler', controllerFlags(schedulerKubeconfig, schedulerPort, join(dir, 'scheduler-certs')));

  try {
    plane.start('etcd');
    plane.start('kube-apiserver');
    await plane.waitReady(options.readyTimeoutMs ?? 90_000);
    if (options.controllerManager !== false) plane.start('kube-controller-manager');
    if (options.scheduler !== false) plane.start('kube-scheduler');
    if (options.controllerManager !== false) await plane.waitForDefaultServiceAccount('default');
  } catch (error) {
    const logs = (['etcd', 'kube-apiserver', 'kube-controller-manager'] as const).map((c) => `--- ${c}\n${plane.tail(c, 15)}`).join('\n');
    await plane.stop();
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${logs}`, { cause: error });
  }
  return plane;
}
