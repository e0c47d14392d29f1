/**
 * One run of the real lab (one termination mode on one kube-proxy mode):
 *
 *   a namespace (labelled safe-termination.io/inject=enabled in the protected run),
 *   two Services (UDP 53 DNS-like + TCP 80→8080) and their Deployments: `echo`
 *   (3 replicas) and `solo` (1 replica), pods made by kube-controller-manager,
 *   admitted through the API server (and so the real webhook where the namespace
 *   opts in), bound by kube-scheduler, run by the lab kubelet; one client process
 *   per Service in the client namespace (lab/client.ts) sending all along.
 *   t0: both Deployments are scaled through their /scale subresource — echo 3→2,
 *   solo 1→0 — and kube-controller-manager picks and deletes the pods; the
 *   EndpointSlice controller and kube-proxy do the rest.
 *
 *   With cfg.lostPod (the reaper comparison), a third Service whose pod is lost at
 *   t0 with its node (see LOST_STEP).
 *
 * Measured: every client request (time, kind, outcome, answering pod), the node's
 * rules (polled: when each deleted pod's IP left them), the lab kubelet's timeline,
 * the node's conntrack table (sampled), the packets forwarded to each deleted pod's
 * IP, and (cfg.diagnose) at the end the product's `diagnose` in the node namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ControlPlane } from '../../e2e/control-plane.ts';
import { productCommand, waitFor } from '../../e2e/on-host.ts';
import { CLOSED_STATES } from '../../src/diagnose/tally.ts';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../../src/diagnose/conntrack.ts';
import { countGhosts } from '../scenario.ts';
import { conntrackList, inNs, sleep, spawnInNs } from '../sys.ts';
import type { Cleanup } from '../sys.ts';
import { BACKEND_IMAGE } from './kubelet.ts';
import type { KPod, LabKubelet, PodTimeline } from './kubelet.ts';
import type { ProxyMode, RuleWatcher } from './rules.ts';
import type { KubeWorld } from './world.ts';

export const KINDS = ['udp', 'udp-pinned', 'tcp-short', 'tcp-ka', 'tcp-stream', 'tcp-long'] as const;
export type Kind = (typeof KINDS)[number];
export const OUTCOMES = ['ok', 'refused', 'reset', 'unreachable', 'timeout', 'wrong'] as const;
export type Outcome = (typeof OUTCOMES)[number];
export const MODES = ['unprotected', 'drain-only', 'protected'] as const;
export type Mode = (typeof MODES)[number];
/** The two scale-downs of a run: which Deployment, from how many replicas to how many. */
export const STEPS = [
  { app: 'echo', label: '3→2', from: 3, to: 2 },
  { app: 'solo', label: '1→0', from: 1, to: 0 },
] as const;
/**
 * With --reaper both: a pod lost with its node (link cut, then force-deleted; its
 * ReplicaSet replaces it), the case where no FIN or RST of its connections gets out.
 * It runs alone while the clients open their flows, so that every long-lived flow
 * is on it; a second replica is up before it is lost.
 */
export const LOST_STEP = { app: 'lost', label: 'lost', from: 1, to: 2 } as const;
export type Step = (typeof STEPS)[number]['label'] | typeof LOST_STEP.label;
type StepSpec = (typeof STEPS)[number] | typeof LOST_STEP;

const CLIENT = new URL('../client.ts', import.meta.url).pathname;
const INJECT_LABEL = 'safe-termination.io/inject';
const RECORD = 'safe-termination.io/injected';

export interface KubeScenarioConfig {
  readonly udpTimeout: number;
  /** The pods' safe-termination.io/propagation-delay annotation. */
  readonly propagationDelay: string;
  /** The pods' safe-termination.io/prestop-mode annotation (auto: the native sleep action on 1.37; exec: `sleep N`). */
  readonly prestopMode: 'auto' | 'exec';
  readonly warmupMs: number;
  /** After the deleted pods are gone: long enough for a missed UDP entry to expire. */
  readonly tailMs: number;
  readonly sampleMs: number;
  readonly udpWorkers: number;
  readonly udpSessionMs: number;
  readonly pinnedUdp: number;
  readonly shortWorkers: number;
  readonly kaWorkers: number;
  readonly streamWorkers: number;
  /** tcp-long clients per Service (streams with no timeout of their own). */
  readonly longWorkers: number;
  /** Add the lost-pod step. */
  readonly lostPod: boolean;
  /** When, after a pod left the API, the reaper has swept (its hold and a margin). */
  readonly sweepAfterMs: number;
  /** Run the product's `diagnose` in the node namespace at the end. */
  readonly diagnose: boolean;
}

export interface ClientEvent {
  /** Send time (ms after the step's t0 in results) and ms to the outcome. */
  readonly t: number;
  readonly d: number;
  readonly k: Kind;
  readonly o: Outcome;
  readonly b?: string;
}

export interface StepConntrack {
  /** Entries (not TCP TIME_WAIT/CLOSE) DNATed to the deleted pod right after it left the rules. */
  readonly atRemoval: number;
  /** …when its process exited. */
  readonly atExit: number;
  /** …at the end of the run (`conntrack -L` in the node namespace). */
  readonly atEnd: number;
  /** Entries that carried packets to it after its exit. */
  readonly ghosts: number;
}

export interface StepResult {
  readonly step: Step;
  readonly pod: { readonly name: string; readonly ip: string };
  /** What the API server stored for the deleted pod (the lab kubelet ran exactly this). */
  readonly stored: { readonly preStop: string; readonly grace: number; readonly record: unknown };
  /** ms after t0 (the lab kubelet saw the deletionTimestamp); undefined: did not happen. */
  readonly timeline: {
    readonly scaled: number;
    readonly removal: number | undefined;
    readonly preStopDone: number | undefined;
    readonly sigterm: number | undefined;
    readonly notReady: number | undefined;
    readonly exit: number | undefined;
    readonly torndown: number | undefined;
    readonly removed: number | undefined;
    /** `removed` + the reaper's hold and a margin: its sweep is done by then (when it runs). */
    readonly sweep?: number | undefined;
    readonly end: number;
  };
  readonly events: readonly ClientEvent[];
  readonly conntrack: { readonly udp: StepConntrack; readonly tcp: StepConntrack };
  /**
   * Packets the node forwarded to the deleted pod's IP after its network was torn
   * down (nothing can answer them); `afterSweep`: from `sweepAfterMs` after it left
   * the API (the reaper's hold and sweep) to the end.
   */
  readonly gonePackets: { readonly udp: number; readonly tcp: number; readonly afterSweep: { readonly udp: number; readonly tcp: number } };
  /** Every conntrack sample: entries (as in StepConntrack) DNATed to the deleted pod, ms after t0 (for --plot). */
  readonly conntrackSeries: readonly { readonly t: number; readonly udp: number; readonly tcp: number }[];
}

/** `safe-termination diagnose --json` run in the node namespace at the end of a run (after the reaper's sweep). */
export interface DiagnoseSummary {
  readonly exitCode: number;
  readonly entries: number;
  readonly stale: number;
  /** Stale entries per `namespace/service protocol` of this run's namespace. */
  readonly staleByService: Readonly<Record<string, number>>;
  readonly error?: string;
}

/** One of the agent's reaper log lines for this run's namespace. */
export interface ReapLog {
  readonly time: string;
  readonly service: string;
  readonly reaped: Readonly<Record<string, number>>;
  readonly targets: readonly string[];
}

export interface KubeRunResult {
  readonly proxy: ProxyMode;
  readonly mode: Mode;
  /** The agent ran with --reap=true. */
  readonly reaper: boolean;
  readonly namespace: string;
  readonly steps: readonly StepResult[];
  readonly diagnose?: DiagnoseSummary;
  /** Filled by the caller from the agent's log. */
  readonly reaped: ReapLog[];
}

interface Sample {
  readonly at: number;
  readonly entries: readonly ConntrackEntry[];
  readonly text: string;
  /** `ip protocol` → packets forwarded to that pod IP so far (the LAB-GONE counters). */
  readonly forwarded: ReadonlyMap<string, number>;
}

/** Counting rules in the node's mangle FORWARD: packets sent on to a deleted pod's IP. */
const GONE_CHAIN = 'LAB-GONE';

async function countForwarded(node: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const text = await inNs(node, 'iptables-save', ['-c', '-t', 'mangle']).catch(() => '');
  for (const line of text.split('\n')) {
    // [pkts:bytes] -A LAB-GONE -d 10.244.1.5/32 -p udp
    const m = new RegExp(`^\\[(\\d+):\\d+\\] -A ${GONE_CHAIN} -d ([\\d.]+)/32 -p (udp|tcp)`).exec(line);
    if (m !== null) out.set(`${m[2]} ${m[3]}`, Number(m[1]));
  }
  return out;
}

async function watchForwarded(node: string, ips: readonly string[]): Promise<void> {
  await inNs(node, 'iptables', ['-w', '-t', 'mangle', '-N', GONE_CHAIN]).catch(() => '');
  const rules = await inNs(node, 'iptables', ['-w', '-t', 'mangle', '-S', 'FORWARD']);
  if (!rules.includes(`-j ${GONE_CHAIN}`)) await inNs(node, 'iptables', ['-w', '-t', 'mangle', '-I', 'FORWARD', '-j', GONE_CHAIN]);
  for (const ip of ips) for (const p of ['udp', 'tcp']) await inNs(node, 'iptables', ['-w', '-t', 'mangle', '-A', GONE_CHAIN, '-d', `${ip}/32`, '-p', p]);
}

const DIAGNOSE_TIMEOUT_MS = 60_000;

/**
 * The product's `diagnose --json` inside the node namespace, against the Services and
 * EndpointSlices the API server holds now (as `kubectl get services,endpointslices -A`).
 */
export async function diagnoseNode(plane: ControlPlane, node: string, namespace: string): Promise<DiagnoseSummary> {
  const services = await plane.call<{ items: object[] }>('GET', '/api/v1/services');
  const slices = await plane.call<{ items: object[] }>('GET', '/apis/discovery.k8s.io/v1/endpointslices');
  const file = join(plane.dir, `diagnose-${namespace}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      kind: 'List',
      items: [
        ...services.items.map((o) => ({ apiVersion: 'v1', kind: 'Service', ...o })),
        ...slices.items.map((o) => ({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', ...o })),
      ],
    }),
  );
  const [cmd, ...args] = ['nsenter', `--net=/run/netns/${node}`, '--', ...productCommand(['diagnose', '--endpointslices', file, '--json'])];
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(cmd, args, { timeout: DIAGNOSE_TIMEOUT_MS, maxBuffer: 64 << 20, encoding: 'utf8' }, (error, out, err) =>
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout: out, stderr: err }),
    );
  });
  try {
    const report = JSON.parse(stdout) as { entries: number; stale: number; groups: Array<{ namespace: string; service: string; protocol: string; stale: number }> };
    const staleByService: Record<string, number> = {};
    for (const g of report.groups) if (g.namespace === namespace && g.stale > 0) staleByService[`${g.namespace}/${g.service} ${g.protocol}`] = g.stale;
    return { exitCode: code, entries: report.entries, stale: report.stale, staleByService };
  } catch {
    return { exitCode: code, entries: 0, stale: -1, staleByService: {}, error: stderr.trim().slice(-500) || `exit ${code}` };
  }
}

function appArgs(mode: Mode): string[] {
  // drain-only and protected run the same graceful app; only the preStop differs.
  return ['--mode', mode === 'unprotected' ? 'unprotected' : 'protected', '--drain-ms', '1000', '--udp-port', '53', '--tcp-port', '8080'];
}

function deployment(app: string, replicas: number, mode: Mode, cfg: KubeScenarioConfig): unknown {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app },
    spec: {
      replicas,
      selector: { matchLabels: { app } },
      template: {
        metadata: { labels: { app }, annotations: { 'safe-termination.io/propagation-delay': cfg.propagationDelay, 'safe-termination.io/prestop-mode': cfg.prestopMode } },
        spec: {
          containers: [
            {
              name: 'app',
              image: BACKEND_IMAGE,
              args: appArgs(mode),
              ports: [
                { name: 'dns', containerPort: 53, protocol: 'UDP' },
                { name: 'http', containerPort: 8080, protocol: 'TCP' },
              ],
              readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1, failureThreshold: 1 },
            },
          ],
        },
      },
    },
  };
}

function service(app: string): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: app },
    spec: {
      selector: { app },
      ports: [
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 },
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 },
      ],
    },
  };
}

export interface RunContext {
  readonly plane: ControlPlane;
  readonly world: KubeWorld;
  readonly kubelet: LabKubelet;
  readonly rules: RuleWatcher;
  readonly proxy: ProxyMode;
  readonly cleanup: Cleanup;
  readonly log: (line: string) => void;
  /** The agent runs with --reap=true. */
  readonly reaper: boolean;
}

export async function runKubeScenario(ctx: RunContext, mode: Mode, cfg: KubeScenarioConfig): Promise<KubeRunResult> {
  const { plane, world, kubelet, rules, log } = ctx;
  const namespace = `lab-${ctx.proxy === 'iptables' ? 'ipt' : 'nft'}-${mode}${ctx.reaper ? '' : '-noreap'}`;
  const labels: Record<string, string> = mode === 'protected' ? { [INJECT_LABEL]: 'enabled' } : {};
  await plane.createNamespace(namespace, labels, 30_000);
  const vips: Record<string, string> = {};
  const runSteps: readonly StepSpec[] = cfg.lostPod ? [...STEPS, LOST_STEP] : STEPS;
  for (const step of runSteps) {
    const svc = await plane.call<{ spec: { clusterIP: string } }>('POST', `/api/v1/namespaces/${namespace}/services`, service(step.app));
    vips[step.app] = svc.spec.clusterIP;
    await plane.call('POST', `/apis/apps/v1/namespaces/${namespace}/deployments`, deployment(step.app, step.from, mode, cfg));
  }
  const children: ChildProcess[] = [];
  let sampler: NodeJS.Timeout | undefined;
  try {
    // Every pod Ready and in the node's rules.
    await waitFor(
      `${namespace}'s pods running and in kube-proxy's rules`,
      60_000,
      async () => {
        const pods = await plane.call<{ items: KPod[] }>('GET', `/api/v1/namespaces/${namespace}/pods`);
        for (const step of runSteps) {
          const ips = pods.items.filter((p) => p.metadata.labels?.['app'] === step.app && p.status?.podIP !== undefined).map((p) => p.status!.podIP!);
          if (ips.length !== step.from) return false;
          for (const port of ['dns', 'http']) {
            const inRules = rules.endpoints(`${namespace}/${step.app}:${port}`);
            if (inRules.size !== step.from || !ips.every((ip) => inRules.has(ip))) return false;
          }
        }
        return true;
      },
      () => `rules: ${JSON.stringify([...runSteps].map((s) => [...rules.endpoints(`${namespace}/${s.app}:dns`)]))}`,
    );
    const stored = await plane.call<{ items: KPod[] }>('GET', `/api/v1/namespaces/${namespace}/pods`);
    const hook = stored.items[0]?.spec.containers[0]?.lifecycle?.preStop;
    log(`${namespace}: ${stored.items.length} pods Ready and in the rules; stored preStop ${hook === undefined ? 'none' : JSON.stringify(hook)}, grace ${stored.items[0]?.spec.terminationGracePeriodSeconds}s`);

    // Clients, one per Service.
    const events: Record<string, ClientEvent[]> = {};
    const done: Promise<void>[] = [];
    for (const step of runSteps) {
      const list: ClientEvent[] = (events[step.app] = []);
      const lost = step.app === LOST_STEP.app;
      let finished!: () => void;
      done.push(new Promise<void>((r) => (finished = r)));
      const child = spawnInNs(
        world.client,
        [
          process.execPath,
          CLIENT,
          '--vip', vips[step.app]!,
          '--udp-port', '53',
          '--tcp-port', '80',
          '--duration-ms', '600000',
          // The lost pod's Service: fewer short flows (the machine has 2 shared cores).
          '--udp-workers', String(lost ? 2 : cfg.udpWorkers),
          '--udp-session-ms', String(cfg.udpSessionMs),
          '--pinned-udp', String(cfg.pinnedUdp),
          '--short-workers', String(lost ? 1 : cfg.shortWorkers),
          '--ka-workers', String(lost ? 1 : cfg.kaWorkers),
          '--stream-workers', String(cfg.streamWorkers),
          '--long-workers', String(cfg.longWorkers),
        ],
        (line) => {
          if (line.startsWith('{"t"')) list.push(JSON.parse(line) as ClientEvent);
          else if (line.includes('"done"')) finished();
        },
      );
      child.once('exit', () => finished());
      children.push(child);
    }

    // Conntrack samples of the node, serialized.
    const samples: Sample[] = [];
    let sampling: Promise<Sample | undefined> = Promise.resolve(undefined);
    const sample = (): Promise<Sample | undefined> => {
      sampling = sampling.then(async () => {
        try {
          const [text, forwarded] = await Promise.all([conntrackList(world.node), countForwarded(world.node)]);
          const s = { at: Date.now(), entries: parseConntrack(text).entries, text, forwarded };
          samples.push(s);
          return s;
        } catch {
          return undefined;
        }
      });
      return sampling;
    };
    sampler = setInterval(() => void sample(), cfg.sampleMs);

    await sleep(cfg.warmupMs);
    // t0 for the scaler: PATCH /scale, as `kubectl scale` does.
    const scaledAt = Date.now();
    // The lost pod holds every flow opened so far; now a second replica, Ready and in the rules.
    let lostVictim: string | undefined;
    if (cfg.lostPod) {
      const key = `${namespace}/${LOST_STEP.app}`;
      lostVictim = [...kubelet.pods.values()].find((r) => r.tl.namespace === namespace && r.tl.app === LOST_STEP.app)?.tl.name;
      await plane.call('PATCH', `/apis/apps/v1/namespaces/${namespace}/deployments/${LOST_STEP.app}/scale`, { spec: { replicas: LOST_STEP.to } }, { contentType: 'application/merge-patch+json' });
      await waitFor(`${key}: a second replica in the rules`, 30_000, () => ['dns', 'http'].every((port) => rules.endpoints(`${key}:${port}`).size === LOST_STEP.to));
    }
    const lose = async (): Promise<void> => {
      if (lostVictim !== undefined) await kubelet.lose(namespace, lostVictim);
    };
    await Promise.all([
      ...STEPS.map((step) =>
        plane.call('PATCH', `/apis/apps/v1/namespaces/${namespace}/deployments/${step.app}/scale`, { spec: { replicas: step.to } }, { contentType: 'application/merge-patch+json' }),
      ),
      lose(),
    ]);
    log(`${namespace}: scaled echo 3→2 and solo 1→0 (PATCH …/scale)${cfg.lostPod ? '; a lost pod cut off and force-deleted' : ''}`);

    // The deleted pods, as the lab kubelet saw them.
    const victims: Record<string, PodTimeline> = {};
    await waitFor(`${namespace}: the pods kube-controller-manager deletes`, 30_000, () => {
      for (const step of runSteps) {
        const tl = [...kubelet.pods.values()].map((r) => r.tl).find((t) => t.namespace === namespace && t.app === step.app && t.deletionSeen !== undefined);
        if (tl !== undefined) victims[step.app] = tl;
      }
      return runSteps.every((s) => victims[s.app] !== undefined);
    });
    await watchForwarded(world.node, runSteps.map((s) => victims[s.app]!.ip));
    // Wait until they are gone from the API and the rules, then the tail.
    await waitFor(
      `${namespace}: the deleted pods removed and out of the rules`,
      180_000,
      () => runSteps.every((s) => victims[s.app]!.removed !== undefined && rules.removedAt(victims[s.app]!.ip, victims[s.app]!.deletionSeen!) !== undefined),
    );
    await sleep(cfg.tailMs);
    clearInterval(sampler);
    sampler = undefined;
    const endSample = await sample();
    // While the clients still send: what the product's diagnose sees on the node.
    const diagnose = cfg.diagnose ? await diagnoseNode(plane, world.node, namespace) : undefined;
    if (diagnose !== undefined) log(`${namespace}: diagnose in the node namespace: ${diagnose.stale} stale entries of ${diagnose.entries} (exit ${diagnose.exitCode})${diagnose.error === undefined ? '' : `: ${diagnose.error}`}`);
    for (const c of children) c.kill('SIGTERM');
    await Promise.race([Promise.all(done), sleep(5000)]);
    await sampling;
    const end = Date.now();

    const steps: StepResult[] = [];
    for (const step of runSteps) {
      const tl = victims[step.app]!;
      const t0 = tl.deletionSeen!;
      const removalAt = rules.removedAt(tl.ip, t0);
      const rel = (at: number | undefined): number | undefined => (at === undefined ? undefined : at - t0);
      const nearest = (at: number | undefined): Sample | undefined => (at === undefined ? undefined : samples.find((s) => s.at >= at));
      const exitSample = nearest(tl.exit);
      const toPod = (s: Sample | undefined, protocol: 'udp' | 'tcp'): number =>
        (s?.entries ?? []).filter((e) => e.protocol === protocol && e.reply.src === tl.ip && !(e.state !== undefined && CLOSED_STATES.has(e.state))).length;
      const ct = (protocol: 'udp' | 'tcp'): StepConntrack => ({
        atRemoval: toPod(nearest(removalAt), protocol),
        atExit: toPod(exitSample, protocol),
        atEnd: toPod(endSample, protocol),
        ghosts: countGhosts(samples, exitSample, protocol, tl.ip),
      });
      const pod = stored.items.find((p) => p.metadata.uid === tl.uid);
      const recordText = pod?.metadata.annotations?.[RECORD];
      steps.push({
        step: step.label,
        pod: { name: tl.name, ip: tl.ip },
        stored: { preStop: tl.preStop ?? 'none', grace: tl.grace ?? 0, record: recordText === undefined ? null : (JSON.parse(recordText) as unknown) },
        timeline: {
          scaled: scaledAt - t0,
          removal: rel(removalAt),
          preStopDone: rel(tl.preStopDone),
          sigterm: rel(tl.sigterm),
          notReady: rel(tl.notReady),
          exit: rel(tl.exit),
          torndown: rel(tl.torndown),
          removed: rel(tl.removed),
          sweep: tl.removed === undefined ? undefined : tl.removed + cfg.sweepAfterMs - t0,
          end: end - t0,
        },
        events: events[step.app]!.map((e) => ({ ...e, t: e.t - t0 })),
        conntrack: { udp: ct('udp'), tcp: ct('tcp') },
        gonePackets: {
          ...gonePackets(samples, endSample, tl.ip, tl.torndown),
          afterSweep: gonePackets(samples, endSample, tl.ip, tl.removed === undefined ? undefined : Math.max(tl.torndown ?? 0, tl.removed + cfg.sweepAfterMs)),
        },
        conntrackSeries: samples.map((s) => ({ t: s.at - t0, udp: toPod(s, 'udp'), tcp: toPod(s, 'tcp') })),
      });
    }
    return { proxy: ctx.proxy, mode, reaper: ctx.reaper, namespace, steps, ...(diagnose === undefined ? {} : { diagnose }), reaped: [] };
  } finally {
    clearInterval(sampler);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await teardownNamespace(plane, namespace);
  }
}

/** Packets forwarded to `ip` between the first sample after `from` and `end`. */
function gonePackets(samples: readonly Sample[], end: Sample | undefined, ip: string, from: number | undefined): { udp: number; tcp: number } {
  const base = from === undefined ? undefined : samples.find((s) => s.at >= from);
  const n = (p: string): number => (base === undefined || end === undefined ? 0 : (end.forwarded.get(`${ip} ${p}`) ?? 0) - (base.forwarded.get(`${ip} ${p}`) ?? 0));
  return { udp: n('udp'), tcp: n('tcp') };
}

/** Delete the run's Deployments and force-delete its pods (the lab kubelet kills them at once), then the namespace. */
async function teardownNamespace(plane: ControlPlane, namespace: string): Promise<void> {
  // Options as query parameters (see the lab kubelet's final DELETE).
  for (const app of [...STEPS.map((s) => s.app), LOST_STEP.app]) await plane.api('DELETE', `/apis/apps/v1/namespaces/${namespace}/deployments/${app}?propagationPolicy=Orphan`);
  const sets = await plane.call<{ items: Array<{ metadata: { name: string } }> }>('GET', `/apis/apps/v1/namespaces/${namespace}/replicasets`);
  for (const rs of sets.items) await plane.api('DELETE', `/apis/apps/v1/namespaces/${namespace}/replicasets/${rs.metadata.name}?propagationPolicy=Orphan`);
  const pods = await plane.call<{ items: KPod[] }>('GET', `/api/v1/namespaces/${namespace}/pods`);
  for (const p of pods.items) await plane.api('DELETE', `/api/v1/namespaces/${namespace}/pods/${p.metadata.name}?gracePeriodSeconds=0`);
  await plane.api('DELETE', `/api/v1/namespaces/${namespace}`);
}
