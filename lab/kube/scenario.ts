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
 * Measured: every client request (time, kind, outcome, answering pod), the node's
 * rules (polled: when each deleted pod's IP left them), the lab kubelet's timeline,
 * and the node's conntrack table (sampled).
 */
import type { ChildProcess } from 'node:child_process';
import type { ControlPlane } from '../../e2e/control-plane.ts';
import { waitFor } from '../../e2e/on-host.ts';
import { CLOSED_STATES } from '../../src/diagnose/tally.ts';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../../src/diagnose/conntrack.ts';
import { countGhosts } from '../scenario.ts';
import { conntrackList, sleep, spawnInNs } from '../sys.ts';
import type { Cleanup } from '../sys.ts';
import { BACKEND_IMAGE } from './kubelet.ts';
import type { KPod, LabKubelet, PodTimeline } from './kubelet.ts';
import type { ProxyMode, RuleWatcher } from './rules.ts';
import type { KubeWorld } from './world.ts';

export const KINDS = ['udp', 'udp-pinned', 'tcp-short', 'tcp-ka', 'tcp-stream'] as const;
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
export type Step = (typeof STEPS)[number]['label'];

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
    readonly end: number;
  };
  readonly events: readonly ClientEvent[];
  readonly conntrack: { readonly udp: StepConntrack; readonly tcp: StepConntrack };
  /** Every conntrack sample: entries (as in StepConntrack) DNATed to the deleted pod, ms after t0 (for --plot). */
  readonly conntrackSeries: readonly { readonly t: number; readonly udp: number; readonly tcp: number }[];
}

export interface KubeRunResult {
  readonly proxy: ProxyMode;
  readonly mode: Mode;
  readonly namespace: string;
  readonly steps: readonly StepResult[];
}

interface Sample {
  readonly at: number;
  readonly entries: readonly ConntrackEntry[];
  readonly text: string;
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
}

export async function runKubeScenario(ctx: RunContext, mode: Mode, cfg: KubeScenarioConfig): Promise<KubeRunResult> {
  const { plane, world, kubelet, rules, log } = ctx;
  const namespace = `lab-${ctx.proxy === 'iptables' ? 'ipt' : 'nft'}-${mode}`;
  const labels: Record<string, string> = mode === 'protected' ? { [INJECT_LABEL]: 'enabled' } : {};
  await plane.createNamespace(namespace, labels, 30_000);
  const vips: Record<string, string> = {};
  for (const step of STEPS) {
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
        for (const step of STEPS) {
          const ips = pods.items.filter((p) => p.metadata.labels?.['app'] === step.app && p.status?.podIP !== undefined).map((p) => p.status!.podIP!);
          if (ips.length !== step.from) return false;
          for (const port of ['dns', 'http']) {
            const inRules = rules.endpoints(`${namespace}/${step.app}:${port}`);
            if (inRules.size !== step.from || !ips.every((ip) => inRules.has(ip))) return false;
          }
        }
        return true;
      },
      () => `rules: ${JSON.stringify([...STEPS].map((s) => [...rules.endpoints(`${namespace}/${s.app}:dns`)]))}`,
    );
    const stored = await plane.call<{ items: KPod[] }>('GET', `/api/v1/namespaces/${namespace}/pods`);
    const hook = stored.items[0]?.spec.containers[0]?.lifecycle?.preStop;
    log(`${namespace}: ${stored.items.length} pods Ready and in the rules; stored preStop ${hook === undefined ? 'none' : JSON.stringify(hook)}, grace ${stored.items[0]?.spec.terminationGracePeriodSeconds}s`);

    // Clients, one per Service.
    const events: Record<string, ClientEvent[]> = {};
    const done: Promise<void>[] = [];
    for (const step of STEPS) {
      const list: ClientEvent[] = (events[step.app] = []);
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
          '--udp-workers', String(cfg.udpWorkers),
          '--udp-session-ms', String(cfg.udpSessionMs),
          '--pinned-udp', String(cfg.pinnedUdp),
          '--short-workers', String(cfg.shortWorkers),
          '--ka-workers', String(cfg.kaWorkers),
          '--stream-workers', String(cfg.streamWorkers),
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
          const text = await conntrackList(world.node);
          const s = { at: Date.now(), entries: parseConntrack(text).entries, text };
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
    await Promise.all(
      STEPS.map((step) =>
        plane.call('PATCH', `/apis/apps/v1/namespaces/${namespace}/deployments/${step.app}/scale`, { spec: { replicas: step.to } }, { contentType: 'application/merge-patch+json' }),
      ),
    );
    log(`${namespace}: scaled echo 3→2 and solo 1→0 (PATCH …/scale)`);

    // The deleted pods, as the lab kubelet saw them.
    const victims: Record<string, PodTimeline> = {};
    await waitFor(`${namespace}: the pods kube-controller-manager deletes`, 30_000, () => {
      for (const step of STEPS) {
        const tl = [...kubelet.pods.values()].map((r) => r.tl).find((t) => t.namespace === namespace && t.app === step.app && t.deletionSeen !== undefined);
        if (tl !== undefined) victims[step.app] = tl;
      }
      return STEPS.every((s) => victims[s.app] !== undefined);
    });
    // Wait until they are gone from the API and the rules, then the tail.
    await waitFor(
      `${namespace}: the deleted pods removed and out of the rules`,
      180_000,
      () => STEPS.every((s) => victims[s.app]!.removed !== undefined && rules.removedAt(victims[s.app]!.ip, victims[s.app]!.deletionSeen!) !== undefined),
    );
    await sleep(cfg.tailMs);
    clearInterval(sampler);
    sampler = undefined;
    const endSample = await sample();
    for (const c of children) c.kill('SIGTERM');
    await Promise.race([Promise.all(done), sleep(5000)]);
    await sampling;
    const end = Date.now();

    const steps: StepResult[] = [];
    for (const step of STEPS) {
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
          end: end - t0,
        },
        events: events[step.app]!.map((e) => ({ ...e, t: e.t - t0 })),
        conntrack: { udp: ct('udp'), tcp: ct('tcp') },
        conntrackSeries: samples.map((s) => ({ t: s.at - t0, udp: toPod(s, 'udp'), tcp: toPod(s, 'tcp') })),
      });
    }
    return { proxy: ctx.proxy, mode, namespace, steps };
  } finally {
    clearInterval(sampler);
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await teardownNamespace(plane, namespace);
  }
}

/** Delete the run's Deployments and force-delete its pods (the lab kubelet kills them at once), then the namespace. */
async function teardownNamespace(plane: ControlPlane, namespace: string): Promise<void> {
  // Options as query parameters (see the lab kubelet's final DELETE).
  for (const step of STEPS) await plane.api('DELETE', `/apis/apps/v1/namespaces/${namespace}/deployments/${step.app}?propagationPolicy=Orphan`);
  const sets = await plane.call<{ items: Array<{ metadata: { name: string } }> }>('GET', `/apis/apps/v1/namespaces/${namespace}/replicasets`);
  for (const rs of sets.items) await plane.api('DELETE', `/apis/apps/v1/namespaces/${namespace}/replicasets/${rs.metadata.name}?propagationPolicy=Orphan`);
  const pods = await plane.call<{ items: KPod[] }>('GET', `/api/v1/namespaces/${namespace}/pods`);
  for (const p of pods.items) await plane.api('DELETE', `/api/v1/namespaces/${namespace}/pods/${p.metadata.name}?gracePeriodSeconds=0`);
  await plane.api('DELETE', `/api/v1/namespaces/${namespace}`);
}
