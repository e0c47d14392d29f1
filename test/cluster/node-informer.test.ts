/**
 * The real client-node informer (through NodeInformer) against the fake API
 * server's wire protocol: list + watch, chunked lists, 410 relists, dropped and
 * cleanly ended streams, bookmarks, slow and failing answers, trimming.
 */
import t from 'tap';
import type { Test } from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { CandidateIndex } from '../../src/cluster/candidate-nodes.ts';
import { NodeInformer } from '../../src/cluster/node-informer.ts';
import { LINUX_DEFAULTS, staticFacts } from '../../src/core/conntrack.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer, FakeApiServerOptions } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const UDP = 'conntrack.safe-termination.io/udp-timeout';

interface Rig {
  readonly api: FakeApiServer;
  readonly index: CandidateIndex;
  readonly informer: NodeInformer;
  readonly logs: LogCapture;
  watches(): Array<Record<string, string>>;
  lists(): Array<Record<string, string>>;
}

async function rig(t: Test, o: FakeApiServerOptions & { pageSize?: number; idleMs?: number; setup?: (api: FakeApiServer) => void } = {}): Promise<Rig> {
  const api = await startFakeApiServer(o);
  o.setup?.(api);
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const index = new CandidateIndex(staticFacts(LINUX_DEFAULTS));
  const logs = new LogCapture();
  const informer = new NodeInformer({
    kubeConfig: kc,
    log: createLogger('debug', logs),
    sink: index,
    pageSize: o.pageSize ?? 500,
    backoff: { initialMs: 50, maxMs: 400 },
    requestTimeoutMs: 2000,
    ...(o.idleMs === undefined ? {} : { watchIdleTimeoutMs: o.idleMs }),
  });
  t.teardown(async () => {
    await informer.stop();
    await api.stop();
  });
  informer.start();
  const nodeReqs = () => api.requests.filter((r) => r.path === '/api/v1/nodes');
  return {
    api,
    index,
    informer,
    logs,
    watches: () => nodeReqs().filter((r) => r.query['watch'] === 'true').map((r) => r.query),
    lists: () => nodeReqs().filter((r) => r.query['watch'] !== 'true').map((r) => r.query),
  };
}

const udpOf = (r: Rig, name: string) => r.index.node(name)?.values['udp-timeout'];

t.test('lists, then watches from the list resourceVersion with bookmarks; follows ADDED/MODIFIED/DELETED', async (t) => {
  const r = await rig(t, {
    setup: (api) => api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } }), makeNode('n2')]),
  });
  await r.informer.synced;
  const listRv = r.api.resourceVersion();
  t.equal(r.index.size, 2);
  t.equal(udpOf(r, 'n1'), 17);
  await waitUntil(() => r.watches().length === 1 && r.api.watchCount() === 1, 'the watch');
  t.match(r.watches()[0], { resourceVersion: listRv, allowWatchBookmarks: 'true', timeoutSeconds: /^\d+$/ });
  const ts = Number(r.watches()[0]!['timeoutSeconds']);
  t.ok(ts >= 300 && ts < 600, `server-side watch timeout ${ts}s, as client-go picks`);

  r.api.upsertNode(makeNode('n3', { annotations: { [UDP]: '60' } }));
  await waitUntil(() => udpOf(r, 'n3') === 60, 'ADDED n3');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '25' } }));
  await waitUntil(() => udpOf(r, 'n1') === 25, 'MODIFIED n1');
  r.api.deleteNode('n3');
  await waitUntil(() => r.index.node('n3') === undefined, 'DELETED n3');
  t.same(r.index.conntrackFor({})['udp-timeout'], { value: 30, source: 'static' }, 'n2 has no annotation: the pod may land there');
  t.same(r.index.conntrackFor({ nodeName: 'n1' })['udp-timeout'], { value: 25, source: 'nodes' });
  t.equal(r.lists().length, 1, 'one list only');
  t.equal(r.informer.status().nodes, 2);
});

t.test('a cluster with no Nodes yet (items: null in the metadata-only list, as a real API server sends it): synced, then follows', async (t) => {
  const r = await rig(t);
  await r.informer.synced;
  t.equal(r.index.size, 0);
  t.notMatch(r.logs.raw.join('\n'), /interrupted/, 'no error on the empty list');
  r.api.upsertNode(makeNode('late', { annotations: { [UDP]: '21' } }));
  await waitUntil(() => udpOf(r, 'late') === 21, 'ADDED late');
  t.equal(r.lists().length, 1, 'one list only');
});

t.test('keeps only name, labels and our annotations, in metadata-only transfer', async (t) => {
  const big = makeNode('big', { images: 200, labels: { pool: 'dns' }, annotations: { [UDP]: '17', 'other.example.com/blob': 'x'.repeat(10_000) } });
  const r = await rig(t, { setup: (api) => api.setNodes([big]) });
  await r.informer.synced;
  t.match(r.api.requests[0]?.accept, /as=PartialObjectMetadataList;g=meta\.k8s\.io;v=v1/);
  const rec = r.index.node('big')!;
  t.same(Object.keys(rec).sort(), ['labels', 'name', 'values']);
  t.equal(rec.labels['pool'], 'dns');
  t.same(rec.values, { 'udp-timeout': 17 });
  t.ok(JSON.stringify(rec).length < 600, `record of a ${JSON.stringify(big).length}-byte Node is ${JSON.stringify(rec).length} bytes`);
});

t.test('a server without metadata-only support sends full Nodes: still trimmed', async (t) => {
  const r = await rig(t, {
    metadataProjection: false,
    setup: (api) => api.setNodes([makeNode('n1', { images: 100, annotations: { [UDP]: '21' } })]),
  });
  await r.informer.synced;
  r.api.upsertNode(makeNode('n2', { images: 100, annotations: { [UDP]: '22' } }));
  await waitUntil(() => udpOf(r, 'n2') === 22, 'n2 via watch');
  t.equal(udpOf(r, 'n1'), 21);
  t.same(Object.keys(r.index.node('n2')!).sort(), ['labels', 'name', 'values']);
});

t.test('lists in chunks of pageSize over one snapshot', async (t) => {
  const nodes = Array.from({ length: 1203 }, (_, i) => makeNode(`node-${String(i).padStart(4, '0')}`, { images: 0 }));
  const r = await rig(t, { pageSize: 500, setup: (api) => api.setNodes(nodes) });
  await r.informer.synced;
  t.equal(r.index.size, 1203);
  const lists = r.lists();
  t.equal(lists.length, 3);
  t.same(lists.map((q) => q['limit']), ['500', '500', '500']);
  t.notOk(lists[0]!['continue']);
  t.ok(lists[1]!['continue'] && lists[2]!['continue']);
});

t.test('an expired continue token: the list starts over in one piece', async (t) => {
  const nodes = Array.from({ length: 12 }, (_, i) => makeNode(`n${String(i).padStart(2, '0')}`, { images: 0 }));
  const r = await rig(t, {
    pageSize: 5,
    setup: (api) => {
      api.setNodes(nodes);
      // The second page is asked after compaction: its continue token is gone.
      api.fault({ kind: 'run', fn: () => api.compact() }, { when: (q) => q.query['continue'] !== undefined }, 1);
    },
  });
  await r.informer.synced;
  t.equal(r.index.size, 12);
  const lists = r.lists();
  t.ok(lists.some((q) => q['continue'] !== undefined), 'a continued page was asked');
  t.same(lists.at(-1), {}, 'the last list has neither limit nor continue');
  t.ok(r.logs.lines.some((l) => /continue token expired/.test(String(l['msg']))));
});

for (const expiredWatch of ['event', 'status'] as const) {
  t.test(`410 Gone on the watch (${expiredWatch === 'event' ? 'ERROR event' : 'HTTP status'}): relist, deletions missed meanwhile are seen`, async (t) => {
    const r = await rig(t, { expiredWatch, setup: (api) => api.setNodes([makeNode('keep'), makeNode('gone', { annotations: { [UDP]: '99' } })]) });
    await r.informer.synced;
    await waitUntil(() => r.api.watchCount() === 1, 'watch');
    // While the client is away, the node goes and the history is compacted.
    r.api.fault({ kind: 'status', code: 503 }, { watch: true }, 1);
    r.api.dropWatches();
    r.api.deleteNode('gone');
    r.api.upsertNode(makeNode('new', { annotations: { [UDP]: '40' } }));
    r.api.compact();
    await waitUntil(() => r.index.node('gone') === undefined && udpOf(r, 'new') === 40, 'relist after 410', 8000);
    t.equal(r.lists().length, 2, 'relisted once');
    t.equal(r.lists()[1]!['resourceVersion'], undefined, 'relist is a fresh (consistent) list');
    await waitUntil(() => r.api.watchCount() === 1, 'watching again');
    t.equal(r.watches().at(-1)!['resourceVersion'], r.api.resourceVersion(), 'the new watch starts from the relist');
    t.same(r.index.conntrackFor({})['udp-timeout'], { value: 40, source: 'nodes' }, 'the deleted node no longer counts');
  });
}

t.test('a dropped connection: reconnects with backoff from the last resourceVersion, no relist', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '11' } }));
  await waitUntil(() => udpOf(r, 'n1') === 11, 'event before the drop');
  const lastRv = r.api.resourceVersion();
  t.equal(r.api.dropWatches(), 1);
  await waitUntil(() => r.api.watchCount() === 1 && r.watches().length === 2, 'rewatch');
  t.equal(r.watches()[1]!['resourceVersion'], lastRv);
  t.equal(r.lists().length, 1, 'no relist');
  t.ok(r.logs.lines.some((l) => l['level'] === 'warn' && /interrupted/.test(String(l['msg']))), 'said once at warn');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '12' } }));
  await waitUntil(() => udpOf(r, 'n1') === 12, 'events after the reconnect');
  t.equal(r.informer.status().failures, 0);
});

t.test('a watch ended cleanly by the server (timeoutSeconds) resumes without error or relist', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  r.api.endWatches();
  await waitUntil(() => r.watches().length === 2 && r.api.watchCount() === 1, 'rewatch');
  t.equal(r.lists().length, 1);
  t.notOk(r.logs.lines.some((l) => l['level'] === 'warn'), 'not an error');
});

t.test('a silent watch (a half-open connection) is replaced after the idle timeout, from the same resourceVersion', async (t) => {
  const r = await rig(t, { idleMs: 400, setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  const rv = r.watches()[0]!['resourceVersion'];
  await waitUntil(() => r.watches().length >= 2, 'a new watch after 400 ms of silence', 3000);
  t.equal(r.watches()[1]!['resourceVersion'], rv);
  t.equal(r.lists().length, 1, 'no relist');
  t.notOk(r.logs.lines.some((l) => l['level'] === 'warn'), 'not an error');
  // Bookmarks count as activity: with one every 150 ms the watch stays.
  const count = r.watches().length;
  const h = setInterval(() => r.api.bookmark(), 150);
  t.teardown(() => clearInterval(h));
  await new Promise((res) => setTimeout(res, 900));
  clearInterval(h);
  t.ok(r.watches().length <= count + 1, `kept alive by bookmarks (${r.watches().length - count} new watches)`);
});

t.test('BOOKMARK moves the resourceVersion: a reconnect after compaction resumes instead of relisting', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  r.api.advance(50); // writes to other resources
  const bookmarkRv = r.api.resourceVersion();
  t.equal(r.api.bookmark(), 1, 'the watch asked for bookmarks');
  await new Promise((res) => setTimeout(res, 100));
  r.api.compact(); // the Node's own last resourceVersion is now too old
  r.api.endWatches();
  await waitUntil(() => r.watches().length === 2 && r.api.watchCount() === 1, 'rewatch');
  t.equal(r.watches()[1]!['resourceVersion'], bookmarkRv, 'resumed from the bookmark');
  t.equal(r.lists().length, 1, 'no relist needed');
  r.api.upsertNode(makeNode('n2'));
  await waitUntil(() => r.index.node('n2') !== undefined, 'events keep coming');
});

t.test('a slow list: synced only when it answers, nothing blocks meanwhile', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } })]);
      api.fault({ kind: 'delay', ms: 700 }, { path: '/api/v1/nodes', watch: false }, 1);
    },
  });
  const started = Date.now();
  t.same(r.index.conntrackFor({})['udp-timeout'], { value: 30, source: 'static' }, 'fallback while listing');
  t.equal(r.informer.status().synced, false);
  await r.informer.synced;
  t.ok(Date.now() - started >= 650, 'synced after the slow answer');
  t.same(r.index.conntrackFor({})['udp-timeout'], { value: 17, source: 'nodes' });
});

t.test('a hung list hits the request deadline and is retried', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } })]);
      api.fault({ kind: 'hang' }, { path: '/api/v1/nodes', watch: false }, 1);
    },
  });
  await r.informer.synced; // the first list times out after 2 s; the retry answers
  t.ok(r.lists().length >= 2);
  t.ok(r.logs.lines.some((l) => l['problem'] === 'timed out'), 'the timeout is logged');
});

t.test('API server errors and refusals: retried with growing backoff until it answers', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } })]);
      api.fault({ kind: 'status', code: 500 }, { path: '/api/v1/nodes', watch: false }, 3);
      api.fault({ kind: 'reset' }, { path: '/api/v1/nodes', watch: false }, 1);
    },
  });
  await r.informer.synced;
  const times = r.api.requests.filter((q) => q.path === '/api/v1/nodes' && q.query['watch'] !== 'true').map((q) => q.at);
  t.equal(times.length, 5, '4 failures then success');
  const gaps = times.slice(1).map((x, i) => x - times[i]!);
  t.ok(gaps[3]! > gaps[0]!, `backoff grows: ${gaps.join(', ')} ms`);
  t.equal(r.logs.lines.filter((l) => l['level'] === 'warn').length, 1, 'warned once, not per retry');
  t.ok(r.logs.lines.some((l) => /recovered/.test(String(l['msg']))));
  t.equal(udpOf(r, 'n1'), 17);
});

t.test('stop() ends the watch and leaves no restart behind', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  await r.informer.stop();
  await waitUntil(() => r.api.watchCount() === 0, 'watch closed');
  const before = r.api.requests.length;
  await new Promise((res) => setTimeout(res, 300));
  t.equal(r.api.requests.length, before, 'no request after stop');
  t.notOk(r.logs.lines.some((l) => l['level'] === 'warn'), 'stopping is not an error');
});

t.test('stop() during a list: no watch starts afterwards', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1')]);
      api.fault({ kind: 'delay', ms: 300 }, { path: '/api/v1/nodes', watch: false }, 1);
    },
  });
  await new Promise((res) => setTimeout(res, 50));
  await r.informer.stop();
  await new Promise((res) => setTimeout(res, 500));
  t.equal(r.watches().length, 0);
});
