/**
 * Classification and grouping of conntrack entries against Services and their
 * EndpointSlices: on the lab's real captures, and on small hand-made cases.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { diagnose, staleCounts } from '../../src/diagnose/classify.ts';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import { buildServiceIndex, parseKubernetesObjects } from '../../src/diagnose/endpoints.ts';
import type { IndexProblem } from '../../src/diagnose/endpoints.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/conntrack/${name}`, import.meta.url), 'utf8');
const labCase = (run: 'unprotected' | 'protected') => ({
  entries: parseConntrack(fixture(`lab-${run}-at-removal.txt`)).entries,
  objects: parseKubernetesObjects(fixture(`lab-${run}-endpoints.json`)),
});

function service(ns: string, name: string, clusterIP: string, ports: Array<{ name?: string; protocol?: string; port: number; nodePort?: number }>, extra: Record<string, unknown> = {}) {
  return { apiVersion: 'v1', kind: 'Service', metadata: { namespace: ns, name }, spec: { clusterIP, clusterIPs: [clusterIP], ports, ...extra } };
}
function slice(ns: string, svc: string, ports: Array<{ name?: string; protocol?: string; port: number }>, endpoints: Array<{ ip: string; ready?: boolean; serving?: boolean; terminating?: boolean }>) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { namespace: ns, name: `${svc}-abcde`, labels: { 'kubernetes.io/service-name': svc } },
    addressType: 'IPv4',
    ports,
    endpoints: endpoints.map((e) => {
      const conditions: Record<string, boolean> = {};
      if (e.ready !== undefined) conditions['ready'] = e.ready;
      if (e.serving !== undefined) conditions['serving'] = e.serving;
      if (e.terminating !== undefined) conditions['terminating'] = e.terminating;
      return { addresses: [e.ip], conditions };
    }),
  };
}
const udpLine = (client: string, sport: number, vip: string, dport: number, target: string, tport: number, extra = '') =>
  `ipv4     2 udp      17 25 src=${client} dst=${vip} sport=${sport} dport=${dport} ${extra}src=${target} dst=${client} sport=${tport} dport=${sport} mark=0 use=1`;
const tcpLine = (state: string, client: string, sport: number, vip: string, dport: number, target: string, tport: number) =>
  `ipv4     2 tcp      6 100 ${state} src=${client} dst=${vip} sport=${sport} dport=${dport} src=${target} dst=${client} sport=${tport} dport=${sport} [ASSURED] mark=0 use=1`;

t.test('lab, unprotected: the removed pod is gone; its UDP and SYN_SENT entries are stale', async (t) => {
  const { entries, objects } = labCase('unprotected');
  const r = diagnose(entries, buildServiceIndex(objects));
  t.equal(r.entries, 85);
  t.equal(r.dnat, 84);
  t.equal(r.stale, 11);
  t.equal(r.draining, 0);
  t.equal(r.closed, 55, 'TIME_WAIT/CLOSE entries are closed, not stale, wherever they point');
  t.equal(r.live, 18);
  t.same(r.unattributed, []);
  const udp = r.groups.find((g) => g.protocol === 'udp')!;
  t.match(udp, { namespace: 'lab', service: 'echo', stale: 7, attribution: 'service' });
  t.same(udp.staleTargets, [{ target: '10.244.1.2:53', entries: 7, why: 'gone' }]);
  t.same(udp.staleByState, { REPLIED: 7 });
  const tcp = r.groups.find((g) => g.protocol === 'tcp')!;
  t.same(tcp.staleTargets, [{ target: '10.244.1.2:8080', entries: 4, why: 'gone' }]);
  t.same(tcp.staleByState, { SYN_SENT: 4 });
  t.equal(r.groups[0]?.protocol, 'udp', 'groups with the most stale entries first');
  t.same(staleCounts(r), [
    { namespace: 'lab', service: 'echo', protocol: 'udp', stale: 7 },
    { namespace: 'lab', service: 'echo', protocol: 'tcp', stale: 4 },
  ]);
});

t.test('lab, protected: the same kind of entries point at a terminating pod that still serves: draining', async (t) => {
  const { entries, objects } = labCase('protected');
  const r = diagnose(entries, buildServiceIndex(objects));
  t.equal(r.stale, 0);
  t.equal(r.draining, 6);
  t.same(
    r.groups.map((g) => [g.protocol, g.draining]).sort(),
    [
      ['tcp', 1],
      ['udp', 5],
    ],
  );
  t.same(staleCounts(r), []);
});

t.test('without Service objects the VIP is inferred from entries that reach a current endpoint', async (t) => {
  const { entries, objects } = labCase('unprotected');
  const slicesOnly = objects.filter((o) => (o as { kind: string }).kind === 'EndpointSlice');
  const r = diagnose(entries, buildServiceIndex(slicesOnly));
  t.equal(r.stale, 11);
  t.ok(r.groups.every((g) => g.attribution === 'inferred'));
});

t.test('a Service scaled to zero: every entry to its VIP is stale; not inferable without the Service', async (t) => {
  const lines = [udpLine('10.1.0.5', 40000, '10.96.0.10', 53, '10.1.2.3', 53), udpLine('10.1.0.5', 40001, '10.96.0.10', 53, '10.1.2.4', 53)];
  const { entries } = parseConntrack(lines.join('\n'));
  const withService = diagnose(entries, buildServiceIndex([service('kube-system', 'kube-dns', '10.96.0.10', [{ name: 'dns', protocol: 'UDP', port: 53 }])]));
  t.equal(withService.stale, 2);
  t.same(withService.groups[0]?.staleTargets.map((s) => s.why), ['gone', 'gone']);
  const noService = diagnose(entries, buildServiceIndex([]));
  t.equal(noService.stale, 0);
  t.same(noService.unattributed, [{ destination: '10.96.0.10:53', protocol: 'udp', entries: 2 }]);
});

t.test('endpoint conditions: nil means ready; terminating+serving drains; not serving is stale', async (t) => {
  const objects = [
    service('shop', 'web', '10.96.5.5', [{ name: 'http', port: 80 }]),
    slice('shop', 'web', [{ name: 'http', protocol: 'TCP', port: 8080 }], [
      { ip: '10.1.1.1' },
      { ip: '10.1.1.2', ready: false, serving: true, terminating: true },
      { ip: '10.1.1.3', ready: false, serving: false, terminating: true },
      { ip: '10.1.1.4', ready: false },
    ]),
  ];
  const lines = ['10.1.1.1', '10.1.1.2', '10.1.1.3', '10.1.1.4', '10.1.1.9'].map((ip, i) => tcpLine('ESTABLISHED', '10.1.0.5', 50000 + i, '10.96.5.5', 80, ip, 8080));
  const r = diagnose(parseConntrack(lines.join('\n')).entries, buildServiceIndex(objects));
  t.match(r, { live: 1, draining: 1, stale: 3 });
  t.same(
    r.groups[0]?.staleTargets.map((s) => [s.target, s.why]),
    [
      ['10.1.1.3:8080', 'not-serving'],
      ['10.1.1.4:8080', 'not-serving'],
      ['10.1.1.9:8080', 'gone'],
    ],
  );
  t.same(r.groups[0]?.staleByState, { ESTABLISHED: 3 });
});

t.test('node ports, external IPs and load-balancer IPs are Service frontends too', async (t) => {
  const objects = [
    service('edge', 'gw', '10.96.7.7', [{ name: 'dns', protocol: 'UDP', port: 53, nodePort: 30053 }], { externalIPs: ['192.0.2.50'] }),
    { ...service('edge', 'lb', '10.96.8.8', [{ protocol: 'UDP', port: 5000 }]), status: { loadBalancer: { ingress: [{ ip: '198.51.100.7' }] } } },
    slice('edge', 'gw', [{ name: 'dns', protocol: 'UDP', port: 5353 }], [{ ip: '10.2.0.1' }]),
  ];
  const lines = [
    udpLine('203.0.113.9', 41000, '192.168.1.10', 30053, '10.2.0.9', 5353),
    udpLine('203.0.113.9', 41001, '192.0.2.50', 53, '10.2.0.1', 5353),
    udpLine('203.0.113.9', 41002, '198.51.100.7', 5000, '10.3.0.1', 5000),
  ];
  const r = diagnose(parseConntrack(lines.join('\n')).entries, buildServiceIndex(objects));
  const gw = r.groups.find((g) => g.service === 'gw')!;
  t.match(gw, { stale: 1, live: 1 });
  t.match(r.groups.find((g) => g.service === 'lb'), { stale: 1 }, 'a Service without slices: its endpoints are gone');
});

t.test('an endpoint shared by two Services cannot identify a VIP: left unattributed', async (t) => {
  const objects = [
    slice('a', 'one', [{ protocol: 'UDP', port: 53 }], [{ ip: '10.4.0.1' }]),
    slice('a', 'two', [{ protocol: 'UDP', port: 53 }], [{ ip: '10.4.0.1' }]),
  ];
  const r = diagnose(parseConntrack(udpLine('10.0.0.1', 42000, '10.96.9.9', 53, '10.4.0.1', 53)).entries, buildServiceIndex(objects));
  t.equal(r.groups.length, 0);
  t.equal(r.unattributed[0]?.entries, 1);
});

t.test('a known Service IP on another port is not inferred onto another Service', async (t) => {
  const objects = [service('a', 'one', '10.96.1.1', [{ protocol: 'UDP', port: 53 }]), slice('a', 'two', [{ protocol: 'UDP', port: 9999 }], [{ ip: '10.4.0.2' }])];
  const r = diagnose(parseConntrack(udpLine('10.0.0.1', 42000, '10.96.1.1', 9999, '10.4.0.2', 9999)).entries, buildServiceIndex(objects));
  t.equal(r.groups.length, 0);
  t.same(r.unattributed, [{ destination: '10.96.1.1:9999', protocol: 'udp', entries: 1 }]);
});

t.test('dumps: YAML with several documents, Lists, single objects; errors and other kinds', async (t) => {
  const yaml = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {namespace: a, name: s}
  spec: {clusterIP: 10.96.0.1, ports: [{port: 443, protocol: TCP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: a, name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 6443}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Endpoints
metadata: {namespace: a, name: s}
`;
  const objects = parseKubernetesObjects(yaml);
  t.equal(objects.length, 3);
  const problems: IndexProblem[] = [];
  const index = buildServiceIndex([...objects, { kind: 'EndpointSlice', metadata: { name: 'broken' }, endpoints: 'nope' }], problems);
  t.equal(index.serviceCount, 1);
  t.equal(index.sliceCount, 1);
  t.same(index.ignoredKinds, { Endpoints: 1 });
  t.equal(problems.length, 1);
  t.match(problems[0], { kind: 'EndpointSlice', name: '/broken' });
  t.ok(index.targets.has('TCP|10.0.0.1|6443'), 'slice port protocol defaults to TCP');
  t.throws(() => parseKubernetesObjects('a: [1, 2\n'), /document 1/);
  t.same(parseKubernetesObjects(JSON.stringify({ kind: 'Service', metadata: {} })), [{ kind: 'Service', metadata: {} }], 'JSON is YAML');
});

t.test('an FQDN slice and a slice without the service-name label are ignored', async (t) => {
  const fqdn = { ...slice('a', 's', [{ port: 80 }], [{ ip: 'example.com' }]), addressType: 'FQDN' };
  const orphan = slice('a', 's', [{ port: 80 }], [{ ip: '10.0.0.1' }]);
  orphan.metadata.labels = {} as never;
  const index = buildServiceIndex([fqdn, orphan]);
  t.equal(index.endpoints.size, 0);
});
