/**
 * kube-proxy in IPVS mode: `mode: ipvs` and `ipvs.udpTimeout` in its
 * ConfigMap raise the UDP wait to the larger of IPVS's timeout (0 or unset: the
 * kernel's 300 s) and the conntrack value, with the source `kube-proxy`.
 *
 * This machine's kernel has no IPVS (no ip_vs module, no ipvsadm): these tests go
 * from kube-proxy's configuration, as the product does — it never reads IPVS itself.
 */
import t from 'tap';
import { parseKubeProxyConfig } from '../../src/cluster/kube-proxy-config.ts';
import { IPVS_KERNEL_UDP_TIMEOUT, ipvsRaise, staticFacts, LINUX_DEFAULTS } from '../../src/core/conntrack.ts';
import { selectFactsWiring } from '../../src/cluster/facts.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';
import { manifestPods } from '../cli/doors.ts';
import { runCli } from '../cli/run.ts';

const config = (body: string) => `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n${body}`;

t.test('the configuration: mode ipvs gives ipvsUdpTimeout; 0 or unset is the kernel\'s 300 s; other modes none', async (t) => {
  t.equal(IPVS_KERNEL_UDP_TIMEOUT, 300);
  t.same(parseKubeProxyConfig(config('mode: ipvs\n')), { ok: true, values: { 'tcp-timeout-established': 86400, 'tcp-timeout-close-wait': 3600 }, ipvsUdpTimeout: 300 });
  t.match(parseKubeProxyConfig(config('mode: "IPVS"\nipvs:\n  udpTimeout: 0s\n')), { ok: true, ipvsUdpTimeout: 300 }, 'case-insensitive mode; 0s keeps the kernel\'s value');
  t.match(parseKubeProxyConfig(config('mode: ipvs\nipvs:\n  udpTimeout: 45.9s\n  tcpTimeout: 0s\n')), { ok: true, ipvsUdpTimeout: 45 }, 'truncated to whole seconds');
  t.match(parseKubeProxyConfig(config('mode: ipvs\nipvs:\n  udpTimeout: null\n')), { ok: true, ipvsUdpTimeout: 300 });
  t.match(parseKubeProxyConfig(config('mode: ipvs\nipvs:\n  udpTimeout: 1h\nconntrack:\n  udpTimeout: 10s\n')), { ok: true, values: { 'udp-timeout': 10 }, ipvsUdpTimeout: 3600 }, 'conntrack values read as before');
  for (const mode of ['', 'mode: iptables\n', 'mode: nftables\n', 'mode: ""\n', 'ipvs:\n  udpTimeout: 45s\n']) {
    const r = parseKubeProxyConfig(config(mode));
    t.ok(r.ok && !('ipvsUdpTimeout' in r), `${JSON.stringify(mode)}: not IPVS`);
  }
  t.same(parseKubeProxyConfig(config('mode: ipvs\nipvs:\n  udpTimeout: soon\n')), { ok: false, problem: 'ipvs.udpTimeout: invalid duration "soon"' });
});

t.test('ipvsRaise: IPVS\'s UDP timeout raises both UDP keys where it is larger, never TCP', async (t) => {
  const base = staticFacts(LINUX_DEFAULTS);
  t.same(ipvsRaise(base, undefined), {}, 'not IPVS: nothing raised');
  t.same(ipvsRaise(base, 300), { 'udp-timeout': 300, 'udp-timeout-stream': 300 });
  t.same(ipvsRaise(base, 60), { 'udp-timeout': 60 }, '60 > 30; conntrack\'s stream 120 is larger and stays');
});

const UDP = 'conntrack.safe-termination.io/udp-timeout';
const udpPod = () => defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }] });
const record = (pod: any) => JSON.parse(pod.metadata.annotations['safe-termination.io/injected']);

t.test('the webhook in a cluster whose kube-proxy runs IPVS: node values raised, the record names kube-proxy; explain says why', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('n1', { annotations: { [UDP]: '30' } })]);
  api.setConfigMap('kube-system', 'kube-proxy', { 'config.conf': config('mode: ipvs\nipvs:\n  strictARP: true\n') });
  const kubeconfig = api.writeKubeconfig();
  const w = await startTestWebhook({
    args: ['--kubeconfig', kubeconfig, '--informer-sync-timeout', '3', '--kube-proxy-interval', '1'],
    wireFacts: selectFactsWiring({}, { tuning: { informer: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1500 }, kubeProxyRequestTimeoutMs: 1500 } }),
  });
  t.teardown(() => w.close());
  await waitUntil(async () => (await w.get('/readyz')).status === 200, 'ready', 5000);
  const planned = async () => {
    const pod = udpPod();
    return record(applyAnswer(pod, (await w.post(reviewOf(pod))).json<{ response: ReviewAnswer }>().response));
  };
  const r = await planned();
  t.same(r.conntrack, { 'udp-timeout': { value: 300, source: 'kube-proxy' } }, 'IPVS\'s 300 s over the node\'s 30 s');
  t.equal(r.sleepSeconds, 300, '5 + 300, capped by max-sleep (300 s by default)');
  t.equal(r.gracePeriodSeconds, 330);

  api.setConfigMap('kube-system', 'kube-proxy', { 'config.conf': config('mode: ipvs\nipvs:\n  udpTimeout: 20s\n') });
  await waitUntil(async () => (await planned()).conntrack['udp-timeout'].source === 'nodes', 'ipvs.udpTimeout 20s: the node\'s 30 s is larger', 5000);
  t.same((await planned()).conntrack, { 'udp-timeout': { value: 30, source: 'nodes' } });

  api.setConfigMap('kube-system', 'kube-proxy', { 'config.conf': config('mode: ipvs\nipvs:\n  udpTimeout: 90s\n') });
  await waitUntil(async () => (await planned()).conntrack['udp-timeout'].value === 90, 'ipvs.udpTimeout 90s', 5000);
  t.equal((await planned()).sleepSeconds, 95);

  const manifest = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: dns\nspec:\n  containers:\n    - name: dns\n      image: dns\n      ports:\n        - containerPort: 53\n          protocol: UDP\n';
  const explained = await runCli('explain', ['-f', '-', '--kubeconfig', kubeconfig, '-v'], { stdin: manifest });
  t.equal(explained.code, 0, explained.stderr);
  t.match(explained.stdout, /udp-timeout +90s {2}kube-proxy: IPVS udpTimeout \(mode ipvs\) in ConfigMap kube-system\/kube-proxy, over conntrack's 30s {2}← used/);
  t.match(explained.stderr, /note: kube-proxy runs in IPVS mode \(ConfigMap kube-system\/kube-proxy\): UDP flows also live 90s in IPVS's connection table/);
  t.match(explained.stdout, /5s propagation-delay \(default\) \+ 90s udp-timeout \(kube-proxy IPVS\) = 95s/);
  const injected = await runCli('inject', ['-f', '-', '--kubeconfig', kubeconfig], { stdin: manifest });
  t.same(record(manifestPods(injected.stdout)[0]!.pod).conntrack, { 'udp-timeout': { value: 90, source: 'kube-proxy' } }, 'inject: the same record');
});
