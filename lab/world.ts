/**
 * The lab's little cluster, all in network namespaces it creates (and always deletes):
 *
 *   client ns  10.244.0.2 ──veth── 10.244.0.1         ┐
 *                                                     │ node ns: ip_forward, kube-proxy's
 *   pod1 ns    10.244.1.2 ──veth──┐                   │ iptables nat rules for the Service
 *   pod2 ns    10.244.1.3 ──veth──┼─ cni0 10.244.1.1  │ VIP 10.96.0.10, its own conntrack
 *   pod3 ns    10.244.1.4 ──veth──┘  (bridge)         ┘ table and sysctls
 *
 * The backends sit on a bridge as the `bridge` CNI plugin (flannel, kubenet) puts
 * pods; deleting a pod's veth is its sandbox teardown (CNI DEL), after which its IP
 * is still on-link but answers nothing — packets that a stale entry sends there
 * vanish, as in a cluster. The client is a pod in the cluster CIDR (no masquerade)
 * on a routed veth, as a pod asking CoreDNS is; it is not on the bridge, so replies
 * go back through the node's conntrack without br_netfilter. Addresses exist only
 * inside these namespaces.
 */
import { inNs, run } from './sys.ts';
import type { Cleanup } from './sys.ts';

export const NS_PREFIX = 'st-lab-';
export const CLUSTER_CIDR = '10.244.0.0/16';
export const VIP = '10.96.0.10';
export const CLIENT_IP = '10.244.0.2';
const BRIDGE_IP = '10.244.1.1';

export interface Pod {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  /** The pod's veth on the node side; deleting it is the sandbox teardown (CNI DEL). */
  readonly nodeIf: string;
}

export interface World {
  readonly client: string;
  readonly node: string;
  readonly pods: readonly Pod[];
}

/** Namespaces named st-lab-<pid>-<run>-<role>; at most 5 per run. */
export async function createWorld(pid: number, runTag: string, podCount: number, cleanup: Cleanup): Promise<World> {
  const base = `${NS_PREFIX}${pid}-${runTag}`;
  const client = `${base}-client`;
  const node = `${base}-node`;
  const pods: Pod[] = [];
  for (let i = 1; i <= podCount; i++) pods.push({ name: `b${i}`, ns: `${base}-pod${i}`, ip: `10.244.1.${i + 1}`, nodeIf: `vp${i}` });
  const all = [client, node, ...pods.map((p) => p.ns)];
  cleanup.add(`delete namespaces ${base}-*`, async () => {
    await deleteNamespaces(all);
  });
  // `ip -batch`: one process per namespace instead of one per command.
  const root = all.map((ns) => `netns add ${ns}`);
  root.push(`link add eth0 netns ${client} type veth peer name vc netns ${node}`);
  for (const pod of pods) root.push(`link add eth0 netns ${pod.ns} type veth peer name ${pod.nodeIf} netns ${node}`);
  await ipBatch(undefined, root);
  const nodeCmds = ['link set lo up', 'addr add 10.244.0.1/24 dev vc', 'link set vc up'];
  nodeCmds.push('link add cni0 type bridge', `addr add ${BRIDGE_IP}/24 dev cni0`, 'link set cni0 up');
  await ipBatch(client, podSide(`${CLIENT_IP}/24`, '10.244.0.1'));
  for (const pod of pods) {
    await ipBatch(pod.ns, podSide(`${pod.ip}/24`, BRIDGE_IP));
    nodeCmds.push(`link set ${pod.nodeIf} master cni0`, `link set ${pod.nodeIf} up`);
  }
  await ipBatch(node, nodeCmds);
  await inNs(node, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  return { client, node, pods };
}

function podSide(cidr: string, gateway: string): string[] {
  return ['link set lo up', `addr add ${cidr} dev eth0`, 'link set eth0 up', `route add default via ${gateway}`];
}

async function ipBatch(ns: string | undefined, commands: readonly string[]): Promise<void> {
  await run('ip', [...(ns === undefined ? [] : ['-n', ns]), '-batch', '-'], { input: commands.join('\n') + '\n' });
}

async function deleteNamespaces(names: readonly string[]): Promise<void> {
  const existing = new Set(await listNamespaces());
  const gone = names.filter((ns) => existing.has(ns));
  if (gone.length > 0) await ipBatch(undefined, gone.map((ns) => `netns del ${ns}`));
}

export async function listNamespaces(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Delete namespaces a killed earlier lab left behind (their pid no longer runs). */
export async function reapOrphans(): Promise<string[]> {
  const reaped: string[] = [];
  for (const ns of await listNamespaces()) {
    const m = /^st-lab-(\d+)-/.exec(ns);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    await run('ip', ['netns', 'del', ns]);
    reaped.push(ns);
  }
  return reaped;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The node's conntrack sysctls the lab sets (per namespace), and accounting for the ghost count. */
export async function setNodeConntrack(node: string, values: Readonly<Record<string, number>>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `net.netfilter.${k}=${v}`);
  await inNs(node, 'sysctl', ['-qw', ...args]);
}

/** Read the node's conntrack timeouts back, as the agent would: sysctl name → value. */
export async function readNodeSysctls(node: string, names: readonly string[]): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const name of names) {
    const text = await inNs(node, 'sysctl', ['-n', `net.netfilter.${name}`]);
    out[name] = Number(text.trim());
  }
  return out;
}
