/**
 * Figures of the real lab (pure): client events of each scale-down step → failures
 * per traffic kind in two windows, the table, and the verdict.
 *
 *   race   a failed request sent before the pod's IP left the node's kube-proxy
 *          rules (and failing after its deletion, t0): new flows could still be
 *          sent to it (the propagation race — what a preStop sleep prevents);
 *   after  sent after it left the rules: only existing conntrack entries could
 *          still carry flows to it (stale entries: the write-up's ghost
 *          connections — what deleting the entries, the reaper, removes). On the
 *          1→0 step the Service has no endpoint left then, so every new flow fails
 *          there too (refused: kube-proxy's REJECT) — reported, never judged.
 */
import { table } from '../../src/diagnose/format.ts';
import { KINDS, OUTCOMES } from './scenario.ts';
import type { ClientEvent, Kind, KubeRunResult, Mode, Outcome, Step, StepResult } from './scenario.ts';
import type { ProxyMode } from './rules.ts';

export const WINDOWS = ['before', 'race', 'after'] as const;
export type Window = (typeof WINDOWS)[number];

export interface KindFigures {
  readonly sent: number;
  readonly failed: number;
  readonly byWindow: Readonly<Record<Window, number>>;
  readonly outcomes: Readonly<Record<Exclude<Outcome, 'ok'>, number>>;
  /** Answers the deleted pod gave after it left the rules (through stale entries, served). */
  readonly servedAfterRemoval: number;
}

export interface StepFigures {
  readonly proxy: ProxyMode;
  readonly mode: Mode;
  readonly step: Step;
  readonly pod: StepResult['pod'];
  readonly stored: StepResult['stored'];
  readonly timeline: StepResult['timeline'];
  readonly conntrack: StepResult['conntrack'];
  readonly kinds: Partial<Record<Kind, KindFigures>>;
  readonly events?: readonly ClientEvent[];
}

/** Flows a preStop sleep can protect: they end (or are re-established) within the sleep. */
export const SHORT_KINDS = ['udp', 'tcp-short', 'tcp-ka'] as const satisfies readonly Kind[];
/** Flows no sleep protects once their pod is gone: only deleting the entry (or the client) ends them. */
export const PINNED_KINDS = ['udp-pinned', 'tcp-stream'] as const satisfies readonly Kind[];

/**
 * A failure's window: `before` if it was seen before the deletion; otherwise by
 * its send time — a request sent while the rules still held the pod could be
 * routed there by them (race), one sent after could reach it only through an
 * existing conntrack entry (after), whenever its timeout expired.
 */
export function windowOf(e: ClientEvent, removal: number | undefined): Window {
  if (e.t + e.d < 0) return 'before';
  return removal === undefined || e.t < removal ? 'race' : 'after';
}

export function stepFigures(proxy: ProxyMode, mode: Mode, s: StepResult): StepFigures {
  const kinds: Partial<Record<Kind, KindFigures>> = {};
  for (const kind of KINDS) {
    const events = s.events.filter((e) => e.k === kind);
    if (events.length === 0) continue;
    const outcomes = Object.fromEntries(OUTCOMES.filter((o) => o !== 'ok').map((o) => [o, 0])) as Record<Exclude<Outcome, 'ok'>, number>;
    const byWindow: Record<Window, number> = { before: 0, race: 0, after: 0 };
    let failed = 0;
    let served = 0;
    for (const e of events) {
      if (e.o === 'ok') {
        if (e.b === s.pod.name && s.timeline.removal !== undefined && e.t + e.d >= s.timeline.removal) served++;
        continue;
      }
      failed++;
      outcomes[e.o]++;
      byWindow[windowOf(e, s.timeline.removal)]++;
    }
    kinds[kind] = { sent: events.length, failed, byWindow, outcomes, servedAfterRemoval: served };
  }
  return { proxy, mode, step: s.step, pod: s.pod, stored: s.stored, timeline: s.timeline, conntrack: s.conntrack, kinds, events: s.events };
}

export function figures(r: KubeRunResult): StepFigures[] {
  return r.steps.map((s) => stepFigures(r.proxy, r.mode, s));
}

const LABEL: Record<Kind, string> = {
  udp: 'udp lookups',
  'udp-pinned': 'udp pinned',
  'tcp-short': 'tcp short',
  'tcp-ka': 'tcp keep-alive',
  'tcp-stream': 'tcp stream',
};

const secs = (ms: number | undefined): string => (ms === undefined ? '-' : (ms / 1000).toFixed(1));

export function formatTable(steps: readonly StepFigures[]): string {
  const header = ['proxy', 'run', 'step', 'traffic', 'sent', 'failed', 'race', 'after', 'refused', 'reset', 'unreach', 'timeout', 'served-after', 'ct@removal', 'ct@exit', 'ct@end', 'ghost-ct'];
  const rows: string[][] = [];
  for (const s of steps) {
    const shown = new Set<string>();
    for (const kind of KINDS) {
      const k = s.kinds[kind];
      if (k === undefined) continue;
      const protocol = kind.startsWith('udp') ? 'udp' : 'tcp';
      const ct = s.conntrack[protocol];
      const first = !shown.has(protocol);
      shown.add(protocol);
      rows.push([
        s.proxy,
        s.mode,
        s.step,
        LABEL[kind],
        String(k.sent),
        String(k.failed),
        String(k.byWindow.race),
        String(k.byWindow.after),
        String(k.outcomes.refused),
        String(k.outcomes.reset),
        String(k.outcomes.unreachable),
        String(k.outcomes.timeout),
        String(k.servedAfterRemoval),
        first ? `${protocol} ${ct.atRemoval}` : '',
        first ? String(ct.atExit) : '',
        first ? String(ct.atEnd) : '',
        first ? String(ct.ghosts) : '',
      ]);
    }
  }
  const lines = table(header, rows, [false, false, false, false, true, true, true, true, true, true, true, true, true, true, true, true, true]);
  const timelines = steps.map(
    (s) =>
      `  ${s.proxy} ${s.mode} ${s.step} ${s.pod.name} (${s.pod.ip}): preStop ${s.stored.preStop}, grace ${s.stored.grace}s; ` +
      `out of the rules +${secs(s.timeline.removal)}s, SIGTERM +${secs(s.timeline.sigterm)}s, exit +${secs(s.timeline.exit)}s, ` +
      `network down +${secs(s.timeline.torndown)}s, removed +${secs(s.timeline.removed)}s`,
  );
  return [...lines, '', 'timelines (seconds after the lab kubelet saw the deletion):', ...timelines].join('\n') + '\n';
}

export const LEGEND = `  race: failed requests sent before the deleted pod's IP left the node's rules (and failing after the deletion):
    the propagation race
  after: failed requests sent after it left the rules (stale conntrack entries; on 1→0 also "no endpoints")
  served-after: answers the deleted pod still gave after it left the rules (stale entries, served)
  ct@removal / ct@exit / ct@end: conntrack entries DNATed to the deleted pod when it left the rules,
    when its process exited, at the end (TCP TIME_WAIT/CLOSE left out); ghost-ct: entries that carried
    packets to it after its exit
`;

export type CheckName = 'endpoint-left-rules' | 'pods-through-webhook' | 'unprotected-race' | 'protected-no-race-failure';

export interface VerdictCheck {
  readonly name: CheckName;
  readonly proxy: ProxyMode | 'all';
  readonly ok: boolean;
  readonly message: string;
}

export interface Verdict {
  readonly ok: boolean;
  readonly checks: readonly VerdictCheck[];
  readonly lines: readonly string[];
}

const sum = (s: StepFigures, kinds: readonly Kind[], w: Window): number => kinds.reduce((n, k) => n + (s.kinds[k]?.byWindow[w] ?? 0), 0);
const perKind = (s: StepFigures, kinds: readonly Kind[], w: Window): string =>
  kinds
    .filter((k) => s.kinds[k] !== undefined)
    .map((k) => `${k} ${s.kinds[k]!.byWindow[w]}`)
    .join(', ');

/**
 * Judged, per proxy mode, on the 3→2 step (ready endpoints remain, so kube-proxy
 * drops the deleted one at once): the unprotected run shows the propagation race;
 * the protected run has no failure in the race window for the flows a sleep
 * protects (lookups, short connections, keep-alive pools). Also judged: kube-proxy
 * removed every deleted pod, and pods came through the webhook (protected: a
 * stored preStop and record; the others: none). After-removal failures (pinned
 * UDP, streams) and the 1→0 step are reported per run, not judged.
 */
export function verdict(steps: readonly StepFigures[]): Verdict {
  const checks: VerdictCheck[] = [];
  const missing = steps.filter((s) => s.timeline.removal === undefined);
  checks.push({
    name: 'endpoint-left-rules',
    proxy: 'all',
    ok: missing.length === 0,
    message:
      missing.length === 0
        ? `kube-proxy removed every deleted pod from the node's rules (${steps.length} deletions)`
        : `kube-proxy never removed ${missing.map((s) => `${s.proxy}/${s.mode}/${s.step}`).join(', ')} from the rules`,
  });
  const wrongInjection = steps.filter((s) => (s.mode === 'protected') !== (s.stored.preStop !== 'none' && s.stored.record !== null));
  checks.push({
    name: 'pods-through-webhook',
    proxy: 'all',
    ok: wrongInjection.length === 0,
    message:
      wrongInjection.length === 0
        ? 'the API server stored the webhook\'s preStop and record on the protected pods, nothing on the others'
        : `unexpected injection state: ${wrongInjection.map((s) => `${s.proxy}/${s.mode}/${s.step} preStop ${s.stored.preStop}`).join('; ')}`,
  });
  const proxies = [...new Set(steps.map((s) => s.proxy))];
  for (const proxy of proxies) {
    const find = (mode: Mode): StepFigures | undefined => steps.find((s) => s.proxy === proxy && s.mode === mode && s.step === '3→2');
    const u = find('unprotected');
    const p = find('protected');
    const uRace = u === undefined ? 0 : sum(u, SHORT_KINDS, 'race');
    checks.push({
      name: 'unprotected-race',
      proxy,
      ok: uRace > 0,
      message:
        u === undefined
          ? `${proxy}: no unprotected 3→2 run`
          : uRace > 0
            ? `${proxy}: unprotected 3→2 failed ${uRace} short flows in the race window (${perKind(u, SHORT_KINDS, 'race')})`
            : `${proxy}: unprotected 3→2 had no failure in the race window — the lab did not reproduce the race`,
    });
    const pRace = p === undefined ? -1 : sum(p, SHORT_KINDS, 'race');
    checks.push({
      name: 'protected-no-race-failure',
      proxy,
      ok: pRace === 0,
      message:
        p === undefined
          ? `${proxy}: no protected 3→2 run`
          : pRace === 0
            ? `${proxy}: protected 3→2 (${p.stored.preStop}) had no failure in the race window (${perKind(p, SHORT_KINDS, 'race')})`
            : `${proxy}: protected 3→2 (${p.stored.preStop}) failed ${pRace} short flows in the race window (${perKind(p, SHORT_KINDS, 'race')})`,
    });
  }
  const ok = checks.every((c) => c.ok);
  const lines: string[] = [];
  for (const s of steps) {
    const ct = s.conntrack.udp.atRemoval + s.conntrack.tcp.atRemoval;
    const ghosts = s.conntrack.udp.ghosts + s.conntrack.tcp.ghosts;
    lines.push(
      `${s.proxy} ${s.mode} ${s.step}: race ${sum(s, KINDS, 'race')} (${perKind(s, SHORT_KINDS, 'race')}); ` +
        `after ${sum(s, KINDS, 'after')} (${perKind(s, SHORT_KINDS, 'after')}; pinned — ${perKind(s, PINNED_KINDS, 'after') || 'none'})` +
        (s.step === '1→0' ? ' [no endpoint left: every new flow fails]' : '') +
        `; ${ct} entries to the pod when it left the rules, ${ghosts} carried packets after its exit, ${s.conntrack.udp.atEnd + s.conntrack.tcp.atEnd} at the end`,
    );
  }
  const early = steps.filter((s) => sum(s, KINDS, 'before') > 0);
  if (early.length > 0) lines.push(`(failures before any deletion, not judged: ${early.map((s) => `${s.proxy} ${s.mode} ${s.step} ${sum(s, KINDS, 'before')}`).join(', ')})`);
  for (const c of checks) lines.push(`${c.ok ? 'ok' : 'FAILED'} ${c.name}${c.proxy === 'all' ? '' : ` (${c.proxy})`}: ${c.message}`);
  lines.push(ok ? 'verdict: ok' : `verdict: FAILED — ${checks.filter((c) => !c.ok).map((c) => c.name).join(', ')}`);
  return { ok, checks, lines };
}
