import t from 'tap';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { startTestWebhook } from '../support/webhook.ts';

t.test('a defaulted pod is patched into a valid pod', async (t) => {
  const w = await startTestWebhook();
  t.teardown(() => w.close());
  const pod = defaultedPod();
  const res = await w.post(reviewOf(pod));
  t.equal(res.status, 200);
  const answer = res.json<{ response: ReviewAnswer }>().response;
  const out = applyAnswer(pod, answer) as any;
  t.same(podProblems(out), []);
  t.equal(out.spec.terminationGracePeriodSeconds, 35);
});
