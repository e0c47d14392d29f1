/**
 * `--kubeconfig`: the CLI reads the live cluster through the webhook's own
 * cluster code (node annotations over candidate nodes, kube-proxy's ConfigMap,
 * /version), here an in-test API server; and the webhook wired to the same
 * cluster patches every pod into the pod the CLI wrote.
 */
import t from 'tap';
import type { Test } from 'tap';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer } from '../support/fake-apiserver.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';
import { manifestPods } from './doors.ts';
import { runCli } from './run.ts';

const UDP = 'conntrack.safe-termination.io/udp-timeout';

const MANIFEST = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: dns
  namespace: kube-system
spec:
  template:
    spec:
      nodeSelector:
        pool: dns
      containers:
      - name: dns
        image: registry.example.com/dns:1
        ports:
        - containerPort: 53
          protocol: UDP
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: cache
  namespace: kube-system
spec:
  template:
    metadata:
      annotations:
        safe-termination.io/udp-streams: "true"
    spec:
      containers:
      - name: cache
        image: registry.example.com/cache:1
        ports:
        - containerPort: 53
          protocol: UDP
`;

const record = (pod: any) => JSON.parse(pod.metadata.annotations['safe-termination.io/injected']);

async function fakeCluster(t: Test): Promise<FakeApiServer> {
  const api = await startFakeApiServer({ version: { major: '1', minor: '29', gitVersion: 'v1.29.8' } });
  t.teardown(() => api.stop());
  api.setNodes([
    makeNode('dns-1', { labels: { pool: 'dns' }, annotations: { [UDP]: '17' } }),
    makeNode('dns-2', { labels: { pool: 'dns' }, annotations: { [UDP]: '21' } }),
    makeNode('web-1', { labels: { pool: 'web' }, annotations: { [UDP]: '45' } }),
  ]);
  api.setConfigMap('kube-system', 'kube-proxy', {
    'config.conf': 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  udpStreamTimeout: 3m0s\n',
  });
  return api;
}

t.test('inject --kubeconfig sizes as the webhook in that cluster does, pod for pod', async (t) => {
  const api = await fakeCluster(t);
  const kubeconfig = api.writeKubeconfig();
  const cli = await runCli('inject', ['-f', '-', '--kubeconfig', kubeconfig, '--informer-sync-timeout', '5'], { stdin: MANIFEST });
  t.equal(cli.code, 0, cli.stderr);
  const out = manifestPods(cli.stdout);
  const dns = record(out[0]!.pod);
  t.same(dns.conntrack, { 'udp-timeout': { value: 21, source: 'nodes' } }, 'the maximum over the dns pool');
  t.equal(dns.mode, 'exec', 'the cluster is 1.29: exec sleep');
  t.same(record(out[1]!.pod).conntrack, { 'udp-timeout-stream': { value: 180, source: 'kube-proxy' } }, 'no node has the value: kube-proxy answers');
  t.ok(api.requests.some((r) => r.path === '/version'), 'the version was asked');

  const explained = await runCli('explain', ['-f', '-', '--kubeconfig', kubeconfig], { stdin: MANIFEST });
  t.match(explained.stdout, /udp-timeout +21s {2}nodes: max over 2 candidate nodes, 2 annotated, in the cluster of /);
  t.match(explained.stdout, /udp-timeout-stream +180s {2}kube-proxy: ConfigMap kube-system\/kube-proxy {2}← used/);
  t.match(explained.stdout, /Kubernetes 1\.29 predates the native sleep action/);

  const w = await startTestWebhook({ args: ['--kubeconfig', kubeconfig], wireFacts: selectFactsWiring({}) });
  t.teardown(() => w.close());
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'webhook ready', 5000);
  const before = manifestPods(MANIFEST);
  for (let i = 0; i < before.length; i++) {
    const answer = (await w.post(reviewOf(before[i]!.pod))).json<{ response: ReviewAnswer }>().response;
    const patched = applyAnswer(before[i]!.pod, answer);
    t.same(patched, out[i]!.pod, `${before[i]!.label}: the webhook's pod equals the CLI's`);
    t.same(podProblems(patched), []);
  }
});

t.test('an API server that does not answer: exit 1 naming it, nothing written', async (t) => {
  const api = await fakeCluster(t);
  api.fault({ kind: 'status', code: 503, message: 'etcd is sad' }, { path: '/api/v1/nodes' });
  const res = await runCli('inject', ['-f', '-', '--kubeconfig', api.writeKubeconfig(), '--informer-sync-timeout', '1'], { stdin: MANIFEST });
  t.equal(res.code, 1);
  t.match(res.stderr, /--kubeconfig: could not list the nodes of http:\/\/127\.0\.0\.1:\d+ within 1s \(--informer-sync-timeout\)/);
  t.equal(res.stdout, '');
});
