/**
 * The review handler reads only what the decision needs: the bulk of a pod as the
 * API server sends it (managedFields, env, volumes, status) is never walked, copied
 * or validated. Each such field here is a tripwire that throws when read.
 */
import t from 'tap';
import { createReviewHandler } from '../../src/admission/handler.ts';
import { LINUX_DEFAULTS, staticFacts } from '../../src/core/conntrack.ts';
import { fixedFacts } from '../../src/core/facts.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';

const reads: string[] = [];

function tripwire<T extends object>(target: T, keys: readonly string[], where: string): T {
  for (const key of keys) {
    Object.defineProperty(target, key, {
      enumerable: true,
      get() {
        reads.push(`${where}.${key}`);
        throw new Error(`${where}.${key} was read`);
      },
    });
  }
  return target;
}

t.test('managedFields, env, volumes and status are never read', async (t) => {
  const handle = createReviewHandler({ defaults: MODEL_DEFAULTS, facts: fixedFacts(staticFacts(LINUX_DEFAULTS), undefined) });
  const review = reviewOf(defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }] })) as any;
  const pod = review.request.object;
  tripwire(pod.metadata, ['managedFields'], 'metadata');
  tripwire(pod.spec, ['volumes', 'tolerations'], 'spec');
  tripwire(pod.spec.containers[0], ['env', 'volumeMounts', 'resources'], 'containers[0]');
  tripwire(pod, ['status'], 'pod');
  const result = handle(review);
  t.same(reads, [], 'no tripwire was read');
  t.equal(result.kind, 'handled');
  if (result.kind === 'handled') {
    t.equal(result.outcome, 'patched');
    t.equal(result.decision, 'injected');
  }
});
