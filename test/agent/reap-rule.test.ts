/**
 * The reaper's rule (src/agent/reap-rule.ts), pure: a timeline of EndpointSlices
 * in, verdicts on entries out.
 */
import t from 'tap';
import { EndpointTracker } from '../../src/agent/reap-rule.ts';
import type { ReapCandidate } from '../../src/agent/reap-rule.ts';
import { trimSlice } from '../../src/agent/service-endpoints.ts';
import type { TrimmedSlice } from '../../src/agent/service-endpoints.ts';
import { makeEndpointSlice } from '../support/fake-apiserver.ts';

type Ep = { ip: string; ready?: boolean; serving?: boolean; terminating?: boolean };
const slice = (service: string, eps: Ep[], o: { protocol?: string; port?: number; name?: string; namespace?: string } = {}): TrimmedSlice =>
  trimSlice(makeEndpointSlice(o.namespace ?? 'lab', service, [{ name: 'p', port: o.port ?? 8080, protocol: o.protocol ?? 'TCP' }], eps, o.name === undefined ? {} : { name: o.name }))!;

const entry = (protocol: string, dst: string, dport: number | undefined, src: string, sport: number | undefined): ReapCandidate => ({
  protocol,
  original: { dst, dport },
  reply: { src, sport },
});

const HOLD = 5000;

t.test('gone (not terminating) for the hold: reaped; before, never', async (t) => {
  const tr = new EndpointTracker({ holdMs: HOLD });
  tr.upsert(slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }, { ip: '10.0.0.3' }]), 0);
  tr.markSynced();
  const to = (ip: string) => entry('tcp', '10.96.0.10', 80, ip, 8080);
  // 10.0.0.2 terminating, 10.0.0.3 removed, 10.0.0.1 serving.
  tr.upsert(slice('web', [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: false, serving: true, terminating: true }]), 1000);
  t.equal(tr.reapable(to('10.0.0.3'), 1000 + HOLD - 1), undefined, 'within the hold: kept');
  const g = tr.reapable(to('10.0.0.3'), 1000 + HOLD);
  t.match(g, { ip: '10.0.0.3', port: 8080, protocol: 'tcp', namespace: 'lab', service: 'web', goneAt: 1000, dueAt: 1000 + HOLD }, 'after the hold: reaped, with its Service');
  t.equal(tr.reapable(to('10.0.0.2'), 60_000), undefined, 'terminating (still listed): kept');
  t.equal(tr.reapable(to('10.0.0.1'), 60_000), undefined, 'serving: kept');
  // Not serving, not terminating (a failing readiness probe): still listed, kept.
  tr.upsert(slice('web', [{ ip: '10.0.0.1', ready: false, serving: false }, { ip: '10.0.0.2', ready: false, serving: false, terminating: true }]), 2000);
  t.equal(tr.reapable(to('10.0.0.1'), 60_000), undefined, 'not ready but listed: kept');
  t.equal(tr.reapable(to('10.0.0.9'), 60_000), undefined, 'never an endpoint: kept');
});

t.test('no DNAT, wrong protocol or port, other protocols: kept', async (t) => {
  const tr = new EndpointTracker({ holdMs: HOLD });
  tr.markSynced();
  tr.upsert(slice('dns', [{ ip: '10.0.0.5' }], { protocol: 'UDP', port: 53 }), 0);
  tr.upsert(slice('dns', [], { protocol: 'UDP', port: 53 }), 0);
  const at = HOLD + 1;
  t.ok(tr.reapable(entry('udp', '10.96.0.10', 53, '10.0.0.5', 53), at), 'DNATed UDP to the gone endpoint');
  t.equal(tr.reapable(entry('udp', '10.0.0.5', 53, '10.0.0.5', 53), at), undefined, 'a direct flow to the pod (no DNAT)');
  t.ok(tr.reapable(entry('udp', '10.0.0.5', 5353, '10.0.0.5', 53), at), 'a port-only DNAT is a DNAT');
  t.equal(tr.reapable(entry('tcp', '10.96.0.10', 53, '10.0.0.5', 53), at), undefined, 'TCP to a UDP endpoint');
  t.equal(tr.reapable(entry('udp', '10.96.0.10', 53, '10.0.0.5', 54), at), undefined, 'another port');
  t.equal(tr.reapable(entry('icmp', '10.96.0.10', undefined, '10.0.0.5', undefined), at), undefined, 'ICMP');
  t.equal(tr.reapable(entry('udp', '10.96.0.10', undefined, '10.0.0.5', 53), at), undefined, 'no original port');
});

t.test('SCTP and IPv6', async (t) => {
  const tr = new EndpointTracker({ holdMs: HOLD });
  tr.upsert(slice('sig', [{ ip: 'fd00:10:244::1' }, { ip: 'fd00:10:244::2' }], { protocol: 'SCTP', port: 3868 }), 0);
  tr.markSynced();
  tr.upsert(slice('sig', [{ ip: 'fd00:10:244::2' }], { protocol: 'SCTP', port: 3868 }), 0);
  t.ok(tr.reapable(entry('sctp', 'fd00:10:96::a', 3868, 'fd00:10:244::1', 3868), HOLD));
  t.equal(tr.reapable(entry('sctp', 'fd00:10:96::a', 3868, 'fd00:10:244::2', 3868), HOLD), undefined);
  t.ok(tr.reapable(entry('sctp', 'fd00:10:96::a', 3868, 'FD00:10:244::1', 3868), HOLD), 'case-insensitive addresses');
});

t.test('an endpoint of two Services is gone only when it left both; one that comes back is not gone', async (t) => {
  const gone: string[] = [];
  const tr = new EndpointTracker({ holdMs: HOLD, onGone: (g) => gone.push(`${g.service} ${g.ip}`) });
  tr.upsert(slice('a', [{ ip: '10.0.0.1' }]), 0);
  tr.upsert(slice('b', [{ ip: '10.0.0.1' }]), 0);
  tr.markSynced();
  const e = entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080);
  tr.remove(slice('a', []), 100);
  t.equal(tr.reapable(e, 100_000), undefined, 'still in b');
  t.same(gone, []);
  tr.upsert(slice('b', []), 200);
  t.same(gone, ['b 10.0.0.1'], 'gone when it left the last slice, labelled with that slice\'s Service');
  t.ok(tr.reapable(e, 200 + HOLD));
  tr.upsert(slice('c', [{ ip: '10.0.0.1' }]), 300); // the IP reused by a new pod
  t.equal(tr.reapable(e, 100_000), undefined, 'listed again: no longer gone');
  t.equal(tr.goneCount, 0);
});

t.test('an endpoint moving between the slices of a Service is never gone', async (t) => {
  const tr = new EndpointTracker({ holdMs: 0 });
  tr.upsert(slice('web', [{ ip: '10.0.0.1' }], { name: 'web-1' }), 0);
  tr.markSynced();
  tr.upsert(slice('web', [{ ip: '10.0.0.1' }], { name: 'web-2' }), 10);
  tr.upsert(slice('web', [], { name: 'web-1' }), 20);
  t.equal(tr.goneCount, 0);
  t.equal(tr.reapable(entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080), 100), undefined);
});

t.test('nothing before the sync: changes seen while listing make nothing gone', async (t) => {
  const tr = new EndpointTracker({ holdMs: 0 });
  tr.upsert(slice('web', [{ ip: '10.0.0.1' }]), 0);
  tr.upsert(slice('web', []), 1);
  t.equal(tr.reapable(entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080), 10_000), undefined, 'not synced');
  tr.markSynced();
  t.equal(tr.reapable(entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080), 10_000), undefined, 'and it did not leave after the sync');
  t.equal(tr.goneCount, 0);
});

t.test('bounded memory: expired after the window, at most maxGone', async (t) => {
  const tr = new EndpointTracker({ holdMs: 1000, memoryMs: 60_000, maxGone: 3 });
  const ips = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'];
  tr.upsert(slice('web', ips.map((ip) => ({ ip }))), 0);
  tr.markSynced();
  tr.upsert(slice('web', []), 0);
  t.equal(tr.goneCount, 3, 'the oldest forgotten past maxGone');
  const e = entry('tcp', '10.96.0.10', 80, '10.0.0.4', 8080);
  t.ok(tr.reapable(e, 60_999), 'within the window (hold + memory)');
  t.equal(tr.reapable(e, 61_000), undefined, 'past the window: not reaped even before expire()');
  tr.expire(60_999);
  t.equal(tr.goneCount, 3, 'not expired within the window');
  tr.expire(61_000);
  t.equal(tr.goneCount, 0, 'expired');
  const long = new EndpointTracker({ holdMs: 600_000, memoryMs: 1000 });
  long.upsert(slice('web', [{ ip: '10.0.0.1' }]), 0);
  long.markSynced();
  long.upsert(slice('web', []), 0);
  t.ok(long.reapable(entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080), 600_999), 'the window begins when the hold ends');
  t.equal(long.reapable(entry('tcp', '10.96.0.10', 80, '10.0.0.1', 8080), 601_000), undefined);
});

t.test('slices without port numbers reap nothing; a deleted slice makes its endpoints gone', async (t) => {
  const tr = new EndpointTracker({ holdMs: 0 });
  const raw = makeEndpointSlice('lab', 'web', [{ port: 8080 }], [{ ip: '10.0.0.1' }]);
  const noPorts = trimSlice({ ...raw, ports: [{ name: 'all' }] })!;
  tr.upsert(noPorts, 0);
  tr.upsert(slice('api', [{ ip: '10.0.0.7' }], { port: 443 }), 0);
  tr.markSynced();
  tr.remove(noPorts, 1);
  t.equal(tr.goneCount, 0, 'no port, no endpoint key');
  tr.remove(slice('api', [], { port: 443 }), 2);
  t.equal(tr.reapable(entry('tcp', '10.0.0.7', 443, '10.0.0.7', 443), 2), undefined, 'to the pod itself: no DNAT');
  t.ok(tr.reapable(entry('tcp', '10.96.0.1', 443, '10.0.0.7', 443), 2), 'through the VIP, same port: a DNAT, reaped once the slice is deleted');
});
