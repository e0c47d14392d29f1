/**
 * The agent's Services + EndpointSlices informers against the fake API server:
 * chunked lists, then watches (changes arrive without relisting), trimming,
 * 410 Gone, outages (retried; the index is "current" only while it can be
 * trusted), and no index at all before the first lists.
 */
import t from 'tap';
import type { Test } from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { ENDPOINTSLICES_PATH, SERVICES_PATH, ServiceEndpoints, trimService, trimSlice } from '../../src/agent/service-endpoints.ts';
import { serviceKey } from '../../src/diagnose/endpoints.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeEndpointSlice, makeService, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const DNS = makeService('kube-system', 'kube-dns', '10.96.0.10', [
  { name: 'dns', port: 53, protocol: 'UDP' },
  { name: 'dns-tcp', port: 53, protocol: 'TCP' },
]);
const dnsSlice = (endpoints: Parameters<typeof makeEndpointSlice>[3]) =>
  makeEndpointSlice('kube-system', 'kube-dns', [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }], endpoints);

async function api(t: Test): Promise<FakeApiServer> {
  const a = await startFakeApiServer();
  t.teardown(() => a.stop());
  return a;
}

function watcher(t: Test, a: FakeApiServer, o: { pageSize?: number; maxFailingMs?: number } = {}) {
  const kc = new KubeConfig();
  kc.loadFromString(a.kubeconfig());
  const logs = new LogCapture();
  const w = new ServiceEndpoints({
    kubeConfig: kc,
    log: createLogger('debug', logs),
    maxFailingMs: o.maxFailingMs ?? 60_000,
    informer: { backoff: { initialMs: 30, maxMs: 200 }, requestTimeoutMs: 1000, pageSize: o.pageSize ?? 500 },
  });
  t.teardown(() => w.stop());
  w.start();
  return { w, logs };
}

const endpointOf = (w: ServiceEndpoints, ns: string, name: string, ip: string) => {
  const c = w.current();
  return c.state === 'current' ? c.index.endpoints.get(serviceKey({ namespace: ns, name }))?.get(ip) : undefined;
};

t.test('trimming keeps what classification reads, nothing else', async (t) => {
  const svc = makeService('shop', 'web', '10.96.1.1', [{ name: 'http', port: 80, nodePort: 30080 }]);
  svc['spec']['externalIPs'] = ['192.0.2.7'];
  svc['status'] = { loadBalancer: { ingress: [{ ip: '198.51.100.9' }, { hostname: 'lb.example.com' }] } };
  svc['metadata']['resourceVersion'] = '42';
  t.same(trimService(svc), {
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop', resourceVersion: '42' },
    spec: { clusterIP: '10.96.1.1', clusterIPs: ['10.96.1.1'], externalIPs: ['192.0.2.7'], ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 }] },
    status: { loadBalancer: { ingress: [{ ip: '198.51.100.9' }] } },
  });
  const slice = dnsSlice([{ ip: '10.244.1.2', terminating: true, serving: true, ready: false }]);
  t.same(trimSlice(slice), {
    kind: 'EndpointSlice',
    metadata: { name: 'kube-dns-x7k2q', namespace: 'kube-system', labels: { 'kubernetes.io/service-name': 'kube-dns' } },
    addressType: 'IPv4',
    ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }],
    endpoints: [{ addresses: ['10.244.1.2'], conditions: { ready: false, serving: true, terminating: true }, nodeName: 'worker-1' }],
  });
  const fqdn = { ...slice, addressType: 'FQDN' };
  t.same(trimSlice(fqdn)?.endpoints, [], 'FQDN slices are kept empty (their deletion must still reach the cache)');
  t.equal(trimService({ metadata: {} }), undefined, 'no name: dropped');
});

t.test('nothing before the first lists; then the index; watch events update it without relisting', async (t) => {
  const a = await api(t);
  const hold = a.fault({ kind: 'hang' }, { path: SERVICES_PATH, watch: false });
  a.setServices([DNS]);
  a.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }])]);
  const { w } = watcher(t, a);
  await waitUntil(() => a.requests.some((r) => r.path === ENDPOINTSLICES_PATH && r.query['watch'] === 'true'), 'the slices are watched');
  t.same(w.current(), { state: 'syncing' }, 'slices listed but services not: no index');
  hold.remove();
  await w.synced;
  const listsAtSync = a.requests.filter((r) => r.query['watch'] === undefined).length;
  t.match(endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.3'), { serving: true, terminating: false });
  t.equal(endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.2'), undefined);
  const c = w.current();
  t.equal(c.state === 'current' && c.index.frontends.get('UDP|10.96.0.10|53')?.service.name, 'kube-dns');

  a.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }, { ip: '10.244.1.2', ready: false, serving: true, terminating: true }])]);
  await waitUntil(() => endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.2') !== undefined, 'the watched change');
  t.match(endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.2'), { serving: true, terminating: true });
  a.deleteService('kube-system', 'kube-dns');
  await waitUntil(() => {
    const s = w.current();
    return s.state === 'current' && s.index.frontends.size === 0;
  }, 'the deletion');
  const lists = a.requests.filter((r) => r.query['watch'] === undefined);
  t.equal(lists.length, listsAtSync, 'no list after the sync: the changes came by watch');
  t.equal(lists.filter((r) => r.path === ENDPOINTSLICES_PATH).length, 1, 'slices listed once');
  t.ok(a.requests.filter((r) => r.query['watch'] === 'true').every((r) => r.query['allowWatchBookmarks'] === 'true' && Number(r.query['timeoutSeconds']) >= 300), 'watches ask for bookmarks and a server-side timeout');
});

t.test('chunked lists follow continue; a 410 on a continue token relists whole', async (t) => {
  const a = await api(t);
  a.setServices(Array.from({ length: 7 }, (_, i) => makeService('ns', `s${i}`, `10.96.0.${i + 1}`, [{ port: 80 }])));
  let compacted = false;
  a.fault({
    kind: 'run',
    fn: () => {
      if (!compacted) a.compact();
      compacted = true;
    },
  }, { path: SERVICES_PATH, when: (r) => r.query['continue'] !== undefined && r.query['watch'] === undefined }, 1);
  const { w, logs } = watcher(t, a, { pageSize: 3 });
  await w.synced;
  const c = w.current();
  t.equal(c.state === 'current' && c.index.serviceCount, 7, 'all 7 Services');
  const pages = a.requests.filter((r) => r.path === SERVICES_PATH && r.query['watch'] === undefined);
  t.same(pages.map((r) => [r.query['limit'], r.query['continue'] !== undefined]), [['3', false], ['3', true], [undefined, false]], 'page 1, the expired page 2, then one unchunked list');
  t.ok(logs.lines.some((l) => /continue token expired/.test(String(l['msg']))));
});

t.test('an outage: retried; the last index stays current for maxFailingMs, then is "outdated"; recovers', async (t) => {
  const a = await api(t);
  a.setServices([DNS]);
  a.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }])]);
  const { w, logs } = watcher(t, a, { maxFailingMs: 400 });
  await w.synced;
  const down = a.fault({ kind: 'status', code: 503 });
  a.dropWatches();
  await waitUntil(() => w.status().services.failures > 0 && w.status().endpointSlices.failures > 0, 'failures noticed');
  t.equal(w.current().state, 'current', 'within maxFailingMs: still the last index');
  await waitUntil(() => w.current().state === 'outdated', 'outdated after maxFailingMs', 3000);
  t.match(w.current(), { state: 'outdated', problem: /HTTP 503/ });
  const before = a.requests.length;
  await new Promise((r) => setTimeout(r, 400));
  t.ok(a.requests.length > before, 'still retrying');
  t.equal(logs.lines.filter((l) => l['level'] === 'warn').length, 2, 'one warning per informer, not one per retry');
  a.setEndpointSlices([dnsSlice([{ ip: '10.244.1.4' }])]);
  down.remove();
  await waitUntil(() => w.current().state === 'current' && endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.4') !== undefined, 'recovered with the change made meanwhile', 5000);
  t.equal(endpointOf(w, 'kube-system', 'kube-dns', '10.244.1.3'), undefined, 'and without the endpoint removed meanwhile');
});

t.test('forbidden: the warning says which RBAC is missing', async (t) => {
  const a = await api(t);
  a.fault({ kind: 'status', code: 403, message: 'services is forbidden: User "system:serviceaccount:st:agent" cannot list resource "services"' }, { path: SERVICES_PATH });
  const { w, logs } = watcher(t, a);
  await waitUntil(() => logs.lines.some((l) => l['level'] === 'warn'), 'a warning');
  t.match(logs.lines.find((l) => l['level'] === 'warn'), { resource: 'services', problem: /HTTP 403: services is forbidden/, msg: /needs list and watch on services and discovery\.k8s\.io endpointslices/ });
  t.same(w.current(), { state: 'syncing' });
});
