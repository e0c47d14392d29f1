/**
 * The agent's informer without client-node (LeanInformer on lean-api.ts) against
 * the fake API server's wire protocol, with the cases the client-node informer is
 * held to (node-informer.test.ts): list + watch with bookmarks, chunked lists, 410
 * relists, dropped, ended and silent streams, bookmarks moving the
 * resourceVersion, hung lists, backoff, stop.
 */
import t from 'tap';
import type { Test } from 'tap';
import { LeanInformer } from '../../src/cluster/lean-informer.ts';
import { readKubeconfig } from '../../src/cluster/lean-kubeconfig.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer, FakeApiServerOptions } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const UDP = 'conntrack.safe-termination.io/udp-timeout';

interface NodeObj {
  metadata: { name: string; resourceVersion?: string; udp?: string };
}

const trim = (v: unknown): NodeObj | undefined => {
  const m = (v as { metadata?: { name?: unknown; resourceVersion?: string; annotations?: Record<string, string> } }).metadata;
  if (typeof m?.name !== 'string') return undefined;
  return { metadata: { name: m.name, ...(m.resourceVersion === undefined ? {} : { resourceVersion: m.resourceVersion }), ...(m.annotations?.[UDP] === undefined ? {} : { udp: m.annotations[UDP] }) } };
};

interface Rig {
  readonly api: FakeApiServer;
  readonly informer: LeanInformer<NodeObj>;
  readonly logs: LogCapture;
  readonly events: string[];
  watches(): Array<Record<string, string>>;
  lists(): Array<Record<string, string>>;
  udp(name: string): string | undefined;
}

async function rig(t: Test, o: FakeApiServerOptions & { pageSize?: number; idleMs?: number; setup?: (api: FakeApiServer) => void } = {}): Promise<Rig> {
  const api = await startFakeApiServer(o);
  o.setup?.(api);
  const creds = await readKubeconfig(api.writeKubeconfig());
  if (creds === undefined || creds === 'no-cluster') throw new Error('kubeconfig not read');
  const logs = new LogCapture();
  const events: string[] = [];
  const informer = new LeanInformer<NodeObj>({
    kubeConfig: creds,
    log: createLogger('debug', logs),
    resource: 'nodes',
    path: '/api/v1/nodes',
    trim,
    onUpsert: (n) => events.push(`upsert ${n.metadata.name}`),
    onRemove: (n) => events.push(`remove ${n.metadata.name}`),
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
    informer,
    logs,
    events,
    watches: () => nodeReqs().filter((r) => r.query['watch'] === 'true').map((r) => r.query),
    lists: () => nodeReqs().filter((r) => r.query['watch'] !== 'true').map((r) => r.query),
    udp: (name) => informer.list().find((n) => n.metadata.name === name)?.metadata.udp,
  };
}

const has = (r: Rig, name: string) => r.informer.list().some((n) => n.metadata.name === name);

t.test('over TLS with a bearer token: lists, then watches from the list resourceVersion with bookmarks; follows ADDED/MODIFIED/DELETED', async (t) => {
  const r = await rig(t, { tls: true, token: 'sekret', setup: (api) => api.setNodes([makeNode('n1', { annotations: { [UDP]: '17' } }), makeNode('n2')]) });
  await r.informer.synced;
  const listRv = r.api.resourceVersion();
  t.equal(r.informer.list().length, 2);
  t.equal(r.udp('n1'), '17');
  await waitUntil(() => r.watches().length === 1 && r.api.watchCount() === 1, 'the watch');
  t.match(r.watches()[0], { resourceVersion: listRv, allowWatchBookmarks: 'true', timeoutSeconds: /^\d+$/ });
  const ts = Number(r.watches()[0]!['timeoutSeconds']);
  t.ok(ts >= 300 && ts < 600, `server-side watch timeout ${ts}s`);
  r.api.upsertNode(makeNode('n3', { annotations: { [UDP]: '60' } }));
  await waitUntil(() => r.udp('n3') === '60', 'ADDED n3');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '25' } }));
  await waitUntil(() => r.udp('n1') === '25', 'MODIFIED n1');
  r.api.deleteNode('n3');
  await waitUntil(() => !has(r, 'n3'), 'DELETED n3');
  t.same(r.events, ['upsert n1', 'upsert n2', 'upsert n3', 'upsert n1', 'remove n3']);
  t.equal(r.lists().length, 1, 'one list only');
  t.same(r.informer.status(), { synced: true, objects: 2, failures: 0, lastError: undefined, failingSince: undefined });
});

t.test('a wrong token: 401, retried with backoff, said once', async (t) => {
  const api = await startFakeApiServer({ token: 'right' });
  const creds = await readKubeconfig(api.writeKubeconfig({ token: 'wrong' }));
  if (creds === undefined || creds === 'no-cluster') throw new Error('kubeconfig not read');
  const logs = new LogCapture();
  const informer = new LeanInformer<NodeObj>({ kubeConfig: creds, log: createLogger('debug', logs), resource: 'nodes', path: '/api/v1/nodes', trim, backoff: { initialMs: 20, maxMs: 50 } });
  t.teardown(async () => {
    await informer.stop();
    await api.stop();
  });
  informer.start();
  await waitUntil(() => informer.status().failures >= 3, 'retries');
  t.match(informer.status().lastError, /^HTTP 401/);
  t.equal(logs.lines.filter((l) => l['level'] === 'warn').length, 1);
});

t.test('lists in chunks of pageSize over one snapshot', async (t) => {
  const nodes = Array.from({ length: 1203 }, (_, i) => makeNode(`node-${String(i).padStart(4, '0')}`, { images: 0 }));
  const r = await rig(t, { pageSize: 500, setup: (api) => api.setNodes(nodes) });
  await r.informer.synced;
  t.equal(r.informer.list().length, 1203);
  t.same(r.lists().map((q) => q['limit']), ['500', '500', '500']);
  t.ok(r.lists()[1]!['continue'] && r.lists()[2]!['continue']);
});

t.test('an expired continue token: the list starts over in one piece', async (t) => {
  const nodes = Array.from({ length: 12 }, (_, i) => makeNode(`n${String(i).padStart(2, '0')}`, { images: 0 }));
  const r = await rig(t, {
    pageSize: 5,
    setup: (api) => {
      api.setNodes(nodes);
      api.fault({ kind: 'run', fn: () => api.compact() }, { when: (q) => q.query['continue'] !== undefined }, 1);
    },
  });
  await r.informer.synced;
  t.equal(r.informer.list().length, 12);
  t.same(r.lists().at(-1), {}, 'the last list has neither limit nor continue');
  t.ok(r.logs.lines.some((l) => /continue token expired/.test(String(l['msg']))));
});

for (const expiredWatch of ['event', 'status'] as const) {
  t.test(`410 Gone on the watch (${expiredWatch}): relist, deletions missed meanwhile are seen`, async (t) => {
    const r = await rig(t, { expiredWatch, setup: (api) => api.setNodes([makeNode('keep'), makeNode('gone')]) });
    await r.informer.synced;
    await waitUntil(() => r.api.watchCount() === 1, 'watch');
    r.api.fault({ kind: 'status', code: 503 }, { watch: true }, 1);
    r.api.dropWatches();
    r.api.deleteNode('gone');
    r.api.upsertNode(makeNode('new', { annotations: { [UDP]: '40' } }));
    r.api.compact();
    await waitUntil(() => !has(r, 'gone') && r.udp('new') === '40', 'relist after 410', 8000);
    t.equal(r.lists().length, 2, 'relisted once');
    t.equal(r.lists()[1]!['resourceVersion'], undefined, 'a fresh list');
    await waitUntil(() => r.api.watchCount() === 1, 'watching again');
    t.equal(r.watches().at(-1)!['resourceVersion'], r.api.resourceVersion(), 'the new watch starts from the relist');
    t.ok(r.events.includes('remove gone') && r.events.includes('upsert new'));
    t.equal(r.events.filter((e) => e === 'upsert keep').length, 1, 'an unchanged object is not upserted again');
  });
}

t.test('a dropped connection: reconnects with backoff from the last resourceVersion, no relist', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '11' } }));
  await waitUntil(() => r.udp('n1') === '11', 'event before the drop');
  const lastRv = r.api.resourceVersion();
  t.equal(r.api.dropWatches(), 1);
  await waitUntil(() => r.api.watchCount() === 1 && r.watches().length === 2, 'rewatch');
  t.equal(r.watches()[1]!['resourceVersion'], lastRv);
  t.equal(r.lists().length, 1, 'no relist');
  r.api.upsertNode(makeNode('n1', { annotations: { [UDP]: '12' } }));
  await waitUntil(() => r.udp('n1') === '12', 'events after the reconnect');
  t.equal(r.informer.status().failures, 0);
});

t.test('a watch ended cleanly by the server resumes without error or relist', async (t) => {
  const r = await rig(t, { setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  r.api.endWatches();
  await waitUntil(() => r.watches().length === 2 && r.api.watchCount() === 1, 'rewatch', 3000);
  t.equal(r.lists().length, 1);
  t.notOk(r.logs.lines.some((l) => l['level'] === 'warn'), 'not an error');
});

t.test('a silent watch is replaced after the idle timeout, from the same resourceVersion; bookmarks keep it', async (t) => {
  const r = await rig(t, { idleMs: 400, setup: (api) => api.setNodes([makeNode('n1')]) });
  await r.informer.synced;
  await waitUntil(() => r.api.watchCount() === 1, 'watch');
  const rv = r.watches()[0]!['resourceVersion'];
  await waitUntil(() => r.watches().length >= 2, 'a new watch after 400 ms of silence', 3000);
  t.equal(r.watches()[1]!['resourceVersion'], rv);
  t.equal(r.lists().length, 1, 'no relist');
  t.notOk(r.logs.lines.some((l) => l['level'] === 'warn'), 'not an error');
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
  r.api.advance(50);
  const bookmarkRv = r.api.resourceVersion();
  t.equal(r.api.bookmark(), 1, 'the watch asked for bookmarks');
  await new Promise((res) => setTimeout(res, 100));
  r.api.compact();
  r.api.endWatches();
  await waitUntil(() => r.watches().length === 2 && r.api.watchCount() === 1, 'rewatch', 3000);
  t.equal(r.watches()[1]!['resourceVersion'], bookmarkRv, 'resumed from the bookmark');
  t.equal(r.lists().length, 1, 'no relist needed');
  r.api.upsertNode(makeNode('n2'));
  await waitUntil(() => has(r, 'n2'), 'events keep coming');
});

t.test('a hung list hits the request deadline and is retried', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1')]);
      api.fault({ kind: 'hang' }, { path: '/api/v1/nodes', watch: false }, 1);
    },
  });
  await r.informer.synced;
  t.ok(r.lists().length >= 2);
  t.ok(r.logs.lines.some((l) => l['problem'] === 'timed out'), 'the timeout is logged');
});

t.test('API server errors and refusals: retried with growing backoff until it answers', async (t) => {
  const r = await rig(t, {
    setup: (api) => {
      api.setNodes([makeNode('n1')]);
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
  t.equal(r.informer.status().synced, false);
});
