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
import type { ClientEvent, DiagnoseSummary, Kind, KubeRunResult, Mode, Outcome, Step, StepResult } from './scenario.ts';
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
  /**
   * Failed after the reaper's sweep time: sent after it, or answered by nothing
   * (timeout, unreachable) while waiting across it.
   */
  readonly afterSweep: number;
}

/** tcp-long requests that failed after the deletion: when the client learnt its connection was dead. */
export interface DetectFigures {
  /** Failed with an answer from the network (RST, ICMP): ms after t0 of the latest. */
  readonly detected: number;
  readonly latestMs: number | undefined;
  /** Still unanswered when the client stopped: blackholed to the end of the run. */
  readonly never: number;
}

export interface StepFigures {
  readonly proxy: ProxyMode;
  readonly mode: Mode;
  /** The agent ran with --reap=true. */
  readonly reaper: boolean;
  readonly step: Step;
  readonly pod: StepResult['pod'];
  readonly stored: StepResult['stored'];
  readonly timeline: StepResult['timeline'];
  readonly conntrack: StepResult['conntrack'];
  readonly kinds: Partial<Record<Kind, KindFigures>>;
  /** Packets the node forwarded to the deleted pod's IP after its network was gone. */
  readonly gonePackets: StepResult['gonePackets'];
  readonly detect: DetectFigures;
  /** Entries the agent's reaper deleted for this step's Service (its log). */
  readonly reaped: number;
  /** The run's `diagnose` in the node namespace at its end (the same for both steps of a run). */
  readonly diagnose: DiagnoseSummary | undefined;
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

export function detectFigures(events: readonly ClientEvent[]): DetectFigures {
  const failed = events.filter((e) => e.k === 'tcp-long' && e.o !== 'ok' && e.t + e.d >= 0);
  const detected = failed.filter((e) => e.o !== 'timeout');
  return {
    detected: detected.length,
    latestMs: detected.length === 0 ? undefined : Math.max(...detected.map((e) => e.t + e.d)),
    never: failed.length - detected.length,
  };
}

export function stepFigures(proxy: ProxyMode, mode: Mode, s: StepResult, run?: Pick<KubeRunResult, 'reaper' | 'reaped' | 'diagnose'>): StepFigures {
  const kinds: Partial<Record<Kind, KindFigures>> = {};
  for (const kind of KINDS) {
    const events = s.events.filter((e) => e.k === kind);
    if (events.length === 0) continue;
    const outcomes = Object.fromEntries(OUTCOMES.filter((o) => o !== 'ok').map((o) => [o, 0])) as Record<Exclude<Outcome, 'ok'>, number>;
    const byWindow: Record<Window, number> = { before: 0, race: 0, after: 0 };
    let failed = 0;
    let served = 0;
    let afterSweep = 0;
    const sweep = s.timeline.sweep;
    for (const e of events) {
      if (e.o === 'ok') {
        if (e.b === s.pod.name && s.timeline.removal !== undefined && e.t + e.d >= s.timeline.removal) served++;
        continue;
      }
      failed++;
      outcomes[e.o]++;
      if (sweep !== undefined && (e.t >= sweep || ((e.o === 'timeout' || e.o === 'unreachable') && e.t + e.d > sweep))) afterSweep++;
      byWindow[windowOf(e, s.timeline.removal)]++;
    }
    kinds[kind] = { sent: events.length, failed, byWindow, outcomes, servedAfterRemoval: served, afterSweep };
  }
  const app = s.pod.name.split('-')[0];
  const reaped = (run?.reaped ?? []).filter((l) => l.service === app).reduce((n, l) => n + Object.values(l.reaped).reduce((a, b) => a + b, 0), 0);
  return {
    proxy,
    mode,
    reaper: run?.reaper ?? true,
    step: s.step,
    pod: s.pod,
    stored: s.stored,
    timeline: s.timeline,
    conntrack: s.conntrack,
    kinds,
    gonePackets: s.gonePackets,
    detect: detectFigures(s.events),
    reaped,
    diagnose: run?.diagnose,
    events: s.events,
  };
}

export function figures(r: KubeRunResult): StepFigures[] {
  return r.steps.map((s) => stepFigures(r.proxy, r.mode, s, r));
}

const LABEL: Record<Kind, string> = {
  udp: 'udp lookups',
  'udp-pinned': 'udp pinned',
  'tcp-short': 'tcp short',
  'tcp-ka': 'tcp keep-alive',
  'tcp-stream': 'tcp stream',
  'tcp-long': 'tcp long',
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

/** Flows the reaper is for, in the reaper table. */
export const REAPER_KINDS = ['udp-pinned', 'tcp-stream', 'tcp-long'] as const satisfies readonly Kind[];

/** The reaper comparison: pinned flows per run, reaper on and off. */
export function formatReaperTable(steps: readonly StepFigures[]): string {
  const header = ['proxy', 'run', 'reaper', 'step', 'traffic', 'sent', 'after', 'after-sweep', 'timeout', 'refused', 'reset', 'unreach', 'pkts-to-gone', 'pkts-after-sweep', 'detected', 'never', 'reaped', 'diagnose-stale'];
  const rows: string[][] = [];
  for (const s of steps) {
    for (const kind of REAPER_KINDS) {
      const k = s.kinds[kind];
      if (k === undefined) continue;
      const protocol = kind.startsWith('udp') ? 'udp' : 'tcp';
      const long = kind === 'tcp-long';
      rows.push([
        s.proxy,
        s.mode,
        s.reaper ? 'on' : 'off',
        s.step,
        LABEL[kind],
        String(k.sent),
        String(k.byWindow.after),
        String(k.afterSweep),
        String(k.outcomes.timeout),
        String(k.outcomes.refused),
        String(k.outcomes.reset),
        String(k.outcomes.unreachable),
        kind === 'tcp-long' ? '' : `${protocol} ${s.gonePackets[protocol]}`,
        kind === 'tcp-long' ? '' : String(s.gonePackets.afterSweep[protocol]),
        long ? `${s.detect.detected}${s.detect.latestMs === undefined ? '' : ` by +${secs(s.detect.latestMs)}s`}` : '',
        long ? String(s.detect.never) : '',
        kind === 'udp-pinned' ? String(s.reaped) : '',
        kind === 'udp-pinned' ? (s.diagnose === undefined ? '-' : String(staleOf(s))) : '',
      ]);
    }
  }
  return table(header, rows, [false, false, false, false, false, true, true, true, true, true, true, true, true, true, true, true, true, true]).join('\n') + '\n';
}

/** Stale entries `diagnose` found for the step's Service (both protocols); -1 when it could not run. */
export function staleOf(s: StepFigures): number {
  if (s.diagnose === undefined || s.diagnose.stale < 0) return -1;
  const app = s.pod.name.split('-')[0];
  return Object.entries(s.diagnose.staleByService)
    .filter(([k]) => k.split(' ')[0]!.endsWith(`/${app}`))
    .reduce((n, [, v]) => n + v, 0);
}

export const REAPER_LEGEND = `  after: failed requests sent after the deleted pod left the node's rules (timeout: answered by nothing)
  after-sweep: failed requests sent after the sweep time (6 s after the pod left the API: the reaper's 5 s
    hold and its sweep), or answered by nothing while waiting across it
  pkts-to-gone: packets the node forwarded to the deleted pod's IP after its network was gone (blackholed);
    pkts-after-sweep: of them, those after the sweep time
  detected / never (tcp long, no timeout of its own): requests failed by a RST or ICMP, by when (seconds
    after the deletion or loss); never: still unanswered when the run ended
  reaped: entries the agent's reaper deleted for the Service; diagnose-stale: \`safe-termination diagnose\`
    in the node namespace at the run's end (after the reaper's sweep), stale entries of the Service
`;

export const LEGEND = `  race: failed requests sent before the deleted pod's IP left the node's rules (and failing after the deletion):
    the propagation race
  after: failed requests sent after it left the rules (stale conntrack entries; on 1→0 also "no endpoints")
  served-after: answers the deleted pod still gave after it left the rules (stale entries, served)
  ct@removal / ct@exit / ct@end: conntrack entries DNATed to the deleted pod when it left the rules,
    when its process exited, at the end (TCP TIME_WAIT/CLOSE left out); ghost-ct: entries that carried
    packets to it after its exit
`;

export type CheckName =
  | 'endpoint-left-rules'
  | 'pods-through-webhook'
  | 'unprotected-race'
  | 'protected-no-race-failure'
  | 'reaper-no-failure-after-sweep'
  | 'reaper-off-long-streams-blackholed'
  | 'reaper-scale-to-zero-clean'
  | 'reaper-diagnose-clean';

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
const sweepText = (s: StepFigures): string =>
  `(${REAPER_KINDS.filter((k) => s.kinds[k] !== undefined)
    .map((k) => `${k} ${s.kinds[k]!.afterSweep}`)
    .join(', ')}; packets udp ${s.gonePackets.afterSweep.udp} tcp ${s.gonePackets.afterSweep.tcp})`;
const afterSweep = (s: StepFigures): number => s.gonePackets.afterSweep.udp + s.gonePackets.afterSweep.tcp;

/**
 * The reaper's claim, judged on the protected runs made with the reaper on and off
 * (--reaper both). An after-removal failure is judged from the reaper's sweep time
 * (the pod left the API, plus its hold and a margin): a pinned flow (one UDP
 * socket, a stream, a long stream with no timeout of its own) answered by nothing
 * then, or a packet sent on to the gone pod's IP. With the reaper: none, in every
 * step (1→0: packets only, as it has no endpoint left); the scale to zero leaves no
 * entry to the removed pod; `diagnose` finds nothing stale. Without it: the long
 * streams to the lost pod stay blackholed. The plain after-removal counts (sent
 * after the pod left the rules), on against off, are stated in `lines`.
 */
function reaperChecks(steps: readonly StepFigures[], proxy: ProxyMode, lines: string[]): VerdictCheck[] {
  const on = steps.filter((s) => s.reaper);
  const off = steps.filter((s) => !s.reaper);
  if (on.length === 0 || off.length === 0) return [];
  const find = (set: readonly StepFigures[], step: Step): StepFigures | undefined => set.find((s) => s.step === step);
  const checks: VerdictCheck[] = [];
  // 1→0 leaves no endpoint: every new flow fails there; judged by its packets only.
  const judged = (x: StepFigures): number => (x.step === '1→0' ? 0 : REAPER_KINDS.reduce((n, k) => n + (x.kinds[k]?.afterSweep ?? 0), 0)) + afterSweep(x);
  const failing = on.filter((s) => judged(s) > 0);
  checks.push({
    name: 'reaper-no-failure-after-sweep',
    proxy,
    ok: failing.length === 0,
    message:
      `${proxy}: after the sweep time, pinned-flow failures + packets to the gone pod, with the reaper: ${on.map((s) => `${s.step} ${sweepText(s)}`).join('; ')}` +
      `; without: ${off.map((s) => `${s.step} ${sweepText(s)}`).join('; ')}`,
  });
  const lostOff = find(off, 'lost');
  const lostOn = find(on, 'lost');
  checks.push({
    name: 'reaper-off-long-streams-blackholed',
    proxy,
    ok: lostOff !== undefined && lostOff.detect.never > 0 && lostOff.gonePackets.afterSweep.tcp > 0,
    message:
      lostOff === undefined
        ? `${proxy}: no lost-pod step without the reaper`
        : `${proxy}: lost pod, without the reaper: ${lostOff.detect.never} long TCP stream(s) never answered to the end, ${lostOff.gonePackets.afterSweep.tcp} TCP packets to its IP after the sweep time; ` +
          `with it: ${lostOn === undefined ? '-' : `${lostOn.detect.never} never answered, ${lostOn.detect.detected} reset${lostOn.detect.latestMs === undefined ? '' : ` by +${secs(lostOn.detect.latestMs)}s`}, ${lostOn.gonePackets.afterSweep.tcp} TCP packets after the sweep`}`,
  });
  const zeroOn = find(on, '1→0');
  const zeroOff = find(off, '1→0');
  const left = (s: StepFigures): number => s.conntrack.udp.atEnd + s.conntrack.tcp.atEnd;
  checks.push({
    name: 'reaper-scale-to-zero-clean',
    proxy,
    ok: zeroOn !== undefined && left(zeroOn) === 0 && staleOf(zeroOn) === 0 && afterSweep(zeroOn) === 0,
    message:
      zeroOn === undefined
        ? `${proxy}: no 1→0 step with the reaper`
        : `${proxy}: scale to zero with the reaper: ${left(zeroOn)} entries to the removed pod at the end, ${staleOf(zeroOn)} stale in diagnose, ${afterSweep(zeroOn)} packets after the sweep, ${zeroOn.reaped} reaped` +
          (zeroOff === undefined ? '' : `; without: ${left(zeroOff)} entries at the end, ${staleOf(zeroOff)} stale, ${afterSweep(zeroOff)} packets after the sweep`),
  });
  const dOn = on[0]?.diagnose;
  const dOff = off[0]?.diagnose;
  checks.push({
    name: 'reaper-diagnose-clean',
    proxy,
    ok: dOn !== undefined && dOn.exitCode === 0 && dOn.stale === 0,
    message:
      `${proxy}: diagnose in the node namespace after the sweep, with the reaper: ${dOn === undefined ? 'not run' : `${dOn.stale} stale of ${dOn.entries} entries (exit ${dOn.exitCode})`}` +
      `; without: ${dOff === undefined ? 'not run' : `${dOff.stale} stale (exit ${dOff.exitCode}${Object.keys(dOff.staleByService).length > 0 ? `: ${Object.entries(dOff.staleByService).map(([k, v]) => `${k} ${v}`).join(', ')}` : ''})`}`,
  });
  // What differs, per step and pinned kind (stated, not judged).
  for (const s of on) {
    const o = find(off, s.step);
    if (o === undefined) continue;
    const parts = REAPER_KINDS.filter((k) => s.kinds[k] !== undefined).map((k) => {
      const a = (x: StepFigures): string => `${x.kinds[k]?.byWindow.after ?? 0}/${x.kinds[k]?.afterSweep ?? 0}`;
      return `${k} ${a(s)} vs ${a(o)}`;
    });
    lines.push(
      `${proxy} reaper on vs off, ${s.step}: failures after removal from the rules / after the sweep time: ${parts.join(', ')}; ` +
        `long streams never answered ${s.detect.never} vs ${o.detect.never}; packets to the gone pod after the sweep ${afterSweep(s)} vs ${afterSweep(o)}`,
    );
  }
  return checks;
}

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
  // (A lost pod never ran its hook: its stored one is not what the kubelet ran.)
  const wrongInjection = steps.filter((s) => s.step !== 'lost' && (s.mode === 'protected') !== (s.stored.preStop !== 'none' && s.stored.record !== null));
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
    const find = (mode: Mode): StepFigures | undefined => steps.find((s) => s.proxy === proxy && s.mode === mode && s.step === '3→2' && s.reaper) ?? steps.find((s) => s.proxy === proxy && s.mode === mode && s.step === '3→2');
    const u = find('unprotected');
    const p = find('protected');
    // Judged where the run was made (--runs protected with --reaper both has no unprotected run).
    if (u !== undefined) {
      const uRace = sum(u, SHORT_KINDS, 'race');
      checks.push({
        name: 'unprotected-race',
        proxy,
        ok: uRace > 0,
        message:
          uRace > 0
            ? `${proxy}: unprotected 3→2 failed ${uRace} short flows in the race window (${perKind(u, SHORT_KINDS, 'race')})`
            : `${proxy}: unprotected 3→2 had no failure in the race window — the lab did not reproduce the race`,
      });
    }
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
  const reaperLines: string[] = [];
  for (const proxy of proxies) checks.push(...reaperChecks(steps.filter((s) => s.proxy === proxy && s.mode === 'protected'), proxy, reaperLines));
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
  lines.push(...reaperLines);
  const early = steps.filter((s) => sum(s, KINDS, 'before') > 0);
  if (early.length > 0) lines.push(`(failures before any deletion, not judged: ${early.map((s) => `${s.proxy} ${s.mode} ${s.step} ${sum(s, KINDS, 'before')}`).join(', ')})`);
  for (const c of checks) lines.push(`${c.ok ? 'ok' : 'FAILED'} ${c.name}${c.proxy === 'all' ? '' : ` (${c.proxy})`}: ${c.message}`);
  lines.push(ok ? 'verdict: ok' : `verdict: FAILED — ${checks.filter((c) => !c.ok).map((c) => c.name).join(', ')}`);
  return { ok, checks, lines };
}
