/**
 * The real lab's node, in network namespaces the lab creates and deletes (the same
 * topology as ../world.ts):
 *
 *   client ns  10.244.0.2 ──veth── 10.244.0.1         ┐ node ns: ip_forward, the REAL kube-proxy
 *                                                     │ (its own kubeconfig, iptables or nftables
 *   pod ns     10.244.1.N ──veth──┬─ cni0 10.244.1.1  │ mode), the real safe-termination agent,
 *   (one per pod, made by the     │  (bridge)         │ its own conntrack table and sysctls;
 *    lab kubelet, deleted with it)┘                   ┘ reaches the API server over a Unix socket
 *
 * Namespaces are named st-lab-<pid>-<tag>-*; at most 2 + the pods alive at once.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createWriteStream, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { kubeconfigFor } from '../../e2e/control-plane.ts';
import type { ControlPlane } from '../../e2e/control-plane.ts';
import { apiServerSocket } from '../../e2e/on-host.ts';
import { inNs, run } from '../sys.ts';
import type { Cleanup } from '../sys.ts';
import { NS_PREFIX } from '../world.ts';
import type { ProxyMode } from './rules.ts';

export const CLUSTER_CIDR = '10.244.0.0/16';
export const CLIENT_IP = '10.244.0.2';
const BRIDGE_IP = '10.244.1.1';
const NETNS_BRIDGE = new URL('../../test/support/netns-bridge.ts', import.meta.url).pathname;

export interface KubeWorld {
  readonly base: string;
  readonly node: string;
  readonly client: string;
  /** The API server's address inside the node namespace. */
  readonly apiServer: string;
  /** Allocate the next pod IP and a namespace name for it. */
  nextPod(): { ns: string; ip: string; nodeIf: string };
}

export async function ipBatch(ns: string | undefined, commands: readonly string[]): Promise<void> {
  await run('ip', [...(ns === undefined ? [] : ['-n', ns]), '-batch', '-'], { input: commands.join('\n') + '\n' });
}

async function deleteNamespacesWithPrefix(prefix: string): Promise<void> {
  const out = await run('ip', ['netns', 'list']);
  const names = out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(prefix));
  if (names.length > 0) await ipBatch(undefined, names.map((n) => `netns del ${n}`));
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  return exited.finally(() => clearTimeout(timer));
}

/** Node + client namespaces, the API bridge into the node; everything deleted by `cleanup`. */
export async function createKubeWorld(plane: ControlPlane, tag: string, cleanup: Cleanup): Promise<KubeWorld> {
  const base = `${NS_PREFIX}${process.pid}-${tag}`;
  const node = `${base}-node`;
  const client = `${base}-client`;
  cleanup.add(`delete namespaces ${base}-*`, () => deleteNamespacesWithPrefix(`${base}-`));
  await ipBatch(undefined, [`netns add ${node}`, `netns add ${client}`, `link add eth0 netns ${client} type veth peer name vc netns ${node}`]);
  await ipBatch(node, ['link set lo up', 'addr add 10.244.0.1/24 dev vc', 'link set vc up', 'link add cni0 type bridge', `addr add ${BRIDGE_IP}/24 dev cni0`, 'link set cni0 up']);
  await ipBatch(client, ['link set lo up', `addr add ${CLIENT_IP}/24 dev eth0`, 'link set eth0 up', 'route add default via 10.244.0.1']);
  await inNs(node, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  // The API server (host loopback) on the node's loopback: Unix socket + bridge.
  const socketPath = join(plane.dir, `api-${tag}.sock`);
  const server: Server = await apiServerSocket(plane, socketPath);
  cleanup.add('close the API socket', () => new Promise<void>((r) => server.close(() => r())));
  const bridge = spawn('nsenter', [`--net=/run/netns/${node}`, '--', 'setpriv', '--pdeathsig', 'KILL', '--', process.execPath, NETNS_BRIDGE, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.add('stop the API bridge', () => stopChild(bridge));
  const port = await new Promise<number>((resolve, reject) => {
    bridge.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    bridge.once('exit', (code) => reject(new Error(`netns-bridge exited ${code}`)));
  });
  let n = 1;
  return {
    base,
    node,
    client,
    apiServer: `https://127.0.0.1:${port}`,
    nextPod() {
      n++;
      if (n > 254) throw new Error('the lab ran out of pod IPs');
      return { ns: `${base}-p${n}`, ip: `10.244.1.${n}`, nodeIf: `vp${n}` };
    },
  };
}

export async function setConntrackSysctls(node: string, values: Readonly<Record<string, number>>): Promise<void> {
  await inNs(node, 'sysctl', ['-qw', ...Object.entries(values).map(([k, v]) => `net.netfilter.${k}=${v}`)]);
}

export interface KubeProxyProcess {
  readonly child: ChildProcess;
  readonly logFile: string;
}

/**
 * The real kube-proxy (the binary `npm run kube:build` caches) in the node
 * namespace, as system:kube-proxy (bound to system:node-proxier by the bootstrap RBAC).
 */
export async function startKubeProxy(plane: ControlPlane, world: KubeWorld, nodeName: string, mode: ProxyMode, cleanup: Cleanup): Promise<KubeProxyProcess> {
  const pair = plane.issue(`kube-proxy-${world.base}`, '/CN=system:kube-proxy', 'extendedKeyUsage=clientAuth');
  const kubeconfig = join(plane.dir, `kube-proxy-${mode}.kubeconfig`);
  writeFileSync(kubeconfig, kubeconfigFor(world.apiServer, plane.caFile, { clientCertificate: pair.cert, clientKey: pair.key }, 'kube-proxy'));
  const logFile = join(plane.dir, 'logs', `kube-proxy-${mode}.log`);
  const child = spawn(
    'nsenter',
    [
      `--net=/run/netns/${world.node}`,
      '--',
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      join(plane.binDir, 'kube-proxy'),
      `--kubeconfig=${kubeconfig}`,
      `--hostname-override=${nodeName}`,
      `--proxy-mode=${mode}`,
      `--cluster-cidr=${CLUSTER_CIDR}`,
      '--conntrack-max-per-core=0',
      '--metrics-bind-address=127.0.0.1:10249',
      '--healthz-bind-address=127.0.0.1:10256',
      '--v=2',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log = createWriteStream(logFile);
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  cleanup.add(`stop kube-proxy (${mode})`, () => stopChild(child));
  return { child, logFile };
}
