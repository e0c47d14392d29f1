/**
 * The Service index's share of an admission: the review handler with
 * 10,000 Services in the index (1,000 of them in the pod's namespace) against the
 * same handler without Services, in process (no HTTP: the index is read inside
 * the handler, so this is where its cost shows, undiluted by TLS and Fastify);
 * and the memory per Service, the informer's trimmed cache object plus its index
 * entry, measured on the heap.
 *
 * The Services are realistic: each selects `app: <its own name>` plus a shared
 * `tier` label; in the pod's namespace one selects the pod (its own TCP Service,
 * so that both handlers reach the same decision and only the index's cost
 * differs) and 20 share the pod's `app` label but not the rest of their selector,
 * so the candidate check runs too. `node bench/services.ts` runs it alone.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createReviewHandler } from '../src/admission/handler.ts';
import type { ReviewHandler } from '../src/admission/handler.ts';
import { trimService } from '../src/cluster/service-informer.ts';
import type { TrimmedService } from '../src/cluster/service-informer.ts';
import { LINUX_DEFAULTS, staticFacts } from '../src/core/conntrack.ts';
import { fixedFacts } from '../src/core/facts.ts';
import type { FactsSource } from '../src/core/facts.ts';
import { MODEL_DEFAULTS } from '../src/core/model.ts';
import { readService, ServiceIndex } from '../src/core/services.ts';
import { makeService } from '../test/support/fake-apiserver.ts';
import { timeIt } from './inprocess.ts';
import type { BenchReview } from './reviews.ts';

export interface ServicesReading {
  readonly review: string;
  readonly services: number;
  readonly inNamespace: number;
  /** µs per review, median of interleaved rounds. */
  readonly handlerNone: number;
  readonly handlerIndexed: number;
  /** Median of the paired ratios indexed / none. */
  readonly ratio: number;
  /** µs of the index lookup alone (the pod's namespace and labels). */
  readonly matchMicros: number;
  /** p99 of single handler calls, µs. */
  readonly p99None: number;
  readonly p99Indexed: number;
  /** Bytes of heap per Service (trimmed cache object + index entry); undefined without a GC to call. */
  readonly bytesPerService: number | undefined;
  /** The Service that selects the pod was found (the index is really consulted). */
  readonly matched: readonly string[];
}

/** A Service as the API server sends it (defaulted fields, managedFields), 10,000 of them across 10 namespaces. */
function clusterServices(total: number, namespaces: number, podNamespace: string, podApp: string): Array<Record<string, any>> {
  const out: Array<Record<string, any>> = [];
  const perNs = Math.floor(total / namespaces);
  for (let n = 0; n < namespaces; n++) {
    const ns = n === 0 ? podNamespace : `team-${n}`;
    for (let i = 0; i < perNs; i++) {
      const name = `svc-${i}`;
      const s = makeService(ns, name, `10.${96 + n}.${i >> 8}.${i & 255}`, [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'grpc', port: 9090 },
      ]);
      s['metadata'] = { ...s['metadata'], resourceVersion: String(1000 + n * perNs + i), uid: `uid-${n}-${i}`, annotations: { 'meta.helm.sh/release-name': `rel-${i}` } };
      s['spec']['selector'] = { app: name, tier: 'backend' };
      if (n === 0 && i < 20) s['spec']['selector'] = { app: podApp, track: `canary-${i}` };
      // The pod's own Service (TCP, like its port): the same decision with and without the index.
      if (n === 0 && i === 20) s['spec']['selector'] = { app: podApp };
      out.push(s);
    }
  }
  return out;
}

function gcFunction(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g !== undefined) return g;
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
}

function heapAfterGc(gc: () => void): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

function p99(handle: ReviewHandler, review: unknown, calls: number): number {
  const times = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    handle(review);
    times[i] = performance.now() - t0;
  }
  times.sort();
  return times[Math.floor(calls * 0.99)]! * 1000;
}

export function measureServices(r: BenchReview, o: { total?: number; namespaces?: number; roundMs?: number; rounds?: number } = {}): ServicesReading {
  const total = o.total ?? 10_000;
  const namespaces = o.namespaces ?? 10;
  const review = JSON.parse(r.body.toString('utf8')) as { request: { namespace?: string; object: { metadata: { labels: Record<string, string> } } } };
  const podNamespace = review.request.namespace ?? 'default';
  const podApp = review.request.object.metadata.labels['app'] ?? 'web';
  const raw = clusterServices(total, namespaces, podNamespace, podApp);

  // Memory: what the informer keeps per Service (its trimmed cache object) and the index entry.
  const gc = gcFunction();
  const build = (): { cache: TrimmedService[]; index: ServiceIndex } => {
    const cache: TrimmedService[] = [];
    const index = new ServiceIndex();
    for (const s of raw) {
      const trimmed = trimService(JSON.parse(JSON.stringify(s)));
      if (trimmed === undefined) continue;
      cache.push(trimmed);
      const reading = readService(trimmed);
      if (reading !== undefined) index.apply(reading);
    }
    return { cache, index };
  };
  // The median of three builds: a full GC now and then leaves some garbage behind.
  const deltas: number[] = [];
  const measureOnce = (collect: () => void): void => {
    const before = heapAfterGc(collect);
    const kept = build();
    deltas.push(heapAfterGc(collect) - before);
    if (kept.cache.length === 0) throw new Error('no Services built');
  };
  if (gc !== undefined) for (let i = 0; i < 3; i++) measureOnce(gc);
  const { cache, index } = build();
  const bytesPerService = gc === undefined ? undefined : [...deltas].sort((x, y) => x - y)[1]! / cache.length;

  const base = fixedFacts(staticFacts(LINUX_DEFAULTS), undefined);
  const withServices: FactsSource = { ...base, servicesFor: (ns, labels) => index.match(ns, labels) };
  const none = createReviewHandler({ defaults: MODEL_DEFAULTS, facts: base });
  const indexed = createReviewHandler({ defaults: MODEL_DEFAULTS, facts: withServices });
  const matched = index.match(podNamespace, review.request.object.metadata.labels).map((s) => s.service);

  // Many short rounds, alternating, so that the drift of a shared host hits both
  // alike; the difference is the median of the per-pair ratios.
  const roundMs = o.roundMs ?? 60;
  const rounds = o.rounds ?? 15;
  const a: number[] = [];
  const b: number[] = [];
  const ratios: number[] = [];
  // Warm-up: both handlers optimised before anything counts.
  timeIt(() => none(review), 200, 1);
  timeIt(() => indexed(review), 200, 1);
  for (let i = 0; i < rounds; i++) {
    const first = i % 2 === 0;
    const x = first ? timeIt(() => none(review), roundMs, 1) : 0;
    const y = timeIt(() => indexed(review), roundMs, 1);
    const x2 = first ? x : timeIt(() => none(review), roundMs, 1);
    a.push(x2);
    b.push(y);
    ratios.push(y / x2);
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const labels = review.request.object.metadata.labels;
  const matchMicros = timeIt(() => index.match(podNamespace, labels), 200, 3);
  const calls = 20_000;
  p99(none, review, 2000);
  p99(indexed, review, 2000);
  const p99None = Math.min(p99(none, review, calls), p99(none, review, calls));
  const p99Indexed = Math.min(p99(indexed, review, calls), p99(indexed, review, calls));
  // Keep the cache alive until here, as the informer does.
  if (cache.length !== total) throw new Error(`expected ${total} Services, trimmed ${cache.length}`);
  return {
    review: r.id,
    services: total,
    inNamespace: Math.floor(total / namespaces),
    handlerNone: median(a),
    handlerIndexed: median(b),
    ratio: median(ratios),
    matchMicros,
    p99None,
    p99Indexed,
    bytesPerService,
    matched,
  };
}

export function servicesReport(s: ServicesReading): string[] {
  const f1 = (x: number) => x.toFixed(1);
  const delta = s.ratio - 1;
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;
  const p99Delta = s.p99Indexed / s.p99None - 1;
  const share = s.matchMicros / s.handlerNone;
  return [
    `| review | Services in the index (in the pod's namespace) | handler µs, none | handler µs, indexed | difference (paired median) | index lookup µs | p99 µs, none | p99 µs, indexed | heap per Service |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| ${s.review} | ${s.services} (${s.inNamespace}) | ${f1(s.handlerNone)} | ${f1(s.handlerIndexed)} | ${pct(delta)} | ${s.matchMicros.toFixed(2)} | ${f1(s.p99None)} | ${f1(s.p99Indexed)} | ${s.bytesPerService === undefined ? 'n/a' : `${Math.round(s.bytesPerService)} B`} |`,
    '',
    `- within 10 % of the webhook without Services (aim): the index lookup is ${pct(share)} of the handler's cost → ${share <= 0.1 ? 'PASS' : 'FAIL'}; ` +
      `measured (paired median of alternating rounds, noisy on a shared host) ${pct(delta)}, p99 of single calls ${pct(p99Delta)}; the pod matched ${s.matched.join(', ') || 'nothing'}`,
  ];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { benchReviews } = await import('./reviews.ts');
  for (const r of benchReviews().slice(0, 2)) process.stdout.write(`${servicesReport(measureServices(r)).join('\n')}\n\n`);
}
