/**
 * The LAB KUBELET: a stand-in, part of the lab and not of the product. There is
 * no kubelet or container runtime on these machines, so this small
 * program does for the pods bound to its Node what the kubelet does for the
 * termination timeline, and nothing more:
 *
 *   bound pod      → a network namespace and IP on the node's bridge (the CNI ADD),
 *                    the container's process started in it (image `lab/backend`:
 *                    lab/backend.ts with the container's args), the pod's readiness
 *                    probe (tcpSocket, periodSeconds) run from the node, and podIP,
 *                    phase Running and the Ready condition reported through the
 *                    pods/status subresource; the probe keeps running (a failing
 *                    probe turns Ready false, as it does during termination).
 *   deletionTimestamp set
 *                  → the container's preStop hook exactly as the API server stored
 *                    it (the `sleep` action: a timer; `exec`: the command run in the
 *                    pod's namespace), then SIGTERM, then SIGKILL at the deletion's
 *                    grace period; on exit the terminal status (Ready false,
 *                    Succeeded/Failed), the sandbox network torn down (CNI DEL), and
 *                    the pod removed with DELETE gracePeriodSeconds=0 (the status
 *                    manager's final delete).
 *
 *   lose()         → a pod lost with its node: its link cut first (no FIN or RST of its
 *                    connections gets out), then the pod force-deleted from the API
 *                    (what `kubectl delete --force` or the pod GC does for a dead node).
 *
 * Not modelled: images, restarts, liveness probes, volumes, cgroups, the 2 s
 * preStop extension, the pod lifecycle event generator's delays.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import type { ControlPlane } from '../../e2e/control-plane.ts';
import { inNs, run, spawnInNs } from '../sys.ts';
import { watch } from './watch.ts';
import type { Watch } from './watch.ts';
import { ipBatch } from './world.ts';
import type { KubeWorld } from './world.ts';

const BACKEND = new URL('../backend.ts', import.meta.url).pathname;
export const BACKEND_IMAGE = 'lab/backend';

interface Probe {
  readonly tcpSocket?: { port: number | string };
  readonly periodSeconds?: number;
  readonly failureThreshold?: number;
  readonly successThreshold?: number;
}
interface PreStop {
  readonly sleep?: { seconds: number };
  readonly exec?: { command: string[] };
  readonly httpGet?: unknown;
}
export interface KPod {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion?: string;
    deletionTimestamp?: string;
    deletionGracePeriodSeconds?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: {
    nodeName?: string;
    terminationGracePeriodSeconds?: number;
    containers: Array<{ name: string; image: string; args?: string[]; readinessProbe?: Probe; lifecycle?: { preStop?: PreStop } }>;
  };
  status?: { phase?: string; podIP?: string };
}

/** One pod's timeline, ms since the epoch. */
export interface PodTimeline {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** The pod's `app` label (which Deployment it belongs to). */
  readonly app: string;
  readonly ip: string;
  started?: number;
  ready?: number;
  deletionSeen?: number;
  /** What the API server stored: the preStop hook of the first container, and the deletion's grace. */
  preStop?: string;
  grace?: number;
  preStopDone?: number;
  sigterm?: number;
  notReady?: number;
  exit?: number;
  exitCode?: number | null;
  torndown?: number;
  removed?: number;
}

interface Runtime {
  readonly tl: PodTimeline;
  readonly netns: string;
  readonly nodeIf: string;
  child?: ChildProcess;
  exited?: Promise<void>;
  ready: boolean;
  /** Resolves when the pod is force-deleted (DELETED while it runs). */
  readonly killed: Promise<void>;
  kill: () => void;
  probeTimer?: NodeJS.Timeout;
  terminating: boolean;
  gone: boolean;
  /** Removed from the API (force-deleted): nothing more to report. */
  deleted?: boolean;
}

export class LabKubelet {
  readonly pods = new Map<string, Runtime>();
  readonly #plane: ControlPlane;
  readonly #world: KubeWorld;
  readonly #nodeName: string;
  readonly #log: (line: string) => void;
  #watch: Watch | undefined;
  readonly #work = new Set<Promise<void>>();

  constructor(plane: ControlPlane, world: KubeWorld, nodeName: string, log: (line: string) => void) {
    this.#plane = plane;
    this.#world = world;
    this.#nodeName = nodeName;
    this.#log = log;
  }

  start(): void {
    this.#watch = watch<KPod>(this.#plane, `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${this.#nodeName}`)}`, (e) => {
      const pod = e.object;
      const rt = this.pods.get(pod.metadata.uid);
      if (e.type === 'DELETED') {
        if (rt !== undefined) rt.deleted = true;
        if (rt !== undefined && !rt.gone) this.#track(this.#kill(rt));
        return;
      }
      if (rt === undefined) {
        if (pod.metadata.deletionTimestamp !== undefined || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
        // Only the lab's backend image runs here (the chart's agent pod, bound to this
        // Node for its token, is run by the lab itself as a host process).
        if (pod.spec.containers[0]?.image !== BACKEND_IMAGE) return;
        this.#track(this.#startPod(pod));
      } else if (pod.metadata.deletionTimestamp !== undefined && !rt.terminating) {
        rt.terminating = true;
        rt.tl.deletionSeen = Date.now();
        this.#track(this.#terminate(rt, pod));
      }
    });
  }

  timeline(uid: string): PodTimeline | undefined {
    return this.pods.get(uid)?.tl;
  }

  byName(namespace: string, name: string): PodTimeline | undefined {
    return [...this.pods.values()].find((r) => r.tl.namespace === namespace && r.tl.name === name)?.tl;
  }

  /**
   * The pod vanishes as with its node: link cut, then DELETE grace 0 (the DELETED
   * event kills the process). Times go into its timeline: deletionSeen = the cut.
   */
  async lose(namespace: string, name: string): Promise<PodTimeline> {
    const rt = [...this.pods.values()].find((r) => r.tl.namespace === namespace && r.tl.name === name);
    if (rt === undefined) throw new Error(`lab kubelet: no pod ${namespace}/${name}`);
    rt.terminating = true;
    rt.tl.deletionSeen = Date.now();
    rt.tl.preStop = 'none (pod lost)';
    rt.tl.grace = 0;
    clearTimeout(rt.probeTimer);
    await run('ip', ['-n', this.#world.node, 'link', 'del', rt.nodeIf]).catch(() => undefined);
    rt.tl.torndown = Date.now();
    this.#say(rt, 'lost: its link cut (nothing it sends gets out)');
    const r = await this.#plane.api('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`);
    rt.tl.removed = Date.now();
    this.#say(rt, `force-deleted from the API (DELETE grace 0: ${r.status})`);
    return rt.tl;
  }

  /** Stop watching, kill what still runs, tear every pod network down. */
  async stop(): Promise<void> {
    this.#watch?.stop();
    for (const rt of this.pods.values()) if (!rt.gone) await this.#kill(rt);
    await Promise.allSettled([...this.#work]);
  }

  #track(p: Promise<void>): void {
    const wrapped = p.catch((error: unknown) => this.#log(`lab kubelet: ${error instanceof Error ? error.message : String(error)}`));
    this.#work.add(wrapped);
    void wrapped.finally(() => this.#work.delete(wrapped));
  }

  #say(rt: Runtime, what: string): void {
    const base = rt.tl.deletionSeen;
    const at = base === undefined ? '' : ` +${((Date.now() - base) / 1000).toFixed(2)}s`;
    this.#log(`kubelet${at}: ${rt.tl.namespace}/${rt.tl.name} ${what}`);
  }

  async #status(rt: Runtime, status: Record<string, unknown>): Promise<void> {
    await this.#plane.call('PATCH', `/api/v1/namespaces/${rt.tl.namespace}/pods/${rt.tl.name}/status`, { status }, { contentType: 'application/strategic-merge-patch+json' });
  }

  #conditions(ready: boolean): Array<Record<string, string>> {
    const now = new Date().toISOString();
    const s = ready ? 'True' : 'False';
    return [
      { type: 'Initialized', status: 'True', lastTransitionTime: now },
      { type: 'ContainersReady', status: s, lastTransitionTime: now },
      { type: 'Ready', status: s, lastTransitionTime: now },
    ];
  }

  async #startPod(pod: KPod): Promise<void> {
    const { ns, ip, nodeIf } = this.#world.nextPod();
    const container = pod.spec.containers[0]!;
    let kill!: () => void;
    const killed = new Promise<void>((r) => (kill = r));
    const rt: Runtime = {
      tl: { namespace: pod.metadata.namespace, name: pod.metadata.name, uid: pod.metadata.uid, app: pod.metadata.labels?.['app'] ?? '', ip },
      netns: ns,
      nodeIf,
      ready: false,
      killed,
      kill,
      terminating: false,
      gone: false,
    };
    this.pods.set(pod.metadata.uid, rt);
    // CNI ADD: a namespace, a veth on the node's bridge, the pod IP.
    await ipBatch(undefined, [`netns add ${ns}`, `link add eth0 netns ${ns} type veth peer name ${nodeIf} netns ${this.#world.node}`]);
    await ipBatch(ns, ['link set lo up', `addr add ${ip}/24 dev eth0`, 'link set eth0 up', 'route add default via 10.244.1.1']);
    await ipBatch(this.#world.node, [`link set ${nodeIf} master cni0`, `link set ${nodeIf} up`]);
    let onReady!: () => void;
    const processReady = new Promise<void>((r) => (onReady = r));
    const child = spawnInNs(ns, [process.execPath, BACKEND, '--name', pod.metadata.name, ...(container.args ?? [])], (line) => {
      if (line.includes('"ready"')) onReady();
    });
    rt.child = child;
    rt.exited = new Promise<void>((resolve) =>
      child.once('exit', (code) => {
        rt.tl.exit = Date.now();
        rt.tl.exitCode = code;
        resolve();
      }),
    );
    rt.tl.started = Date.now();
    await Promise.race([processReady, rt.exited]);
    // Running, not yet ready: the IP is reported at once, as the kubelet does.
    await this.#status(rt, {
      phase: 'Running',
      hostIP: '127.0.0.1',
      hostIPs: [{ ip: '127.0.0.1' }],
      podIP: ip,
      podIPs: [{ ip }],
      startTime: new Date(rt.tl.started).toISOString(),
      conditions: this.#conditions(false),
    });
    this.#say(rt, `running at ${ip} in ${ns}`);
    const probe = container.readinessProbe;
    const port = probe?.tcpSocket?.port;
    const periodMs = Math.max(1, probe?.periodSeconds ?? 10) * 1000;
    const threshold = Math.max(1, probe?.failureThreshold ?? 3);
    let failures = 0;
    const check = async (): Promise<void> => {
      if (rt.gone || rt.tl.exit !== undefined) return;
      const ok = port === undefined ? true : await this.#probeTcp(ip, Number(port));
      failures = ok ? 0 : failures + 1;
      const ready = ok ? true : failures >= threshold ? false : rt.ready;
      if (ready !== rt.ready && !rt.gone && rt.tl.exit === undefined) {
        rt.ready = ready;
        if (ready) rt.tl.ready ??= Date.now();
        else rt.tl.notReady ??= Date.now();
        this.#say(rt, ready ? 'Ready (readiness probe passed)' : 'not Ready (readiness probe failed)');
        await this.#status(rt, { conditions: this.#conditions(ready) }).catch(() => undefined);
      }
    };
    await check();
    const loop = (): void => {
      rt.probeTimer = setTimeout(() => {
        void check().finally(() => {
          if (!rt.gone && rt.tl.exit === undefined) loop();
        });
      }, periodMs);
    };
    loop();
  }

  async #probeTcp(ip: string, port: number): Promise<boolean> {
    try {
      await inNs(this.#world.node, 'timeout', ['1', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${port}`], { timeoutMs: 3000 });
      return true;
    } catch {
      return false;
    }
  }

  async #terminate(rt: Runtime, pod: KPod): Promise<void> {
    const t0 = rt.tl.deletionSeen!;
    const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
    rt.tl.grace = grace;
    const killAt = t0 + grace * 1000;
    const hook = pod.spec.containers[0]?.lifecycle?.preStop;
    rt.tl.preStop = hook === undefined ? 'none' : hook.sleep !== undefined ? `sleep action ${hook.sleep.seconds}s` : hook.exec !== undefined ? `exec ${JSON.stringify(hook.exec.command)}` : 'unsupported hook';
    this.#say(rt, `deletion seen (grace ${grace}s); preStop: ${rt.tl.preStop}`);
    // The hook runs until it ends, the grace period is over, or the pod is force-deleted.
    const bounded = (p: Promise<unknown>): Promise<unknown> => Promise.race([p, rt.killed, new Promise((r) => setTimeout(r, Math.max(0, killAt - Date.now())))]);
    if (hook?.sleep !== undefined) {
      await bounded(new Promise((r) => setTimeout(r, hook.sleep!.seconds * 1000)));
    } else if (hook?.exec !== undefined) {
      const exec = spawn('nsenter', [`--net=/run/netns/${rt.netns}`, '--', ...hook.exec.command], { stdio: 'ignore' });
      await bounded(new Promise((r) => exec.once('exit', r)));
      if (exec.exitCode === null) exec.kill('SIGKILL');
    }
    if (rt.gone) return;
    if (hook !== undefined) {
      rt.tl.preStopDone = Date.now();
      this.#say(rt, 'preStop done');
    }
    if (rt.tl.exit === undefined && rt.child !== undefined) {
      rt.tl.sigterm = Date.now();
      rt.child.kill('SIGTERM');
      this.#say(rt, 'SIGTERM');
      const killTimer = setTimeout(() => {
        if (rt.tl.exit === undefined) {
          this.#say(rt, 'SIGKILL (grace period over)');
          rt.child?.kill('SIGKILL');
        }
      }, Math.max(0, killAt - Date.now()));
      await rt.exited;
      clearTimeout(killTimer);
    }
    this.#say(rt, `exited (${rt.tl.exitCode ?? 'signal'})`);
    if (rt.deleted === true) return;
    clearTimeout(rt.probeTimer);
    const now = new Date().toISOString();
    await Promise.all([
      this.#status(rt, {
        phase: rt.tl.exitCode === 0 ? 'Succeeded' : 'Failed',
        conditions: this.#conditions(false),
        containerStatuses: [
          {
            name: pod.spec.containers[0]!.name,
            image: pod.spec.containers[0]!.image,
            imageID: '',
            ready: false,
            restartCount: 0,
            started: false,
            state: { terminated: { exitCode: rt.tl.exitCode ?? 137, reason: rt.tl.exitCode === 0 ? 'Completed' : 'Error', finishedAt: now } },
          },
        ],
      }).catch((error: unknown) => this.#say(rt, `terminal status refused: ${error instanceof Error ? error.message.slice(0, 300) : String(error)}`)),
      this.#teardown(rt),
    ]);
    this.#say(rt, 'sandbox network torn down');
    // Options as query parameters: Node sends a DELETE body without Content-Length
    // unless told (ControlPlane.api() does not set it), so the server reads the body
    // as the next request on the kept-alive connection (a bare 400). No body, then,
    // and no uid precondition (the names are generated).
    const r = await this.#plane.api('DELETE', `/api/v1/namespaces/${rt.tl.namespace}/pods/${rt.tl.name}?gracePeriodSeconds=0`);
    rt.tl.removed = Date.now();
    this.#say(rt, `removed from the API (DELETE grace 0: ${r.status}${r.status >= 300 ? ` ${r.text.slice(0, 200)}` : ''})`);
  }

  async #teardown(rt: Runtime): Promise<void> {
    if (rt.gone) return;
    rt.gone = true;
    clearTimeout(rt.probeTimer);
    await run('ip', ['-n', this.#world.node, 'link', 'del', rt.nodeIf]).catch(() => undefined);
    await run('ip', ['netns', 'del', rt.netns]).catch(() => undefined);
    rt.tl.torndown ??= Date.now();
  }

  async #kill(rt: Runtime): Promise<void> {
    rt.kill();
    if (rt.child !== undefined && rt.tl.exit === undefined) {
      rt.child.kill('SIGKILL');
      await rt.exited;
    }
    await this.#teardown(rt);
  }
}
