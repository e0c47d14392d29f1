/**
 * The product's processes on the test host, wired to a real control plane the way
 * the chart wires them in a cluster: installed with the real `helm`, running as the
 * chart's ServiceAccounts (tokens from the TokenRequest API, so with no more rights
 * than the chart grants), with the flags the chart renders into its Deployment.
 * Only the MutatingWebhookConfiguration's clientConfig is changed, to this host's
 * https://127.0.0.1:PORT/mutate and the CA of its serving certificate.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, createServer } from 'node:net';
import type { Server } from 'node:net';
import { join, resolve } from 'node:path';
import { runHelmAsync } from '../scripts/helm.ts';
import { splice } from '../test/support/splice.ts';
import type { HelmResult } from '../scripts/helm.ts';
import { freePort, kubeconfigFor, sleep } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const CHART = join(REPO_ROOT, 'charts/safe-termination');
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js');

export async function helm(plane: ControlPlane, args: readonly string[], timeoutMs = 120_000): Promise<HelmResult> {
  return runHelmAsync(args, { kubeconfig: plane.adminKubeconfig, timeoutMs });
}

/** `helm install RELEASE charts/safe-termination -n NAMESPACE --create-namespace …`; throws on failure. */
export async function installChart(plane: ControlPlane, release: string, namespace: string, extra: readonly string[] = []): Promise<void> {
  const r = await helm(plane, ['install', release, CHART, '-n', namespace, '--create-namespace', ...extra]);
  if (r.status !== 0) throw new Error(`helm install ${release} failed (${r.status}): ${r.stderr}`);
}

interface ContainerSpec {
  readonly args?: string[];
}
interface PodTemplateHolder {
  readonly spec: { template: { spec: { serviceAccountName?: string; containers: ContainerSpec[] } } };
}

/** The ServiceAccount and args of the chart's installed Deployment or DaemonSet. */
async function chartWorkload(plane: ControlPlane, namespace: string, kind: 'deployments' | 'daemonsets', component: string): Promise<{ serviceAccount: string; args: string[] }> {
  const list = await plane.call<{ items: PodTemplateHolder[] }>(
    'GET',
    `/apis/apps/v1/namespaces/${namespace}/${kind}?labelSelector=${encodeURIComponent(`app.kubernetes.io/component=${component}`)}`,
  );
  const workload = list.items[0];
  if (workload === undefined) throw new Error(`no ${component} ${kind} in ${namespace}`);
  const pod = workload.spec.template.spec;
  return { serviceAccount: pod.serviceAccountName ?? 'default', args: pod.containers[0]?.args ?? [] };
}

/** The product's CLI as a child of this process that dies with it (setpriv --pdeathsig). */
export function productCommand(args: readonly string[]): string[] {
  return ['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, CLI, ...args];
}

const OVERRIDDEN = ['--port', '--metrics-port', '--bind-address', '--tls-cert-file', '--tls-private-key-file', '--kubeconfig', '--node-name'];
const keepArg = (arg: string): boolean => !OVERRIDDEN.some((flag) => arg === flag || arg.startsWith(`${flag}=`));
/** A chart flag that `extra` sets again (`--reap=false` over the chart's `--reap=true`) is dropped. */
const notIn = (extra: readonly string[] = []) => (arg: string): boolean => !extra.some((e) => e.startsWith('--') && arg.split('=')[0] === e.split('=')[0]);

export interface HostProcess {
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** JSON log lines so far. */
  logLines(): Array<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

function track(child: ChildProcess): HostProcess {
  let out = '';
  const append = (chunk: Buffer): void => {
    out += chunk.toString('utf8');
    if (out.length > 8 << 20) out = out.slice(-(4 << 20));
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  return {
    child,
    output: () => out,
    logLines: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, unknown>];
          } catch {
            return [];
          }
        }),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface HostWebhook extends HostProcess {
  readonly port: number;
  readonly metricsPort: number;
  readonly url: string;
  readonly caPem: string;
  readonly configurationName: string;
  metrics(): Promise<string>;
}

export interface HostWebhookOptions {
  /** Flags added after the chart's. */
  readonly extraArgs?: readonly string[];
  /** Do not point the chart's MutatingWebhookConfiguration at this process. */
  readonly register?: boolean;
  readonly port?: number;
}

/** The configuration the release installed (one per release). */
export async function webhookConfigurationName(plane: ControlPlane, release: string): Promise<string> {
  const list = await plane.call<{ items: Array<{ metadata: { name: string } }> }>(
    'GET',
    `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations?labelSelector=${encodeURIComponent(`app.kubernetes.io/instance=${release}`)}`,
  );
  const name = list.items[0]?.metadata.name;
  if (name === undefined) throw new Error(`release ${release} installed no MutatingWebhookConfiguration`);
  return name;
}

/** Point the release's webhook at `url`, trusting `caPem`. */
export async function pointWebhookAt(plane: ControlPlane, configurationName: string, url: string, caPem: string): Promise<void> {
  await plane.call(
    'PATCH',
    `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${configurationName}`,
    [{ op: 'replace', path: '/webhooks/0/clientConfig', value: { url, caBundle: Buffer.from(caPem).toString('base64') } }],
    { contentType: 'application/json-patch+json' },
  );
}

/** `safe-termination serve` on this host as the chart's webhook ServiceAccount, registered with the API server. */
export async function startHostWebhook(plane: ControlPlane, release: string, namespace: string, options: HostWebhookOptions = {}): Promise<HostWebhook> {
  const { serviceAccount, args } = await chartWorkload(plane, namespace, 'deployments', 'webhook');
  const token = await plane.serviceAccountToken(namespace, serviceAccount);
  const kubeconfig = plane.writeTokenKubeconfig(`${release}-webhook.kubeconfig`, token);
  const pair = plane.issue(`${release}-webhook`, '/CN=safe-termination-e2e-webhook', 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1');
  const port = options.port ?? (await freePort());
  const metricsPort = await freePort();
  const [command, ...commandArgs] = productCommand([
    ...args.filter(keepArg),
    `--port=${port}`,
    `--metrics-port=${metricsPort}`,
    '--bind-address=127.0.0.1',
    `--tls-cert-file=${pair.cert}`,
    `--tls-private-key-file=${pair.key}`,
    `--kubeconfig=${kubeconfig}`,
    ...(options.extraArgs ?? []),
  ]);
  const child = spawn(command!, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = track(child);
  const caPem = readFileSync(plane.caFile, 'utf8');
  const url = `https://127.0.0.1:${port}/mutate`;
  await waitFor(`the webhook's /readyz on ${port}`, 30_000, async () => (await httpsStatus(`https://127.0.0.1:${port}/readyz`, caPem)) === 200, () => proc.output());
  const configurationName = await webhookConfigurationName(plane, release);
  if (options.register !== false) await pointWebhookAt(plane, configurationName, url, caPem);
  return {
    ...proc,
    port,
    metricsPort,
    url,
    caPem,
    configurationName,
    metrics: () => httpGet(`http://127.0.0.1:${metricsPort}/metrics`),
  };
}

export interface HostAgentOptions {
  readonly nodeName: string;
  /** Run inside this network namespace (its sysctls are published); it reaches the API through a bridge. */
  readonly netns?: { name: string; bridgePort: number };
  readonly extraArgs?: readonly string[];
}

/** `safe-termination agent` as the chart's agent ServiceAccount, with the chart's flags. */
export async function startHostAgent(plane: ControlPlane, namespace: string, options: HostAgentOptions): Promise<HostProcess & { metricsPort: number }> {
  const { serviceAccount, args } = await chartWorkload(plane, namespace, 'daemonsets', 'agent');
  // As the kubelet mounts it: a token bound to an agent pod on the node, so it carries
  // the node's name (the chart's ValidatingAdmissionPolicy allows only that Node).
  const pod = await plane.call<{ metadata: { name: string; uid: string } }>('POST', `/api/v1/namespaces/${namespace}/pods`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: `agent-${options.nodeName}-` },
    spec: { nodeName: options.nodeName, serviceAccountName: serviceAccount, containers: [{ name: 'agent', image: 'safe-termination:e2e' }] },
  });
  const token = await plane.serviceAccountToken(namespace, serviceAccount, { boundPod: { name: pod.metadata.name, uid: pod.metadata.uid } });
  const server = options.netns === undefined ? plane.server : `https://127.0.0.1:${options.netns.bridgePort}`;
  const kubeconfig = join(plane.dir, `agent-${options.nodeName}.kubeconfig`);
  writeFileSync(kubeconfig, kubeconfigFor(server, plane.caFile, { token }, 'agent'), { mode: 0o600 });
  const metricsPort = await freePort();
  const command = productCommand([
    ...args.filter(keepArg).filter(notIn(options.extraArgs)),
    `--node-name=${options.nodeName}`,
    `--kubeconfig=${kubeconfig}`,
    `--metrics-port=${metricsPort}`,
    '--bind-address=127.0.0.1',
    ...(options.extraArgs ?? []),
  ]);
  const child =
    options.netns === undefined
      ? spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn('ip', ['netns', 'exec', options.netns.name, ...command], { stdio: ['ignore', 'pipe', 'pipe'] });
  return { ...track(child), metricsPort };
}

/** A Unix socket on this host that forwards to the API server's loopback port (for a namespace's bridge). */
export function apiServerSocket(plane: ControlPlane, socketPath: string): Promise<Server> {
  rmSync(socketPath, { force: true });
  const server = createServer((client) => splice(client, connect(plane.apiPort, '127.0.0.1')));
  return new Promise((resolveServer, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolveServer(server));
  });
}

export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean> | boolean, detail?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
    await sleep(200);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === '' ? '' : ` (last error: ${lastError})`}${detail === undefined ? '' : `\n${detail().slice(-3000)}`}`);
}

export function httpsStatus(url: string, caPem: string): Promise<number> {
  return new Promise((resolveStatus, reject) => {
    const req = httpsRequest(url, { ca: caPem, timeout: 2000 }, (res) => {
      res.resume();
      resolveStatus(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

export function httpGet(url: string): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const req = httpRequest(url, { timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolveBody(Buffer.concat(chunks).toString('utf8')));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** The value of one Prometheus series (`name{a="b",…}` as printed), or undefined. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match === null || match[1] !== name) continue;
    const labelText = match[2] ?? '';
    if (!Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) continue;
    total = (total ?? 0) + Number(match[3]);
  }
  return total;
}
