/**
 * The endpoint-change count behind the ServiceEndpointChurn alert: the pure
 * counter (this node's endpoints only, the first list not counted, a Service's
 * series dropped a while after its last endpoint left), then the agent with
 * --endpoint-changes against the fake API server (slices only, changes over the
 * watch, the counter on /metrics).
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { countChanges, EndpointChangeCounter } from '../../src/agent/endpoint-changes.ts';
import { ENDPOINTSLICES_PATH, SERVICES_PATH, trimSlice } from '../../src/agent/service-endpoints.ts';
import type { TrimmedSlice } from '../../src/agent/service-endpoints.ts';
import { startAgent } from '../../src/agent/agent.ts';
import { parseAgentConfig } from '../../src/cli/config.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeEndpointSlice, makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

type Ep = Parameters<typeof makeEndpointSlice>[3][number];
const slice = (service: string, endpoints: Ep[], name?: string): TrimmedSlice =>
  trimSlice(makeEndpointSlice('shop', service, [{ name: 'http', port: 80 }], endpoints, name === undefined ? {} : { name }))!;

function sink() {
  const counts = new Map<string, number>();
  const forgotten: string[] = [];
  return {
    counts,
    forgotten,
    add(namespace: string, service: string, n: number) {
      counts.set(`${namespace}/${service}`, (counts.get(`${namespace}/${service}`) ?? 0) + n);
    },
    forget(namespace: string, service: string) {
      counts.delete(`${namespace}/${service}`);
      forgotten.push(`${namespace}/${service}`);
    },
  };
}

t.test('countChanges: added, removed and condition changes, one each', async (t) => {
  const m = (o: Record<string, string>) => new Map(Object.entries(o));
  t.equal(countChanges(m({}), m({})), 0);
  t.equal(countChanges(m({ a: '110' }), m({ a: '110' })), 0, 'unchanged');
  t.equal(countChanges(m({}), m({ a: '110', b: '110' })), 2, 'two added');
  t.equal(countChanges(m({ a: '110', b: '110' }), m({ a: '011' })), 2, 'one terminating, one gone');
});

t.test('trimSlice with onlyNode keeps this node\'s endpoints only', async (t) => {
  const raw = makeEndpointSlice('shop', 'web', [{ port: 80 }], [{ ip: '10.244.1.2' }, { ip: '10.244.2.2', node: 'worker-2' }]);
  t.same(trimSlice(raw, 'worker-1')?.endpoints.map((e) => e.addresses[0]), ['10.244.1.2']);
  t.same(trimSlice(raw)?.endpoints.map((e) => e.nodeName), ['worker-1', 'worker-2'], 'without it, every endpoint with its node');
});

t.test('the counter: this node only, the first list is the starting state, scale-down and rollout counted', async (t) => {
  const s = sink();
  let now = 0;
  const c = new EndpointChangeCounter({ nodeName: 'worker-1', sink: s, now: () => now, forgetAfterMs: 1000 });
  // The first list: series at 0 for the Services with endpoints here, none for the others.
  c.upsert(slice('web', [{ ip: '10.244.1.2' }, { ip: '10.244.1.3' }, { ip: '10.244.2.2', node: 'worker-2' }]), false);
  c.upsert(slice('elsewhere', [{ ip: '10.244.2.9', node: 'worker-2' }]), false);
  t.same([...s.counts], [['shop/web', 0]], 'the first list counts nothing; a Service without endpoints here has no series');

  // Scale-down of one pod on this node: terminating, then gone — 2 changes. The other node's pod is not ours.
  c.upsert(slice('web', [{ ip: '10.244.1.2' }, { ip: '10.244.1.3', ready: false, serving: true, terminating: true }, { ip: '10.244.2.2', node: 'worker-2', terminating: true }]), true);
  c.upsert(slice('web', [{ ip: '10.244.1.2' }]), true);
  t.equal(s.counts.get('shop/web'), 2, 'terminating + removed');
  // A rollout of a pod here: the new one added not ready, then ready; the old one terminating, then gone.
  c.upsert(slice('web', [{ ip: '10.244.1.2' }, { ip: '10.244.1.4', ready: false, serving: false }]), true);
  c.upsert(slice('web', [{ ip: '10.244.1.2' }, { ip: '10.244.1.4' }]), true);
  c.upsert(slice('web', [{ ip: '10.244.1.2', ready: false, serving: true, terminating: true }, { ip: '10.244.1.4' }]), true);
  c.upsert(slice('web', [{ ip: '10.244.1.4' }]), true);
  t.equal(s.counts.get('shop/web'), 6, '4 more');
  c.upsert(slice('web', [{ ip: '10.244.1.4' }]), true);
  t.equal(s.counts.get('shop/web'), 6, 'an update without an endpoint change (a relist, a port edit) counts nothing');

  // A second slice of the same Service, then the deletion of both.
  c.upsert(slice('web', [{ ip: '10.244.1.5' }], 'web-second'), true);
  t.equal(s.counts.get('shop/web'), 7);
  c.remove(slice('web', [], 'web-second'), true);
  c.remove(slice('web', []), true);
  t.equal(s.counts.get('shop/web'), 9, 'a deleted slice: each of its endpoints here is a change');
  t.equal(c.services(), 1, 'kept while idle');
  now = 999;
  c.upsert(slice('elsewhere', [{ ip: '10.244.2.10', node: 'worker-2' }]), true);
  t.same(s.forgotten, [], 'not yet forgotten');
  now = 1000;
  c.upsert(slice('elsewhere', [{ ip: '10.244.2.11', node: 'worker-2' }]), true);
  t.same(s.forgotten, ['shop/web'], 'forgotten after forgetAfterMs without endpoints here');
  t.equal(c.services(), 0);
  t.notOk(s.counts.has('shop/elsewhere'), 'never a series for a Service with no endpoint here');
  c.remove(slice('never-seen', []), true);
  t.equal(s.counts.size, 0, 'removing an unknown slice is a no-op');
});

t.test('the agent with --endpoint-changes: EndpointSlices only, changes over the watch on /metrics', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('worker-1')]);
  const web = (endpoints: Ep[]) => makeEndpointSlice('shop', 'web', [{ name: 'http', port: 80 }], endpoints);
  api.setEndpointSlices([web([{ ip: '10.244.1.2' }, { ip: '10.244.1.3' }])]);
  const root = mkdtempSync(join(tmpdir(), 'st-proc-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'sys'), { recursive: true });
  writeFileSync(join(root, 'sys/nf_conntrack_udp_timeout'), '30\n');
  const config = parseAgentConfig(
    ['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', join(root, 'sys'), '--proc-net-dir', join(root, 'net'), '--node-name', 'worker-1', '--endpoint-changes', '--reap=false'],
    {},
  );
  t.equal(config.endpointChanges, true);
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const logs = new LogCapture();
  const agent = await startAgent(config, createLogger('debug', logs), { kind: 'kubeconfig', kubeConfig: kc, server: api.url, path: 'test' }, {
    intervalMs: 100,
    annotator: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1000 },
  });
  t.teardown(() => agent.stop());
  const metrics = async () => (await fetch(`http://127.0.0.1:${agent.port}/metrics`)).text();
  const value = async () => /^safe_termination_endpoint_changes_total\{namespace="shop",service="web"\} (\d+)$/m.exec(await metrics())?.[1];
  await waitUntil(async () => (await value()) === '0', 'the series at 0 after the first list');
  t.equal(agent.staleConntrack, undefined, 'no stale count');
  t.notOk(api.requests.some((r) => r.path === SERVICES_PATH), 'Services are not listed for the change count alone');
  t.ok(logs.lines.some((l) => /counting endpoint changes per Service/.test(String(l['msg']))));

  api.setEndpointSlices([web([{ ip: '10.244.1.2' }, { ip: '10.244.1.3', ready: false, serving: true, terminating: true }])]);
  await waitUntil(async () => (await value()) === '1', 'the terminating endpoint');
  api.setEndpointSlices([web([{ ip: '10.244.1.2' }])]);
  await waitUntil(async () => (await value()) === '2', 'the removed endpoint');
  t.equal(api.requests.filter((r) => r.path === ENDPOINTSLICES_PATH && r.query['watch'] === undefined).length, 1, 'counted from the watch, one list');

  // Stats unreadable (no <proc-net-dir>/stat/nf_conntrack here): said by a gauge and a log line, not read as 0.
  const text = await metrics();
  t.match(text, /^safe_termination_conntrack_stat_available 0$/m);
  t.notMatch(text, /^safe_termination_conntrack_stat_insert_failed_total /m, 'no sample for the counter');
  t.match(text, /^# TYPE safe_termination_conntrack_stat_insert_failed_total counter$/m, 'still described');
  t.equal(logs.lines.filter((l) => /conntrack statistics unreadable/.test(String(l['msg']))).length, 1, 'said once');
  mkdirSync(join(root, 'net/stat'), { recursive: true });
  writeFileSync(join(root, 'net/stat/nf_conntrack'), 'entries found insert_failed\n00000010 00000002 00000003\n00000010 00000001 00000001\n');
  await waitUntil(() => logs.lines.some((l) => /conntrack statistics readable/.test(String(l['msg']))), 'the file appears');
  const after = await metrics();
  t.match(after, /^safe_termination_conntrack_stat_available 1$/m);
  t.match(after, /^safe_termination_conntrack_stat_insert_failed_total 4$/m);
  t.notMatch(after, /^safe_termination_conntrack_stat_drop_total /m, 'a column this kernel lacks has no sample either');
});

t.test('--endpoint-changes without a cluster: said, nothing counted', async (t: Test) => {
  const config = parseAgentConfig(['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', '/nonexistent', '--proc-net-dir', '/nonexistent', '--endpoint-changes'], {});
  const logs = new LogCapture();
  const agent = await startAgent(config, createLogger('debug', logs), { kind: 'none' }, { intervalMs: 100 });
  t.teardown(() => agent.stop());
  t.ok(logs.lines.some((l) => /--endpoint-changes needs the Kubernetes API/.test(String(l['msg']))));
  const text = await (await fetch(`http://127.0.0.1:${agent.port}/metrics`)).text();
  t.notMatch(text, /^safe_termination_endpoint_changes_total\{/m);
});
