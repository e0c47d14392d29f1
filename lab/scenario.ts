/**
 * One run of the lab: build the world, start three backends and the clients, then
 * replay a scale-down the way Kubernetes does it, measuring as it goes.
 *
 *   t0          the pod is deleted. Kubelet: protected → run the preStop sleep, then
 *               SIGTERM; unprotected and drain-only → SIGTERM at once. SIGKILL at
 *               t0 + grace. The EndpointSlice marks the endpoint terminating (serving
 *               while the process is up and not yet signalled).
 *               On SIGTERM the unprotected app exits at once; the drain-only and the
 *               protected app drain gracefully (the same app: the two runs differ only
 *               in the preStop sleep).
 *   t0 + prop   kube-proxy's sync reaches this node: the endpoint leaves the rules.
 *               With --kube-proxy-cleanup, kube-proxy's stale-UDP cleanup runs too
 *               (entries to the VIP whose target is not a *serving* endpoint), and
 *               again one propagation delay after the pod is gone.
 *   exit        the process is gone; the sandbox's network is torn down (CNI DEL).
 *   end         t0 + the plan's sleep + drain + tail, the same for every run.
 * Clients send all along. Conntrack is sampled in the node namespace throughout.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { diagnose } from '../src/diagnose/classify.ts';
import { CLOSED_STATES } from '../src/diagnose/tally.ts';
import { flowKey, parseConntrack } from '../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../src/diagnose/conntrack.ts';
import { buildServiceIndex } from '../src/diagnose/endpoints.ts';
import { JUMP_RULES, natRestore, udpCleanupArgs } from './kube-proxy.ts';
import type { LabService } from './kube-proxy.ts';
import { conntrackList, inNs, run, sleep, spawnInNs } from './sys.ts';
import type { Cleanup } from './sys.ts';
import { CLUSTER_CIDR, createWorld, setNodeConntrack, VIP } from './world.ts';
import type { Pod, World } from './world.ts';

export const KINDS = ['udp', 'udp-pinned', 'tcp-ka', 'tcp-short'] as const;
export type Kind = (typeof KINDS)[number];
export const OUTCOMES = ['ok', 'refused', 'reset', 'unreachable', 'timeout', 'wrong'] as const;
export type Outcome = (typeof OUTCOMES)[number];
/** before-deletion: t < t0; before-removal: the rules still send new flows to the pod; after-removal: only conntrack entries can. */
export const PHASES = ['before-deletion', 'before-removal', 'after-removal'] as const;
export type Phase = (typeof PHASES)[number];

export interface ScenarioConfig {
  readonly udpTimeout: number;
  readonly udpTimeoutStream: number;
  /** kube-proxy's actual delay on this node, ms. */
  readonly propagationMs: number;
  readonly warmupMs: number;
  readonly tailMs: number;
  /** Time the protected app takes at most to drain keep-alive connections after SIGTERM. */
  readonly drainMs: number;
  /** From the process's exit to the sandbox's network teardown (kubelet notices, CNI DEL). */
  readonly teardownMs: number;
  readonly sampleMs: number;
  readonly kubeProxyCleanup: boolean;
  readonly pinnedUdp: number;
  readonly udpSessionMs: number;
  readonly udpWorkers: number;
  readonly kaWorkers: number;
  readonly shortWorkers: number;
  readonly saveDir: string | undefined;
}

/**
 * unprotected: exits on SIGTERM at once, no preStop sleep; drain-only: drains
 * gracefully on SIGTERM, no preStop sleep (a well-written app without this
 * product); protected: the same graceful app with the plan's preStop sleep.
 */
export const MODES = ['unprotected', 'drain-only', 'protected'] as const;
export type Mode = (typeof MODES)[number];

export interface Termination {
  readonly mode: Mode;
  /** The preStop sleep before SIGTERM (0: SIGTERM at the deletion). */
  readonly sleepSeconds: number;
  readonly graceSeconds: number;
}

export interface ClientEvent {
  /** Send time (ms; after t0 in results) and milliseconds until the outcome. */
  readonly t: number;
  readonly d: number;
  readonly k: Kind;
  readonly o: Outcome;
  readonly b?: string;
}

/** Entry counts leave out TCP TIME_WAIT/CLOSE entries: a new connection replaces them. */
export interface ProtocolConntrack {
  /** Entries whose DNAT target was the removed backend right after the rules dropped it. */
  readonly atRemoval: number;
  /** …of which `diagnose` calls stale (target not serving) and draining (terminating, still serving). */
  readonly staleAtRemoval: number;
  readonly drainingAtRemoval: number;
  /** Entries to it at the moment its process exited. */
  readonly atExit: number;
  /** Entries that carried packets to it after it was gone (new, or more packets; TCP: new or ESTABLISHED). */
  readonly ghosts: number;
}

export interface RunResult {
  readonly mode: Termination['mode'];
  readonly sleepSeconds: number;
  readonly graceSeconds: number;
  readonly removed: { readonly name: string; readonly ip: string };
  /** Milliseconds after t0. */
  readonly timeline: { readonly removal: number; readonly sigterm: number; readonly exit: number; readonly end: number; readonly cleanups: readonly number[] };
  readonly events: readonly ClientEvent[];
  readonly conntrack: { readonly udp: ProtocolConntrack; readonly tcp: ProtocolConntrack };
  readonly samples: number;
  /** Every conntrack sample: entries (as in ProtocolConntrack) DNATed to the removed backend, ms after t0 (for --plot). */
  readonly conntrackSeries?: readonly { readonly t: number; readonly udp: number; readonly tcp: number }[];
}

const SERVICE: LabService = {
  namespace: 'lab',
  name: 'echo',
  clusterCIDR: CLUSTER_CIDR,
  ports: [
    { portName: 'lab/echo:dns', protocol: 'udp', clusterIP: VIP, port: 53, targetPort: 53 },
    { portName: 'lab/echo:http', protocol: 'tcp', clusterIP: VIP, port: 80, targetPort: 8080 },
  ],
};

const BACKEND = new URL('./backend.ts', import.meta.url).pathname;
const CLIENT = new URL('./client.ts', import.meta.url).pathname;

interface Backend {
  readonly pod: Pod;
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<number>;
}

function startBackend(pod: Pod, mode: Mode, drainMs: number): Backend {
  let onReady!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const child = spawnInNs(pod.ns, [process.execPath, BACKEND, '--name', pod.name, '--mode', mode, '--drain-ms', String(drainMs)], (line) => {
    if (line.includes('"ready"')) onReady();
  });
  const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(Date.now())));
  return { pod, child, ready, exited };
}

/** Kill a child on cleanup too (Ctrl-C, failure), before its namespace goes. */
function reap(cleanup: Cleanup, name: string, child: ChildProcess): void {
  const running = () => child.exitCode === null && child.signalCode === null;
  const exited = new Promise<void>((resolve) => (running() ? child.once('exit', () => resolve()) : resolve()));
  cleanup.add(`stop ${name}`, async () => {
    if (running()) child.kill('SIGKILL');
    // Wait up to 2s for the exit; a pending timer would keep the lab alive that long.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
  });
}

/** kube-proxy on the node: full syncs with iptables-restore, optional stale-UDP cleanup. */
class KubeProxy {
  readonly #node: string;
  #chains = new Set<string>();
  constructor(node: string) {
    this.#node = node;
  }
  async sync(endpointIps: readonly string[]): Promise<void> {
    const { text, chains } = natRestore(SERVICE, endpointIps, this.#chains);
    await inNs(this.#node, 'iptables-restore', ['--noflush'], { input: text });
    if (this.#chains.size === 0) for (const rule of JUMP_RULES) await inNs(this.#node, 'iptables', ['-w', ...rule]);
    this.#chains = chains;
  }
  /** pkg/proxy/conntrack/cleanup.go: UDP entries to the VIP whose reply source is not a serving endpoint. */
  async cleanStaleUdp(servingIps: readonly string[]): Promise<number> {
    const { entries } = parseConntrack(await conntrackList(this.#node, 'udp'));
    const stale = new Set(entries.filter((e) => e.original.dst === VIP && e.reply.src !== VIP && !servingIps.includes(e.reply.src)).map((e) => e.reply.src));
    let deleted = 0;
    for (const ip of stale) {
      try {
        await inNs(this.#node, 'conntrack', udpCleanupArgs(VIP, ip));
        deleted++;
      } catch {
        // "0 flow entries have been deleted": they expired meanwhile.
      }
    }
    return deleted;
  }
}

/** The lab's EndpointSlice at a moment, as `kubectl get services,endpointslices -o json` would show it. */
function endpointsDump(pods: readonly Pod[], victim: Pod, victimState: 'ready' | 'terminating-serving' | 'terminating' | 'gone'): unknown {
  const endpoints = pods
    .filter((p) => p !== victim || victimState !== 'gone')
    .map((p) => ({
      addresses: [p.ip],
      conditions:
        p !== victim || victimState === 'ready'
          ? { ready: true, serving: true, terminating: false }
          : { ready: false, serving: victimState === 'terminating-serving', terminating: true },
      targetRef: { kind: 'Pod', namespace: 'lab', name: `echo-6f7c9d-${p.name}` },
    }));
  return {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { namespace: 'lab', name: 'echo' },
        spec: {
          type: 'ClusterIP',
          clusterIP: VIP,
          clusterIPs: [VIP],
          ports: [
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 },
            { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 },
          ],
        },
      },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { namespace: 'lab', name: 'echo-x7k2p', labels: { 'kubernetes.io/service-name': 'echo' } },
        addressType: 'IPv4',
        ports: [
          { name: 'dns', protocol: 'UDP', port: 53 },
          { name: 'http', protocol: 'TCP', port: 8080 },
        ],
        endpoints,
      },
    ],
  };
}

interface Sample {
  readonly at: number;
  readonly entries: readonly ConntrackEntry[];
  readonly text: string;
}

export async function runScenario(cfg: ScenarioConfig, term: Termination, timelineSleepMs: number, cleanup: Cleanup, log: (line: string) => void): Promise<RunResult> {
  const tag = ({ unprotected: 'u', 'drain-only': 'd', protected: 'p' } as const)[term.mode];
  const world: World = await createWorld(process.pid, tag, 3, cleanup);
  const victim = world.pods[0]!;
  const others = world.pods.slice(1);
  const backends: Backend[] = [];
  let client: ChildProcess | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    await setNodeConntrack(world.node, {
      nf_conntrack_udp_timeout: cfg.udpTimeout,
      nf_conntrack_udp_timeout_stream: cfg.udpTimeoutStream,
      nf_conntrack_acct: 1,
    });
    const kubeProxy = new KubeProxy(world.node);
    await kubeProxy.sync(world.pods.map((p) => p.ip));

    for (const pod of world.pods) {
      const backend = startBackend(pod, term.mode, cfg.drainMs);
      reap(cleanup, pod.name, backend.child);
      backends.push(backend);
    }
    await withTimeout(Promise.all(backends.map((b) => b.ready)), 15_000, 'backends did not start');
    const victimBackend = backends[0]!;

    // Clients.
    const events: ClientEvent[] = [];
    let clientDone!: () => void;
    const clientFinished = new Promise<void>((r) => (clientDone = r));
    const totalMs = cfg.warmupMs + timelineSleepMs + cfg.drainMs + cfg.tailMs;
    client = spawnInNs(
      world.client,
      [
        process.execPath,
        CLIENT,
        '--vip', VIP,
        '--duration-ms', String(totalMs + 10_000),
        '--udp-workers', String(cfg.udpWorkers),
        '--udp-session-ms', String(cfg.udpSessionMs),
        '--pinned-udp', String(cfg.pinnedUdp),
        '--ka-workers', String(cfg.kaWorkers),
        '--short-workers', String(cfg.shortWorkers),
      ],
      (line) => {
        if (line.startsWith('{"t"')) events.push(JSON.parse(line) as ClientEvent);
        else if (line.includes('"done"')) clientDone();
      },
    );
    client.once('exit', () => clientDone());
    reap(cleanup, 'client', client);

    // Conntrack sampling, serialized.
    const samples: Sample[] = [];
    let sampling: Promise<Sample | undefined> = Promise.resolve(undefined);
    const sample = (): Promise<Sample | undefined> => {
      sampling = sampling.then(async () => {
        try {
          const text = await conntrackList(world.node);
          const s = { at: Date.now(), entries: parseConntrack(text).entries, text };
          samples.push(s);
          return s;
        } catch (error) {
          log(`conntrack sample failed: ${error instanceof Error ? error.message : String(error)}`);
          return undefined;
        }
      });
      return sampling;
    };

    await sleep(cfg.warmupMs);
    const t0 = Date.now();
    const end = t0 + timelineSleepMs + cfg.drainMs + cfg.tailMs;
    sampler = setInterval(() => void sample(), cfg.sampleMs);
    log(`${term.mode}: t0 — pod ${victim.name} (${victim.ip}) deleted`);

    // Kubelet.
    // Serving until SIGTERM: through the preStop sleep if there is one.
    let victimState: 'terminating-serving' | 'terminating' | 'gone' = term.sleepSeconds > 0 ? 'terminating-serving' : 'terminating';
    let sigtermAt = 0;
    let exitAt = 0;
    let exitSample: Sample | undefined;
    const cleanups: number[] = [];
    const kubelet = (async () => {
      if (term.sleepSeconds > 0) await sleep(term.sleepSeconds * 1000);
      sigtermAt = Date.now();
      victimState = 'terminating';
      victimBackend.child.kill('SIGTERM');
      const killTimer = setTimeout(() => victimBackend.child.kill('SIGKILL'), Math.max(0, t0 + term.graceSeconds * 1000 - Date.now()));
      exitAt = await victimBackend.exited;
      clearTimeout(killTimer);
      exitSample = await sample();
      victimState = 'gone';
      log(`${term.mode}: +${((exitAt - t0) / 1000).toFixed(1)}s — ${victim.name} exited`);
      await sleep(Math.max(0, exitAt + cfg.teardownMs - Date.now()));
      await run('ip', ['-n', world.node, 'link', 'del', victim.nodeIf]); // sandbox teardown (CNI DEL)
      log(`${term.mode}: +${((Date.now() - t0) / 1000).toFixed(1)}s — ${victim.name}'s sandbox network torn down`);
    })();

    // kube-proxy on this node.
    let removalAt = 0;
    let removalSample: Sample | undefined;
    let removalState: typeof victimState = victimState;
    const proxy = (async () => {
      await sleep(cfg.propagationMs);
      await kubeProxy.sync(others.map((p) => p.ip));
      if (cfg.kubeProxyCleanup) {
        await kubeProxy.cleanStaleUdp(victimState === 'terminating-serving' ? world.pods.map((p) => p.ip) : others.map((p) => p.ip));
        cleanups.push(Date.now() - t0);
      }
      removalAt = Date.now();
      removalState = victimState;
      removalSample = await sample();
      log(`${term.mode}: +${((removalAt - t0) / 1000).toFixed(1)}s — kube-proxy removed ${victim.name} from the rules${cfg.kubeProxyCleanup ? ' and cleaned stale UDP entries' : ' (stale UDP entries missed)'}`);
      if (cfg.kubeProxyCleanup) {
        // The next sync after the endpoint stops serving cleans its entries.
        await kubelet;
        if (exitAt + cfg.propagationMs > removalAt) {
          await sleep(Math.max(0, exitAt + cfg.propagationMs - Date.now()));
          await kubeProxy.cleanStaleUdp(others.map((p) => p.ip));
          cleanups.push(Date.now() - t0);
        }
      }
    })();

    await Promise.all([kubelet, proxy]);
    await sleep(Math.max(0, end - Date.now()));
    clearInterval(sampler);
    sampler = undefined;
    client.kill('SIGTERM');
    await withTimeout(clientFinished, 5000, 'client did not stop');
    await sampling;
    const finishedAt = Date.now();

    if (cfg.saveDir !== undefined) {
      await mkdir(cfg.saveDir, { recursive: true });
      const dump = (state: typeof victimState) => JSON.stringify(endpointsDump(world.pods, victim, state), null, 2) + '\n';
      await writeFile(join(cfg.saveDir, `${term.mode}-conntrack-at-removal.txt`), removalSample?.text ?? '');
      await writeFile(join(cfg.saveDir, `${term.mode}-endpoints-at-removal.json`), dump(removalState));
      await writeFile(join(cfg.saveDir, `${term.mode}-conntrack-at-exit.txt`), exitSample?.text ?? '');
    }

    const index = buildServiceIndex((endpointsDump(world.pods, victim, removalState) as { items: unknown[] }).items);
    const report = diagnose(removalSample?.entries ?? [], index);
    const ct = (protocol: 'udp' | 'tcp'): ProtocolConntrack => {
      const toVictim = (s: Sample | undefined) =>
        (s?.entries ?? []).filter((e) => e.protocol === protocol && e.reply.src === victim.ip && !(e.state !== undefined && CLOSED_STATES.has(e.state)));
      const group = report.groups.find((g) => g.protocol === protocol);
      const staleToVictim = group?.staleTargets.filter((t) => t.target.startsWith(`${victim.ip}:`)).reduce((n, t) => n + t.entries, 0) ?? 0;
      return {
        atRemoval: toVictim(removalSample).length,
        staleAtRemoval: staleToVictim,
        drainingAtRemoval: group?.draining ?? 0,
        atExit: toVictim(exitSample).length,
        ghosts: countGhosts(samples, exitSample, protocol, victim.ip),
      };
    };
    return {
      mode: term.mode,
      sleepSeconds: term.sleepSeconds,
      graceSeconds: term.graceSeconds,
      removed: { name: victim.name, ip: victim.ip },
      timeline: { removal: removalAt - t0, sigterm: sigtermAt - t0, exit: exitAt - t0, end: finishedAt - t0, cleanups },
      events: events.map((e) => ({ ...e, t: e.t - t0 })),
      conntrack: { udp: ct('udp'), tcp: ct('tcp') },
      samples: samples.length,
      conntrackSeries: samples.map((s) => {
        const count = (protocol: 'udp' | 'tcp'): number =>
          s.entries.filter((e) => e.protocol === protocol && e.reply.src === victim.ip && !(e.state !== undefined && CLOSED_STATES.has(e.state))).length;
        return { t: s.at - t0, udp: count('udp'), tcp: count('tcp') };
      }),
    };
  } finally {
    clearInterval(sampler);
    client?.kill('SIGKILL');
    for (const b of backends) b.child.kill('SIGKILL');
    await cleanup.run();
  }
}

/**
 * Entries that carried traffic to the backend after its exit: entries first seen
 * after the exit sample, or whose original-direction packet count grew (UDP), or
 * that stayed ESTABLISHED and grew (TCP: a FIN/ACK teardown is not traffic).
 */
export function countGhosts(samples: readonly Sample[], exitSample: Sample | undefined, protocol: string, ip: string): number {
  if (exitSample === undefined) return 0;
  const baseline = new Map<string, number>();
  for (const e of exitSample.entries) if (e.protocol === protocol && e.reply.src === ip) baseline.set(flowKey(e), e.original.packets ?? 0);
  const ghosts = new Set<string>();
  for (const s of samples) {
    if (s.at <= exitSample.at) continue;
    for (const e of s.entries) {
      if (e.protocol !== protocol || e.reply.src !== ip) continue;
      const key = flowKey(e);
      const before = baseline.get(key);
      const grew = before !== undefined && (e.original.packets ?? 0) > before;
      if (before === undefined || (grew && (protocol !== 'tcp' || e.state === 'ESTABLISHED'))) ghosts.add(key);
    }
  }
  return ghosts.size;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} within ${ms / 1000}s`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

