/**
 * The MutatingWebhookConfiguration: which pods reach the webhook, how the
 * API server calls it, and its name (configurations are called in name order).
 */
import t from 'tap';
import { ciModes, NAMESPACE, one, render, selects } from './render.ts';
import type { K8sObject } from './render.ts';

const modes = ciModes();

function webhookOf(objects: K8sObject[]): any {
  const mwc = one(objects, 'MutatingWebhookConfiguration');
  if (mwc.webhooks.length !== 1) throw new Error(`expected one webhook, got ${mwc.webhooks.length}`);
  return mwc.webhooks[0];
}

for (const [mode, file] of modes) {
  t.test(`${mode}: the call contract`, async (t) => {
    const objects = await render({ valuesFiles: [file] });
    const w = webhookOf(objects);
    t.equal(w.name, 'pods.safe-termination.io');
    t.same(w.admissionReviewVersions, ['v1']);
    t.same(w.rules, [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }], 'CREATE of pods only');
    t.equal(w.sideEffects, 'None');
    t.equal(w.matchPolicy, 'Equivalent');
    const tuned = mode === 'tuned';
    t.equal(w.failurePolicy, tuned ? 'Fail' : 'Ignore');
    t.equal(w.timeoutSeconds, tuned ? 3 : 5);
    t.equal(w.reinvocationPolicy, 'IfNeeded');
    const svc = one(objects, 'Service', 'safe-termination');
    t.same(w.clientConfig.service, { name: svc.metadata.name, namespace: NAMESPACE, path: '/mutate', port: 443 }, 'calls POST /mutate on the chart Service');
    t.notOk('url' in w.clientConfig);
  });
}

t.test('which namespaces and pods reach the webhook', async (t) => {
  for (const namespace of ['safe-termination', 'ops']) {
    const w = webhookOf(await render({ namespace, set: ['webhook.excludeNamespaces={monitoring}'] }));
    const ns = (name: string, labels: Record<string, string> = {}): Record<string, string> => ({ 'kubernetes.io/metadata.name': name, ...labels });
    const optIn = { 'safe-termination.io/inject': 'enabled' };
    t.ok(selects(w.namespaceSelector, ns('shop', optIn)), 'an opted-in namespace is matched');
    t.notOk(selects(w.namespaceSelector, ns('shop')), 'a namespace without the label is not');
    t.notOk(selects(w.namespaceSelector, ns('shop', { 'safe-termination.io/inject': 'disabled' })), 'nor one with another value');
    t.notOk(selects(w.namespaceSelector, ns(namespace, optIn)), `the release namespace ${namespace} is never matched, even labelled`);
    t.notOk(selects(w.namespaceSelector, ns('kube-system', optIn)), 'kube-system is never matched, even labelled');
    t.notOk(selects(w.namespaceSelector, ns('monitoring', optIn)), 'excludeNamespaces are never matched');
    t.ok(selects(w.objectSelector, {}), 'a pod without labels is sent');
    t.ok(selects(w.objectSelector, { app: 'web', 'safe-termination.io/inject': 'enabled' }), 'a pod with other labels is sent');
    t.notOk(selects(w.objectSelector, { 'safe-termination.io/inject': 'disabled' }), 'a pod labelled inject=disabled is not sent');
  }
  const objects = await render();
  const w = webhookOf(objects);
  for (const kind of ['Deployment', 'DaemonSet']) {
    const labels = one(objects, kind).spec.template.metadata.labels;
    t.notOk(selects(w.objectSelector, labels), `the chart's own ${kind} pods are not sent to the webhook`);
  }
});

t.test('the configuration name sorts after the usual sidecar injectors', async (t) => {
  const name = one(await render(), 'MutatingWebhookConfiguration').metadata.name;
  t.equal(name, 'zz-safe-termination');
  // Names of widely used injectors' MutatingWebhookConfigurations.
  const injectors = ['istio-sidecar-injector', 'istio-revision-tag-default', 'linkerd-proxy-injector', 'vault-agent-injector-cfg', 'consul-connect-injector', 'dapr-sidecar-injector', 'kuma-admission-mutating-webhook-configuration', 'opentelemetry-operator-mutation'];
  // The API server sorts configurations by name with Go string comparison (bytes).
  for (const other of injectors) t.ok(Buffer.compare(Buffer.from(other), Buffer.from(name)) < 0, `${other} runs before ${name}`);
  const custom = one(await render({ set: ['webhook.configurationName=aa-first'] }), 'MutatingWebhookConfiguration');
  t.equal(custom.metadata.name, 'aa-first', 'webhook.configurationName overrides it');
  const other = one(await render({ release: 'canary' }), 'MutatingWebhookConfiguration');
  t.equal(other.metadata.name, 'zz-canary-safe-termination', 'two releases get two configurations');
});

t.test('failurePolicy, timeoutSeconds and reinvocationPolicy come from values', async (t) => {
  const w = webhookOf(await render({ set: ['webhook.failurePolicy=Fail', 'webhook.timeoutSeconds=10', 'webhook.reinvocationPolicy=Never'] }));
  t.equal(w.failurePolicy, 'Fail');
  t.equal(w.timeoutSeconds, 10);
  t.equal(w.reinvocationPolicy, 'Never');
});

t.test('matchConditions skip what the webhook would not patch: the opt-out annotation, mirror pods and (by default) Job pods', async (t) => {
  const names = (w: any): string[] => (w.matchConditions ?? []).map((c: { name: string }) => c.name);
  const byDefault = webhookOf(await render());
  t.same(names(byDefault), ['not-opted-out', 'not-a-mirror-pod', 'not-owned-by-a-job']);
  t.match(byDefault.matchConditions[0].expression, /'safe-termination\.io\/inject'\] != 'false'/);
  t.match(byDefault.matchConditions[1].expression, /kubernetes\.io\/config\.mirror/);
  t.same(names(webhookOf(await render({ set: ['injectJobPods=true'] }))), ['not-opted-out', 'not-a-mirror-pod'], 'Job pods are called when they are injected');
  t.same(names(webhookOf(await render({ set: ['webhook.matchConditions=false'] }))), [], 'off: every pod is called');
});
