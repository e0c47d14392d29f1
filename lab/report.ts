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
}

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
    for (const e of events) {
      if (e.o === 'ok') {
        ok++;
        if (e.b === r.removed.name && e.t + e.d >= r.timeline.removal) served++;
        continue;
      }
      outcomes[e.o]++;
      failedByPhase[phaseOf(e, r)]++;
    }
    kinds[kind] = { sent: events.length, ok, failed: events.length - ok, outcomes, failedByPhase, servedByRemovedAfterRemoval: served };
  }
  const failed = (['udp', 'tcp-ka', 'tcp-short'] as const).reduce((n, k) => n + (kinds[k]?.failed ?? 0), 0);
  return { mode: r.mode, sleepSeconds: r.sleepSeconds, graceSeconds: r.graceSeconds, removed: r.removed, timeline: r.timeline, kinds, conntrack: r.conntrack, failed };
}

const LABEL: Record<Kind, string> = {
  udp: 'udp (lookups)',
  'udp-pinned': 'udp (pinned socket)',
  'tcp-ka': 'tcp (keep-alive)',
  'tcp-short': 'tcp (short conns)',
};

/** The table: one row per run and kind; conntrack columns on the first row of each protocol. */
export function formatTable(runs: readonly RunFigures[]): string {
  const header = ['run', 'traffic', 'sent', 'failed', 'refused', 'reset', 'unreach', 'timeout', 'wrong', 'served-by-removed', 'ct@removal', 'diagnose@removal', 'ct@exit', 'ghost-ct'];
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
  return table(header, rows, [false, false, true, true, true, true, true, true, true, true, true, false, true, true]).join('\n') + '\n';
}

function diagnosed(ct: ProtocolConntrack): string {
  const parts = [];
  if (ct.staleAtRemoval > 0) parts.push(`${ct.staleAtRemoval} stale`);
  if (ct.drainingAtRemoval > 0) parts.push(`${ct.drainingAtRemoval} draining`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

export interface Verdict {
  readonly ok: boolean;
  readonly lines: readonly string[];
}

/** The lab proves something only if the unprotected run fails and the protected one does not. */
export function verdict(unprotected: RunFigures, protectedRun: RunFigures): Verdict {
  const lines: string[] = [];
  const showsBug = unprotected.failed > 0;
  const fixed = protectedRun.failed === 0;
  lines.push(
    showsBug
      ? `unprotected: ${unprotected.failed} failed requests — the ghost-connection failure, reproduced`
      : 'unprotected: no failure — the lab did not reproduce the bug, so it proves nothing',
  );
  lines.push(
    fixed
      ? `protected:   0 failed requests with the plan's preStop sleep of ${protectedRun.sleepSeconds}s`
      : `protected:   ${protectedRun.failed} failed requests despite the plan's preStop sleep of ${protectedRun.sleepSeconds}s`,
  );
  return { ok: showsBug && fixed, lines };
}
