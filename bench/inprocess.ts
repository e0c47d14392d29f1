/** In-process cost per pod, no HTTP: JSON.parse, the review handler, decide + patch alone. */
import { createReviewHandler } from '../src/admission/handler.ts';
import { LINUX_DEFAULTS, staticFacts } from '../src/core/conntrack.ts';
import { fixedFacts } from '../src/core/facts.ts';
import { MODEL_DEFAULTS } from '../src/core/model.ts';
import { planPatch } from '../src/core/patch.ts';
import { decide } from '../src/core/plan.ts';
import { placementOf, podSchema } from '../src/core/pod.ts';
import type { BenchReview } from './reviews.ts';

export interface InProcessRow {
  readonly review: string;
  /** µs per operation, median of rounds. */
  readonly jsonParse: number;
  readonly podParse: number;
  readonly decidePatch: number;
  readonly handler: number;
}

/** Median µs per call of `fn` over `rounds` rounds of about `roundMs` each. */
export function timeIt(fn: () => unknown, roundMs = 200, rounds = 5): number {
  // Calibrate the batch size so one batch takes ~10 ms.
  let batch = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) fn();
    if (performance.now() - t0 > 10 || batch > 1 << 20) break;
    batch *= 2;
  }
  const results: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let calls = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < roundMs) {
      for (let i = 0; i < batch; i++) fn();
      calls += batch;
    }
    results.push(((performance.now() - t0) * 1000) / calls);
  }
  results.sort((a, b) => a - b);
  return results[Math.floor(results.length / 2)]!;
}

export function measureInProcess(reviews: readonly BenchReview[], roundMs = 200): InProcessRow[] {
  const facts = fixedFacts(staticFacts(LINUX_DEFAULTS), undefined);
  const handle = createReviewHandler({ defaults: MODEL_DEFAULTS, facts });
  const rows: InProcessRow[] = [];
  for (const r of reviews) {
    const text = r.body.toString('utf8');
    const review = JSON.parse(text) as { request: { object: unknown } };
    const pod = podSchema.parse(review.request.object);
    const ctx = { defaults: MODEL_DEFAULTS, facts: facts.conntrackFor(placementOf(pod)), kubeVersion: facts.kubeVersion() };
    const check = decide(pod, ctx);
    if (check.kind !== 'inject') throw new Error(`${r.id}: expected an injection, got ${check.kind}`);
    rows.push({
      review: r.id,
      jsonParse: timeIt(() => JSON.parse(text), roundMs),
      podParse: timeIt(() => podSchema.parse(review.request.object), roundMs),
      decidePatch: timeIt(() => {
        const d = decide(pod, ctx);
        return d.kind === 'inject' ? planPatch(pod, d.plan) : d;
      }, roundMs),
      handler: timeIt(() => handle(review), roundMs),
    });
  }
  return rows;
}
