/**
 * Cluster facts on real watches: the webhook's Node informer, kube-proxy's
 * ConfigMap as the real kube-proxy writes its configuration, `/version` of the
 * real API server, and an API server restart over an etcd compaction (the
 * informer's resourceVersion expires: 410, relist, no change lost).
 * Pods are created with dryRun=All: the API server runs the whole admission chain
 * and returns the pod it would store.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { controlPlaneSkipReason, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { installChart, startHostWebhook, waitFor } from './on-host.ts';
import type { HostWebhook } from './on-host.ts';

const skip = controlPlaneSkipReason();
const RELEASE = 'facts';
const SYSTEM = 'safe-termination';
const P = 'conntrack.safe-termination.io/';

let plane: ControlPlane;
let webhook: HostWebhook;

interface UdpRecord {
  sleepSeconds: number;
  mode: string;
  conntrack: Record<string, { value: number; source: string }>;
}
interface StoredPod {
  metadata: { annotations?: Record<string, string> };
  spec: { containers: Array<{ lifecycle?: { preStop?: unknown } }> };
}

/** The record the webhook gives a UDP pod now (a dry-run create through the API server). */
async function udpRecord(spec: Record<string, unknown> = {}): Promise<UdpRecord> {
  const pod = await plane.call<StoredPod>('POST', '/api/v1/namespaces/shop/pods?dryRun=All', {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'dns-' },
    spec: { containers: [{ name: 'dns', image: 'registry.k8s.io/pause:3.10', ports: [{ containerPort: 53, protocol: 'UDP' }] }], ...spec },
  });
  const text = pod.metadata.annotations?.['safe-termination.io/injected'];
  if (text === undefined) throw new Error('the pod was not injected');
  return JSON.parse(text) as UdpRecord;
}

async function udpTimeoutBecomes(what: string, expected: { value: number; source: string }, spec: Record<string, unknown> = {}, timeoutMs = 15_000): Promise<number> {
  const started = Date.now();
  let last: unknown;
  await waitFor(
    what,
    timeoutMs,
    async () => {
      last = (await udpRecord(spec)).conntrack['udp-timeout'];
      return JSON.stringify(last) === JSON.stringify(expected);
    },
    () => `last record udp-timeout: ${JSON.stringify(last)}\n${webhook.output()}`,
  );
  return Date.now() - started;
}

async function annotateNode(name: string, annotations: Record<string, string | null>): Promise<void> {
  await plane.call('PATCH', `/api/v1/nodes/${name}`, { metadata: { annotations } }, { contentType: 'application/merge-patch+json' });
}

/** kube-proxy's own configuration file, written by the real kube-proxy binary with these conntrack flags. */
function kubeProxyConfig(flags: readonly string[]): string {
  const out = join(plane.dir, `kube-proxy-${Date.now()}.conf`);
  execFileSync(join(plane.binDir, 'kube-proxy'), [`--write-config-to=${out}`, ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
  return readFileSync(out, 'utf8');
}

async function putKubeProxyConfigMap(config: string): Promise<void> {
  const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'kube-proxy', namespace: 'kube-system' }, data: { 'config.conf': config } };
  const exists = (await plane.api('GET', '/api/v1/namespaces/kube-system/configmaps/kube-proxy')).status === 200;
  if (exists) await plane.call('PUT', '/api/v1/namespaces/kube-system/configmaps/kube-proxy', body);
  else await plane.call('POST', '/api/v1/namespaces/kube-system/configmaps', body);
}

t.before(async () => {
  if (skip !== false) return;
  plane = await startControlPlane();
  await installChart(plane, RELEASE, SYSTEM, ['--wait=false', '--set', 'agent.enabled=false']);
  await plane.createNamespace('shop', { 'safe-termination.io/inject': 'enabled' }, 30_000);
  // Started on a cluster with no Node yet, as on a fresh install.
  webhook = await startHostWebhook(plane, RELEASE, SYSTEM, { extraArgs: ['--log-level=debug', '--kube-proxy-interval=1s'] });
  await waitFor('the node informer to sync', 15_000, () => webhook.logLines().some((l) => l['msg'] === 'node informer synced'), () => webhook.output());
  await plane.createNode('node-1', { annotations: { [`${P}udp-timeout`]: '33' } });
  await plane.createNode('node-2');
});

t.teardown(async () => {
  if (plane === undefined) return;
  if (!t.passing()) t.comment(`webhook output (tail):\n${webhook?.output().slice(-4000) ?? ''}`);
  await webhook?.stop();
  await plane.stop();
});

t.test('a cluster with no Node yet: the informer syncs on the empty list the API server sends (items: null)', { skip }, async (t) => {
  const lines = webhook.logLines();
  const synced = lines.find((l) => l['msg'] === 'node informer synced');
  t.equal(synced?.['nodes'], 0, 'synced with 0 nodes');
  t.notOk(
    lines.some((l) => String(l['msg']).startsWith('node informer interrupted')),
    'without an error first',
  );
  await udpTimeoutBecomes('the Nodes created after the sync', { value: 33, source: 'nodes' });
  t.pass('and the Nodes created later are followed');
});

t.test('/version of the real API server: prestop-mode auto chooses the native sleep', { skip }, async (t) => {
  const version = await plane.call<{ gitVersion: string; minor: string }>('GET', '/version');
  t.equal(version.gitVersion, 'v1.37.2');
  await waitFor('the version line', 10_000, () => webhook.logLines().some((l) => l['msg'] === 'Kubernetes version read'));
  const read = webhook.logLines().find((l) => l['msg'] === 'Kubernetes version read');
  t.equal(read?.['gitVersion'], 'v1.37.2', 'the webhook read the server\'s version');
  t.equal((await udpRecord()).mode, 'sleep', 'native lifecycle.preStop.sleep');
});

t.test('the Node informer follows Node changes', { skip }, async (t) => {
  // node-2 has no annotations: the maximum over both nodes is node-1's 33 vs the static 30.
  t.same((await udpRecord()).conntrack['udp-timeout'], { value: 33, source: 'nodes' }, 'node-1\'s annotation wins over node-2\'s static 30');
  t.same((await udpRecord({ nodeName: 'node-2' })).conntrack['udp-timeout'], { value: 30, source: 'static' }, 'node-2 alone: static');

  await annotateNode('node-2', { [`${P}udp-timeout`]: '47' });
  const ms = await udpTimeoutBecomes('node-2\'s new annotation', { value: 47, source: 'nodes' }, { nodeName: 'node-2' });
  t.pass(`an annotation added to a Node sized the next pod within ${ms} ms`);
  t.same((await udpRecord()).conntrack['udp-timeout'], { value: 47, source: 'nodes' }, 'and the maximum over all nodes');

  await plane.createNode('node-3', { labels: { pool: 'dns' }, annotations: { [`${P}udp-timeout`]: '52' } });
  await udpTimeoutBecomes('a new Node', { value: 52, source: 'nodes' }, { nodeSelector: { pool: 'dns' } });
  t.same((await udpRecord()).conntrack['udp-timeout'], { value: 52, source: 'nodes' }, 'a new node joins the maximum');

  await plane.call('DELETE', '/api/v1/nodes/node-3');
  await udpTimeoutBecomes('the Node deleted', { value: 47, source: 'nodes' });
  t.pass('a deleted node leaves the maximum');

  await annotateNode('node-2', { [`${P}udp-timeout`]: null });
  await udpTimeoutBecomes('the annotation removed', { value: 30, source: 'static' }, { nodeName: 'node-2' });
  t.pass('a removed annotation falls back');
});

t.test('kube-proxy\'s ConfigMap, as kube-proxy itself writes its configuration, sizes nodes without annotations', { skip }, async (t) => {
  const config = kubeProxyConfig(['--conntrack-udp-timeout=23s', '--conntrack-udp-timeout-stream=97s']);
  t.match(config, /kind: KubeProxyConfiguration/, 'kube-proxy --write-config-to wrote its configuration');
  await putKubeProxyConfigMap(config);
  const ms = await udpTimeoutBecomes('kube-proxy\'s udpTimeout', { value: 23, source: 'kube-proxy' }, { nodeName: 'node-2' });
  t.pass(`read within ${ms} ms (--kube-proxy-interval=1s)`);
  t.same((await udpRecord({ nodeName: 'node-1' })).conntrack['udp-timeout'], { value: 33, source: 'nodes' }, 'an annotated node still wins');

  await putKubeProxyConfigMap(kubeProxyConfig(['--conntrack-udp-timeout=2m']));
  await udpTimeoutBecomes('the ConfigMap changed', { value: 120, source: 'kube-proxy' }, { nodeName: 'node-2' });
  t.pass('a changed ConfigMap is read again');
  await plane.call('DELETE', '/api/v1/namespaces/kube-system/configmaps/kube-proxy');
  await udpTimeoutBecomes('the ConfigMap deleted', { value: 30, source: 'static' }, { nodeName: 'node-2' });
});

t.test('an API server restart over an etcd compaction: the informer relists and no change is lost', { skip }, async (t) => {
  t.same((await udpRecord({ nodeName: 'node-1' })).conntrack['udp-timeout'], { value: 33, source: 'nodes' });
  // Move etcd's revision on past the informer's, then compact: its resourceVersion expires.
  for (let i = 0; i < 20; i++) {
    await plane.call('POST', '/api/v1/namespaces/shop/configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `churn-${i}` } });
  }
  await plane.stopComponent('kube-apiserver');
  const compacted = await plane.compactEtcd();
  t.ok(compacted > 0, `etcd compacted at revision ${compacted}`);
  const logMark = webhook.output().length;
  await plane.restartApiServer();
  // A change while the informer is still reconnecting: only a relist can see it.
  await annotateNode('node-1', { [`${P}udp-timeout`]: '61' });
  const ms = await udpTimeoutBecomes('node-1\'s change after the restart', { value: 61, source: 'nodes' }, { nodeName: 'node-1' }, 60_000);
  t.pass(`the change made after the restart sized pods within ${ms} ms`);
  await waitFor('the node informer to log its recovery', 10_000, () => /"msg":"node informer recovered"/.test(webhook.output().slice(logMark)));
  const since = webhook.output().slice(logMark);
  t.match(since, /"msg":"node informer interrupted/, 'the node informer saw the API server go');
  t.match(since, /"msg":"node informer recovered"/, 'and recovered');
});
