/**
 * `--plot FILE.svg`: the real lab's timelines as a picture (pure; no I/O). One panel
 * per run and scale-down step, time on x (seconds after the lab kubelet saw the
 * deletion, one scale for every panel so runs compare at a glance):
 *
 *   - the two windows of report.ts shaded: race (deletion → the pod's IP left the
 *     node's rules) and ghosts (from then while conntrack entries still lead to it);
 *   - the pod's lane: the preStop sleep, SIGTERM → exit, and markers for the
 *     deletion, SIGTERM and "out of the rules" across the panel;
 *   - one lane per traffic kind: every request a dot at its send time, coloured by
 *     the backend that answered (the deleted pod stands out) or by how it failed
 *     (failures drawn larger, on top, with a line to when they failed);
 *   - a strip with the count of conntrack entries DNATed to the deleted pod (udp, tcp).
 */
import { windowOf } from './report.ts';
import { KINDS } from './scenario.ts';
import type { ClientEvent, Kind, KubeRunResult, Outcome, StepResult } from './scenario.ts';
import type { RunResult } from '../scenario.ts';

export const PLOT_COLOURS = {
  race: '#f6c344',
  ghosts: '#a77bca',
  deletedPod: '#f28e2b',
  otherPods: ['#4e79a7', '#59a14f', '#76b7b2', '#9c9ede', '#86bcb6'],
  failed: { refused: '#d62728', reset: '#e377c2', unreachable: '#8c564b', timeout: '#111111', wrong: '#17becf' } satisfies Record<Exclude<Outcome, 'ok'>, string>,
  sleep: '#2ca02c',
  sigterm: '#d62728',
  removal: '#1f5fbf',
  ctUdp: '#e8590c',
  ctTcp: '#1f5fbf',
} as const;

const KIND_LABEL: Record<Kind, string> = { udp: 'udp lookups', 'udp-pinned': 'udp pinned', 'tcp-short': 'tcp short', 'tcp-ka': 'tcp keep-alive', 'tcp-stream': 'tcp stream', 'tcp-long': 'tcp long' };

const W = 1100;
const LEFT = 118;
const RIGHT = 56;
const PLOT_W = W - LEFT - RIGHT;
const TITLE_H = 34;
const POD_LANE = 30;
const LANE = 20;
const CT_H = 46;
const AXIS_H = 24;
const GAP = 18;
const HEADER_H = 112;

export interface PlotOptions {
  /** The picture's title (default: the lab's name). */
  readonly title?: string;
  /** A line under the title (versions, configuration). */
  readonly subtitle?: string;
}

/**
 * The emulated lab's run (lab/scenario.ts: one backend of three deleted, t0 the
 * deletion) as a run of the real lab's shape, to draw it the same way.
 */
export function emulatedAsRun(r: RunResult): KubeRunResult {
  const ct = (p: RunResult['conntrack']['udp']) => ({ atRemoval: p.atRemoval, atExit: p.atExit, atEnd: 0, ghosts: p.ghosts });
  return {
    proxy: 'iptables',
    mode: r.mode,
    reaper: false,
    namespace: 'emulated',
    reaped: [],
    steps: [
      {
        step: '3→2',
        pod: r.removed,
        stored: { preStop: r.sleepSeconds > 0 ? `sleep ${r.sleepSeconds}s` : 'none', grace: r.graceSeconds, record: null },
        timeline: {
          scaled: 0,
          removal: r.timeline.removal,
          preStopDone: r.sleepSeconds > 0 ? r.sleepSeconds * 1000 : undefined,
          sigterm: r.timeline.sigterm,
          notReady: undefined,
          exit: r.timeline.exit,
          torndown: undefined,
          removed: undefined,
          end: r.timeline.end,
        },
        events: r.events,
        conntrack: { udp: ct(r.conntrack.udp), tcp: ct(r.conntrack.tcp) },
        gonePackets: { udp: 0, tcp: 0, afterSweep: { udp: 0, tcp: 0 } },
        conntrackSeries: r.conntrackSeries ?? [],
      },
    ],
  };
}

/** XML text and attribute escaping. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const f1 = (n: number): string => (Math.round(n * 10) / 10).toString();

/** When the ghost window closes: the first sample after the removal with no entry to the pod, else the end. */
export function ghostWindowEnd(s: StepResult): number | undefined {
  const removal = s.timeline.removal;
  if (removal === undefined) return undefined;
  const zero = s.conntrackSeries.find((p) => p.t > removal && p.udp + p.tcp === 0);
  return zero === undefined ? s.timeline.end : zero.t;
}

/** A deterministic jitter in [0, 1) for a dot's place in its lane. */
function jitter(i: number): number {
  const x = Math.sin(i * 12.9898 + 78.233) * 43758.5453;
  return x - Math.floor(x);
}

interface Domain {
  readonly from: number;
  readonly to: number;
}

function domainOf(runs: readonly KubeRunResult[]): Domain {
  let from = -1500;
  let to = 5000;
  for (const r of runs) {
    for (const s of r.steps) {
      from = Math.min(from, s.timeline.scaled - 500);
      to = Math.max(to, s.timeline.end);
    }
  }
  return { from: Math.floor(from / 1000) * 1000, to: Math.ceil(to / 1000) * 1000 };
}

function panelHeight(): number {
  return TITLE_H + POD_LANE + KINDS.length * LANE + 8 + CT_H + AXIS_H;
}

/** The SVG document for these runs. */
export function plotTimelines(runs: readonly KubeRunResult[], o: PlotOptions = {}): string {
  const panels = runs.flatMap((r) => r.steps.map((s) => ({ run: r, step: s })));
  const domain = domainOf(runs);
  const x = (ms: number): number => LEFT + ((Math.min(Math.max(ms, domain.from), domain.to) - domain.from) / (domain.to - domain.from)) * PLOT_W;
  const ph = panelHeight();
  const H = HEADER_H + panels.length * (ph + GAP) + 10;
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">`);
  out.push(
    `<style>.lbl{fill:#333}.sm{font-size:10px;fill:#555}.ttl{font-size:12px;font-weight:bold;fill:#222}.grid{stroke:#e4e4e4;stroke-width:1}.ok{stroke:none}.fail{stroke:#fff;stroke-width:.6}.halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}</style>`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(header(o));

  panels.forEach(({ run, step }, i) => {
    const top = HEADER_H + i * (ph + GAP);
    out.push(`<g class="panel" data-proxy="${run.proxy}" data-mode="${run.mode}" data-step="${escapeXml(step.step)}" transform="translate(0,${top})">`);
    out.push(panel(run, step, x, domain));
    out.push(`</g>`);
  });
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}

function header(o: PlotOptions): string {
  const c = PLOT_COLOURS;
  const parts: string[] = [];
  parts.push(`<text x="16" y="24" font-size="16" font-weight="bold" fill="#222">${escapeXml(o.title ?? 'The ghost-connection lab on real Kubernetes: what happens around a pod\'s deletion')}</text>`);
  if (o.subtitle !== undefined) parts.push(`<text x="16" y="42" class="sm">${escapeXml(o.subtitle)}</text>`);
  // Legend, two rows.
  let lx = 16;
  const row1 = 64;
  const swatch = (fill: string, label: string, opacity = 1): void => {
    parts.push(`<rect x="${lx}" y="${row1 - 9}" width="22" height="12" fill="${fill}" fill-opacity="${opacity}"/>`);
    parts.push(`<text x="${lx + 27}" y="${row1 + 1}" class="lbl">${escapeXml(label)}</text>`);
    lx += 32 + label.length * 6.1;
  };
  swatch(c.race, 'race: deleted, still in the node\'s rules', 0.35);
  swatch(c.ghosts, 'ghosts: out of the rules, conntrack entries still lead to the pod', 0.3);
  swatch(c.sleep, 'preStop sleep', 0.8);
  const vline = (stroke: string, dash: string, label: string): void => {
    parts.push(`<line x1="${lx + 4}" y1="${row1 - 10}" x2="${lx + 4}" y2="${row1 + 4}" stroke="${stroke}" stroke-width="2" stroke-dasharray="${dash}"/>`);
    parts.push(`<text x="${lx + 11}" y="${row1 + 1}" class="lbl">${escapeXml(label)}</text>`);
    lx += 18 + label.length * 6.1;
  };
  vline('#333', '', 'deletion');
  vline(c.sigterm, '4 2', 'SIGTERM');
  vline(c.removal, '', 'out of the rules');
  lx = 16;
  const row2 = 86;
  const dot = (fill: string, label: string, r: number): void => {
    parts.push(`<circle cx="${lx + 5}" cy="${row2 - 4}" r="${r}" fill="${fill}"/>`);
    parts.push(`<text x="${lx + 13}" y="${row2}" class="lbl">${escapeXml(label)}</text>`);
    lx += 22 + label.length * 6.1;
  };
  parts.push(`<text x="${lx}" y="${row2}" class="lbl">requests (dot at send time):</text>`);
  lx += 168;
  dot(c.deletedPod, 'answered by the deleted pod', 3);
  dot(c.otherPods[0], 'by another pod (a shade each)', 3);
  for (const [outcome, fill] of Object.entries(c.failed)) dot(fill, outcome, 4);
  parts.push(
    `<text x="16" y="${row2 + 18}" class="sm">failures are drawn larger, with a line to when they failed; bottom strip: conntrack entries DNATed to the deleted pod (<tspan style="fill:${c.ctUdp}">udp</tspan>, <tspan style="fill:${c.ctTcp}">tcp</tspan>; TCP TIME_WAIT/CLOSE left out); time: seconds after the deletion</text>`,
  );
  return parts.join('\n');
}

function panel(run: KubeRunResult, s: StepResult, x: (ms: number) => number, domain: Domain): string {
  const c = PLOT_COLOURS;
  const tl = s.timeline;
  const parts: string[] = [];
  const lanesTop = TITLE_H;
  const kindsTop = lanesTop + POD_LANE;
  const kindsBottom = kindsTop + KINDS.length * LANE;
  const ctTop = kindsBottom + 8;
  const ctBottom = ctTop + CT_H;
  const failed = s.events.filter((e) => e.o !== 'ok' && windowOf(e, tl.removal) !== 'before');
  const race = failed.filter((e) => windowOf(e, tl.removal) === 'race').length;
  const after = failed.length - race;
  const served = s.events.filter((e) => e.o === 'ok' && e.b === s.pod.name && tl.removal !== undefined && e.t + e.d >= tl.removal).length;
  const app = s.pod.name.replace(/-[a-z0-9]+-[a-z0-9]+$/, '');
  const noneLeft = s.step === '1→0' ? '; 1→0: no endpoint left once it is out of the rules, so new flows fail then too' : '';
  parts.push(`<text x="16" y="14" class="ttl">${escapeXml(`${run.proxy} · ${run.mode} · ${app} ${s.step} — failed: race ${race}, after ${after}`)}</text>`);
  parts.push(
    `<text x="16" y="28" class="sm">${escapeXml(
      `deleted ${s.pod.name} (${s.pod.ip}): preStop ${s.stored.preStop}, grace ${s.stored.grace}s; it answered ${served} request${served === 1 ? '' : 's'} after it left the rules${noneLeft}`,
    )}</text>`,
  );
  // Frame and second grid.
  parts.push(`<rect x="${LEFT}" y="${lanesTop}" width="${PLOT_W}" height="${ctBottom - lanesTop}" fill="#fafafa" stroke="#ccc"/>`);
  const span = domain.to - domain.from;
  const tick = span > 40_000 ? 5000 : span > 16_000 ? 2000 : 1000;
  for (let t = Math.ceil(domain.from / tick) * tick; t <= domain.to; t += tick) {
    parts.push(`<line class="grid" x1="${f1(x(t))}" y1="${lanesTop}" x2="${f1(x(t))}" y2="${ctBottom}"/>`);
    parts.push(`<text x="${f1(x(t))}" y="${ctBottom + 14}" text-anchor="middle" class="sm">${t === 0 ? '0' : `${t > 0 ? '+' : ''}${t / 1000}s`}</text>`);
  }
  // Windows.
  const start = Math.max(0, domain.from);
  const removal = tl.removal;
  const raceEnd = removal ?? tl.end;
  parts.push(`<rect class="window-race" x="${f1(x(start))}" y="${lanesTop}" width="${f1(Math.max(1, x(raceEnd) - x(start)))}" height="${kindsBottom - lanesTop}" fill="${c.race}" fill-opacity="0.35"/>`);
  parts.push(`<text x="${f1(x(start) + 3)}" y="${lanesTop + 10}" class="sm halo" font-weight="bold" style="fill:#8a6d00">race</text>`);
  const ghostEnd = ghostWindowEnd(s);
  if (removal !== undefined && ghostEnd !== undefined) {
    const w = Math.max(1, x(ghostEnd) - x(removal));
    parts.push(`<rect class="window-ghosts" x="${f1(x(removal))}" y="${lanesTop}" width="${f1(w)}" height="${ctBottom - lanesTop}" fill="${c.ghosts}" fill-opacity="0.3"/>`);
    parts.push(`<text x="${f1(Math.min(Math.max(x(removal) + 3, x(start) + 34), LEFT + PLOT_W - 40))}" y="${lanesTop + 10}" class="sm halo" font-weight="bold" style="fill:#5b2c83">ghosts</text>`);
  }
  // Lane labels and separators.
  parts.push(`<text x="${LEFT - 6}" y="${lanesTop + 23}" text-anchor="end" class="lbl">pod</text>`);
  KINDS.forEach((k, i) => {
    const y = kindsTop + i * LANE;
    parts.push(`<line x1="${LEFT}" y1="${y}" x2="${LEFT + PLOT_W}" y2="${y}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${LEFT - 6}" y="${y + 14}" text-anchor="end" class="lbl">${KIND_LABEL[k]}</text>`);
  });
  parts.push(`<line x1="${LEFT}" y1="${kindsBottom}" x2="${LEFT + PLOT_W}" y2="${kindsBottom}" stroke="#bbb"/>`);
  // The pod's lane: the sleep, then SIGTERM → exit.
  const podY = lanesTop + 14;
  if (tl.preStopDone !== undefined) {
    parts.push(`<rect class="prestop" x="${f1(x(0))}" y="${podY}" width="${f1(Math.max(1, x(tl.preStopDone) - x(0)))}" height="10" fill="${c.sleep}" fill-opacity="0.8"><title>preStop ${escapeXml(s.stored.preStop)}</title></rect>`);
    parts.push(`<text x="${f1(x(0) + 4)}" y="${podY + 9}" font-size="9" fill="#fff">preStop ${escapeXml(s.stored.preStop)}</text>`);
  }
  if (tl.sigterm !== undefined) {
    const endAt = tl.exit ?? tl.sigterm;
    parts.push(`<rect x="${f1(x(tl.sigterm))}" y="${podY}" width="${f1(Math.max(2, x(endAt) - x(tl.sigterm)))}" height="10" fill="#777"><title>SIGTERM → exit</title></rect>`);
  }
  // Markers across the panel.
  const marker = (cls: string, at: number | undefined, stroke: string, dash: string, label: string, dy: number): void => {
    if (at === undefined) return;
    parts.push(`<line class="${cls}" x1="${f1(x(at))}" y1="${lanesTop}" x2="${f1(x(at))}" y2="${ctBottom}" stroke="${stroke}" stroke-width="1.6" stroke-dasharray="${dash}"/>`);
    parts.push(`<text x="${f1(x(at) + 3)}" y="${ctBottom - 4 - dy}" class="sm halo" style="fill:${stroke}">${escapeXml(label)}</text>`);
  };
  marker('marker-deletion', 0, '#333', '', 'deleted', 24);
  marker('marker-sigterm', tl.sigterm, c.sigterm, '4 2', 'SIGTERM', 12);
  marker('marker-removal', tl.removal, c.removal, '', 'out of the rules', 0);
  // Requests: the oks first, failures on top.
  const others = [...new Set(s.events.filter((e) => e.o === 'ok' && e.b !== undefined && e.b !== s.pod.name).map((e) => e.b!))].sort();
  const colourOf = (e: ClientEvent): string => {
    if (e.o !== 'ok') return c.failed[e.o];
    if (e.b === s.pod.name) return c.deletedPod;
    return c.otherPods[Math.max(0, others.indexOf(e.b ?? '')) % c.otherPods.length]!;
  };
  const yOf = (e: ClientEvent, i: number): number => kindsTop + KINDS.indexOf(e.k) * LANE + 4 + jitter(i) * (LANE - 8);
  const okDots: string[] = [];
  const failDots: string[] = [];
  s.events.forEach((e, i) => {
    if (e.t < domain.from || e.t > domain.to) return;
    const cx = f1(x(e.t));
    const cy = f1(yOf(e, i));
    if (e.o === 'ok') {
      okDots.push(`<circle cx="${cx}" cy="${cy}" r="${e.b === s.pod.name ? 2.2 : 1.6}" fill="${colourOf(e)}"/>`);
    } else {
      const fill = colourOf(e);
      if (e.d > 50) failDots.push(`<line x1="${cx}" y1="${cy}" x2="${f1(x(e.t + e.d))}" y2="${cy}" stroke="${fill}" stroke-opacity="0.45" stroke-width="1"/>`);
      failDots.push(`<circle class="fail" data-outcome="${e.o}" cx="${cx}" cy="${cy}" r="3.4" fill="${fill}"/>`);
    }
  });
  parts.push(`<g class="requests ok" fill-opacity="0.75">${okDots.join('')}</g>`);
  parts.push(`<g class="requests failed">${failDots.join('')}</g>`);
  // Conntrack entries to the deleted pod.
  const series = s.conntrackSeries.filter((p) => p.t >= domain.from && p.t <= domain.to);
  const max = Math.max(1, ...series.map((p) => Math.max(p.udp, p.tcp)));
  const yCt = (n: number): number => ctBottom - 3 - (n / max) * (CT_H - 8);
  parts.push(`<text x="${LEFT - 6}" y="${ctTop + 16}" text-anchor="end" class="lbl">conntrack</text>`);
  parts.push(`<text x="${LEFT - 6}" y="${ctTop + 29}" text-anchor="end" class="sm">→ deleted pod</text>`);
  parts.push(`<text x="${LEFT + PLOT_W + 4}" y="${f1(yCt(max) + 4)}" class="sm">${max}</text>`);
  parts.push(`<text x="${LEFT + PLOT_W + 4}" y="${f1(yCt(0) + 2)}" class="sm">0</text>`);
  for (const [proto, stroke] of [['udp', c.ctUdp], ['tcp', c.ctTcp]] as const) {
    if (series.length === 0) continue;
    let d = '';
    series.forEach((p, i) => {
      const px = f1(x(p.t));
      const py = f1(yCt(p[proto]));
      d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
    });
    d += `H${f1(x(series[series.length - 1]!.t))}`;
    parts.push(`<path class="ct-${proto}" d="${d}" fill="none" stroke="${stroke}" stroke-width="1.6"/>`);
  }
  return parts.join('\n');
}
