/** Text rendering of a diagnosis (pure). */
import type { DiagnoseReport, ServiceGroup } from './report.ts';
import type { TimeoutAdvice } from '../core/tuning.ts';

export interface FormatOptions {
  /** Also list Services without stale entries. */
  readonly all: boolean;
  /** Where the endpoints came from, for the header. */
  readonly endpointsFrom: string;
  readonly serviceCount: number;
  readonly sliceCount: number;
}

export function formatReport(r: DiagnoseReport, o: FormatOptions): string {
  const lines: string[] = [];
  lines.push(
    `conntrack: ${r.entries} entries, ${r.dnat} DNATed; for Services: ${r.stale} stale, ${r.draining} draining, ${r.live} live, ${r.closed} closed`,
  );
  lines.push(`endpoints: ${o.serviceCount} Services, ${o.sliceCount} EndpointSlices (${o.endpointsFrom})`);
  const groups = o.all ? r.groups : r.groups.filter((g) => g.stale > 0);
  lines.push('');
  if (groups.length === 0) {
    lines.push(r.groups.length === 0 ? 'No conntrack entry was translated for a known Service.' : 'No stale entries: every Service flow goes to a serving endpoint.');
  } else {
    const header = ['SERVICE', 'PROTO', 'STALE', 'DRAINING', 'LIVE', 'CLOSED', 'STALE BY STATE', 'STALE TARGETS'];
    const rows = groups.map((g) => [
      `${g.namespace}/${g.service}${g.attribution === 'inferred' ? '*' : ''}`,
      g.protocol,
      String(g.stale),
      String(g.draining),
      String(g.live),
      String(g.closed),
      byState(g),
      targets(g),
    ]);
    lines.push(...table(header, rows, [false, false, true, true, true, true, false, false]));
    if (groups.some((g) => g.attribution === 'inferred')) {
      lines.push('', '* Service inferred from its endpoints (no Service object in the input).');
    }
  }
  if (r.stale > 0) {
    lines.push(
      '',
      'Stale: the flow was translated to an endpoint that is gone or no longer serving; its',
      'packets still go there until the entry expires. UDP entries stay while the client keeps',
      'sending. Remedy: a preStop sleep (safe-termination) or deleting them: conntrack -D -p udp',
      '--orig-dst <service IP> --reply-src <old pod IP>. Closed (TCP TIME_WAIT/CLOSE) entries are',
      'harmless: a new connection on the same ports replaces them.',
    );
  }
  if (r.unattributed.length > 0) {
    const n = r.unattributed.reduce((s, u) => s + u.entries, 0);
    const top = r.unattributed
      .slice(0, 3)
      .map((u) => `${u.destination}/${u.protocol} ×${u.entries}`)
      .join(', ');
    lines.push(
      '',
      `${n} DNATed entries go to destinations that match no Service in the input (${top}${r.unattributed.length > 3 ? ', …' : ''}):`,
      'other DNAT rules (hostPort, NodePort to a node IP, Docker), or Services missing from the input;',
      "include Services in the dump: kubectl get services,endpointslices -A -o yaml.",
    );
  }
  return lines.join('\n') + '\n';
}

function byState(g: ServiceGroup): string {
  const entries = Object.entries(g.staleByState).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? '-' : entries.map(([s, n]) => `${s} ${n}`).join(', ');
}

function targets(g: ServiceGroup): string {
  if (g.staleTargets.length === 0) return '-';
  const shown = g.staleTargets.slice(0, 3).map((t) => `${t.target} (${t.why}) ×${t.entries}`);
  return shown.join(', ') + (g.staleTargets.length > 3 ? `, +${g.staleTargets.length - 3} more` : '');
}

/** Left/right aligned columns separated by two spaces. */
export function table(header: readonly string[], rows: readonly (readonly string[])[], right: readonly boolean[]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: readonly string[]) =>
    cells
      .map((c, i) => (right[i] ? c.padStart(widths[i] ?? 0) : i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [fmt(header), ...rows.map(fmt)];
}

/**
 * The node's conntrack timeouts next to the write-up's values and the sleep each
 * costs (core/tuning.ts): advice, printed after the report.
 */
export function formatTimeouts(advice: readonly TimeoutAdvice[], o: { readonly from: string; readonly propagationDelaySeconds: number; readonly maxSleepSeconds: number }): string {
  if (advice.every((a) => a.current === undefined)) {
    return `\nConntrack timeouts: none readable in ${o.from} (conntrack not loaded, or another directory: --conntrack-proc-dir).\n`;
  }
  const secs = (n: number | undefined): string => (n === undefined ? '-' : `${n}s`);
  const rows = advice.map((a) => {
    const sleep =
      a.sizes === undefined
        ? 'no sleep'
        : `${a.sizes}: ${a.sleepNow === undefined ? '?' : `${a.sleepNow}s`}${a.sleepRecommended === undefined ? '' : ` → ${a.sleepRecommended}s`}`;
    const saved = a.caution ?? (a.recommended === undefined ? '-' : a.savedSeconds > 0 ? `${a.savedSeconds}s per termination` : 'nothing');
    return [a.key, a.current === undefined ? '?' : `${a.current}s`, secs(a.recommended), sleep, saved];
  });
  return [
    '',
    `Conntrack timeouts on this node (${o.from}), the write-up's values, and the sleep each sizes`,
    `(propagation-delay ${o.propagationDelaySeconds}s, max-sleep ${o.maxSleepSeconds}s; advice only, nothing is changed):`,
    ...table(['TIMEOUT', 'NODE', 'WRITE-UP', 'SLEEP IT SIZES (NOW → WRITE-UP)', 'SAVED'], rows, [false, true, true, false, false]),
    "Set them with kube-proxy's conntrack.* fields (written when it starts) or sysctl -w net.netfilter.nf_conntrack_*",
    '(README: "Tuning conntrack timeouts"); the agent publishes the new values and new pods get the shorter sleep.',
    '',
  ].join('\n');
}
