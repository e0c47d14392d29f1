/**
 * Summary of a V8 .cpuprofile (node --cpu-prof): self time by area of the code and
 * the top functions. Native frames (JSON.parse, …) count towards the area of the
 * JavaScript that called them.
 *
 * Usage: node bench/profile.ts FILE.cpuprofile [TOP] [SKIP_MS]
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

const AREAS: ReadonlyArray<readonly [RegExp, string]> = [
  [/node_modules\/(fastify|find-my-way|avvio|light-my-request|@fastify|fast-json-stringify|fast-querystring|toad-cache|process-warning|abstract-logging|rfdc|fast-decode-uri-component|ret|safe-regex2)\//, 'fastify'],
  [/node_modules\/zod\//, 'zod (validation)'],
  [/node_modules\/(pino|sonic-boom|fast-redact|@pinojs|thread-stream|quick-format-unescaped|safe-stable-stringify|on-exit-leak-free|atomic-sleep)/, 'pino (logging)'],
  [/node_modules\/(prom-client|tdigest|bintrees)\//, 'prom-client (metrics)'],
  [/node_modules\/secure-json-parse\//, 'secure-json-parse (body parse)'],
  [/node_modules\/fast-json-patch\//, 'fast-json-patch'],
  [/\/src\/core\//, 'src/core (decision)'],
  [/\/src\/admission\//, 'src/admission'],
  [/\/src\/server\//, 'src/server'],
  [/^node:(internal\/)?(tls|_tls|crypto|internal\/tls)|_tls_/, 'node tls'],
  [/^node:(internal\/)?(http|_http)|internal\/http/, 'node http'],
  [/^node:(internal\/)?(net|stream|streams|internal\/streams)|internal\/stream/, 'node net/streams'],
  [/^node:/, 'node other'],
];

function areaOf(url: string): string | undefined {
  if (url === '') return undefined;
  for (const [re, name] of AREAS) if (re.test(url)) return name;
  return 'other JS';
}

export interface ProfileSummary {
  /** Requests served in the profiled window, when known: figures are then also per request. */
  readonly requests: number | undefined;
  readonly totalMs: number;
  readonly busyMs: number;
  readonly areas: ReadonlyArray<{ area: string; ms: number; share: number }>;
  readonly top: ReadonlyArray<{ fn: string; where: string; area: string; ms: number; share: number }>;
}

export interface SummaryOptions {
  readonly top?: number;
  /** Ignore samples in the first `skipMs` of the profile (start-up, warm-up). */
  readonly skipMs?: number;
  /** Ignore samples after this offset (ms from the profile's start). */
  readonly untilMs?: number;
  readonly requests?: number;
}

export function summarizeProfile(file: string, o: SummaryOptions = {}): ProfileSummary {
  const topN = o.top ?? 25;
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const areaCache = new Map<number, string>();
  const area = (id: number): string => {
    const cached = areaCache.get(id);
    if (cached !== undefined) return cached;
    const n = byId.get(id)!;
    const name = n.callFrame.functionName;
    let a: string;
    if (name === '(garbage collector)') a = 'GC';
    else if (name === '(idle)') a = 'idle';
    else if (name === '(program)') a = '(program: native, unattributed)';
    else a = areaOf(n.callFrame.url) ?? (parent.has(id) ? area(parent.get(id)!) : 'native');
    if (a === 'native' && name !== '(root)') a = `native ${name}`;
    areaCache.set(id, a);
    return a;
  };
  const self = new Map<number, number>();
  const skip = (o.skipMs ?? 0) * 1000;
  const until = o.untilMs === undefined ? Number.POSITIVE_INFINITY : o.untilMs * 1000;
  let at = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const delta = p.timeDeltas[i] ?? 0;
    at += delta;
    if (at < skip || at > until) continue;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + delta / 1000);
  }
  let total = 0;
  let idle = 0;
  const areas = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; area: string; ms: number }>();
  for (const [id, ms] of self) {
    total += ms;
    const a = area(id);
    if (a === 'idle') {
      idle += ms;
      continue;
    }
    areas.set(a, (areas.get(a) ?? 0) + ms);
    const f = byId.get(id)!.callFrame;
    const where = f.url === '' ? '(native)' : `${f.url.replace(/^file:\/\/.*?\/(node_modules|dist|src)\//, '$1/')}:${f.lineNumber + 1}`;
    const key = `${f.functionName}@${where}`;
    const entry = fns.get(key) ?? { fn: f.functionName || '(anonymous)', where, area: a, ms: 0 };
    entry.ms += ms;
    fns.set(key, entry);
  }
  const busy = total - idle;
  return {
    requests: o.requests,
    totalMs: total,
    busyMs: busy,
    areas: [...areas].map(([a, ms]) => ({ area: a, ms, share: ms / busy })).sort((x, y) => y.ms - x.ms),
    top: [...fns.values()].map((f) => ({ ...f, share: f.ms / busy })).sort((x, y) => y.ms - x.ms).slice(0, topN),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const n = s.requests;
  const perReq = (ms: number) => (n ? ` ${((ms * 1000) / n).toFixed(1)} |` : '');
  const head = n ? ' µs per request |' : '';
  const sep = n ? ' ---: |' : '';
  const lines = [
    `busy ${s.busyMs.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms profiled${n ? `, ${n} requests: ${((s.busyMs * 1000) / n).toFixed(0)} µs of CPU per request (main thread, profiler on)` : ''}`,
    '',
    `| area | self ms | share of busy |${head}`,
    `| --- | ---: | ---: |${sep}`,
  ];
  for (const a of s.areas) if (a.share >= 0.005) lines.push(`| ${a.area} | ${a.ms.toFixed(0)} | ${pct(a.share)} |${perReq(a.ms)}`);
  lines.push('', `| function | where | area | self ms | share |${head}`, `| --- | --- | --- | ---: | ---: |${sep}`);
  for (const f of s.top) lines.push(`| ${f.fn.replaceAll('|', '\\|')} | ${f.where} | ${f.area} | ${f.ms.toFixed(0)} | ${pct(f.share)} |${perReq(f.ms)}`);
  return lines.join('\n');
}

if (import.meta.main) {
  const [file, top, skipMs] = process.argv.slice(2);
  if (file === undefined) {
    process.stderr.write('usage: node bench/profile.ts FILE.cpuprofile [TOP] [SKIP_MS]\n');
    process.exit(2);
  }
  process.stdout.write(`${formatProfile(summarizeProfile(file, { top: top ? Number(top) : 25, skipMs: skipMs ? Number(skipMs) : 0 }))}\n`);
}
