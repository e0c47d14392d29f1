/**
 * One facts pipeline, two doors: the webhook's wiring (selectFactsWiring) and the
 * offline CLI's (resolveFacts) read the same cluster, the same node dump or the
 * same /proc/sys, and must give every pod placement the same values from the same
 * sources. A door that stacked its sources in another order would fail here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { resolveClusterAccess } from '../../src/cluster/kubeconfig.ts';
import { LINUX_DEFAULTS } from '../../src/core/conntrack.ts';
import type { ConntrackSource } from '../../src/core/conntrack.ts';
import type { FactsWiring } from '../../src/core/facts.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';
import type { PodPlacement } from '../../src/core/pod.ts';
import { resolveFacts } from '../../src/manifest/facts.ts';
import type { ClusterInput, ManifestFacts } from '../../src/manifest/facts.ts';
import { readNodeDump } from '../../src/manifest/nodes.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeNode, startFakeApiServer } from '../support/fake-apiserver.ts';

const A = 'conntrack.safe-termination.io/';
const NODES = [
  makeNode('n1', { labels: { pool: 'a' }, annotations: { [`${A}udp-timeout`]: '40', [`${A}tcp-timeout-time-wait`]: '100', [`${A}tcp-timeout-close-wait`]: '7200' } }),
  makeNode('n2', { labels: { pool: 'b' }, annotations: { [`${A}udp-timeout`]: '20', [`${A}udp-timeout-stream`]: '500' } }),
  makeNode('n3', { labels: { pool: 'b' } }),
];
// IPVS's 45 s is over n1's udp 40 and the static 30, under n2's stream 500; close-wait 30m, established by default.
const KUBE_PROXY = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  udpTimeout: 45s\nconntrack:\n  tcpCloseWaitTimeout: 30m\n';
const PLACEMENTS: Record<string, PodPlacement> = {
  anywhere: {},
  'nodeName n1': { nodeName: 'n1' },
  'nodeName n3': { nodeName: 'n3' },
  'pool a': { nodeSelector: { pool: 'a' } },
  'pool b': { nodeSelector: { pool: 'b' } },
  'no such pool': { nodeSelector: { pool: 'z' } },
  'matchFields n2': { requiredTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['n2'] }] }] },
};
const TUNING = { informer: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1500 }, kubeProxyRequestTimeoutMs: 1500 };
const KUBE_PROXY_REF = { namespace: 'kube-system', name: 'kube-proxy' };

function webhookDoor(t: Test, o: { kubeconfig: string | undefined; procDir: string; kubeProxy: boolean }): Promise<FactsWiring> {
  const config = {
    kubeconfig: o.kubeconfig,
    conntrackProcDir: o.procDir,
    staticConntrack: LINUX_DEFAULTS,
    kubernetesVersion: { major: 1, minor: 31 },
    kubeProxyConfigMap: o.kubeProxy ? KUBE_PROXY_REF : undefined,
    kubeProxyIntervalSeconds: 60,
    informerSyncTimeoutSeconds: 5,
  };
  return selectFactsWiring({}, { tuning: TUNING })(config, createLogger('silent')).then((w) => {
    t.teardown(() => w.stop());
    return w.ready.then(() => w);
  });
}

function cliDoor(o: { procDir: string; cluster: ClusterInput | undefined }): Promise<ManifestFacts> {
  return resolveFacts({ explicit: {}, staticValues: LINUX_DEFAULTS, staticFlags: {}, procDir: o.procDir, cluster: o.cluster, kubeVersion: { major: 1, minor: 31 }, defaults: MODEL_DEFAULTS });
}

/** Both doors, every placement: the same facts. Returns the sources seen. */
function same(t: Test, webhook: FactsWiring, cli: ManifestFacts): Set<ConntrackSource> {
  const seen = new Set<ConntrackSource>();
  for (const [name, placement] of Object.entries(PLACEMENTS)) {
    const facts = webhook.facts.conntrackFor(placement);
    t.same(cli.conntrackFor(placement).facts, facts, name);
    for (const v of Object.values(facts)) seen.add(v.source);
  }
  return seen;
}

t.test('a live cluster: node annotations, kube-proxy (IPVS and conntrack), static values', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes(NODES);
  api.setConfigMap('kube-system', 'kube-proxy', { 'config.conf': KUBE_PROXY });
  const kubeconfig = api.writeKubeconfig();
  const webhook = await webhookDoor(t, { kubeconfig, procDir: '/nonexistent', kubeProxy: true });
  const access = resolveClusterAccess({ kubeconfig, env: {} });
  if (access.kind === 'none') throw new Error('no access');
  const cli = await cliDoor({ procDir: '/nonexistent', cluster: { kind: 'api', access, kubeProxyConfigMap: KUBE_PROXY_REF, syncTimeoutSeconds: 5, log: undefined } });
  t.same([...same(t, webhook, cli)].sort(), ['kube-proxy', 'nodes', 'static'], 'the scenario makes every source win somewhere');
  const n1 = cli.conntrackFor({ nodeName: 'n1' });
  t.same(n1.facts['udp-timeout'], { value: 45, source: 'kube-proxy' }, "IPVS over the node's 40");
  t.equal(n1.origins['udp-timeout'].short, 'kube-proxy IPVS');
  t.same(n1.facts['tcp-timeout-close-wait'], { value: 7200, source: 'nodes' }, 'the node over kube-proxy');
  t.same(cli.conntrackFor({ nodeName: 'n3' }).facts['tcp-timeout-close-wait'], { value: 1800, source: 'kube-proxy' }, 'kube-proxy over static');
  t.equal(cli.conntrackFor({ nodeName: 'n3' }).origins['tcp-timeout-close-wait'].short, 'kube-proxy');
  t.same(cli.conntrackFor({ nodeName: 'n2' }).facts['udp-timeout-stream'], { value: 500, source: 'nodes' }, "the node's 500 over IPVS's 45");
});

t.test('a node dump (CLI) and the same nodes without kube-proxy (webhook)', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes(NODES);
  const webhook = await webhookDoor(t, { kubeconfig: api.writeKubeconfig(), procDir: '/nonexistent', kubeProxy: false });
  const read = readNodeDump({ name: 'nodes.yaml', path: 'nodes.yaml', text: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: NODES }) });
  if (!read.ok) throw new Error(JSON.stringify(read.problems));
  const cli = await cliDoor({ procDir: '/nonexistent', cluster: { kind: 'dump', file: 'nodes.yaml', dump: read.dump } });
  t.same([...same(t, webhook, cli)].sort(), ['nodes', 'static']);
});

t.test("outside a cluster: this machine's /proc/sys, then the static values", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-doors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nf_conntrack_udp_timeout'), '12\n');
  writeFileSync(join(dir, 'nf_conntrack_tcp_timeout_close_wait'), '90\n');
  const webhook = await webhookDoor(t, { kubeconfig: undefined, procDir: dir, kubeProxy: true });
  const cli = await cliDoor({ procDir: dir, cluster: undefined });
  t.same([...same(t, webhook, cli)].sort(), ['local', 'static']);
});
