/** Figures of a lab run (pure): client events → counts per kind and phase, and the table. */
import { table } from '../src/diagnose/format.ts';
import { KINDS, OUTCOMES, PHASES } from './scenario.ts';
import type { ClientEvent, Kind, Outcome, Phase, ProtocolConntrack, RunResult } from './scenario.ts';

export interface KindFigures {
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  readonly outcomes: Readonly<Record<Exclude<Outcome, 'ok'>, number>>;
  /** Failures by phase: before the deletion, while the rules still had the pod, after kube-proxy removed it. */
  readonly failedByPhase: Readonly<Record<Phase, number>>;
  /** Of the after-removal failures, those whose request was sent after the removal (not merely answered or timed out after it). */
  readonly failedSentAfterRemoval: number;
  /** Answers the removed backend gave after kube-proxy dropped it: stale entries, served. */
  readonly servedByRemovedAfterRemoval: number;
}

export interface RunFigures {
  readonly mode: RunResult['mode'];
  readonly sleepSeconds: number;
  readonly graceSeconds: number;
  readonly removed: RunResult['removed'];
  readonly timeline: RunResult['timeline'];
  readonly kinds: Partial<Record<Kind, KindFigures>>;
  readonly conntrack: RunResult['conntrack'];
  /** Failures of the kinds the verdict counts (all but udp-pinned). */
  readonly failed: number;
  /** …of which seen after kube-proxy removed the pod from the rules (phase after-removal). */
  readonly failedAfterRemoval: number;
}

/** The kinds the verdict counts: udp-pinned never goes quiet, beyond any sleep (README, "Limits of a sleep"). */
export const COUNTED_KINDS = ['udp', 'tcp-ka', 'tcp-short'] as const satisfies readonly Kind[];

/** The phase in which the outcome was seen (an answer lost at t0 counts after t0). */
export function phaseOf(e: ClientEvent, r: Pick<RunResult, 'timeline'>): Phase {
  const at = e.t + e.d;
  if (at < 0) return 'before-deletion';
  return at < r.timeline.removal ? 'before-removal' : 'after-removal';
}

export function figures(r: RunResult): RunFigures {
  const kinds: Partial<Record<Kind, KindFigures>> = {};
  for (const kind of KINDS) {
    const events = r.events.filter((e) => e.k === kind);
    if (events.length === 0) continue;
    const outcomes = Object.fromEntries(OUTCOMES.filter((o) => o !== 'ok').map((o) => [o, 0])) as Record<Exclude<Outcome, 'ok'>, number>;
    const failedByPhase = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
    let ok = 0;
    let served = 0;
    let sentAfter = 0;
    for (const e of events) {
      if (e.o === 'ok') {
        ok++;
        if (e.b === r.removed.name && e.t + e.d >= r.timeline.removal) served++;
        continue;
      }
      outcomes[e.o]++;
      failedByPhase[phaseOf(e, r)]++;
      if (e.t >= r.timeline.removal) sentAfter++;
    }
    kinds[kind] = { sent: events.length, ok, failed: events.length - ok, outcomes, failedByPhase, failedSentAfterRemoval: sentAfter, servedByRemovedAfterRemoval: served };
  }
  const failed = COUNTED_KINDS.reduce((n, k) => n + (kinds[k]?.failed ?? 0), 0);
  const failedAfterRemoval = COUNTED_KINDS.reduce((n, k) => n + (kinds[k]?.failedByPhase['after-removal'] ?? 0), 0);
  return { mode: r.mode, sleepSeconds: r.sleepSeconds, graceSeconds: r.graceSeconds, removed: r.removed, timeline: r.timeline, kinds, conntrack: r.conntrack, failed, failedAfterRemoval };
}

const LABEL: Record<Kind, string> = {
  udp: 'udp (lookups)',
  'udp-pinned': 'udp (pinned socket)',
  'tcp-ka': 'tcp (keep-alive)',
  'tcp-short': 'tcp (short conns)',
};

/** The table: one row per run and kind; conntrack columns on the first row of each protocol. */
export function formatTable(runs: readonly RunFigures[]): string {
  const header = ['run', 'traffic', 'sent', 'failed', 'after-removal', 'refused', 'reset', 'unreach', 'timeout', 'wrong', 'served-by-removed', 'ct@removal', 'diagnose@removal', 'ct@exit', 'ghost-ct'];
  const rows: string[][] = [];
  for (const run of runs) {
    const shownProtocols = new Set<string>();
    for (const kind of KINDS) {
      const k = run.kinds[kind];
      if (k === undefined) continue;
      const protocol = kind.startsWith('udp') ? 'udp' : 'tcp';
      const ct: ProtocolConntrack = run.conntrack[protocol];
      const first = !shownProtocols.has(protocol);
      shownProtocols.add(protocol);
      rows.push([
        run.mode,
        LABEL[kind],
        String(k.sent),
        String(k.failed),
        String(k.failedByPhase['after-removal']),
        String(k.outcomes.refused),
        String(k.outcomes.reset),
        String(k.outcomes.unreachable),
        String(k.outcomes.timeout),
        String(k.outcomes.wrong),
        String(k.servedByRemovedAfterRemoval),
        first ? `${protocol} ${ct.atRemoval}` : '',
        first ? diagnosed(ct) : '',
        first ? String(ct.atExit) : '',
        first ? String(ct.ghosts) : '',
      ]);
    }
  }
  return table(header, rows, [false, false, true, true, true, true, true, true, true, true, true, true, false, true, true]).join('\n') + '\n';
}

function diagnosed(ct: ProtocolConntrack): string {
  const parts = [];
  if (ct.staleAtRemoval > 0) parts.push(`${ct.staleAtRemoval} stale`);
  if (ct.drainingAtRemoval > 0) parts.push(`${ct.drainingAtRemoval} draining`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

/** One condition the verdict requires, with the figures behind it. */
export interface VerdictCheck {
  readonly name: 'unprotected-fails' | 'unprotected-stale-conntrack' | 'protected-no-failure';
  readonly ok: boolean;
  /** What must hold, and what was measured (said whether it held or not). */
  readonly message: string;
}

export interface Verdict {
  readonly ok: boolean;
  readonly checks: readonly VerdictCheck[];
  readonly lines: readonly string[];
}

/** "udp 9, tcp-ka 0, tcp-short 11" over the counted kinds. */
function perKind(run: RunFigures, count: (k: KindFigures) => number): string {
  return COUNTED_KINDS.filter((k) => run.kinds[k] !== undefined)
    .map((k) => `${k} ${count(run.kinds[k]!)}`)
    .join(', ');
}

const ctAtRemoval = (run: RunFigures): number => run.conntrack.udp.atRemoval + run.conntrack.tcp.atRemoval;
const ctDetail = (run: RunFigures): string => `udp ${run.conntrack.udp.atRemoval}, tcp ${run.conntrack.tcp.atRemoval}`;

/** One line of figures for a run (no judgement). */
function summary(run: RunFigures): string {
  const sentAfter = COUNTED_KINDS.reduce((n, k) => n + (run.kinds[k]?.failedSentAfterRemoval ?? 0), 0);
  const { udp, tcp } = run.conntrack;
  const stale = udp.staleAtRemoval + tcp.staleAtRemoval;
  const draining = udp.drainingAtRemoval + tcp.drainingAtRemoval;
  return (
    `${run.failed} failed (${perKind(run, (k) => k.failed)}), ${run.failedAfterRemoval} after the removal from the rules (${sentAfter} sent after it); ` +
    `${ctAtRemoval(run)} conntrack entries to the pod after its removal (${ctDetail(run)}; ${stale} stale, ${draining} draining)`
  );
}

/**
 * The lab proves something only if the unprotected run shows the failure this
 * product exists to prevent — failed requests, with conntrack entries still
 * pointing at the removed pod after it left the rules — and the protected run has
 * none. Failures seen after the removal are reported, not judged: they are mostly
 * requests sent just before it that time out after it (2–6 in a short run), too
 * few to gate CI on. The drain-only run (graceful app, no preStop sleep) is
 * reported, not judged: how much a drain alone saves varies by protocol.
 */
export function verdict(unprotected: RunFigures, protectedRun: RunFigures, drainOnly?: RunFigures): Verdict {
  const sleep = `the plan's preStop sleep of ${protectedRun.sleepSeconds}s`;
  const checks: VerdictCheck[] = [
    {
      name: 'unprotected-fails',
      ok: unprotected.failed > 0,
      message:
        unprotected.failed > 0
          ? `unprotected run: ${unprotected.failed} failed requests`
          : 'unprotected run: no failed request — the lab did not reproduce the bug, so it proves nothing',
    },
    {
      name: 'unprotected-stale-conntrack',
      ok: ctAtRemoval(unprotected) > 0,
      message:
        ctAtRemoval(unprotected) > 0
          ? `unprotected run: ${ctAtRemoval(unprotected)} conntrack entries still pointed at the removed pod after its removal (${ctDetail(unprotected)})`
          : `unprotected run: no conntrack entry pointed at the removed pod after its removal (${ctDetail(unprotected)}) — nothing stale to show`,
    },
    {
      name: 'protected-no-failure',
      ok: protectedRun.failed === 0,
      message:
        protectedRun.failed === 0
          ? `protected run: 0 failed requests with ${sleep}`
          : `protected run: ${protectedRun.failed} failed requests (${perKind(protectedRun, (k) => k.failed)}) despite ${sleep}`,
    },
  ];
  const ok = checks.every((c) => c.ok);
  const lines = [`unprotected: ${summary(unprotected)}`];
  if (drainOnly !== undefined) {
    lines.push(
      `drain-only:  ${summary(drainOnly)} — ` +
        (drainOnly.failed > 0 ? 'a graceful drain without the preStop sleep does not prevent them (reported, not judged)' : 'the drain alone sufficed this time (reported, not judged)'),
    );
  }
  lines.push(`protected:   ${summary(protectedRun)} — with ${sleep}`);
  if (ok) {
    lines.push(`verdict: ok — unprotected, the ghost-connection failure was reproduced (${unprotected.failed} failures, ${unprotected.failedAfterRemoval} of them after the removal; ${ctAtRemoval(unprotected)} entries still to the pod); ${sleep} prevented every failure`);
  } else {
    for (const c of checks.filter((c) => !c.ok)) lines.push(`verdict: FAILED — ${c.name}: ${c.message}`);
  }
  return { ok, checks, lines };
}
