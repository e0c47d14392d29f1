import t from 'tap';
import { kubeProxyConfigText, parseGoDuration, parseKubeProxyConfig } from '../../src/cluster/kube-proxy-config.ts';

t.test('Go durations as time.ParseDuration reads them', async (t) => {
  const cases: Array<[string, number | undefined]> = [
    ['30s', 30],
    ['1h0m0s', 3600],
    ['24h0m0s', 86400],
    ['1m30s', 90],
    ['1.5h', 5400],
    ['300ms', 0.3],
    ['2h45m', 9900],
    ['.5s', 0.5],
    ['0', 0],
    ['0s', 0],
    ['-1m', -60],
    ['+5s', 5],
    ['1µs', 1e-6],
    ['30', undefined],
    ['', undefined],
    ['1d', undefined],
    ['s', undefined],
    ['1h 2m', undefined],
    ['.s', undefined],
  ];
  for (const [text, want] of cases) {
    const got = parseGoDuration(text);
    if (want === undefined) t.equal(got, undefined, JSON.stringify(text));
    else t.ok(got !== undefined && Math.abs(got - want) < 1e-9, `${JSON.stringify(text)} → ${got}`);
  }
});

// kubeadm's config.conf (1.31), trimmed to the relevant parts.
const KUBEADM = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
mode: iptables
`;

t.test('kubeadm defaults: the TCP fields default as kube-proxy does, 0s leaves the kernel alone', async (t) => {
  t.same(parseKubeProxyConfig(KUBEADM), { ok: true, values: { 'tcp-timeout-close-wait': 3600, 'tcp-timeout-established': 86400 } });
});

t.test('explicit values, truncated to whole seconds like kube-proxy', async (t) => {
  const text = KUBEADM.replace('udpTimeout: 0s', 'udpTimeout: 1m0s')
    .replace('udpStreamTimeout: 0s', 'udpStreamTimeout: 2m30.9s')
    .replace('tcpCloseWaitTimeout: null', 'tcpCloseWaitTimeout: 0s')
    .replace('tcpEstablishedTimeout: null', 'tcpEstablishedTimeout: 12h0m0s');
  t.same(parseKubeProxyConfig(text), {
    ok: true,
    values: { 'udp-timeout': 60, 'udp-timeout-stream': 150, 'tcp-timeout-established': 43200 },
  });
});

t.test('v1alpha2 keeps conntrack under linux', async (t) => {
  const text = `apiVersion: kubeproxy.config.k8s.io/v1alpha2
kind: KubeProxyConfiguration
linux:
  conntrack:
    udpTimeout: 45s
    tcpCloseWaitTimeout: 30m
`;
  t.same(parseKubeProxyConfig(text), { ok: true, values: { 'udp-timeout': 45, 'tcp-timeout-close-wait': 1800, 'tcp-timeout-established': 86400 } });
});

t.test('JSON works (YAML superset); broken input is reported, not thrown', async (t) => {
  t.same(parseKubeProxyConfig('{"kind":"KubeProxyConfiguration","conntrack":{"udpTimeout":"20s"}}'), {
    ok: true,
    values: { 'udp-timeout': 20, 'tcp-timeout-close-wait': 3600, 'tcp-timeout-established': 86400 },
  });
  t.match(parseKubeProxyConfig('kind: KubeletConfiguration'), { ok: false, problem: /not KubeProxyConfiguration/ });
  t.match(parseKubeProxyConfig('- a\n- b'), { ok: false, problem: /mapping/ });
  t.match(parseKubeProxyConfig('kind: KubeProxyConfiguration\nconntrack:\n  udpTimeout: 30 seconds\n'), { ok: false, problem: /udpTimeout/ });
  t.match(parseKubeProxyConfig('kind: [unclosed'), { ok: false, problem: /not YAML/ });
  t.match(parseKubeProxyConfig('kind: KubeProxyConfiguration\nconntrack:\n  udpTimeout: 5\n'), { ok: false, problem: /not a duration string/ });
});

t.test('the ConfigMap key: config.conf first, else any KubeProxyConfiguration', async (t) => {
  t.equal(kubeProxyConfigText({ 'config.conf': 'x', other: 'kind: KubeProxyConfiguration' }), 'x');
  t.equal(kubeProxyConfigText({ config: 'apiVersion: v1\nkind: KubeProxyConfiguration\n' }), 'apiVersion: v1\nkind: KubeProxyConfiguration\n');
  t.equal(kubeProxyConfigText({ 'kubeconfig.conf': 'apiVersion: v1\nkind: Config\n' }), undefined);
  t.equal(kubeProxyConfigText(undefined), undefined);
});
