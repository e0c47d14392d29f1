/**
 * `npm run bench`: the webhook (production build, TLS, logging at info to a file)
 * against the ceiling (a bare Node HTTPS server, same certificate, JSON.parse and
 * a fixed answer), the Fastify floor (Fastify with the webhook's server options,
 * JSON.parse and the same fixed answer) and the bare handler (the ceiling's server
 * running the webhook's body parse and review handler), each a separate process, driven in the same run by autocannon
 * over HTTP/1.1 keep-alive with three realistic reviews at several concurrencies.
 * Prints markdown tables; see bench/RESULTS.md.
 *
 * Flags: --duration S (per measured run, default 8)   --connections 1,8,32
 *        --reviews 1c,20c,1mib   --workers N (autocannon worker threads, default 0)
 *        --latency-connections N (default 8)   --quick (3 s runs)
 *        --profile (one extra run of each server under --cpu-prof, summarized;
 *          --profile-connections N, default 8)
 *        --json FILE (write all figures)
 *        --pin (servers on CPU 0, this process and its load generator on CPU 1)
 *        --baseline-dist DIR (also measure the build in DIR, e.g. a copy of dist/ from
 *          before a change, as server "baseline": before/after in the same run, and
 *          both loaded at once, as the ceiling and the webhook always are)
 *        --ab-rounds N (rounds of the loaded-at-once comparisons, default 5)
 *        --e2e (only the end-to-end mode: pod creation on a real API server with and
 *          without the webhook, bench/e2e.ts; its own flags, `--e2e --help` lists them)
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { applyAnswer } from '../test/support/patch.ts';
import type { ReviewAnswer } from '../test/support/patch.ts';
import { podProblems } from '../test/support/pod-validation.ts';
import { httpsRequest, makeCerts } from '../test/support/webhook.ts';
import { progress } from '../scripts/progress.ts';
import { measureInProcess } from './inprocess.ts';
import { measureServices, servicesReport } from './services.ts';
import type { InProcessRow } from './inprocess.ts';
import { runAutocannon, runPaced } from './load.ts';
import type { LoadResult, LoadTarget } from './load.ts';
import { load1, pinSelf, ProcessMeter, startBareHandlerProcess, startCeilingProcess, startFastifyFloorProcess, startWebhookProcess, uptimeLine } from './proc.ts';
import type { Served, ServerName } from './proc.ts';
import { formatProfile, summarizeProfile } from './profile.ts';
import { benchReviews } from './reviews.ts';
import type { BenchReview } from './reviews.ts';

// --e2e: bench/e2e.ts alone, with its own flags; the flags below then keep their defaults.
const E2E = process.argv.slice(2).includes('--e2e');
const { values: flags } = parseArgs({
  args: E2E ? [] : process.argv.slice(2),
  options: {
    duration: { type: 'string', default: '8' },
    connections: { type: 'string', default: '1,8,32' },
    reviews: { type: 'string', default: '1c,20c,1mib' },
    workers: { type: 'string', default: '0' },
    'latency-connections': { type: 'string', default: '8' },
    quick: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    'profile-connections': { type: 'string', default: '8' },
    json: { type: 'string' },
    'baseline-dist': { type: 'string' },
    'ab-rounds': { type: 'string', default: '5' },
    pin: { type: 'boolean', default: false },
  },
});
const DURATION = flags.quick ? 3 : Number(flags.duration);
const CONNECTIONS = flags.connections.split(',').map(Number);
const WORKERS = Number(flags.workers);
const LATENCY_CONNECTIONS = Number(flags['latency-connections']);
const WARMUP_SECONDS = flags.quick ? 1 : 2;
const SERVER_CPUS = flags.pin ? '0' : undefined;
if (flags.pin) pinSelf('1');

interface Row extends LoadResult {
  readonly server: ServerName;
  readonly review: string;
  readonly connections: number;
  readonly rssMiB: number;
  readonly cpuUsPerReq: number;
  readonly cpuShare: number;
  readonly clientCpuShare: number;
  readonly load1: number;
}

// A line per step with the elapsed time on stderr (scripts/progress.ts; quiet in CI logs: the report is on stdout).
const progressLog = progress('bench');
const log = (s: string): void => progressLog.step(s);
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '–');
const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;

async function measure(server: Served, review: BenchReview, target: LoadTarget, connections: number, duration: number): Promise<Row> {
  const loadBefore = load1();
  const meter = new ProcessMeter(server.pid);
  const clientCpu = process.cpuUsage();
  const t0 = performance.now();
  const r = await runAutocannon(target, { connections, durationSeconds: duration, workers: WORKERS });
  const wall = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(clientCpu);
  const m = meter.finish();
  const row: Row = {
    ...r,
    server: server.name,
    review: review.id,
    connections,
    rssMiB: m.maxRssBytes / 2 ** 20,
    cpuUsPerReq: r.requests > 0 ? (m.cpuSeconds * 1e6) / r.requests : Number.NaN,
    cpuShare: m.cpuShare,
    clientCpuShare: (used.user + used.system) / 1e6 / wall,
    load1: Math.max(loadBefore, load1()),
  };
  log(`  ${row.server.padEnd(7)} ${review.id.padEnd(4)} c=${String(connections).padEnd(3)} ${f1(row.rps).padStart(8)} req/s  p99 ${f2(row.p99)} ms  errors ${row.non2xx + row.socketErrors}  server cpu ${(row.cpuShare * 100).toFixed(0)}%  client cpu ${(row.clientCpuShare * 100).toFixed(0)}%  load ${f2(row.load1)}`);
  return row;
}

/**
 * The webhook's answer to each review applies to the pod and yields a valid pod;
 * the reference servers answer 200, and `sameAnswer` (the bare handler) answers
 * exactly what the webhook does.
 */
async function sanityCheck(webhook: Served, references: readonly Served[], reviews: readonly BenchReview[], ca: Buffer, sameAnswer: readonly Served[] = []): Promise<void> {
  for (const r of reviews) {
    const res = await httpsRequest(`https://127.0.0.1:${webhook.port}/mutate?timeout=10s`, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, r.body);
    if (res.status !== 200) throw new Error(`${r.id}: webhook answered ${res.status}: ${res.text}`);
    const answer = res.json<{ response: ReviewAnswer }>().response;
    if (answer.patch === undefined) throw new Error(`${r.id}: expected a patch`);
    const problems = podProblems(applyAnswer(r.pod, answer));
    if (problems.length > 0) throw new Error(`${r.id}: patched pod invalid: ${problems.join('; ')}`);
    for (const s of [...references, ...sameAnswer]) {
      const c = await httpsRequest(`https://127.0.0.1:${s.port}/mutate?timeout=10s`, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, r.body);
      if (c.status !== 200) throw new Error(`${r.id}: ${s.name} answered ${c.status}`);
      if (sameAnswer.includes(s) && c.text !== res.text) throw new Error(`${r.id}: ${s.name} answered differently from the webhook:\n${c.text}\n${res.text}`);
    }
  }
}

const REFERENCE_SERVERS: readonly ServerName[] = ['ceiling', 'fastify', 'bare-handler'];

function throughputTable(rows: readonly Row[]): string {
  const out = [
    '| review | conns | server | req/s | p50 ms | p99 ms | p99.9 ms | errors | RSS MiB | server CPU µs/req | server CPU | client CPU | vs ceiling (req/s) | vs ceiling (CPU/req) | vs Fastify floor (req/s) | load1 |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    const same = (server: ServerName): Row | undefined => rows.find((c) => c.server === server && c.review === r.review && c.connections === r.connections);
    const ceiling = same('ceiling');
    const floor = same('fastify');
    const ratio = r.server !== 'ceiling' && ceiling ? pct(r.rps / ceiling.rps) : '';
    const cpuRatio = r.server !== 'ceiling' && ceiling ? pct(ceiling.cpuUsPerReq / r.cpuUsPerReq) : '';
    const floorRatio = !REFERENCE_SERVERS.includes(r.server) && floor ? pct(r.rps / floor.rps) : '';
    out.push(
      `| ${r.review} | ${r.connections} | ${r.server} | ${r.rps.toFixed(0)} | ${f2(r.p50)} | ${f2(r.p99)} | ${f2(r.p999)} | ${r.non2xx + r.socketErrors} | ${r.rssMiB.toFixed(0)} | ${r.cpuUsPerReq.toFixed(0)} | ${(r.cpuShare * 100).toFixed(0)}% | ${(r.clientCpuShare * 100).toFixed(0)}% | ${ratio} | ${cpuRatio} | ${floorRatio} | ${f2(r.load1)} |`,
    );
  }
  return out.join('\n');
}

interface LatencyRow extends LoadResult {
  readonly fromSend?: { readonly p50: number; readonly p99: number; readonly p999: number };
  readonly review: string;
  readonly method: string;
  readonly targetRate: number;
  readonly load1: number;
}

async function main(): Promise<void> {
  const reviews = benchReviews().filter((r) => flags.reviews.split(',').includes(r.id));
  const cpu = cpus();
  const machine = `${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, ${process.platform} ${process.arch}`;
  log(`machine: ${machine}`);
  log(`start: ${uptimeLine()}`);
  const dir = mkdtempSync(join(tmpdir(), 'st-bench-'));
  const certs = makeCerts();
  const webhook = await startWebhookProcess({ certs, logFile: join(dir, 'webhook.log'), cpus: SERVER_CPUS });
  const ceiling = await startCeilingProcess(certs, [], SERVER_CPUS);
  const floor = await startFastifyFloorProcess(certs, [], SERVER_CPUS);
  const bare = await startBareHandlerProcess(certs, [], SERVER_CPUS);
  const baselineDist = flags['baseline-dist'];
  const baseline = baselineDist === undefined ? undefined : await startWebhookProcess({ certs, logFile: join(dir, 'baseline.log'), main: join(baselineDist, 'src/cli/main.js'), name: 'baseline', cpus: SERVER_CPUS });
  const servers = baseline ? [ceiling, floor, bare, baseline, webhook] : [ceiling, floor, bare, webhook];
  const cleanup = async (): Promise<void> => {
    await Promise.all([webhook.stop(), ceiling.stop(), floor.stop(), bare.stop(), baseline?.stop()]);
    certs.remove();
  };
  try {
    await sanityCheck(webhook, [ceiling, floor], reviews, certs.ca, [bare]);
    if (baseline) await sanityCheck(baseline, [], reviews, certs.ca);
    log(`sanity: every review patched by the webhook applies and yields a valid pod (log: ${join(dir, 'webhook.log')})`);
    const targets = new Map<Served, (r: BenchReview) => LoadTarget>(
      servers.map((s) => [s, (r: BenchReview) => ({ url: `https://127.0.0.1:${s.port}`, body: r.body, ca: certs.ca })]),
    );
    const target = (s: Served, r: BenchReview): LoadTarget => targets.get(s)!(r);


    const rows: Row[] = [];
    log(`throughput: ${DURATION} s per run after a ${WARMUP_SECONDS} s warm-up per server and review, autocannon ${WORKERS > 0 ? `with ${WORKERS} worker threads` : 'in the bench process (one thread)'}`);
    let flip = false;
    for (const r of reviews) {
      // Warm-up per review, right before its runs (RSS then reflects the reviews so far, in table order).
      for (const s of servers) await runAutocannon(target(s, r), { connections: 8, durationSeconds: WARMUP_SECONDS, workers: WORKERS });
      for (const c of CONNECTIONS) {
        // Alternate which server goes first, so drifting background load hits both alike.
        const order = flip ? [...servers].reverse() : servers;
        flip = !flip;
        const pair: Row[] = [];
        for (const s of order) pair.push(await measure(s, r, target(s, r), c, DURATION));
        rows.push(...servers.map((s) => pair.find((p) => p.server === s.name)!));
      }
    }

    const latency: LatencyRow[] = [];
    log(`latency at half the webhook's peak rate (${LATENCY_CONNECTIONS} connections)`);
    for (const r of reviews) {
      const peak = Math.max(...rows.filter((x) => x.server === 'webhook' && x.review === r.id).map((x) => x.rps));
      const rate = Math.max(1, Math.floor(peak / 2));
      const loadBefore = load1();
      const ac = await runAutocannon(target(webhook, r), { connections: LATENCY_CONNECTIONS, durationSeconds: DURATION, overallRate: rate });
      latency.push({ ...ac, review: r.id, method: 'autocannon overallRate', targetRate: rate, load1: Math.max(loadBefore, load1()) });
      const loadBefore2 = load1();
      const paced = await runPaced(target(webhook, r), { rate, durationSeconds: DURATION, connections: LATENCY_CONNECTIONS });
      latency.push({ ...paced, review: r.id, method: 'paced open loop', targetRate: rate, load1: Math.max(loadBefore2, load1()) });
      for (const l of latency.slice(-2)) log(`  ${r.id.padEnd(4)} ${l.method.padEnd(23)} ${l.rps.toFixed(0).padStart(6)} req/s (target ${rate})  p50 ${f2(l.p50)}  p99 ${f2(l.p99)}  p99.9 ${f2(l.p999)} ms  errors ${l.non2xx + l.socketErrors}`);
    }

    const rounds = Number(flags['ab-rounds']);
    log(`loaded at once (${reviews[0]!.id}, ${rounds} rounds)`);
    const vsCeiling = await coRun(ceiling, webhook, reviews[0]!, certs.ca, rounds);
    const vsBaseline = baseline ? await coRun(baseline, webhook, reviews[0]!, certs.ca, rounds) : undefined;

    let profileText: string | undefined;
    if (flags.profile) profileText = await profileRun(dir, certs, reviews[0]!);

    log('in-process cost (no HTTP)');
    const inproc = measureInProcess(reviews);
    log('Service index: 10,000 Services (1,000 in the pod\'s namespace) vs none');
    const services = measureServices(reviews[0]!);

    await webhook.stop();
    const exit = await webhook.exited;
    const end = uptimeLine();
    log(`end: ${end}`);

    // Bars.
    const bars: string[] = [];
    const one = rows.filter((r) => r.review === '1c');
    if (one.length > 0) {
      const best = (s: ServerName) => Math.max(...one.filter((r) => r.server === s).map((r) => r.rps));
      const ofFloor = best('webhook') / best('fastify');
      const ofCeiling = best('webhook') / best('ceiling');
      const floorOfCeiling = best('fastify') / best('ceiling');
      const bareOfCeiling = best('bare-handler') / best('ceiling');
      bars.push(
        `- ≥ 80 % of the ceiling's throughput on the 1-container pod (best over concurrencies): ${pct(ofCeiling)} → ${ofCeiling >= 0.8 ? 'PASS' : 'FAIL'} ` +
          `(for scale: the Fastify floor reaches ${pct(floorOfCeiling)} of the ceiling, the bare handler without Fastify ${pct(bareOfCeiling)}, the webhook ${pct(ofFloor)} of the floor)`,
      );
      if (reviews[0]!.id === '1c') {
        const share = 1 / vsCeiling.median;
        bars.push(`  - loaded at once with the ceiling (steadier on a shared host): the webhook needs ${f2(vsCeiling.median)} × the ceiling's CPU per request, i.e. ${pct(share)} of its throughput → ${share >= 0.8 ? 'PASS' : 'FAIL'}`);
      }
      for (const l of latency.filter((x) => x.review === '1c')) {
        bars.push(`- p99 < 5 ms at half the webhook's peak (${l.targetRate} req/s, ${l.method}): p99 ${f2(l.p99)} ms → ${l.p99 < 5 ? 'PASS' : 'FAIL'}`);
      }
    }
    const errors = [...rows.filter((r) => r.server === 'webhook'), ...latency].reduce((n, r) => n + r.non2xx + r.socketErrors, 0);
    bars.push(`- zero errors (webhook, every run): ${errors} → ${errors === 0 ? 'PASS' : 'FAIL'}`);
    bars.push(`- webhook exit after SIGINT: code ${exit.code ?? exit.signal}`);

    const report = [
      `## Benchmark run ${new Date().toISOString()}`,
      '',
      `Machine: ${machine}. Load before: ${rows[0] ? f2(rows[0].load1) : '?'}; at end: ${end}.`,
      `Runs: ${DURATION} s each after a ${WARMUP_SECONDS} s warm-up; autocannon ${WORKERS > 0 ? `${WORKERS} worker threads` : 'in the bench process (one thread)'}, HTTP/1.1 keep-alive, TLS${flags.pin ? '; servers pinned to CPU 0, load generator to CPU 1' : ''}.`,
      `Reviews: ${reviews.map((r) => `${r.id} = ${r.title} (${(r.body.length / 1024).toFixed(1)} KiB)`).join('; ')}.`,
      '',
      '### Throughput',
      '',
      throughputTable(rows),
      '',
      '### Latency at half the webhook\'s peak rate',
      '',
      '| review | method | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | max ms | p99 from send ms | errors | load1 |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...latency.map((l) => `| ${l.review} | ${l.method} | ${l.targetRate} | ${l.rps.toFixed(0)} | ${f2(l.p50)} | ${f2(l.p99)} | ${f2(l.p999)} | ${f2(l.max)} | ${l.fromSend ? f2(l.fromSend.p99) : ''} | ${l.non2xx + l.socketErrors} | ${f2(l.load1)} |`),
      '',
      'autocannon overallRate: each connection sends back to back until its share of the second is used up, then waits for the next second (bursts at full speed); its latency counts from the send. Paced open loop: one request every 1/rate s over the same number of keep-alive connections, latency counted from when the request was due (a wait for a free connection or a late timer counts against the server, so no coordinated omission); "p99 from send" excludes that wait.',
      '',
      '### In-process cost per review (µs per op, no HTTP)',
      '',
      '| review | JSON.parse | pod schema parse | decide + planPatch | whole handler (review + pod parse, decide, patch, response) |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...inproc.map((i: InProcessRow) => `| ${i.review} | ${f1(i.jsonParse)} | ${f1(i.podParse)} | ${f1(i.decidePatch)} | ${f1(i.handler)} |`),
      '',
      '### The Service index (in process, 10,000 Services, bench/services.ts)',
      '',
      ...servicesReport(services),
      '',
      '### Bars',
      '',
      ...bars,
      '',
      '### Ceiling and webhook loaded at once',
      '',
      vsCeiling.table,
      ...(vsBaseline ? ['', '### Baseline and webhook loaded at once', '', vsBaseline.table] : []),
      ...(profileText ? ['', '### CPU profile of the webhook under load', '', profileText] : []),
      '',
    ].join('\n');
    process.stdout.write(`\n${report}`);
    if (flags.json) writeFileSync(flags.json, JSON.stringify({ machine, rows, latency, inproc, services, bars }, null, 2));
  } finally {
    await cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Two servers compared with most of the noise taken out: both loaded at once (8
 * connections each), so a busy neighbour slows both alike. On the shared VM where
 * this was written, runs one after the other move by ±30 %; the per-round ratio of
 * CPU per request measured this way moved by 2–10 %. Pinned runs put both on one CPU.
 */
async function coRun(a: Served, b: Served, review: BenchReview, ca: Buffer, rounds: number): Promise<{ median: number; table: string }> {
  const load = (s: Served, seconds: number): Promise<LoadResult> =>
    runAutocannon({ url: `https://127.0.0.1:${s.port}`, body: review.body, ca }, { connections: 8, durationSeconds: seconds, workers: WORKERS });
  await Promise.all([load(a, WARMUP_SECONDS), load(b, WARMUP_SECONDS)]);
  const lines = [`| round | ${a.name} CPU µs/req | ${b.name} CPU µs/req | ${b.name} / ${a.name} | errors |`, '| ---: | ---: | ---: | ---: | ---: |'];
  const ratios: number[] = [];
  for (let i = 1; i <= rounds; i++) {
    const meters = [new ProcessMeter(a.pid), new ProcessMeter(b.pid)];
    const [ra, rb] = await Promise.all([load(a, DURATION), load(b, DURATION)]);
    const [ua, ub] = [meters[0]!.finish().cpuSeconds / ra.requests, meters[1]!.finish().cpuSeconds / rb.requests].map((x) => x * 1e6) as [number, number];
    ratios.push(ub / ua);
    const errors = ra.non2xx + ra.socketErrors + rb.non2xx + rb.socketErrors;
    lines.push(`| ${i} | ${ua.toFixed(1)} | ${ub.toFixed(1)} | ${f2(ub / ua)} | ${errors} |`);
    log(`  co-run ${i}/${rounds}: ${a.name} ${ua.toFixed(1)} µs/req, ${b.name} ${ub.toFixed(1)} µs/req, ratio ${f2(ub / ua)}`);
  }
  const median = [...ratios].sort((x, y) => x - y)[Math.floor(ratios.length / 2)]!;
  lines.push('', `Median ${b.name} / ${a.name} CPU per request: **${f2(median)}** (${review.id}, ${DURATION} s rounds; below 1: ${b.name} is cheaper).`);
  return { median, table: lines.join('\n') };
}

/**
 * One more process of each server under --cpu-prof, loaded with `review`; the summary covers only the measured window (start-up and warm-up
 * excluded) and gives CPU µs per request by area.
 */
async function profileRun(dir: string, certs: { certFile: string; keyFile: string; ca: Buffer }, review: BenchReview): Promise<string> {
  const parts: string[] = [];
  for (const kind of ['webhook', 'ceiling'] as const) {
    const profDir = join(dir, `profile-${kind}`);
    mkdirSync(profDir);
    const nodeArgs = ['--cpu-prof', '--cpu-prof-dir', profDir];
    const spawnedAt = performance.now();
    const served = kind === 'webhook' ? await startWebhookProcess({ certs, logFile: join(dir, 'webhook-profiled.log'), nodeArgs, cpus: SERVER_CPUS }) : await startCeilingProcess(certs, nodeArgs, SERVER_CPUS);
    let window: { skipMs: number; untilMs: number; requests: number };
    try {
      const t = { url: `https://127.0.0.1:${served.port}`, body: review.body, ca: certs.ca };
      const connections = Number(flags['profile-connections']);
      await runAutocannon(t, { connections, durationSeconds: WARMUP_SECONDS });
      const from = performance.now() - spawnedAt;
      const r = await runAutocannon(t, { connections, durationSeconds: DURATION });
      window = { skipMs: from, untilMs: performance.now() - spawnedAt, requests: r.requests };
      log(`profile run: ${kind} ${r.rps.toFixed(0)} req/s under --cpu-prof (${review.id}, ${connections} connections)`);
    } finally {
      await served.stop();
    }
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) {
      parts.push(`${kind}: no profile written`);
      continue;
    }
    const keep = join(process.cwd(), `${kind}-bench.cpuprofile`);
    copyFileSync(join(profDir, file), keep);
    log(`profile kept at ${keep} (open in Chrome DevTools or speedscope)`);
    parts.push(`#### ${kind}`, '', formatProfile(summarizeProfile(keep, { top: 30, ...window })), '');
  }
  return parts.join('\n');
}

await (E2E ? (await import('./e2e.ts')).runE2eBench(process.argv.slice(2).filter((a) => a !== '--e2e')) : main());
