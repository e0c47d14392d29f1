/**
 * The reaper's sweeps (src/agent/reaper.ts) on a fake table and a fake `conntrack
 * -D`: event-driven timing, grouping, rate limit, dry run, metrics, log lines.
 * Real conntrack: reap-netns.test.ts.
 */
import t from 'tap';
import type { Test } from 'tap';
import { EndpointTracker } from '../../src/agent/reap-rule.ts';
import { Reaper } from '../../src/agent/reaper.ts';
import type { ReapMetrics } from '../../src/agent/reaper.ts';
import { createAgentMetrics } from '../../src/agent/metrics.ts';
import { trimSlice } from '../../src/agent/service-endpoints.ts';
import type { TallyEntry } from '../../src/diagnose/tally.ts';
import type { FlowGroup } from '../../src/host/conntrack-delete.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeEndpointSlice, waitUntil } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const slice = (service: string, ips: string[], protocol = 'UDP', port = 5353) =>
  trimSlice(makeEndpointSlice('lab', service, [{ name: 'p', port, protocol }], ips.map((ip) => ({ ip }))))!;

const flow = (protocol: string, vip: string, vport: number, target: string, tport: number): TallyEntry => ({
  protocol,
  state: protocol === 'udp' ? undefined : 'ESTABLISHED',
  flags: [],
  original: { dst: vip, dport: vport },
  reply: { src: target, sport: tport },
});

interface Rig {
  tracker: EndpointTracker;
  reaper: Reaper;
  table: TallyEntry[];
  deletes: Array<{ at: number; g: FlowGroup }>;
  logs: LogCapture;
  metrics: () => Promise<string>;
  reads: number;
}

function rig(t: Test, o: { holdMs: number; dryRun?: boolean; maxPerSecond?: number; current?: () => boolean; fail?: (g: FlowGroup) => boolean; readFails?: () => boolean }): Rig {
  const logs = new LogCapture();
  const agentMetrics = createAgentMetrics({ conntrackProcDir: '/nonexistent', procNetDir: '/nonexistent', reap: true });
  const r: Partial<Rig> & { table: TallyEntry[]; deletes: Rig['deletes']; reads: number } = { table: [], deletes: [], reads: 0 };
  const ref: { reaper?: Reaper } = {};
  const tracker = new EndpointTracker({ holdMs: o.holdMs, onGone: (g) => ref.reaper?.endpointGone(g) });
  const reaper = new Reaper({
    tracker,
    table: {
      read: async (onEntry) => {
        r.reads++;
        if (o.readFails?.() === true) throw new Error('reading /proc/net/nf_conntrack took over 60s (1000 entries so far); abandoned');
        for (const e of r.table) onEntry(e);
        return { source: 'proc', entries: r.table.length, skipped: 0, firstSkipped: undefined };
      },
    },
    deleter: async (g) => {
      r.deletes.push({ at: Date.now(), g });
      if (o.fail?.(g) === true) throw new Error('conntrack -D failed');
      // Delete from the fake table exactly what the real filter would.
      const before = r.table.length;
      r.table = r.table.filter((e) => !(e.protocol === g.protocol && e.original.dst === g.origDst && e.original.dport === g.dport && e.reply.src === g.replySrc && e.reply.sport === g.sport));
      return { deleted: before - r.table.length };
    },
    metrics: agentMetrics.reap as ReapMetrics,
    log: createLogger('debug', logs),
    maxPerSecond: o.maxPerSecond ?? 2000,
    dryRun: o.dryRun ?? false,
    endpointsCurrent: o.current ?? (() => true),
    resweepMs: 60_000,
    retryMs: 100,
  });
  ref.reaper = reaper;
  t.teardown(() => reaper.stop());
  const rig: Rig = Object.assign(r, { tracker, reaper, logs, metrics: () => agentMetrics.registry.metrics() });
  return rig;
}

const VIP = '10.96.0.10';

t.test('event-driven: the sweep follows the hold by well under a second; only the gone target\'s entries go', async (t) => {
  const x = rig(t, { holdMs: 300 });
  x.tracker.upsert(slice('dns', ['10.0.0.1', '10.0.0.2', '10.0.0.3']), Date.now());
  x.tracker.markSynced();
  x.reaper.start();
  for (let i = 0; i < 50; i++) x.table.push(flow('udp', VIP, 53, '10.0.0.1', 5353)); // to the pod that goes
  for (let i = 0; i < 30; i++) x.table.push(flow('udp', VIP, 53, '10.0.0.2', 5353)); // live
  for (let i = 0; i < 20; i++) x.table.push(flow('udp', VIP, 53, '10.0.0.9', 5353)); // never an endpoint
  x.table.push(flow('udp', '10.0.0.1', 5353, '10.0.0.1', 5353)); // direct, no DNAT
  x.table.push(flow('tcp', VIP, 53, '10.0.0.1', 5353)); // TCP: the endpoint was UDP
  await new Promise((r) => setTimeout(r, 50));
  t.equal(x.reads, 0, 'no sweep while nothing is gone');
  const goneAt = Date.now();
  x.tracker.upsert(slice('dns', ['10.0.0.2', '10.0.0.3']), goneAt);
  await waitUntil(() => x.deletes.length > 0, 'a deletion', 5000, 10);
  const lag = (x.deletes[0]?.at ?? 0) - goneAt;
  t.ok(lag >= 300 && lag < 1300, `deleted ${lag} ms after the endpoint went (hold 300 ms)`);
  t.same(x.deletes.map((d) => d.g), [{ protocol: 'udp', origDst: VIP, dport: 53, replySrc: '10.0.0.1', sport: 5353 }], 'one conntrack -D for the frontend and target');
  t.equal(x.table.length, 52, 'the 50 stale entries went; live, never-seen, direct and TCP entries stayed');
  await waitUntil(() => x.logs.lines.some((l) => String(l['msg']).startsWith('conntrack reaper: stale entries')), 'the log line', 2000, 10);
  const lines = x.logs.lines.filter((l) => String(l['msg']).startsWith('conntrack reaper: stale entries'));
  t.equal(lines.length, 1, 'one line for the Service');
  t.match(lines[0], { namespace: 'lab', service: 'dns', entries: 50, reaped: { udp: 50 }, targets: ['10.0.0.1:5353'] });
  const m = await x.metrics();
  t.match(m, /^safe_termination_conntrack_reaped_total\{namespace="lab",service="dns",protocol="udp"\} 50$/m);
  t.match(m, /^safe_termination_conntrack_reap_errors_total 0$/m);
  t.match(m, /^safe_termination_conntrack_reap_sweeps_total\{result="ok"\} 1$/m);
});

t.test('a table that cannot be read is retried less and less often, and reaped once it can be', async (t) => {
  let failing = true;
  const x = rig(t, { holdMs: 0, readFails: () => failing });
  x.tracker.upsert(slice('dns', ['10.0.0.1', '10.0.0.2']), Date.now());
  x.tracker.markSynced();
  x.reaper.start();
  for (let i = 0; i < 5; i++) x.table.push(flow('udp', VIP, 53, '10.0.0.1', 5353));
  x.tracker.upsert(slice('dns', ['10.0.0.2']), Date.now());
  await new Promise((r) => setTimeout(r, 2000));
  // Retries 100, 200, 400 and 800 ms apart: 5 reads in 2 s, where a fixed 100 ms retry reads about 20 times.
  t.ok(x.reads >= 4 && x.reads <= 6, `${x.reads} reads of a failing table in 2 s`);
  t.same(x.deletes, [], 'nothing deleted from a table not read');
  failing = false;
  await waitUntil(() => x.deletes.length > 0, 'the retry after the table reads again', 5000, 10);
  t.equal(x.table.length, 0, 'the stale entries went');
  const m = await x.metrics();
  t.match(m, /^safe_termination_conntrack_reap_sweeps_total\{result="ok"\} 1$/m);
  t.match(m, new RegExp(`^safe_termination_conntrack_reap_sweeps_total\\{result="error"\\} ${x.reads - 1}$`, 'm'), 'each failed read is counted');
});

t.test('dry run: counts and logs, deletes nothing', async (t) => {
  const x = rig(t, { holdMs: 0, dryRun: true });
  x.tracker.upsert(slice('dns', ['10.0.0.1', 'fd00::1']), Date.now());
  x.tracker.markSynced();
  x.tracker.upsert(slice('dns', []), Date.now());
  for (let i = 0; i < 7; i++) x.table.push(flow('udp', VIP, 53, '10.0.0.1', 5353));
  for (let i = 0; i < 3; i++) x.table.push(flow('udp', 'fd00:96::a', 53, 'fd00::1', 5353));
  const o = await x.reaper.sweep();
  t.equal(o.result, 'ok');
  t.same(o.groups.map((g) => [g.replySrc, g.entries, g.deleted]), [['10.0.0.1', 7, 0], ['fd00::1', 3, 0]]);
  t.same(x.deletes, [], 'no deletion');
  t.equal(x.table.length, 10);
  const m = await x.metrics();
  t.match(m, /^safe_termination_conntrack_reap_dry_run_total\{namespace="lab",service="dns",protocol="udp"\} 10$/m);
  t.notMatch(m, /^safe_termination_conntrack_reaped_total\{/m, 'nothing reaped');
  t.match(x.logs.lines.find((l) => String(l['msg']).includes('dry run')), { wouldReap: { udp: 10 }, targets: ['10.0.0.1:5353', '[fd00::1]:5353'] });
});

t.test('rate limit: deletions paced to --reap-max-per-second', async (t) => {
  const x = rig(t, { holdMs: 0, maxPerSecond: 100 });
  const ips = [...Array(6)].map((_, i) => `10.0.1.${i + 1}`);
  x.tracker.upsert(slice('dns', ips), Date.now());
  x.tracker.markSynced();
  x.tracker.upsert(slice('dns', []), Date.now());
  for (const ip of ips) for (let i = 0; i < 50; i++) x.table.push(flow('udp', VIP, 53, ip, 5353));
  const started = Date.now();
  const o = await x.reaper.sweep();
  const ms = Date.now() - started;
  t.equal(o.groups.reduce((s, g) => s + g.deleted, 0), 300);
  // 300 entries at 100/s with a one-second bucket: the first 100 at once, then 200 over 2 s.
  t.ok(ms >= 1900 && ms < 4000, `300 entries at 100/s took ${ms} ms`);
  const spacing = x.deletes.slice(2).map((d, i) => d.at - (x.deletes[i + 1]?.at ?? 0));
  t.ok(spacing.every((s) => s >= 400), `groups of 50 at least ~500 ms apart after the burst: ${spacing.join(', ')}`);
});

t.test('nothing before the sync or while the endpoints are not current; a failing deletion is counted', async (t) => {
  let current = false;
  const x = rig(t, { holdMs: 0, current: () => current, fail: (g) => g.replySrc === '10.0.0.2' });
  x.tracker.upsert(slice('dns', ['10.0.0.1', '10.0.0.2']), Date.now());
  x.tracker.upsert(slice('dns', []), Date.now());
  x.table.push(flow('udp', VIP, 53, '10.0.0.1', 5353), flow('udp', VIP, 53, '10.0.0.2', 5353));
  t.equal((await x.reaper.sweep()).result, 'not-ready', 'not synced');
  x.tracker.markSynced();
  t.equal((await x.reaper.sweep()).result, 'not-ready', 'endpoints not current');
  t.equal(x.tracker.goneCount, 0, 'and what left before the sync is not gone');
  x.tracker.upsert(slice('dns', ['10.0.0.1', '10.0.0.2']), Date.now());
  x.tracker.upsert(slice('dns', []), Date.now());
  t.equal((await x.reaper.sweep()).result, 'not-ready');
  t.equal(x.deletes.length, 0);
  current = true;
  const o = await x.reaper.sweep();
  t.same(o.groups.map((g) => [g.replySrc, g.deleted, g.failed]), [['10.0.0.1', 1, false], ['10.0.0.2', 0, true]]);
  const m = await x.metrics();
  t.match(m, /^safe_termination_conntrack_reap_errors_total 1$/m);
  t.match(m, /^safe_termination_conntrack_reap_sweeps_total\{result="not-ready"\} 3$/m);
  t.match(x.logs.lines.find((l) => String(l['msg']).startsWith('conntrack reaper: stale')), { failedDeletions: 1 });
});
