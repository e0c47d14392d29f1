/**
 * Real sysctls, end to end: the `safe-termination agent` command runs inside a
 * network namespace whose nf_conntrack_udp_timeout the test sets to 17; it
 * reaches the fake API server through a Unix socket (bridged onto the
 * namespace's loopback), publishes the value on its Node; the webhook's Node
 * informer picks it up and a UDP pod is sized from it, with source `nodes`.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { bridgeToSocket, createNetns, netnsSkipReason } from '../support/netns.ts';
import { REPO_ROOT, startTestWebhook } from '../support/webhook.ts';
import type { TestWebhook } from '../support/webhook.ts';

// Spawns node processes that load the Kubernetes client: slow on a loaded 2-core machine.
t.setTimeout(60_000);

const skip =
  netnsSkipReason() ||
  (existsSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout') ? false : 'nf_conntrack is not loaded on this machine: no conntrack sysctls to read');
const P = 'conntrack.safe-termination.io/';
const SYSCTL = (name: string) => `net.netfilter.nf_conntrack_${name}`;

const udpPod = (spec: Record<string, unknown>) => defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }], spec });

async function recordFor(w: TestWebhook, pod: Record<string, unknown>): Promise<any> {
  const res = await w.post(reviewOf(pod));
  const out = applyAnswer(pod, res.json<{ response: ReviewAnswer }>().response) as any;
  return JSON.parse(out.metadata.annotations['safe-termination.io/injected']);
}

t.test('agent in a netns → Node annotation → informer → a UDP pod sized with exactly 17 from `nodes`', { skip, timeout: 55_000 }, async (t) => {
  const ns = createNetns(t);
  const T0 = Date.now();
  const mark = (what: string) => t.comment(`${what} at ${Date.now() - T0} ms`);
  ns.sysctl(SYSCTL('udp_timeout'), 17);
  t.equal(ns.readSysctl(SYSCTL('udp_timeout')), '17', 'the namespace has its own value');

  const dir = mkdtempSync(join(tmpdir(), 'st-netns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const api = await startFakeApiServer({ unixSocket: join(dir, 'api.sock') });
  t.teardown(() => api.stop());
  api.setNodes([makeNode('worker-1', { labels: { pool: 'dns' } }), makeNode('worker-2', { labels: { pool: 'web' }, annotations: { [`${P}udp-timeout`]: '30' } })]);

  // The webhook (this process, host namespace) watches Nodes over TCP.
  const w = await startTestWebhook({
    args: ['--kubeconfig', api.writeKubeconfig(), '--informer-sync-timeout', '5'],
    wireFacts: selectFactsWiring({}, { tuning: { informer: { backoff: { initialMs: 50, maxMs: 300 } } } }),
  });
  t.teardown(() => w.close());
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'webhook ready', 5000);
  t.same((await recordFor(w, udpPod({ nodeName: 'worker-1' }))).conntrack['udp-timeout'], { value: 30, source: 'static' }, 'before the agent: static');

  // The agent command, inside the namespace, reaches the API through the bridge.
  const port = await bridgeToSocket(ns, join(dir, 'api.sock'));
  const agentKubeconfig = api.writeKubeconfig({ server: `http://127.0.0.1:${port}` });
  let agentLog = '';
  const agent = ns.spawn(
    [process.execPath, join(REPO_ROOT, 'src/cli/main.ts'), 'agent', '--kubeconfig', agentKubeconfig, '--interval', '1', '--metrics-port', '0', '--bind-address', '127.0.0.1'],
    { env: { PATH: process.env['PATH'] ?? '', NODE_NAME: 'worker-1' } },
  );
  agent.stdout!.on('data', (c: Buffer) => (agentLog += c.toString('utf8')));
  agent.stderr!.on('data', (c: Buffer) => (agentLog += c.toString('utf8')));
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`agent log:\n${agentLog}`);
  });

  const annotation = (key: string) => api.node('worker-1')?.['metadata']['annotations'][`${P}${key}`];
  mark('agent spawned');
  await waitUntil(() => annotation('udp-timeout') !== undefined, 'the agent\'s annotations', 25_000);
  mark('annotations');
  t.equal(annotation('udp-timeout'), '17', 'exactly the namespace\'s sysctl');
  for (const key of ['udp-timeout-stream', 'tcp-timeout-time-wait', 'tcp-timeout-close-wait', 'tcp-timeout-established']) {
    t.equal(annotation(key), ns.readSysctl(SYSCTL(key.replaceAll('-', '_'))), `${key} as the kernel has it`);
  }
  t.match(annotation('observed-at'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  t.equal(api.node('worker-2')!['metadata']['annotations'][`${P}udp-timeout`], '30', 'the other node untouched');

  // The informer has it; the webhook sizes from it.
  await waitUntil(async () => (await recordFor(w, udpPod({ nodeName: 'worker-1' }))).conntrack['udp-timeout']?.value === 17, 'the informer saw it', 5000);
  mark('informer');
  const rec = await recordFor(w, udpPod({ nodeSelector: { pool: 'dns' } }));
  t.same(rec.conntrack['udp-timeout'], { value: 17, source: 'nodes' });
  t.equal(rec.sleepSeconds, 5 + 17);
  t.equal(rec.gracePeriodSeconds, 30 + 22);

  // A change in the kernel flows through within an interval or two.
  ns.sysctl(SYSCTL('udp_timeout'), 19);
  await waitUntil(async () => (await recordFor(w, udpPod({ nodeName: 'worker-1' }))).conntrack['udp-timeout']?.value === 19, 'the new value end to end', 10_000);
  mark('changed');
  t.equal(annotation('udp-timeout'), '19');
  t.equal(api.requests.filter((r) => r.method === 'PATCH').length, 2, 'one patch per change, none per tick');
});
