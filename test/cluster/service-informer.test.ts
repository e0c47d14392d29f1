/**
 * The webhook's Service informer against the fake API server's wire
 * protocol, through the real client-node informer: list (chunked) and watch into
 * the ServiceIndex, trimming, what counts (headless, no selector, ExternalName);
 * and the webhook wired as `serve` wires it: a pod without ports behind a UDP
 * Service is sized by udp-timeout and the debug line names the Service; a
 * Service informer that is refused or switched off never delays an admission
 * nor readiness beyond --informer-sync-timeout.
 */
import t from 'tap';
import type { Test } from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { ServiceInformer, trimService } from '../../src/cluster/service-informer.ts';
import { ServiceIndex } from '../../src/core/services.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { makeService, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer } from '../support/fake-apiserver.ts';
import { LogCapture, startTestWebhook } from '../support/webhook.ts';
import type { TestWebhook } from '../support/webhook.ts';

const TUNING = {
  informer: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1500 },
  version: { backoff: { initialMs: 100, maxMs: 300 }, requestTimeoutMs: 1500 },
  kubeProxyRequestTimeoutMs: 1500,
};

const dnsService = (namespace = 'shop', name = 'dns') => makeService(namespace, name, '10.96.0.10', [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }]);
/** Selects app=web (the labels of defaultedPod). */
const selecting = (svc: Record<string, any>, selector: Record<string, string> | null = { app: 'web' }) => {
  const out = structuredClone(svc);
  if (selector === null) delete out.spec.selector;
  else out.spec.selector = selector;
  return out;
};

async function informerRig(t: Test, setup: (api: FakeApiServer) => void, pageSize = 500) {
  const api = await startFakeApiServer();
  setup(api);
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const index = new ServiceIndex();
  const logs = new LogCapture();
  const informer = new ServiceInformer({ kubeConfig: kc, log: createLogger('debug', logs), index, pageSize, backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 2000 });
  t.teardown(async () => {
    await informer.stop();
    await api.stop();
  });
  informer.start();
  return { api, index, informer, logs };
}

const names = (index: ServiceIndex, ns: string, labels: Record<string, string>) => index.match(ns, labels).map((s) => `${s.service}:${s.protocols.join('+')}`);

t.test('trimService keeps only what matching reads', async (t) => {
  const svc = { ...selecting(dnsService()), metadata: { ...dnsService().metadata, resourceVersion: '7', annotations: { big: 'x'.repeat(1000) }, managedFields: [{}] } };
  t.same(trimService(svc), {
    metadata: { name: 'dns', namespace: 'shop', resourceVersion: '7' },
    spec: { type: 'ClusterIP', clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ protocol: 'UDP' }, { protocol: 'TCP' }] },
  });
  t.equal(trimService({ metadata: {} }), undefined, 'no name: dropped');
});

t.test('list (chunked) and watch keep the index current', async (t) => {
  const r = await informerRig(
    t,
    (api) => {
      api.setServices([
        selecting(dnsService()),
        selecting(makeService('shop', 'web', '10.96.0.20', [{ port: 80 }])),
        selecting(makeService('shop', 'canary', '10.96.0.21', [{ port: 80, protocol: 'SCTP' }]), { app: 'web', track: 'canary' }),
        selecting(dnsService('other', 'dns')),
        selecting({ ...dnsService('shop', 'headless'), spec: { ...dnsService().spec, clusterIP: 'None', clusterIPs: ['None'] } }),
        selecting(dnsService('shop', 'manual'), null),
      ]);
    },
    2,
  );
  await r.informer.synced;
  t.ok(r.api.requests.filter((q) => q.path === '/api/v1/services' && q.query['watch'] !== 'true').length >= 3, 'listed in pages of 2');
  t.equal(r.informer.status().services, 6, 'every Service cached (trimmed)');
  t.equal(r.index.size, 4, 'headless and selector-less Services are not indexed');
  t.same(names(r.index, 'shop', { app: 'web', 'pod-template-hash': 'x' }), ['shop/dns:tcp+udp', 'shop/web:tcp'], 'matching Services of the namespace only');
  t.same(names(r.index, 'shop', { app: 'web', track: 'canary' }), ['shop/canary:sctp', 'shop/dns:tcp+udp', 'shop/web:tcp'], 'every pair of a selector must match');
  t.same(names(r.index, 'shop', { app: 'api' }), []);
  t.ok(r.logs.lines.some((l) => l['msg'] === 'service informer synced' && l['services'] === 6), 'synced line with the count');

  // Watch: an added Service, a selector changed, a Service turned headless, a deletion.
  r.api.upsertService(selecting(makeService('shop', 'metrics', '10.96.0.30', [{ port: 9000, protocol: 'UDP' }])));
  await waitUntil(() => names(r.index, 'shop', { app: 'web' }).includes('shop/metrics:udp'), 'added Service indexed');
  r.api.upsertService(selecting(dnsService(), { app: 'dns' }));
  await waitUntil(() => !names(r.index, 'shop', { app: 'web' }).includes('shop/dns:tcp+udp'), 'selector change followed');
  t.same(names(r.index, 'shop', { app: 'dns' }), ['shop/dns:tcp+udp']);
  r.api.upsertService(selecting({ ...makeService('shop', 'metrics', 'None', [{ port: 9000, protocol: 'UDP' }]) }));
  await waitUntil(() => !names(r.index, 'shop', { app: 'web' }).includes('shop/metrics:udp'), 'a Service turned headless no longer counts');
  r.api.deleteService('shop', 'web');
  await waitUntil(() => !names(r.index, 'shop', { app: 'web' }).includes('shop/web:tcp'), 'deleted Service dropped');
  r.api.dropWatches();
  r.api.upsertService(selecting(makeService('shop', 'late', '10.96.0.40', [{ port: 5000, protocol: 'UDP' }])));
  await waitUntil(() => names(r.index, 'shop', { app: 'web' }).includes('shop/late:udp'), 'a change made while the watch was down arrives after the reconnect', 5000);
});

interface Record_ {
  sleepSeconds: number;
  gracePeriodSeconds: number;
  protocols: string[];
}

async function recordOf(w: TestWebhook, pod: Record<string, unknown>): Promise<Record_> {
  const res = await w.post(reviewOf(pod));
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.text}`);
  const out = applyAnswer(pod, res.json<{ response: ReviewAnswer }>().response) as any;
  const problems = podProblems(out);
  if (problems.length > 0) throw new Error(`invalid pod: ${problems.join('; ')}`);
  return JSON.parse(out.metadata.annotations['safe-termination.io/injected']) as Record_;
}

async function webhookOn(t: Test, api: FakeApiServer, args: string[] = []): Promise<TestWebhook> {
  const w = await startTestWebhook({
    args: ['--kubeconfig', api.writeKubeconfig(), '--informer-sync-timeout', '2', '--kube-proxy-configmap', 'none', '--static-udp-timeout', '30', ...args],
    wireFacts: selectFactsWiring({}, { tuning: TUNING }),
  });
  t.teardown(() => w.close());
  return w;
}

const portless = () => defaultedPod({ containers: [{ name: 'dns' }] });

t.test('webhook: a pod without ports behind a UDP Service gets udp-timeout + propagation', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setServices([selecting(dnsService())]);
  const w = await webhookOn(t, api);
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'ready');
  const rec = await recordOf(w, portless());
  t.equal(rec.sleepSeconds, 35, 'sleep = 5s propagation + 30s udp-timeout');
  t.equal(rec.gracePeriodSeconds, 65);
  t.same(rec.protocols, ['tcp', 'udp'], 'the record lists the protocols as before');
  const line = w.logs.lines.find((l) => l['decision'] === 'injected');
  t.match(String(line?.['msg']), /udp from Service shop\/dns/, 'the debug line names the Service that added UDP');

  t.equal((await recordOf(w, defaultedPod({ containers: [{ name: 'dns' }], namespace: 'other' }))).sleepSeconds, 5, 'another namespace: TCP');
  t.equal((await recordOf(w, defaultedPod({ containers: [{ name: 'dns' }], labels: { app: 'api' } }))).sleepSeconds, 5, 'labels not selected: TCP');

  // Idempotent on its own output; the protocols annotation still overrides.
  const pod = portless();
  const first = applyAnswer(pod, (await w.post(reviewOf(pod))).json<{ response: ReviewAnswer }>().response);
  const again = (await w.post(reviewOf(first))).json<{ response: ReviewAnswer }>().response;
  t.equal(again.patch, undefined, 'run on its own output: no patch');
  t.equal((await recordOf(w, defaultedPod({ containers: [{ name: 'dns' }], annotations: { 'safe-termination.io/protocols': 'tcp' } }))).sleepSeconds, 5, 'the protocols annotation overrides the Services');

  api.deleteService('shop', 'dns');
  await waitUntil(async () => (await recordOf(w, portless())).sleepSeconds === 5, 'the Service deleted: TCP again');
});

t.test('webhook: a refused Service informer delays nothing beyond the sync timeout', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setServices([selecting(dnsService())]);
  api.fault({ kind: 'status', code: 403, message: 'services is forbidden' }, { path: '/api/v1/services' });
  const started = Date.now();
  const w = await webhookOn(t, api);
  const t0 = Date.now();
  t.equal((await recordOf(w, portless())).sleepSeconds, 5, 'admissions answered at once (no Services known: TCP)');
  t.ok(Date.now() - t0 < 1000, 'the admission did not wait');
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'ready at the sync timeout', 5000);
  t.ok(Date.now() - started < 4500, `ready within the 2s sync timeout (${Date.now() - started} ms)`);
  t.ok(
    w.logs.lines.some((l) => String(l['msg']).startsWith('service informer interrupted; the webhook needs list and watch on services')),
    'the first failure says which grant is missing',
  );
});

t.test('webhook: --services-informer=false reads no Services', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setServices([selecting(dnsService())]);
  const w = await webhookOn(t, api, ['--services-informer=false']);
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'ready');
  t.equal((await recordOf(w, portless())).sleepSeconds, 5, 'container ports only: TCP');
  t.equal(api.requests.filter((r) => r.path === '/api/v1/services').length, 0, 'no request for Services');
});
