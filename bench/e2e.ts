/**
 * `npm run bench -- --e2e`: what the webhook adds to pod creation on a real API
 * server (the bar: under 2 ms on the p99 at 100 pods/s, against the same API server
 * without it).
 *
 * One control plane (e2e/control-plane.ts: etcd, kube-apiserver,
 * kube-controller-manager; kube-scheduler only with --scheduler), a few Node
 * objects, the chart installed with its default values, `safe-termination serve`
 * on this host as the chart's ServiceAccount, the chart's
 * MutatingWebhookConfiguration pointed at it (e2e/on-host.ts). Bare pods are then
 * POSTed to one namespace labelled safe-termination.io/inject=enabled, open loop
 * at fixed rates, by a client in this process (keep-alive HTTPS, the admin's client
 * certificate). Latency counts from the moment a creation was due to the end of
 * the API server's answer.
 *
 * Two arms:
 *   webhook  pods the webhook is called for: every answer must be 201 and carry
 *            the safe-termination.io/injected annotation;
 *   none     the same pods with the label safe-termination.io/inject=disabled,
 *            which the chart's objectSelector excludes: the API server evaluates
 *            the webhook's selectors and does not call it. Everything else (the
 *            namespace, the configuration, the client's connections, etcd's
 *            content) is the same; every answer must be 201 without the annotation.
 * Within a round the arms alternate every --block seconds (1 by default) in one
 * stream at the full rate, so that other work on a shared VM lands on both alike;
 * with --block 0 a round is one arm and the rounds alternate ABBA…. After each
 * round every pod is deleted (deletecollection, grace 0), etcd compacted and the
 * cluster left to settle, so each round starts from the same etcd size.
 *
 * Also run as `node bench/e2e.ts` (needs `npm run build` and `npm run kube:build`).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { sleep, startControlPlane } from '../e2e/control-plane.ts';
import type { ControlPlane } from '../e2e/control-plane.ts';
import { installChart, startHostWebhook } from '../e2e/on-host.ts';
import type { HostWebhook } from '../e2e/on-host.ts';
import { Latencies, percentile } from './load.ts';
import { load1, sampleProcess, uptimeLine } from './proc.ts';

export const E2E_HELP = `npm run bench -- --e2e [flags]     (or: node bench/e2e.ts [flags])

Pod creation on a real API server (built by \`npm run kube:build\`), with and without
the webhook, interleaved; prints p50/p99/max of each, the p99 difference and the
verdict against the bar (the webhook adds < 2 ms to the p99 at 100 pods/s).

  --rates 50,100,200   pods per second, open loop (default 50,100,200)
  --seconds S          length of each measured round (default 20)
  --rounds N           measured rounds per rate (default 3)
  --block S            within a round, the arms alternate every S seconds (default 1);
                       0: a round is one arm, rounds alternate ABBA… (then --rounds per arm)
  --warmup S           unmeasured seconds before a rate's rounds (default 4)
  --settle S           pause after the pods of a round are deleted (default 2)
  --quiet CORES        before each round, wait (up to --quiet-wait S, default 120) until
                       the machine kept fewer than CORES cores busy for 1 s (default 0: off)
  --max-others CORES   a round during which processes other than the control plane, the
                       webhook and this one kept more cores busy is measured again, up to
                       --retries N times (default 0: off; retries 2)
  --nodes N            Node objects to create (default 3)
  --scheduler          also run kube-scheduler (binds every pod: one more write per pod)
  --json FILE          write every figure as JSON
  --help               this text
`;

const NAMESPACE = 'st-bench';
const RELEASE = 'safe-termination';
const RELEASE_NAMESPACE = 'safe-termination';
const INJECTED = 'safe-termination.io/injected';
const BAR_RATE = 100;
const BAR_MS = 2;

const ARMS = ['webhook', 'none'] as const;
type Arm = (typeof ARMS)[number];

interface Options {
  readonly rates: readonly number[];
  readonly seconds: number;
  readonly rounds: number;
  readonly block: number;
  readonly warmup: number;
  readonly settle: number;
  readonly quiet: number;
  readonly quietWait: number;
  readonly maxOthers: number;
  readonly retries: number;
  readonly nodes: number;
  readonly scheduler: boolean;
  readonly json: string | undefined;
}

function parseOptions(argv: readonly string[]): Options | undefined {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      rates: { type: 'string', default: '50,100,200' },
      seconds: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '3' },
      block: { type: 'string', default: '1' },
      warmup: { type: 'string', default: '4' },
      settle: { type: 'string', default: '2' },
      quiet: { type: 'string', default: '0' },
      'quiet-wait': { type: 'string', default: '120' },
      'max-others': { type: 'string', default: '0' },
      retries: { type: 'string', default: '2' },
      nodes: { type: 'string', default: '3' },
      scheduler: { type: 'boolean', default: false },
      json: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return undefined;
  const number = (name: string, text: string, { integer = false, zero = false } = {}): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !zero) || (integer && !Number.isInteger(n))) {
      throw new Error(`--${name}: expected a ${zero ? 'non-negative' : 'positive'} ${integer ? 'integer' : 'number'}, got ${text}`);
    }
    return n;
  };
  const options: Options = {
    rates: values.rates.split(',').map((r) => number('rates', r)),
    seconds: number('seconds', values.seconds),
    rounds: number('rounds', values.rounds, { integer: true }),
    block: number('block', values.block, { zero: true }),
    warmup: number('warmup', values.warmup, { zero: true }),
    settle: number('settle', values.settle, { zero: true }),
    quiet: number('quiet', values.quiet, { zero: true }),
    quietWait: number('quiet-wait', values['quiet-wait'], { zero: true }),
    maxOthers: number('max-others', values['max-others'], { zero: true }),
    retries: number('retries', values.retries, { integer: true, zero: true }),
    nodes: number('nodes', values.nodes, { integer: true }),
    scheduler: values.scheduler,
    json: values.json,
  };
  for (const rate of options.rates) {
    if (options.block > 0 && rate * options.block < 1) throw new Error(`--block ${options.block}: less than one pod per block at ${rate} pods/s`);
  }
  return options;
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '–');
const signed = (x: number): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(2)}` : '–');
const median = (xs: readonly number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length === 0 ? Number.NaN : sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const spread = (xs: readonly number[]): number => (xs.length === 0 ? Number.NaN : Math.max(...xs) - Math.min(...xs));

/** A bare pod as a person or a controller posts it: one container with ports, resources, a probe. */
function podBody(name: string, arm: Arm): Buffer {
  const labels: Record<string, string> = { app: 'bench', 'bench.safe-termination.io/arm': arm };
  if (arm === 'none') labels['safe-termination.io/inject'] = 'disabled';
  return Buffer.from(
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, labels },
      spec: {
        containers: [
          {
            name: 'app',
            image: 'registry.k8s.io/e2e-test-images/agnhost:2.53',
            args: ['netexec', '--http-port=8080'],
            ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
            env: [{ name: 'LOG_LEVEL', value: 'info' }],
            resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '64Mi' } },
            readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 5 },
          },
        ],
      },
    }),
  );
}

interface Client {
  readonly agent: Agent;
  readonly host: string;
  readonly port: number;
}

/** Keep-alive HTTPS to the API server with the admin's client certificate (from the admin kubeconfig). */
function adminClient(plane: ControlPlane): Client {
  const config = parseYaml(readFileSync(plane.adminKubeconfig, 'utf8')) as {
    clusters: Array<{ cluster: { server: string; 'certificate-authority': string } }>;
    users: Array<{ user: { 'client-certificate': string; 'client-key': string } }>;
  };
  const user = config.users[0]!.user;
  const cluster = config.clusters[0]!.cluster;
  const url = new URL(cluster.server);
  const agent = new Agent({
    keepAlive: true,
    maxSockets: 256,
    maxFreeSockets: 256,
    scheduling: 'lifo',
    ca: readFileSync(cluster['certificate-authority']),
    cert: readFileSync(user['client-certificate']),
    key: readFileSync(user['client-key']),
  });
  return { agent, host: url.hostname, port: Number(url.port) };
}

/** Processes whose CPU is counted: the control plane's, the webhook, and this process (the client). */
const CPU_NAMES = ['apiserver', 'etcd', 'controllers', 'webhook', 'client'] as const;
type CpuName = (typeof CPU_NAMES)[number];
type CpuPids = Record<Exclude<CpuName, 'client'>, readonly number[]>;
/** CPU seconds by process, plus `busy`: CPU seconds the whole machine was busy (all cores), and `wall` seconds. */
type CpuSeconds = Record<CpuName | 'busy' | 'wall', number>;
const CPU_KEYS = [...CPU_NAMES, 'busy', 'wall'] as const;
const ZERO_CPU = Object.fromEntries(CPU_KEYS.map((k) => [k, 0])) as CpuSeconds;

/** The pid of the process whose command line is `exe … needle …` (setpriv execs, so it is the binary's). */
function findPid(exe: string, needle: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args[0] === exe && args.includes(needle)) return Number(entry);
    } catch {
      // gone
    }
  }
  return undefined;
}

function controlPlanePids(plane: ControlPlane, webhook: HostWebhook): CpuPids {
  const bin = (name: string): string => `${plane.binDir}/${name}`;
  const some = (...pids: Array<number | undefined>): number[] => pids.filter((p): p is number => p !== undefined);
  return {
    apiserver: some(findPid(bin('kube-apiserver'), `--secure-port=${plane.apiPort}`)),
    etcd: some(findPid(bin('etcd'), `--listen-client-urls=http://127.0.0.1:${plane.etcdPort}`)),
    controllers: some(
      findPid(bin('kube-controller-manager'), `--kubeconfig=${plane.dir}/kube-controller-manager.kubeconfig`),
      findPid(bin('kube-scheduler'), `--kubeconfig=${plane.dir}/kube-scheduler.kubeconfig`),
    ),
    webhook: some(webhook.child.pid),
  };
}

const CLOCK_TICKS = 100;

/** CPU seconds the machine spent busy so far (every field of /proc/stat's cpu line but idle and iowait). */
function machineBusySeconds(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

function cpuNow(pids: CpuPids): CpuSeconds {
  const of = (list: readonly number[]): number => (list.length === 0 ? Number.NaN : list.reduce((s, pid) => s + (sampleProcess(pid)?.cpuSeconds ?? Number.NaN), 0));
  const own = process.cpuUsage();
  return {
    apiserver: of(pids.apiserver),
    etcd: of(pids.etcd),
    controllers: of(pids.controllers),
    webhook: of(pids.webhook),
    client: (own.user + own.system) / 1e6,
    busy: machineBusySeconds(),
    wall: performance.now() / 1000,
  };
}

const cpuDiff = (after: CpuSeconds, before: CpuSeconds): CpuSeconds => Object.fromEntries(CPU_KEYS.map((k) => [k, after[k] - before[k]])) as CpuSeconds;
const cpuAdd = (a: CpuSeconds, b: CpuSeconds): CpuSeconds => Object.fromEntries(CPU_KEYS.map((k) => [k, a[k] + b[k]])) as CpuSeconds;

/** Cores kept busy by everything but the control plane, the webhook and this process (other work on the VM, kernel threads). */
function othersCores(cpu: CpuSeconds): number {
  return (cpu.busy - CPU_NAMES.reduce((s, k) => s + cpu[k], 0)) / cpu.wall;
}

/** The pods of one arm within a round. */
interface ArmPart {
  readonly sent: number;
  readonly ok: number;
  readonly failures: number;
  readonly failureSamples: readonly string[];
  readonly fromDue: Float64Array;
  readonly fromSend: Float64Array;
  /** CPU over the blocks of this arm (sampled at block boundaries). */
  readonly cpu: CpuSeconds;
}

interface Round {
  readonly rate: number;
  readonly round: number;
  readonly attempt: number;
  /** Scheduled length over actual length (below 1: the answers lagged behind the schedule). */
  readonly pace: number;
  readonly load1: number;
  /** Cores the machine kept busy in the second before the round. */
  readonly busyBefore: number;
  readonly othersCores: number;
  readonly cpu: CpuSeconds;
  readonly arms: Partial<Record<Arm, ArmPart>>;
  /** Webhook calls the API server counted during the round (its histogram). */
  readonly webhookCalls: number;
}

/**
 * `rate` pods per second for `seconds`, open loop, pod i of arm `armOf(i)`: it is
 * due at start + i/rate and its latency counts from then (a late timer or a wait
 * for a connection counts too, alike in both arms); `fromSend` counts from when
 * the request was handed to the socket pool. CPU is sampled whenever the arm changes.
 */
async function createRound(client: Client, rate: number, seconds: number, armOf: (i: number) => Arm, prefix: string, pids: CpuPids): Promise<Omit<Round, 'rate' | 'round' | 'attempt' | 'busyBefore' | 'webhookCalls'>> {
  const total = Math.round(rate * seconds);
  const arms = Array.from({ length: total }, (_, i) => armOf(i));
  const bodies = arms.map((arm, i) => podBody(`${prefix}-${i}`, arm));
  const acc = Object.fromEntries(
    ARMS.map((arm) => [arm, { sent: 0, fromDue: new Latencies(), fromSend: new Latencies(), failures: 0, failureSamples: [] as string[], cpu: ZERO_CPU }]),
  ) as Record<Arm, { sent: number; fromDue: Latencies; fromSend: Latencies; failures: number; failureSamples: string[]; cpu: CpuSeconds }>;
  let finished = 0;
  let lastEnd = 0;
  const fail = (arm: Arm, why: string): void => {
    acc[arm].failures++;
    if (acc[arm].failureSamples.length < 5) acc[arm].failureSamples.push(why);
  };
  let allDone: () => void = () => {};
  const done = new Promise<void>((r) => (allDone = r));
  const finish = (): void => {
    finished++;
    lastEnd = performance.now();
    if (finished === total) allDone();
  };
  const send = (i: number, due: number): void => {
    const body = bodies[i]!;
    const arm = arms[i]!;
    acc[arm].sent++;
    const sentAt = performance.now();
    const req = request(
      {
        host: client.host,
        port: client.port,
        method: 'POST',
        path: `/api/v1/namespaces/${NAMESPACE}/pods`,
        agent: client.agent,
        headers: { 'content-type': 'application/json', accept: 'application/json', 'content-length': body.length },
        timeout: 30_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const end = performance.now();
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 201) fail(arm, `${res.statusCode}: ${text.slice(0, 300)}`);
          else {
            let annotations: Record<string, string> | undefined;
            try {
              annotations = (JSON.parse(text) as { metadata?: { annotations?: Record<string, string> } }).metadata?.annotations ?? {};
            } catch {
              fail(arm, `201 with a body that is not JSON: ${text.slice(0, 200)}`);
            }
            const injected = annotations?.[INJECTED] !== undefined;
            if (annotations === undefined) {
              // counted above
            } else if (arm === 'webhook' && !injected) {
              fail(arm, `201 without ${INJECTED} (the webhook was not called, or failed and failurePolicy Ignore admitted the pod): ${JSON.stringify(annotations)}`);
            } else if (arm === 'none' && injected) fail(arm, `201 with ${INJECTED} although the pod opted out`);
            else {
              acc[arm].fromDue.add(end - due);
              acc[arm].fromSend.add(end - sentAt);
            }
          }
          finish();
        });
        res.on('error', (error) => {
          fail(arm, `response: ${error.message}`);
          finish();
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out after 30 s')));
    req.on('error', (error) => {
      fail(arm, `request: ${error.message}`);
      finish();
    });
    req.end(body);
  };

  const loadBefore = load1();
  const first = cpuNow(pids);
  let mark = first;
  let markArm = arms[0] ?? 'webhook';
  const attribute = (): void => {
    const now = cpuNow(pids);
    acc[markArm].cpu = cpuAdd(acc[markArm].cpu, cpuDiff(now, mark));
    mark = now;
  };
  const interval = 1000 / rate;
  const start = performance.now() + 5;
  let next = 0;
  await new Promise<void>((resolveSent) => {
    const tick = (): void => {
      const now = performance.now();
      while (next < total && start + next * interval <= now) {
        send(next, start + next * interval);
        next++;
      }
      // The arm changes with the next pod: what the machine did so far goes to the arm of the pods sent so far.
      if (next < total && arms[next] !== markArm) {
        attribute();
        markArm = arms[next]!;
      }
      if (next < total) setTimeout(tick, Math.max(0, start + next * interval - performance.now()));
      else resolveSent();
    };
    setTimeout(tick, 5);
  });
  const timeout = sleep(35_000).then(() => 'timeout' as const);
  if ((await Promise.race([done, timeout])) === 'timeout') {
    for (let i = finished; i < total; i++) fail(arms[total - 1] ?? 'webhook', 'no answer within 35 s');
  }
  attribute();
  const cpu = cpuDiff(mark, first);
  const parts: Partial<Record<Arm, ArmPart>> = {};
  for (const arm of ARMS) {
    const a = acc[arm];
    if (a.sent === 0) continue;
    parts[arm] = { sent: a.sent, ok: a.fromDue.count, failures: a.failures, failureSamples: a.failureSamples, fromDue: a.fromDue.sorted(), fromSend: a.fromSend.sorted(), cpu: a.cpu };
  }
  return {
    pace: seconds / ((Math.max(lastEnd, start + seconds * 1000) - start) / 1000),
    load1: Math.max(loadBefore, load1()),
    othersCores: othersCores(cpu),
    cpu,
    arms: parts,
  };
}

/** Cores the machine keeps busy over the next second. */
async function busyCoresNow(): Promise<number> {
  const before = machineBusySeconds();
  const t0 = performance.now();
  await sleep(1000);
  return (machineBusySeconds() - before) / ((performance.now() - t0) / 1000);
}

/** Wait until the machine is quiet (--quiet); returns the busy cores of the last second measured. */
async function waitQuiet(options: Options): Promise<number> {
  let busy = await busyCoresNow();
  if (options.quiet <= 0 || busy < options.quiet) return busy;
  const deadline = Date.now() + options.quietWait * 1000;
  log(`    waiting for the machine to quiet down (${busy.toFixed(2)} cores busy, want < ${options.quiet})`);
  while (busy >= options.quiet && Date.now() < deadline) busy = await busyCoresNow();
  if (busy >= options.quiet) log(`    still ${busy.toFixed(2)} cores busy after ${options.quietWait} s: measuring anyway`);
  return busy;
}

/** Delete every pod of the namespace (grace 0: there is no kubelet), wait until none is left, compact etcd, settle. */
async function deletePods(plane: ControlPlane, settleSeconds: number): Promise<void> {
  await plane.call('DELETE', `/api/v1/namespaces/${NAMESPACE}/pods?gracePeriodSeconds=0`, undefined, { timeoutMs: 180_000 });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const list = await plane.call<{ items: unknown[] }>('GET', `/api/v1/namespaces/${NAMESPACE}/pods?limit=1`);
    if (list.items.length === 0) break;
    if (Date.now() > deadline) throw new Error(`pods of ${NAMESPACE} still there 60 s after deletecollection`);
    await sleep(200);
  }
  await plane.compactEtcd();
  await sleep(settleSeconds * 1000);
}

interface Histogram {
  readonly count: number;
  readonly sum: number;
  /** Cumulative counts by upper bound (seconds), ascending. */
  readonly buckets: ReadonlyArray<readonly [number, number]>;
}

/** A Prometheus histogram summed over every series whose labels include `labels`. */
function histogram(text: string, name: string, labels: Record<string, string> = {}): Histogram {
  let count = 0;
  let sum = 0;
  const buckets = new Map<number, number>();
  const matches = (labelText: string): boolean => Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`));
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null || !matches(m[2] ?? '')) continue;
    const value = Number(m[3]);
    if (m[1] === `${name}_count`) count += value;
    else if (m[1] === `${name}_sum`) sum += value;
    else if (m[1] === `${name}_bucket`) {
      const le = /le="([^"]+)"/.exec(m[2] ?? '')?.[1];
      if (le === undefined) continue;
      const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + value);
    }
  }
  return { count, sum, buckets: [...buckets.entries()].sort((a, b) => a[0] - b[0]) };
}

const EMPTY_HISTOGRAM: Histogram = { count: 0, sum: 0, buckets: [] };

function histogramSum(a: Histogram, b: Histogram): Histogram {
  const bounds = new Map(a.buckets);
  for (const [le, n] of b.buckets) bounds.set(le, (bounds.get(le) ?? 0) + n);
  return { count: a.count + b.count, sum: a.sum + b.sum, buckets: [...bounds.entries()].sort((x, y) => x[0] - y[0]) };
}

function histogramDelta(after: Histogram, before: Histogram): Histogram {
  const old = new Map(before.buckets);
  return { count: after.count - before.count, sum: after.sum - before.sum, buckets: after.buckets.map(([le, n]) => [le, n - (old.get(le) ?? 0)] as const) };
}

/** "≤ 1 ms": the smallest bucket bound holding the quantile `q` of the observations. */
function bucketQuantile(h: Histogram, q: number): string {
  if (h.count === 0) return '–';
  const bound = h.buckets.find(([, n]) => n >= q * h.count)?.[0] ?? Number.POSITIVE_INFINITY;
  return Number.isFinite(bound) ? `≤ ${+(bound * 1000).toFixed(1)} ms` : `> ${+((h.buckets.at(-2)?.[0] ?? 0) * 1000).toFixed(1)} ms`;
}

const WEBHOOK_HISTOGRAM = 'safe_termination_admission_duration_seconds';
const APISERVER_HISTOGRAM = 'apiserver_admission_webhook_admission_duration_seconds';
const WEBHOOK_NAME = 'pods.safe-termination.io';

interface MetricsSnapshot {
  readonly webhook: Histogram;
  readonly apiserver: Histogram;
}

async function metricsSnapshot(plane: ControlPlane, webhook: HostWebhook): Promise<MetricsSnapshot> {
  const [own, api] = await Promise.all([webhook.metrics(), plane.api('GET', '/metrics', undefined, { timeoutMs: 30_000 })]);
  return { webhook: histogram(own, WEBHOOK_HISTOGRAM), apiserver: histogram(api.text, APISERVER_HISTOGRAM, { name: WEBHOOK_NAME }) };
}

interface ArmSummary {
  readonly rate: number;
  readonly arm: Arm;
  readonly sent: number;
  readonly pods: number;
  readonly failures: number;
  readonly failureSamples: readonly string[];
  /** Answered pods per second of the arm's scheduled time, slowed by any lag behind the schedule. */
  readonly achievedRate: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly sendP99: number;
  readonly roundP99s: readonly number[];
  /** CPU µs per created pod, by process. */
  readonly cpuUsPerPod: Record<CpuName, number>;
  /** Cores the machine kept busy on average over the arm's blocks (of cpus().length). */
  readonly busyCores: number;
  /** Cores kept busy by other processes, averaged over the arm's blocks. */
  readonly othersCores: number;
}

function concat(arrays: readonly Float64Array[]): Float64Array {
  const out = new Float64Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out.sort();
}

function summarize(rate: number, arm: Arm, rounds: readonly Round[]): ArmSummary {
  const mine = rounds.filter((r) => r.rate === rate && r.arms[arm] !== undefined);
  const parts = mine.map((r) => r.arms[arm]!);
  const due = concat(parts.map((p) => p.fromDue));
  const send = concat(parts.map((p) => p.fromSend));
  const sent = parts.reduce((n, p) => n + p.sent, 0);
  const pods = parts.reduce((n, p) => n + p.ok, 0);
  const cpu = parts.reduce((c, p) => cpuAdd(c, p.cpu), ZERO_CPU);
  const scheduled = mine.reduce((s, r) => s + r.arms[arm]!.sent / rate / r.pace, 0);
  return {
    rate,
    arm,
    sent,
    pods,
    failures: parts.reduce((n, p) => n + p.failures, 0),
    failureSamples: parts.flatMap((p) => p.failureSamples).slice(0, 5),
    achievedRate: pods / scheduled,
    p50: percentile(due, 50),
    p99: percentile(due, 99),
    max: due[due.length - 1] ?? Number.NaN,
    sendP99: percentile(send, 99),
    roundP99s: parts.map((p) => percentile(p.fromDue, 99)),
    cpuUsPerPod: Object.fromEntries(CPU_NAMES.map((k) => [k, (cpu[k] * 1e6) / sent])) as Record<CpuName, number>,
    busyCores: cpu.busy / cpu.wall,
    othersCores: othersCores(cpu),
  };
}

/** CPU ms per second by process, and cores busy, with nothing being created. */
type IdleCpu = Record<CpuName, number> & { readonly busyCores: number };

interface RateReport {
  readonly rate: number;
  readonly webhook: ArmSummary;
  readonly none: ArmSummary;
  readonly p50Delta: number;
  readonly p99Delta: number;
  /** p99 differences per round (--block > 0) or per pair of rounds (--block 0). */
  readonly pairedP99Deltas: readonly number[];
  readonly webhookOwn: { readonly count: number; readonly meanMs: number; readonly p50: string; readonly p99: string };
  readonly apiserverCall: { readonly count: number; readonly meanMs: number; readonly p50: string; readonly p99: string };
}

/** Arm of pod i in round r: blocks of `block` seconds alternating (the first arm alternating by round), or the round's arm. */
function armPlan(options: Options, rate: number, r: number): { armOf: (i: number) => Arm; label: string } {
  if (options.block > 0) {
    const perBlock = Math.max(1, Math.round(rate * options.block));
    const firstArm = r % 2;
    return { armOf: (i) => ARMS[(Math.floor(i / perBlock) + firstArm) % 2]!, label: `blocks of ${perBlock} pods, ${ARMS[firstArm]} first` };
  }
  // ABBA…: rounds 0, 3, 4, 7, 8 … are the webhook's.
  const arm = ARMS[(Math.floor((r + 1) / 2) % 2 === 0 ? 0 : 1)];
  return { armOf: () => arm, label: arm };
}

export async function runE2eBench(argv: readonly string[]): Promise<void> {
  const options = parseOptions(argv);
  if (options === undefined) {
    process.stdout.write(E2E_HELP);
    return;
  }
  const cpu = cpus();
  const machine = `${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, ${process.platform} ${process.arch}`;
  log(`machine: ${machine}`);
  log(`start: ${uptimeLine()}`);

  let plane: ControlPlane | undefined;
  let webhook: HostWebhook | undefined;
  let client: Client | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      client?.agent.destroy();
      await webhook?.stop().catch(() => undefined);
      await plane?.stop();
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const setupStart = Date.now();
    plane = await startControlPlane({ scheduler: options.scheduler });
    for (let i = 1; i <= options.nodes; i++) {
      const name = `bench-node-${i}`;
      await plane.createNode(name);
      // Room for every pod of a round, should the scheduler bind them.
      const resources = { cpu: '1000', memory: '4Ti', pods: '100000' };
      await plane.call('PATCH', `/api/v1/nodes/${name}/status`, { status: { capacity: resources, allocatable: resources } }, { contentType: 'application/strategic-merge-patch+json' });
    }
    await plane.createNamespace(NAMESPACE, { 'safe-termination.io/inject': 'enabled' });
    await installChart(plane, RELEASE, RELEASE_NAMESPACE);
    webhook = await startHostWebhook(plane, RELEASE, RELEASE_NAMESPACE);
    client = adminClient(plane);
    const pids = controlPlanePids(plane, webhook);
    log(`control plane ${plane.server} (scheduler ${options.scheduler ? 'on' : 'off'}), ${options.nodes} nodes, chart installed, webhook on ${webhook.url}: ${((Date.now() - setupStart) / 1000).toFixed(1)} s`);

    // Each arm answers as it should before anything is measured (the webhook patches, the opted-out pod is left alone).
    const probe = await createRound(client, 4, 1, (i) => ARMS[i % 2]!, 'probe', pids);
    for (const arm of ARMS) {
      const p = probe.arms[arm];
      if (p === undefined || p.failures > 0) throw new Error(`probe (${arm}): ${p?.failureSamples.join('; ') ?? 'not sent'}\nwebhook output:\n${webhook.output().slice(-2000)}`);
    }
    await deletePods(plane, options.settle);
    const idleWindow = cpuNow(pids);
    await sleep(5000);
    const idleCpu = cpuDiff(cpuNow(pids), idleWindow);
    const idle: IdleCpu = {
      ...(Object.fromEntries(CPU_NAMES.map((k) => [k, (idleCpu[k] / idleCpu.wall) * 1000])) as Record<CpuName, number>),
      busyCores: idleCpu.busy / idleCpu.wall,
    };
    log(`idle for 5 s: ${CPU_NAMES.map((k) => `${k} ${idle[k].toFixed(0)}`).join(', ')} CPU ms/s; machine ${idle.busyCores.toFixed(2)} of ${cpu.length} cores busy`);

    const rounds: Round[] = [];
    const discarded: Round[] = [];
    const reports: RateReport[] = [];
    const roundsPerRate = options.block > 0 ? options.rounds : options.rounds * 2;
    for (const rate of options.rates) {
      log(`${rate} pods/s: warm-up ${options.warmup} s, then ${roundsPerRate} rounds of ${options.seconds} s (${options.block > 0 ? `arms alternating every ${options.block} s` : 'one arm per round, ABBA…'})`);
      if (options.warmup > 0) {
        await createRound(client, rate, options.warmup, (i) => ARMS[Math.floor((i * 2) / Math.max(1, rate * options.warmup)) % 2]!, `warm-${rate}`, pids);
        await deletePods(plane, options.settle);
      }
      let own: Histogram = EMPTY_HISTOGRAM;
      let api: Histogram = EMPTY_HISTOGRAM;
      for (let r = 0; r < roundsPerRate; r++) {
        const plan = armPlan(options, rate, r);
        for (let attempt = 0; ; attempt++) {
          const busyBefore = await waitQuiet(options);
          const before = await metricsSnapshot(plane, webhook);
          const result = await createRound(client, rate, options.seconds, plan.armOf, `r${rate}-${r}-${attempt}`, pids);
          const after = await metricsSnapshot(plane, webhook);
          const apiDelta = histogramDelta(after.apiserver, before.apiserver);
          const round: Round = { ...result, rate, round: r, attempt, busyBefore, webhookCalls: apiDelta.count };
          const retry = options.maxOthers > 0 && round.othersCores > options.maxOthers && attempt < options.retries;
          const parts = ARMS.flatMap((arm) => {
            const p = round.arms[arm];
            return p === undefined ? [] : [`${arm} ${p.ok}/${p.sent} p50 ${f2(percentile(p.fromDue, 50))} p99 ${f2(percentile(p.fromDue, 99))}${p.failures > 0 ? ` FAILURES ${p.failures}` : ''}`];
          });
          log(
            `  round ${r + 1}/${roundsPerRate} (${plan.label}): ${parts.join(' | ')} ms  pace ${f2(round.pace)}  cores busy ${f2(busyBefore)} before, ${f2(result.cpu.busy / result.cpu.wall)} during (others ${f2(round.othersCores)})${retry ? ': other work ran, measuring again' : ''}`,
          );
          for (const arm of ARMS) for (const sample of round.arms[arm]?.failureSamples ?? []) log(`    ${arm}: ${sample}`);
          await deletePods(plane, options.settle);
          if (retry) {
            discarded.push(round);
            continue;
          }
          rounds.push(round);
          own = histogramSum(own, histogramDelta(after.webhook, before.webhook));
          api = histogramSum(api, apiDelta);
          break;
        }
      }
      const mine = rounds.filter((x) => x.rate === rate);
      const p99Of = (x: Round, arm: Arm): number => percentile(x.arms[arm]?.fromDue ?? new Float64Array(), 99);
      const pairedP99Deltas =
        options.block > 0
          ? mine.map((x) => p99Of(x, 'webhook') - p99Of(x, 'none'))
          : Array.from({ length: options.rounds }, (_, k) => {
              const pair = mine.slice(2 * k, 2 * k + 2);
              const of = (arm: Arm): number => p99Of(pair.find((x) => x.arms[arm] !== undefined)!, arm);
              return of('webhook') - of('none');
            });
      const w = summarize(rate, 'webhook', rounds);
      const n = summarize(rate, 'none', rounds);
      reports.push({
        rate,
        webhook: w,
        none: n,
        p50Delta: w.p50 - n.p50,
        p99Delta: w.p99 - n.p99,
        pairedP99Deltas,
        webhookOwn: { count: own.count, meanMs: (own.sum / own.count) * 1000, p50: bucketQuantile(own, 0.5), p99: bucketQuantile(own, 0.99) },
        apiserverCall: { count: api.count, meanMs: (api.sum / api.count) * 1000, p50: bucketQuantile(api, 0.5), p99: bucketQuantile(api, 0.99) },
      });
      log(`  ${rate} pods/s: p50 webhook ${f2(w.p50)} ms, none ${f2(n.p50)} ms; p99 webhook ${f2(w.p99)} ms, none ${f2(n.p99)} ms, difference ${signed(w.p99 - n.p99)} ms`);
    }
    const end = uptimeLine();
    log(`end: ${end}`);
    process.stdout.write(`\n${report(machine, options, reports, idle, discarded.length, end)}`);
    if (options.json !== undefined) {
      const roundJson = ({ arms, ...r }: Round): unknown => ({
        ...r,
        arms: Object.fromEntries(
          Object.entries(arms).map(([arm, { fromDue, fromSend, ...p }]) => [
            arm,
            { ...p, p50: percentile(fromDue, 50), p99: percentile(fromDue, 99), max: fromDue[fromDue.length - 1] ?? null, sendP50: percentile(fromSend, 50), sendP99: percentile(fromSend, 99) },
          ]),
        ),
      });
      writeFileSync(options.json, JSON.stringify({ machine, options, idleCpuMsPerSecond: idle, reports, rounds: rounds.map(roundJson), discardedRounds: discarded.map(roundJson) }, null, 2));
    }
    if (reports.some((r) => r.webhook.failures + r.none.failures > 0)) process.exitCode = 1;
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function report(machine: string, options: Options, reports: readonly RateReport[], idle: IdleCpu, discarded: number, end: string): string {
  const us = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '–');
  const armRow = (a: ArmSummary): string =>
    `| ${a.rate} | ${a.arm} | ${a.pods} | ${a.achievedRate.toFixed(1)} | ${f2(a.p50)} | ${f2(a.p99)} | ${f2(a.max)} | ${f2(a.sendP99)} | ${a.roundP99s.map(f2).join(', ')} | ${a.failures} | ${CPU_NAMES.map((k) => us(a.cpuUsPerPod[k])).join(' | ')} | ${f2(a.busyCores)} | ${f2(a.othersCores)} |`;
  const bar = reports.find((r) => r.rate === BAR_RATE);
  const failures = reports.reduce((n, r) => n + r.webhook.failures + r.none.failures, 0);
  let verdict: string;
  if (bar === undefined) verdict = `- webhook adds < ${BAR_MS} ms to the p99 of pod creation at ${BAR_RATE} pods/s: not measured (add ${BAR_RATE} to --rates)`;
  else {
    // How far the p99 of the arm without the webhook moves between its own rounds: a difference closer to the bar than that is noise.
    const noise = bar.none.roundP99s.length > 1 ? spread(bar.none.roundP99s) : Number.NaN;
    const outcome =
      failures > 0
        ? 'FAIL (failed creations)'
        : Number.isFinite(noise) && Math.abs(bar.p99Delta - BAR_MS) <= noise
          ? `INCONCLUSIVE (${bar.p99Delta < BAR_MS ? 'below' : 'above'} the bar by less than the round-to-round noise of ${f2(noise)} ms)`
          : bar.p99Delta < BAR_MS
            ? 'PASS'
            : 'FAIL';
    verdict =
      `- webhook adds < ${BAR_MS} ms to the p99 of pod creation at ${BAR_RATE} pods/s: p99 ${f2(bar.webhook.p99)} ms with, ${f2(bar.none.p99)} ms without, difference ${signed(bar.p99Delta)} ms ` +
      `(per ${options.block > 0 ? 'round' : 'pair of rounds'}: ${bar.pairedP99Deltas.map(signed).join(', ')}, median ${signed(median(bar.pairedP99Deltas))}) → ${outcome}\n` +
      `  - for scale: the p50 difference is ${signed(bar.p50Delta)} ms; the p99 of one arm moves by ${Number.isFinite(noise) ? f2(noise) : '? (one round)'} ms (none) and ${f2(spread(bar.webhook.roundP99s))} ms (webhook) between rounds`;
  }
  const interleaving =
    options.block > 0
      ? `per rate ${options.warmup} s of warm-up, then ${options.rounds} rounds of ${options.seconds} s, each one stream at the full rate in which the arms alternate every ${options.block} s (the first arm alternating by round)`
      : `per rate ${options.warmup} s of warm-up, then ${options.rounds} rounds of ${options.seconds} s per arm, one arm per round, alternating ABBA…`;
  return [
    `## End-to-end run ${new Date().toISOString()}`,
    '',
    `Machine: ${machine}. At end: ${end}.`,
    `Control plane: etcd, kube-apiserver, kube-controller-manager${options.scheduler ? ', kube-scheduler (binds every pod)' : ' (no scheduler: pods are stored, not bound)'}; no kubelet. ${options.nodes} Nodes; chart installed with default values; the webhook runs on this host as the chart's ServiceAccount, with the chart's flags.`,
    `Load: bare 1-container pods POSTed by this process (HTTP/1.1 keep-alive TLS, admin client certificate, exempt from API Priority and Fairness) open loop at ${options.rates.join(', ')} pods/s; ${interleaving}; after each round every pod deleted (grace 0), etcd compacted, ${options.settle} s of settling${options.quiet > 0 ? `, then a wait until the machine kept < ${options.quiet} cores busy for 1 s (at most ${options.quietWait} s)` : ''}.`,
    `Arms: "webhook" = pods the webhook is called for (each answer 201 with ${INJECTED}); "none" = the same pods labelled safe-termination.io/inject=disabled, which the configuration's objectSelector excludes: the API server evaluates the selectors and does not call the webhook (each answer 201 without the annotation). Same namespace, configuration, connections and etcd size.`,
    "Latency: from the moment a creation was due to the end of the answer (p99 from send: from when the request was handed to the client's socket pool). CPU: µs per created pod over the arm's blocks, background included (sampled at each change of arm; clock ticks of 10 ms); cores busy: the whole machine's average, and the part of it not used by the control plane, the webhook or the client (other work on the VM, kernel threads).",
    `Idle (nothing created, 5 s), CPU ms/s: ${CPU_NAMES.map((k) => `${k} ${idle[k].toFixed(0)}`).join(', ')}; machine ${f2(idle.busyCores)} of ${cpus().length} cores busy.${options.maxOthers > 0 ? ` Rounds measured again because other work kept more than ${options.maxOthers} cores busy: ${discarded}.` : ''}`,
    '',
    '| pods/s | arm | pods | achieved/s | p50 ms | p99 ms | max ms | p99 from send ms | p99 of each round ms | failures | CPU µs/pod: kube-apiserver | etcd | controller-manager + scheduler | webhook | client | cores busy: all | others |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...reports.flatMap((r) => [armRow(r.webhook), armRow(r.none)]),
    '',
    "| pods/s | p50 difference ms | p99 difference ms (webhook − none) | p99 differences per round ms | webhook calls (API server) / webhook pods | the call as the API server sees it: mean / p50 / p99 | the webhook's own time: mean / p50 / p99 |",
    '| ---: | ---: | ---: | --- | ---: | --- | --- |',
    ...reports.map(
      (r) =>
        `| ${r.rate} | ${signed(r.p50Delta)} | **${signed(r.p99Delta)}** | ${r.pairedP99Deltas.map(signed).join(', ')} (median ${signed(median(r.pairedP99Deltas))}) | ${r.apiserverCall.count} / ${r.webhook.sent} | ${f2(r.apiserverCall.meanMs)} ms / ${r.apiserverCall.p50} / ${r.apiserverCall.p99} | ${f2(r.webhookOwn.meanMs)} ms / ${r.webhookOwn.p50} / ${r.webhookOwn.p99} |`,
    ),
    '',
    "The last two columns come from the histograms of kube-apiserver (apiserver_admission_webhook_admission_duration_seconds: the whole webhook call, buckets 5, 25, 100 ms…) and of the webhook (safe_termination_admission_duration_seconds: request arrival to response, buckets 0.5, 1, 2.5 ms…) over the measured rounds; their percentiles are bucket bounds.",
    '',
    '### Bar',
    '',
    verdict,
    `- every creation answered 201, with the annotation exactly in the webhook arm: ${failures} failures → ${failures === 0 ? 'PASS' : 'FAIL'}`,
    ...reports.flatMap((r) => [...r.webhook.failureSamples.map((s) => `  - ${r.rate} pods/s webhook: ${s}`), ...r.none.failureSamples.map((s) => `  - ${r.rate} pods/s none: ${s}`)]),
    '',
  ].join('\n');
}

if (import.meta.main) await runE2eBench(process.argv.slice(2));
