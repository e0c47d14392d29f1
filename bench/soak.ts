/**
 * `npm run soak` (≈ 3 min) / `npm run soak -- --short` (≈ 85 s, for CI): faults
 * under load against the real webhook (production build, separate process):
 *   a. certificate rotation by symlink swap (a Secret volume's ..data) under load
 *   b. SIGTERM under load: readiness first, in-flight answered, exit 0 in time
 *   c. the Kubernetes API going away (fake API server stopped) under load
 *   d. memory over a steady soak (RSS growth after warm-up)
 *   e. hostile memory: thousands of idle connections, dozens of concurrent 3 MiB reviews
 *      (SOAK_E_ARGS adds serve flags, e.g. huge limits to see it without the bounds)
 * Prints a markdown report; exits 1 when a bar fails.
 * Flags: --short, --only a,b,c,d,e, --json FILE
 */
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { makeNode, startFakeApiServer } from '../test/support/fake-apiserver.ts';
import { applyAnswer } from '../test/support/patch.ts';
import type { ReviewAnswer } from '../test/support/patch.ts';
import { podProblems } from '../test/support/pod-validation.ts';
import { defaultedPod, reviewOf } from '../test/support/pods.ts';
import { httpsRequest } from '../test/support/webhook.ts';
import { CountingClient } from './client.ts';
import type { RequestRecord } from './client.ts';
import { runAutocannon } from './load.ts';
import type { LoadResult } from './load.ts';
import { REPO_ROOT, sampleProcess, startWebhookProcess, uptimeLine } from './proc.ts';
import type { Served } from './proc.ts';
import { benchReviews } from './reviews.ts';

const { values: flags } = parseArgs({
  options: { short: { type: 'boolean', default: false }, only: { type: 'string', default: 'a,b,c,d,e' }, json: { type: 'string' } },
});
const SHORT = flags.short;
const ONLY = new Set(flags.only.split(','));

const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '–');

interface Bar {
  readonly phase: string;
  readonly what: string;
  readonly pass: boolean;
  readonly detail: string;
}
const bars: Bar[] = [];
const bar = (phase: string, what: string, pass: boolean, detail: string): void => {
  bars.push({ phase, what, pass, detail });
  log(`  ${pass ? 'PASS' : 'FAIL'} ${what}: ${detail}`);
};
const report: string[] = [];
const figures: Record<string, unknown> = {};

const work = mkdtempSync(join(tmpdir(), 'st-soak-'));
const GENERATE = join(REPO_ROOT, 'certs/generate.sh');
const reviews = benchReviews();
const oneContainer = reviews.find((r) => r.id === '1c')!;

/** A CA directory; each call of `issue` signs a new serving certificate with the same CA (as a renewal does). */
function certAuthority(dir: string): { ca: Buffer; issue(): { cert: Buffer; key: Buffer; fingerprint: string } } {
  mkdirSync(dir, { recursive: true });
  const issue = () => {
    execFileSync('bash', [GENERATE, '--out', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const cert = readFileSync(join(dir, 'tls.crt'));
    return { cert, key: readFileSync(join(dir, 'tls.key')), fingerprint: new X509Certificate(cert).fingerprint256 };
  };
  // The first issue creates the CA; hand that first certificate out on the first call.
  let pending: ReturnType<typeof issue> | undefined = issue();
  return {
    ca: readFileSync(join(dir, 'ca.crt')),
    issue: () => {
      const next = pending ?? issue();
      pending = undefined;
      return next;
    },
  };
}

/** A CA of its own and a serving certificate from it, written as tls.crt/tls.key, for one phase. */
function servingCerts(phase: string): { ca: ReturnType<typeof certAuthority>; certs: { certFile: string; keyFile: string; ca: Buffer } } {
  const ca = certAuthority(join(work, `ca-${phase}`));
  const pair = ca.issue();
  const dir = join(work, `certs-${phase}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'tls.crt'), pair.cert);
  writeFileSync(join(dir, 'tls.key'), pair.key);
  return { ca, certs: { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key'), ca: ca.ca } };
}

/** A Secret volume: tls.crt → ..data/tls.crt, ..data → ..<timestamp>; rotation swaps ..data atomically. */
function secretVolume(dir: string): { certFile: string; keyFile: string; publish(pair: { cert: Buffer; key: Buffer }): void } {
  mkdirSync(dir, { recursive: true });
  let n = 0;
  const publish = (pair: { cert: Buffer; key: Buffer }): void => {
    const version = `..2026_11_26_00_00_${String(n++).padStart(2, '0')}.000000001`;
    mkdirSync(join(dir, version));
    writeFileSync(join(dir, version, 'tls.crt'), pair.cert);
    writeFileSync(join(dir, version, 'tls.key'), pair.key);
    symlinkSync(version, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  };
  return {
    certFile: join(dir, 'tls.crt'),
    keyFile: join(dir, 'tls.key'),
    publish: (pair) => {
      publish(pair);
      if (n === 1) {
        symlinkSync('..data/tls.crt', join(dir, 'tls.crt'));
        symlinkSync('..data/tls.key', join(dir, 'tls.key'));
      }
    },
  };
}

function handshakeFingerprint(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fp);
    });
    socket.on('error', reject);
  });
}

async function metricsText(s: Served): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${s.metricsPort}/metrics`);
  return res.text();
}

function fates(records: readonly RequestRecord[]): string {
  const m = new Map<string, number>();
  for (const r of records) {
    const k = r.fate === 'answered' ? `answered ${r.status}` : `${r.fate} (${r.error})`;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return [...m].map(([k, v]) => `${k}: ${v}`).join(', ');
}

// ---- a. certificate rotation ------------------------------------------------------------------

async function rotation(): Promise<void> {
  const rotations = SHORT ? 2 : 4;
  const everyMs = SHORT ? 2000 : 3000;
  log(`\n[a] certificate rotation: ${rotations} symlink swaps under load (${uptimeLine()})`);
  const ca = certAuthority(join(work, 'ca-a'));
  const volume = secretVolume(join(work, 'volume-a'));
  const first = ca.issue();
  volume.publish(first);
  const served = await startWebhookProcess({ certs: { certFile: volume.certFile, keyFile: volume.keyFile, ca: ca.ca }, logFile: join(work, 'a.log'), args: ['--tls-reload-interval', '1', '--shutdown-delay', '0'] });
  try {
    const client = new CountingClient({ url: `https://127.0.0.1:${served.port}`, ca: ca.ca, body: oneContainer.body, workers: 6, newConnectionEvery: 10 });
    await sleep(1000);
    const fingerprints = [first.fingerprint];
    const switchMs: number[] = [];
    for (let i = 0; i < rotations; i++) {
      const next = ca.issue();
      fingerprints.push(next.fingerprint);
      const at = performance.now();
      volume.publish(next);
      let seen = '';
      while (performance.now() - at < 5000) {
        seen = await handshakeFingerprint(served.port, ca.ca).catch(() => '');
        if (seen === next.fingerprint) break;
        await sleep(20);
      }
      switchMs.push(seen === next.fingerprint ? performance.now() - at : Number.POSITIVE_INFINITY);
      await sleep(Math.max(0, everyMs - (performance.now() - at)));
    }
    await sleep(1000);
    await client.stop();
    const s = client.summary();
    const seenByLoad = new Set(client.records.map((r) => r.newConnectionCert).filter((x) => x !== undefined));
    const newConnections = client.records.filter((r) => r.newConnectionCert !== undefined).length;
    const reloads = /safe_termination_certificate_reloads_total\{result="success"\} (\d+)/.exec(await metricsText(served))?.[1];
    log(`  requests: ${fates(client.records)}; new TLS connections: ${newConnections}`);
    figures['rotation'] = { rotations, switchMs, summary: s, newConnections, certificatesSeenByLoad: seenByLoad.size, reloads };
    report.push(
      '### a. Certificate rotation under load',
      '',
      `${rotations} rotations by ..data symlink swap (same CA, new serving certificate), one every ${everyMs / 1000} s, under 6 keep-alive clients that open a new connection every 10 requests.`,
      '',
      `- requests: ${s.total} — ${fates(client.records)}`,
      `- new TLS connections during the run: ${newConnections}; distinct certificates they saw: ${seenByLoad.size} of ${fingerprints.length}`,
      `- time from swap to a new handshake seeing the new certificate: ${switchMs.map((x) => `${x.toFixed(0)} ms`).join(', ')}`,
      `- safe_termination_certificate_reloads_total{result="success"}: ${reloads ?? '?'}`,
      '',
    );
    bar('a', 'rotation loses no request', s.total > 0 && s.answered === s.total && s.non200 === 0, `${s.answered}/${s.total} answered 200`);
    bar('a', 'new connections see the new certificate', switchMs.every((x) => x < 5000) && seenByLoad.size === fingerprints.length, `every swap seen within ${f1(Math.max(...switchMs))} ms; load saw ${seenByLoad.size}/${fingerprints.length} certificates`);
    bar('a', 'every rotation counted as a reload', reloads === String(rotations), `${reloads ?? '?'} reloads for ${rotations} rotations`);
  } finally {
    await served.stop();
  }
}

// ---- b. SIGTERM under load ---------------------------------------------------------------------

async function sigterm(): Promise<void> {
  const delayS = 2;
  const timeoutS = 10;
  log(`\n[b] SIGTERM under load (shutdown delay ${delayS} s, timeout ${timeoutS} s) (${uptimeLine()})`);
  const { ca, certs } = servingCerts('b');
  const served = await startWebhookProcess({ certs, logFile: join(work, 'b.log'), args: ['--shutdown-delay', String(delayS), '--shutdown-timeout', String(timeoutS)] });
  const url = `https://127.0.0.1:${served.port}`;
  const epoch = performance.now();
  const client = new CountingClient({ url, ca: ca.ca, body: oneContainer.body, workers: 8, stopAfterRefusals: 3, epoch });
  // Readiness as the kubelet probes it: a new connection every 100 ms.
  const probes: Array<{ at: number; result: string }> = [];
  let probing = true;
  const prober = (async () => {
    while (probing) {
      const at = performance.now() - epoch;
      const result = await httpsRequest(`${url}/readyz`, { method: 'GET', ca: ca.ca }).then(
        (r) => String(r.status),
        (e: unknown) => (e as NodeJS.ErrnoException).code ?? String(e),
      );
      probes.push({ at, result });
      await sleep(100);
    }
  })();
  await sleep(1500);
  // One request in flight across the close: headers and half the body now, the rest after the listener closed.
  const slow = connect({ host: '127.0.0.1', port: served.port, ca: ca.ca, servername: 'localhost' });
  await new Promise<void>((r) => slow.once('secureConnect', () => r()));
  let slowAnswer = '';
  slow.on('data', (d: Buffer) => (slowAnswer += d.toString()));
  slow.on('error', () => {});
  const slowDone = new Promise<void>((r) => slow.once('close', () => r()));
  const body = oneContainer.body;
  slow.write(`POST /mutate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
  slow.write(body.subarray(0, body.length >> 1));

  const sigtermAt = performance.now() - epoch;
  served.signal('SIGTERM');
  setTimeout(() => slow.write(body.subarray(body.length >> 1)), delayS * 1000 + 500);
  const exit = await served.exited;
  const exitAt = performance.now() - epoch;
  await Promise.race([client.finished(), sleep(3000)]);
  await client.stop();
  probing = false;
  await prober;
  await Promise.race([slowDone, sleep(2000)]);
  slow.destroy();

  const firstNotReady = probes.find((p) => p.at >= sigtermAt && p.result === '503');
  const lastReady = [...probes].reverse().find((p) => p.result === '200');
  const firstRefused = probes.find((p) => p.at >= sigtermAt && p.result !== '200' && p.result !== '503');
  const records = client.records;
  const after = (t: number) => records.filter((r) => r.startedAt >= t);
  const s = client.summary();
  const failures = records.filter((r) => r.fate !== 'answered');
  const firstFailure = failures.reduce((m, r) => Math.min(m, r.endedAt), Number.POSITIVE_INFINITY);
  // When the listener closed: the first connection refused to the load or to the probe.
  const closedAt = Math.min(firstRefused?.at ?? Number.POSITIVE_INFINITY, ...records.filter((r) => r.fate === 'refused').map((r) => r.endedAt));
  const answeredAfterClose = records.filter((r) => r.fate === 'answered' && r.endedAt >= closedAt).length;
  const resetInHandshake = failures.filter((r) => r.fate === 'refused' && r.error === 'ECONNRESET').length;
  const closeAsked = after(sigtermAt).filter((r) => r.closeAsked).length;
  const rel = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : `${(x - sigtermAt).toFixed(0)} ms`);
  log(`  requests: ${fates(records)}; slow in-flight request: ${slowAnswer.split('\r\n')[0] ?? '(nothing)'}`);
  figures['sigterm'] = { summary: s, exit, exitAfterMs: exitAt - sigtermAt, firstNotReady: firstNotReady?.at, firstRefused: firstRefused?.at, closedAt, answeredAfterClose, sigtermAt, failures: failures.map((f) => ({ ...f, startedAt: f.startedAt - sigtermAt, endedAt: f.endedAt - sigtermAt })) };
  report.push(
    '### b. SIGTERM under load',
    '',
    `8 keep-alive clients back to back, a readiness probe on a new connection every 100 ms, and one request whose body is half sent before SIGTERM and finished ${delayS * 1000 + 500} ms after (after the listener closed). \`--shutdown-delay ${delayS} --shutdown-timeout ${timeoutS}\`. Times are relative to SIGTERM.`,
    '',
    `- readiness: last 200 at ${rel(lastReady?.at)}, first 503 at ${rel(firstNotReady?.at)}, first probe refused at ${rel(firstRefused?.at)} (${firstRefused?.result ?? '–'})`,
    `- exit: code ${exit.code ?? exit.signal} at ${rel(exitAt)}`,
    `- the listener closed at ${rel(closedAt)} (first connection refused)`,
    `- requests started: ${s.total}; answered: ${s.answered} (non-200: ${s.non200}); answered after SIGTERM with \`connection: close\` (so clients reconnect): ${closeAsked}; answered after the listener closed (accepted before): ${answeredAfterClose}`,
    `- not answered: ${failures.length} — ${failures.length === 0 ? 'none' : fates(failures)}; the first at ${rel(firstFailure)}`,
    `  - refused: no connection was made, so no request was sent — ECONNREFUSED once the listener had closed; ECONNRESET (${resetInHandshake}) when the TCP connection sat in the kernel's accept queue as the listener closed and was reset during the TLS handshake`,
    `  - unwritten (the connection failed before the request was fully sent): ${s.unwritten}; lost (sent, then no answer): ${s.lost}`,
    `- the half-sent request: ${slowAnswer.split('\r\n')[0] || '(no answer)'}`,
    '',
  );
  bar('b', 'readiness goes false first', firstNotReady !== undefined && firstNotReady.at < firstFailure && (firstRefused === undefined || firstNotReady.at < firstRefused.at), `503 at ${rel(firstNotReady?.at)}, first unanswered request at ${rel(firstFailure)}`);
  bar('b', 'every accepted request answered (none lost)', s.lost === 0 && s.unwritten === 0 && s.non200 === 0 && slowAnswer.startsWith('HTTP/1.1 200'), `lost ${s.lost}, unwritten ${s.unwritten}, non-200 ${s.non200}, in-flight request ${slowAnswer.startsWith('HTTP/1.1 200') ? 'answered 200' : 'NOT answered'}`);
  bar('b', 'exit 0 within delay + timeout', exit.code === 0 && exitAt - sigtermAt < (delayS + timeoutS) * 1000, `code ${exit.code ?? exit.signal} after ${(exitAt - sigtermAt).toFixed(0)} ms`);
}

// ---- c. the Kubernetes API going away --------------------------------------------------------

async function apiGone(): Promise<void> {
  const seconds = SHORT ? 4 : 8;
  log(`\n[c] Kubernetes API stopped under load (${seconds} s before, ${seconds} s after) (${uptimeLine()})`);
  const api = await startFakeApiServer();
  const annotations = { 'conntrack.safe-termination.io/udp-timeout': '45', 'conntrack.safe-termination.io/udp-timeout-stream': '180', 'conntrack.safe-termination.io/observed-at': '2026-11-26T00:00:00Z' };
  api.setNodes([makeNode('node-a', { annotations }), makeNode('node-b', { annotations, labels: { zone: 'b' } })]);
  const kubeconfig = api.writeKubeconfig();
  const { ca, certs } = servingCerts('c');
  const served = await startWebhookProcess({ certs, logFile: join(work, 'c.log'), args: ['--kubeconfig', kubeconfig, '--shutdown-delay', '0'] });
  let apiStopped = false;
  try {
    const url = `https://127.0.0.1:${served.port}`;
    const deadline = performance.now() + 15_000;
    while ((await httpsRequest(`${url}/readyz`, { method: 'GET', ca: ca.ca })).status !== 200) {
      if (performance.now() > deadline) throw new Error('webhook not ready (node informer) within 15 s');
      await sleep(100);
    }
    const pod = defaultedPod({ generateName: 'coredns-5d78c9869d-', containers: [{ name: 'coredns', ports: [{ containerPort: 53, protocol: 'UDP' }, { containerPort: 53, protocol: 'TCP' }] }] });
    const body = Buffer.from(JSON.stringify(reviewOf(pod, { uid: 'api-gone-0001' })));
    const answer = async () => (await httpsRequest(`${url}/mutate?timeout=10s`, { method: 'POST', ca: ca.ca, headers: { 'content-type': 'application/json' } }, body)).text;
    const before = await answer();
    const patched = applyAnswer(pod, (JSON.parse(before) as { response: ReviewAnswer }).response) as { metadata: { annotations: Record<string, string> }; spec: { terminationGracePeriodSeconds: number } };
    const record = JSON.parse(patched.metadata.annotations['safe-termination.io/injected']!) as { sleepSeconds: number; conntrack: Record<string, { value: number; source: string }> };
    const target = { url, body, ca: ca.ca };
    await runAutocannon(target, { connections: 8, durationSeconds: 2 });
    const loadBefore = await runAutocannon(target, { connections: 8, durationSeconds: seconds });
    const t0 = performance.now();
    await api.stop();
    apiStopped = true;
    log(`  API server stopped (${(performance.now() - t0).toFixed(0)} ms)`);
    const justAfter = await answer();
    const loadAfter = await runAutocannon(target, { connections: 8, durationSeconds: seconds });
    const later = await answer();
    const ready = (await httpsRequest(`${url}/readyz`, { method: 'GET', ca: ca.ca })).status;
    const warnings = served.log().split('\n').filter((l) => /"level":"(warn|error)"/.test(l));
    const row = (name: string, r: LoadResult) => `| ${name} | ${r.rps.toFixed(0)} | ${f2(r.p50)} | ${f2(r.p99)} | ${f2(r.p999)} | ${r.non2xx + r.socketErrors} |`;
    figures['apiGone'] = { before: loadBefore, after: loadAfter, record, warnings: warnings.length };
    report.push(
      '### c. The Kubernetes API going away',
      '',
      `The webhook reads Nodes from the test's fake API server (\`--kubeconfig\`; two nodes annotated udp-timeout 45 s). A UDP pod (CoreDNS) is reviewed under load (8 connections, ${seconds} s), the API server is stopped, and the same load runs again.`,
      '',
      `- the answer before: sleep ${record.sleepSeconds} s, grace ${patched.spec.terminationGracePeriodSeconds} s, conntrack ${JSON.stringify(record.conntrack)}`,
      `- the answer right after the stop and ${seconds} s later: ${justAfter === before && later === before ? 'byte-for-byte the same' : 'DIFFERENT'}; /readyz after: ${ready}`,
      `- webhook log lines at warn/error after the API went away: ${warnings.length}${warnings[0] ? ` (e.g. ${JSON.stringify((JSON.parse(warnings[0]) as { msg?: string }).msg)})` : ''}`,
      '',
      '| phase | req/s | p50 ms | p99 ms | p99.9 ms | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      row('API up', loadBefore),
      row('API stopped', loadAfter),
      '',
    );
    bar('c', 'answers unchanged after the API went away', justAfter === before && later === before && record.conntrack['udp-timeout']?.source === 'nodes' && podProblems(patched).length === 0, `node facts kept (udp-timeout ${record.conntrack['udp-timeout']?.value} from ${record.conntrack['udp-timeout']?.source}); identical answers`);
    bar('c', 'no errors, still ready', loadBefore.non2xx + loadBefore.socketErrors + loadAfter.non2xx + loadAfter.socketErrors === 0 && ready === 200, `errors ${loadBefore.non2xx + loadBefore.socketErrors} before, ${loadAfter.non2xx + loadAfter.socketErrors} after; /readyz ${ready}`);
    // Latency on a shared machine moves by itself: "unchanged" = within 1.5× or 1 ms of before.
    const same = (a: number, b: number) => b <= Math.max(a * 1.5, a + 1);
    bar('c', 'latency unchanged', same(loadBefore.p50, loadAfter.p50) && same(loadBefore.p99, loadAfter.p99), `p50 ${f2(loadBefore.p50)} → ${f2(loadAfter.p50)} ms, p99 ${f2(loadBefore.p99)} → ${f2(loadAfter.p99)} ms, req/s ${loadBefore.rps.toFixed(0)} → ${loadAfter.rps.toFixed(0)}`);
  } finally {
    await served.stop();
    if (!apiStopped) await api.stop();
  }
}

// ---- d. memory -----------------------------------------------------------------------------------

async function memory(): Promise<void> {
  // The heap is still growing to its working size for the first ~10 s under this mix.
  const warmupS = SHORT ? 15 : 20;
  const measureS = SHORT ? 45 : 120;
  log(`\n[d] memory: ${warmupS} s warm-up, then ${measureS} s sampled (${uptimeLine()})`);
  const { ca, certs } = servingCerts('d');
  const served = await startWebhookProcess({ certs, logFile: join(work, 'd.log'), args: ['--shutdown-delay', '0'] });
  try {
    // A mix: mostly 1-container pods, some 20-container pods, one ~1 MiB pod in twenty.
    const mix = [...Array<Buffer>(10).fill(oneContainer.body), ...Array<Buffer>(9).fill(reviews[1]!.body), reviews[2]!.body];
    const samples: Array<{ at: number; rssMiB: number }> = [];
    const start = performance.now();
    const timer = setInterval(() => {
      const s = sampleProcess(served.pid);
      if (s) samples.push({ at: (performance.now() - start) / 1000, rssMiB: s.rssBytes / 2 ** 20 });
    }, 500);
    const heapAt = async () => Number(/safe_termination_nodejs_heap_size_used_bytes (\d+)/.exec(await metricsText(served))?.[1] ?? Number.NaN) / 2 ** 20;
    const load = await runAutocannon({ url: `https://127.0.0.1:${served.port}`, body: oneContainer.body, ca: ca.ca }, { connections: 8, durationSeconds: warmupS + measureS, bodies: mix });
    clearInterval(timer);
    const heapEnd = await heapAt();
    const text = await metricsText(served);
    const metric = (name: string) => Number(new RegExp(`^safe_termination_${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN) / 2 ** 20;
    const heapTotal = metric('nodejs_heap_size_total_bytes');
    const external = metric('nodejs_external_memory_bytes');
    const steady = samples.filter((s) => s.at >= warmupS);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
    // Medians of the first and last thirds after warm-up: RSS breathes with GC by ±10 % from second to second.
    const window = Math.max(3, Math.floor(steady.length / 3));
    const first = median(steady.slice(0, window).map((s) => s.rssMiB));
    const last = median(steady.slice(-window).map((s) => s.rssMiB));
    const peak = Math.max(...steady.map((s) => s.rssMiB));
    const growth = (last - first) / first;
    const every = Math.max(1, Math.round(samples.length / 12));
    const timeline = samples.filter((_, i) => i % every === 0 || i === samples.length - 1).map((s) => `${s.at.toFixed(0)}s ${s.rssMiB.toFixed(0)}`);
    log(`  ${load.requests} requests, ${load.non2xx + load.socketErrors} errors; RSS ${f1(first)} → ${f1(last)} MiB (${(growth * 100).toFixed(1)} %)`);
    figures['memory'] = { warmupS, measureS, samples, first, last, peak, growth, requests: load.requests, errors: load.non2xx + load.socketErrors, heapEndMiB: heapEnd, heapTotalMiB: heapTotal, externalMiB: external };
    report.push(
      '### d. Memory over a steady soak',
      '',
      `${warmupS + measureS} s at 8 connections cycling a 1-container pod (×10), a 20-container pod (×9) and a ~1 MiB pod (×1); RSS of the webhook process sampled twice a second; growth compares the medians of the first and last thirds (${window} samples each) after a ${warmupS} s warm-up.`,
      '',
      `- ${load.requests} requests (${load.rps.toFixed(0)}/s), ${load.non2xx + load.socketErrors} errors, p99 ${f2(load.p99)} ms`,
      `- RSS after warm-up ${f1(first)} MiB → at the end ${f1(last)} MiB: ${(growth * 100).toFixed(1)} % (peak ${f1(peak)} MiB); JS heap at the end: ${f1(heapEnd)} MiB used of ${f1(heapTotal)} MiB, external ${f1(external)} MiB`,
      `- RSS (MiB) over time: ${timeline.join(', ')}`,
      '',
    );
    bar('d', 'RSS growth under 10 % after warm-up', growth < 0.1 && load.non2xx + load.socketErrors === 0, `${(growth * 100).toFixed(1)} % over ${measureS} s, ${load.non2xx + load.socketErrors} errors`);
  } finally {
    await served.stop();
  }
}

/** A review of about `mib` MiB (a pod whose annotation carries the bulk), as the API server may send. */
function bigReview(mib: number, uid: string): Buffer {
  const pod = defaultedPod({ annotations: { 'example.com/blob': 'x'.repeat(Math.floor(mib * 2 ** 20)) } });
  return Buffer.from(JSON.stringify(reviewOf(pod, { uid })));
}

/** Open `count` TLS connections that send nothing; resolves with the ones that stayed open. */
async function idleConnections(port: number, ca: Buffer, count: number): Promise<{ open: () => number; close: () => void }> {
  const sockets = new Set<ReturnType<typeof connect>>();
  let opened = 0;
  const batch = 100;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, () =>
        new Promise<void>((resolve) => {
          const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
            opened++;
            resolve();
          });
          sockets.add(socket);
          socket.on('error', () => resolve());
          socket.on('close', () => {
            sockets.delete(socket);
            resolve();
          });
        }),
      ),
    );
  }
  log(`  ${opened} of ${count} TLS connections opened, ${sockets.size} still open`);
  return { open: () => sockets.size, close: () => sockets.forEach((s) => s.destroy()) };
}

async function hostileMemory(): Promise<void> {
  const idle = 5000;
  const concurrent = 64;
  const chartValues = parseYaml(readFileSync(join(REPO_ROOT, 'charts/safe-termination/values.yaml'), 'utf8')) as { webhook: { resources: { limits: { memory: string } } } };
  const limitMiB = Number(/^(\d+)Mi$/.exec(chartValues.webhook.resources.limits.memory)?.[1] ?? Number.NaN);
  log(`\n[e] hostile memory: ${idle} idle connections, then ${concurrent} concurrent 3 MiB reviews (${uptimeLine()})`);
  const { ca, certs } = servingCerts('e');
  const served = await startWebhookProcess({ certs, logFile: join(work, 'e.log'), args: ['--shutdown-delay', '0', ...(process.env['SOAK_E_ARGS'] ?? '').split(' ').filter(Boolean)] });
  let peakMiB = 0;
  const timer = setInterval(() => {
    const sample = sampleProcess(served.pid);
    if (sample) peakMiB = Math.max(peakMiB, sample.rssBytes / 2 ** 20);
  }, 100);
  const url = `https://127.0.0.1:${served.port}`;
  const answer = async (): Promise<{ status: number; ms: number }> => {
    const start = performance.now();
    const r = await httpsRequest(`${url}/mutate`, { method: 'POST', ca: ca.ca, headers: { 'content-type': 'application/json' } }, oneContainer.body).catch(() => ({ status: 0 }));
    return { status: r.status, ms: performance.now() - start };
  };
  try {
    const baseline = sampleProcess(served.pid)?.rssBytes ?? 0;
    const held = await idleConnections(served.port, ca.ca, idle);
    await sleep(500);
    const afterIdle = sampleProcess(served.pid)?.rssBytes ?? 0;
    const during = await answer();
    log(`  RSS ${f1(baseline / 2 ** 20)} → ${f1(afterIdle / 2 ** 20)} MiB with ${held.open()} of ${idle} idle connections still open; another client: ${during.status} in ${f1(during.ms)} ms`);
    held.close();
    const big = bigReview(3, 'big');
    const started = performance.now();
    const results = Promise.all(
      Array.from({ length: concurrent }, () =>
        httpsRequest(`${url}/mutate`, { method: 'POST', ca: ca.ca, headers: { 'content-type': 'application/json' } }, big).then(
          (r) => r.status,
          () => 0,
        ),
      ),
    );
    await sleep(200);
    const meanwhile = await answer();
    const statuses = await results;
    const took = (performance.now() - started) / 1000;
    const count = (s: number) => statuses.filter((x) => x === s).length;
    log(`  ${concurrent} × ${(big.length / 2 ** 20).toFixed(1)} MiB reviews in ${took.toFixed(1)} s: ${count(200)} answered, ${count(503)} told to retry (503), ${count(0)} failed; another client meanwhile: ${meanwhile.status} in ${f1(meanwhile.ms)} ms; peak RSS ${f1(peakMiB)} MiB`);
    figures['hostileMemory'] = { idle, stillOpen: held.open(), concurrent, reviewMiB: big.length / 2 ** 20, baselineMiB: baseline / 2 ** 20, afterIdleMiB: afterIdle / 2 ** 20, peakMiB, answered: count(200), shed: count(503), failed: count(0), during, meanwhile };
    report.push(
      '### e. Hostile memory: idle connections and concurrent big reviews',
      '',
      `${idle} TLS connections opened and left idle (the server closes idle ones near its --max-connections cap), then ${concurrent} reviews of ${(big.length / 2 ** 20).toFixed(1)} MiB sent at once (the server reads at most --max-body-bytes-in-flight of bodies at once; the rest wait up to 2 s, then get 503). RSS of the webhook process sampled every 100 ms.`,
      '',
      `- RSS ${f1(baseline / 2 ** 20)} MiB at start, ${f1(afterIdle / 2 ** 20)} MiB with the idle connections (${held.open()} still open); another client answered ${during.status} in ${f1(during.ms)} ms`,
      `- big reviews: ${count(200)} answered, ${count(503)} refused with 503, ${count(0)} failed, in ${took.toFixed(1)} s; another client answered ${meanwhile.status} in ${f1(meanwhile.ms)} ms`,
      `- peak RSS ${f1(peakMiB)} MiB (chart limit ${limitMiB} MiB)`,
      '',
    );
    bar('e', `RSS under the chart limit (${limitMiB} MiB) under hostile load`, peakMiB < limitMiB, `peak ${f1(peakMiB)} MiB`);
    bar('e', 'other clients still answered', during.status === 200 && meanwhile.status === 200, `with idle connections: ${during.status}; during big reviews: ${meanwhile.status}`);
    bar('e', 'big reviews answered or told to retry, none lost', count(0) === 0 && count(200) > 0, `${count(200)} answered, ${count(503)} × 503, ${count(0)} failed`);
  } finally {
    clearInterval(timer);
    await served.stop();
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const cpu = cpus();
  log(`soak ${SHORT ? '(short)' : '(full)'}: ${cpu.length} × ${cpu[0]?.model ?? '?'}, Node ${process.version}; start ${uptimeLine()}`);
  try {
    if (ONLY.has('a')) await rotation();
    if (ONLY.has('b')) await sigterm();
    if (ONLY.has('c')) await apiGone();
    if (ONLY.has('d')) await memory();
    if (ONLY.has('e')) await hostileMemory();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const took = (performance.now() - started) / 1000;
  const out = [
    `## Soak ${SHORT ? '(short)' : '(full)'} ${new Date().toISOString()}`,
    '',
    `Machine: ${cpu.length} × ${cpu[0]?.model ?? '?'}, Node ${process.version}; ${uptimeLine()} at the end; took ${took.toFixed(0)} s.`,
    '',
    ...report,
    '### Bars',
    '',
    ...bars.map((b) => `- ${b.pass ? 'PASS' : 'FAIL'} (${b.phase}) ${b.what}: ${b.detail}`),
    '',
  ].join('\n');
  process.stdout.write(`\n${out}`);
  if (flags.json) writeFileSync(flags.json, JSON.stringify({ figures, bars }, null, 2));
  if (bars.some((b) => !b.pass)) process.exitCode = 1;
}

await main();
