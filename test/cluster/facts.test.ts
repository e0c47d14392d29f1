/**
 * The webhook wired to the (fake) cluster through `selectFactsWiring`, as `serve`
 * wires it: plans from node annotations, kube-proxy and static values; the
 * server version; readiness at sync or at the sync timeout; admissions never
 * waiting on the API server.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { SERVICE_ACCOUNT_DIR } from '../../src/cluster/kubeconfig.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServerOptions } from '../support/fake-apiserver.ts';
import { startTestWebhook } from '../support/webhook.ts';
import type { TestWebhook } from '../support/webhook.ts';

const UDP = 'conntrack.safe-termination.io/udp-timeout';
const TUNING = {
  informer: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1500 },
  version: { backoff: { initialMs: 100, maxMs: 300 }, requestTimeoutMs: 1500 },
  kubeProxyRequestTimeoutMs: 1500,
};

interface Record_ {
  sleepSeconds: number;
  gracePeriodSeconds: number;
  mode: 'sleep' | 'exec';
  conntrack: Record<string, { value: number; source: string }>;
}

const udpPod = (spec: Record<string, unknown> = {}) =>
  defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }], spec });

/** Post a review; return the decision record of the patched pod. */
async function planFor(w: TestWebhook, pod: Record<string, unknown>): Promise<Record_> {
  const res = await w.post(reviewOf(pod));
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.text}`);
  const out = applyAnswer(pod, res.json<{ response: ReviewAnswer }>().response) as any;
  const problems = podProblems(out);
  if (problems.length > 0) throw new Error(`invalid pod: ${problems.join('; ')}`);
  return JSON.parse(out.metadata.annotations['safe-termination.io/injected']) as Record_;
}

async function cluster(t: Test, o: FakeApiServerOptions & { args?: string[] } = {}) {
  const api = await startFakeApiServer(o);
  t.teardown(() => api.stop());
  const args = ['--kubeconfig', api.writeKubeconfig(), '--informer-sync-timeout', '3', '--kube-proxy-interval', '1', ...(o.args ?? [])];
  const start = () =>
    startTestWebhook({ args, wireFacts: selectFactsWiring({}, { tuning: TUNING }) }).then((w) => {
      t.teardown(() => w.close());
      return w;
    });
  return { api, start };
}

const ready = async (w: TestWebhook) => (await w.get('/readyz')).status === 200;

t.test('a UDP pod is sized from the annotations of the nodes it can land on', async (t) => {
  const { api, start } = await cluster(t);
  api.setNodes([
    makeNode('dns-1', { labels: { pool: 'dns' }, annotations: { [UDP]: '17' } }),
    makeNode('web-1', { labels: { pool: 'web' }, annotations: { [UDP]: '45' } }),
  ]);
  const w = await start();
  await waitUntil(() => ready(w), 'ready after the informer synced', 3000);
  const onDns = await planFor(w, udpPod({ nodeSelector: { pool: 'dns' } }));
  t.same(onDns.conntrack['udp-timeout'], { value: 17, source: 'nodes' });
  t.equal(onDns.sleepSeconds, 5 + 17);
  t.equal(onDns.gracePeriodSeconds, 30 + 22);
  const anywhere = await planFor(w, udpPod());
  t.same(anywhere.conntrack['udp-timeout'], { value: 45, source: 'nodes' }, 'no constraint: the maximum over all nodes');
  const pinned = await planFor(w, udpPod({ nodeName: 'dns-1' }));
  t.same(pinned.conntrack['udp-timeout'], { value: 17, source: 'nodes' });

  api.upsertNode(makeNode('dns-1', { labels: { pool: 'dns' }, annotations: { [UDP]: '19' } }));
  await waitUntil(async () => (await planFor(w, udpPod({ nodeSelector: { pool: 'dns' } }))).conntrack['udp-timeout']?.value === 19, 'the watched change');
  t.ok(w.logs.lines.some((l) => /reading conntrack facts from the Kubernetes API/.test(String(l['msg']))));
});

t.test('nodes without annotations fall back per value to kube-proxy, then static', async (t) => {
  const { api, start } = await cluster(t);
  api.setNodes([makeNode('n1', { annotations: { 'conntrack.safe-termination.io/udp-timeout-stream': '150' } })]);
  api.setConfigMap('kube-system', 'kube-proxy', {
    'config.conf': 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  udpTimeout: 1m0s\n  udpStreamTimeout: 0s\n',
  });
  const w = await start();
  await waitUntil(() => ready(w), 'ready', 3000);
  const p = await planFor(w, udpPod());
  t.same(p.conntrack['udp-timeout'], { value: 60, source: 'kube-proxy' });
  const streams = await planFor(w, defaultedPod({ annotations: { 'safe-termination.io/udp-streams': 'true' }, containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }] }));
  t.same(streams.conntrack['udp-timeout-stream'], { value: 150, source: 'nodes' });
  const tcp = await planFor(w, defaultedPod({ annotations: {}, containers: [{ name: 'web', ports: [{ containerPort: 80 }] }] }));
  t.equal(tcp.sleepSeconds, 5, 'TCP needs no conntrack value by default');

  // The ConfigMap is read again every --kube-proxy-interval.
  api.setConfigMap('kube-system', 'kube-proxy', undefined);
  await waitUntil(async () => (await planFor(w, udpPod())).conntrack['udp-timeout']?.source === 'static', 'ConfigMap gone → static', 4000);
  t.same((await planFor(w, udpPod())).conntrack['udp-timeout'], { value: 30, source: 'static' });
});

t.test('a kube-proxy ConfigMap the webhook may not read (403): skipped quietly, said once', async (t) => {
  const { api, start } = await cluster(t);
  api.setNodes([makeNode('n1')]);
  api.setConfigMap('kube-system', 'kube-proxy', { 'config.conf': 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  udpTimeout: 1m0s\n' });
  api.fault({ kind: 'status', code: 403, message: 'configmaps "kube-proxy" is forbidden' }, { path: '/api/v1/namespaces/kube-system/configmaps/kube-proxy' });
  const w = await start();
  await waitUntil(() => ready(w), 'ready', 3000);
  // Read at start and again every second (the test's --kube-proxy-interval): still one line.
  await waitUntil(() => api.requests.filter((r) => r.path.endsWith('/configmaps/kube-proxy')).length >= 3, 'read again', 5000);
  t.same((await planFor(w, udpPod())).conntrack['udp-timeout'], { value: 30, source: 'static' });
  const lines = w.logs.lines.filter((l) => /kube-proxy configuration not used/.test(String(l['msg'])));
  t.equal(lines.length, 1, 'said once');
  t.equal(lines[0]?.['outcome'], 'not readable (HTTP 403)');
  t.equal(lines[0]?.['level'], 'info', 'not a warning: an operator may withhold it on purpose');
});

t.test('the server version decides prestop-mode auto; --kubernetes-version is never asked', async (t) => {
  await t.test('1.29 → exec', async (t) => {
    const { api, start } = await cluster(t, { version: { major: '1', minor: '29+', gitVersion: 'v1.29.8-eks-a737599' } });
    api.setNodes([makeNode('n1')]);
    const w = await start();
    await waitUntil(() => ready(w), 'ready', 3000);
    t.equal((await planFor(w, udpPod())).mode, 'exec');
  });
  await t.test('1.31 → native sleep', async (t) => {
    const { api, start } = await cluster(t);
    api.setNodes([makeNode('n1')]);
    const w = await start();
    await waitUntil(() => ready(w), 'ready', 3000);
    t.equal((await planFor(w, udpPod())).mode, 'sleep');
  });
  await t.test('configured', async (t) => {
    const { api, start } = await cluster(t, { args: ['--kubernetes-version', '1.28'] });
    const w = await start();
    await waitUntil(() => ready(w), 'ready', 3000);
    t.equal((await planFor(w, udpPod())).mode, 'exec');
    t.notOk(api.requests.some((r) => r.path.startsWith('/version')));
  });
  await t.test('unreachable: unknown counts as current, said once, asked again until it answers', async (t) => {
    const { api, start } = await cluster(t, { version: { major: '1', minor: '29', gitVersion: 'v1.29.0' } });
    const f = api.fault({ kind: 'status', code: 503 }, { path: /^\/version/ });
    const w = await start();
    await waitUntil(() => ready(w), 'ready', 3000);
    t.equal((await planFor(w, udpPod())).mode, 'sleep');
    await waitUntil(() => api.requests.filter((r) => r.path.startsWith('/version')).length >= 3, 'retries');
    t.equal(w.logs.lines.filter((l) => /Kubernetes version unknown/.test(String(l['msg']))).length, 1);
    f.remove();
    await waitUntil(async () => (await planFor(w, udpPod())).mode === 'exec', 'the version once it answers', 3000);
  });
});

t.test('a dead API server: ready at the sync timeout, admissions answered at once from static values', async (t) => {
  const api = await startFakeApiServer();
  const dir = mkdtempSync(join(tmpdir(), 'st-dead-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'kubeconfig'), api.kubeconfig());
  const dead = api.url;
  await api.stop(); // nothing listens there any more
  const started = Date.now();
  const w = await startTestWebhook({
    args: ['--kubeconfig', join(dir, 'kubeconfig'), '--informer-sync-timeout', '1'],
    wireFacts: selectFactsWiring({}, { tuning: TUNING }),
  });
  t.teardown(() => w.close());
  t.equal((await w.get('/readyz')).status, 503, `not ready at once (API at ${dead} refuses)`);
  const t0 = Date.now();
  const p = await planFor(w, udpPod());
  t.ok(Date.now() - t0 < 500, `answered in ${Date.now() - t0} ms`);
  t.same(p.conntrack['udp-timeout'], { value: 30, source: 'static' });
  await waitUntil(() => ready(w), 'ready after the sync timeout', 3000);
  t.ok(Date.now() - started >= 900, 'not before the timeout');
  t.ok(w.logs.lines.some((l) => l['level'] === 'warn' && /not synced in time/.test(String(l['msg']))), 'the timeout is logged');
});

t.test('a hung API server: same, and the informer catches up when it answers', async (t) => {
  const { api, start } = await cluster(t, { args: ['--informer-sync-timeout', '1'] });
  api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } })]);
  const hang = api.fault({ kind: 'hang' });
  const w = await start();
  const t0 = Date.now();
  t.same((await planFor(w, udpPod())).conntrack['udp-timeout'], { value: 30, source: 'static' });
  t.ok(Date.now() - t0 < 500, 'no wait on the API server');
  await waitUntil(() => ready(w), 'ready after the sync timeout', 3000);
  hang.remove();
  await waitUntil(async () => (await planFor(w, udpPod())).conntrack['udp-timeout']?.value === 17, 'nodes once the API answers', 5000);
});

t.test('in a pod: the in-cluster service account (HTTPS, CA, bearer token)', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'st-incluster-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const token = 'eyJhbGciOiJSUzI1NiJ9.fake-service-account-token';
  const api = await startFakeApiServer({ tls: true, token });
  t.teardown(() => api.stop());
  const sa = join(root, SERVICE_ACCOUNT_DIR);
  mkdirSync(sa, { recursive: true });
  writeFileSync(join(sa, 'token'), token);
  writeFileSync(join(sa, 'ca.crt'), api.ca!);
  writeFileSync(join(sa, 'namespace'), 'safe-termination');
  const port = new URL(api.url).port;
  const w = await startTestWebhook({
    args: ['--informer-sync-timeout', '3'],
    wireFacts: selectFactsWiring({ KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, { inClusterRoot: root, tuning: TUNING }),
  });
  t.teardown(() => w.close());
  api.setNodes([makeNode('n1', { annotations: { [UDP]: '23' } })]);
  await waitUntil(() => ready(w), 'ready', 3000);
  await waitUntil(async () => (await planFor(w, udpPod())).conntrack['udp-timeout']?.value === 23, 'nodes through TLS + token');
  t.ok(api.requests.every((r) => r.authorization === `Bearer ${token}`), 'every request carries the token');
  t.ok(w.logs.lines.some((l) => l['via'] === 'in-cluster service account'), 'the in-cluster configuration was chosen');
});

t.test('neither a pod nor --kubeconfig: the local /proc/sys source, no API', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-proc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nf_conntrack_udp_timeout'), '12\n');
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', dir], wireFacts: selectFactsWiring({}) });
  t.teardown(() => w.close());
  t.same((await planFor(w, udpPod())).conntrack['udp-timeout'], { value: 12, source: 'local' });
});
