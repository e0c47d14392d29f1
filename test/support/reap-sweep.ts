/**
 * Run inside a test's network namespace (`ip netns exec NAME node reap-sweep.ts
 * JSON`): the agent's reaper on that namespace's real conntrack table, driven by
 * an EndpointSlice timeline, as the agent wires it (EndpointTracker → Reaper →
 * ConntrackTable + `conntrack -D`). Prints one JSON line: the first sweep after
 * the change, and how long after the change it deleted.
 *
 * Input (JSON, or `@FILE`): { before: slices[], after: slices[], holdMs, dryRun, maxPerSecond }
 * (slices as the API server returns them).
 */
import { readFileSync } from 'node:fs';
import { EndpointTracker } from '../../src/agent/reap-rule.ts';
import { Reaper } from '../../src/agent/reaper.ts';
import { createAgentMetrics } from '../../src/agent/metrics.ts';
import { trimSlice } from '../../src/agent/service-endpoints.ts';
import type { TrimmedSlice } from '../../src/agent/service-endpoints.ts';
import { ConntrackTable } from '../../src/host/conntrack-table.ts';
import { deleteFlowGroup } from '../../src/host/conntrack-delete.ts';
import { createLogger } from '../../src/shared/logger.ts';

interface Input {
  readonly before: unknown[];
  readonly after: unknown[];
  readonly holdMs: number;
  readonly dryRun: boolean;
  readonly maxPerSecond: number;
}

// `@FILE`: the input in a file (a large timeline is over the kernel's 128 KiB per argument).
const arg = process.argv[2] ?? '{}';
const input = JSON.parse(arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg) as Input;
const trim = (xs: unknown[]): TrimmedSlice[] => xs.map((x) => trimSlice(x)).filter((x): x is TrimmedSlice => x !== undefined);
const metrics = createAgentMetrics({ conntrackProcDir: '/proc/sys/net/netfilter', procNetDir: '/proc/net', reap: true });
const log = createLogger('warn');
const ref: { reaper?: Reaper } = {};
const tracker = new EndpointTracker({ holdMs: input.holdMs, onGone: (g) => ref.reaper?.endpointGone(g) });
const reaper = new Reaper({
  tracker,
  table: new ConntrackTable({ procNetDir: '/proc/net' }),
  deleter: (g) => deleteFlowGroup(g),
  metrics: metrics.reap!,
  log,
  maxPerSecond: input.maxPerSecond,
  dryRun: input.dryRun,
  endpointsCurrent: () => true,
});
ref.reaper = reaper;
const r = reaper;
/** CPU ms of the waited-for children (the `conntrack -D` runs): cutime + cstime of /proc/self/stat, in clock ticks of 10 ms. */
const childCpuMs = (): number => {
  const f = readFileSync('/proc/self/stat', 'utf8').slice(readFileSync('/proc/self/stat', 'utf8').lastIndexOf(')') + 2).split(' ');
  return (Number(f[13]) + Number(f[14])) * 10;
};
const usage0 = process.resourceUsage();
const child0 = childCpuMs();
const rss0 = process.memoryUsage.rss();
for (const s of trim(input.before)) tracker.upsert(s, Date.now());
tracker.markSynced();
r.start();
const changedAt = Date.now();
const afterNames = new Set(trim(input.after).map((s) => `${s.metadata.namespace}/${s.metadata.name}`));
for (const s of trim(input.before)) if (!afterNames.has(`${s.metadata.namespace}/${s.metadata.name}`)) tracker.remove(s, changedAt);
for (const s of trim(input.after)) tracker.upsert(s, changedAt);
const deadline = Date.now() + 30_000;
while (r.last === undefined && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
const o = r.last;
const usage1 = process.resourceUsage();
const child1 = childCpuMs();
await r.stop();
const text = await metrics.registry.metrics();
process.stdout.write(
  `${JSON.stringify({
    afterMs: o === undefined ? undefined : Date.now() - changedAt,
    sweptAtMs: o === undefined ? undefined : o.startedAt - changedAt,
    result: o?.result,
    problem: o?.problem,
    scanned: o?.scanned,
    groups: o?.groups.map((g) => ({ protocol: g.protocol, origDst: g.origDst, dport: g.dport, replySrc: g.replySrc, sport: g.sport, service: `${g.namespace}/${g.service}`, entries: g.entries, deleted: g.deleted, failed: g.failed })),
    // The sweep's own cost (the bench prints it): CPU from the change to the end of the sweep, RSS before and at peak (KiB → MiB).
    usage: {
      userMs: Math.round((usage1.userCPUTime - usage0.userCPUTime) / 1000),
      systemMs: Math.round((usage1.systemCPUTime - usage0.systemCPUTime) / 1000),
      rssBeforeMiB: Math.round(rss0 / 1048576),
      peakRssMiB: Math.round(usage1.maxRSS / 1024),
      conntrackToolMs: child1 - child0,
    },
    reapedMetric: [...text.matchAll(/^safe_termination_conntrack_(reaped|reap_dry_run)_total\{(.*)\} (\d+)$/gm)].map((m) => `${m[1]} ${m[2]} ${m[3]}`).sort(),
  })}\n`,
);
