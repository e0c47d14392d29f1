/**
 * Classify DNATed conntrack entries against the current endpoints of the
 * Services they were translated for, and group them by Service and protocol.
 * Pure: entries and an index in, a report out.
 *
 * An entry is attributed to a Service port by its original destination (cluster,
 * external or load-balancer IP and port, or a node port). Its DNAT target (the
 * reply source) is then:
 *   live      a serving endpoint of that Service, not terminating;
 *   draining  a terminating endpoint that still serves (a preStop hook holds it up);
 *   stale     anything else: the endpoint is gone or no longer serves. Packets of
 *             this flow still go there — the ghost connection.
 *   closed    a TCP entry in TIME_WAIT or CLOSE (SCTP: CLOSED), wherever it points:
 *             a new SYN on the same tuple replaces it and is translated afresh,
 *             so it cannot misroute traffic (spec §4).
 * This is kube-proxy's own rule for its UDP cleanup (orig-dst is a Service IP and
 * reply-src is not one of its serving endpoints), applied to every protocol.
 */
import { dnatTarget, formatAddress } from './conntrack.ts';
import type { ConntrackEntry } from './conntrack.ts';
import { frontendKey, nodePortKey, serviceKey } from './endpoints.ts';
import type { EndpointState, ServiceIndex, ServicePortRef } from './endpoints.ts';

export type Verdict = 'live' | 'draining' | 'stale' | 'closed';

/** Connection states whose entry a new connection replaces (nf_conntrack_proto_tcp.c: a SYN in TIME_WAIT/CLOSE reopens). */
export const CLOSED_STATES: ReadonlySet<string> = new Set(['TIME_WAIT', 'CLOSE', 'CLOSED']);

export interface StaleTarget {
  /** `ip:port` the stale entries still point at. */
  readonly target: string;
  readonly entries: number;
  /** `gone`: not an endpoint of the Service any more; `not-serving`: listed but not serving. */
  readonly why: 'gone' | 'not-serving';
}

export interface ServiceGroup {
  readonly namespace: string;
  readonly service: string;
  /** Lower case, as conntrack prints it: `udp`, `tcp`, `sctp`. */
  readonly protocol: string;
  readonly live: number;
  readonly draining: number;
  readonly stale: number;
  readonly closed: number;
  /** Stale entries by conntrack state (`ESTABLISHED`, `TIME_WAIT`, …); UDP: `UNREPLIED`/`REPLIED`. */
  readonly staleByState: Readonly<Record<string, number>>;
  readonly staleTargets: readonly StaleTarget[];
  /** How the Service was found: from its Service object, or inferred from its endpoints. */
  readonly attribution: 'service' | 'inferred';
}

export interface UnattributedGroup {
  /** `ip:port` of the original destination. */
  readonly destination: string;
  readonly protocol: string;
  readonly entries: number;
}

export interface DiagnoseReport {
  /** Every entry read. */
  readonly entries: number;
  /** Entries with a DNAT (reply source ≠ original destination). */
  readonly dnat: number;
  readonly live: number;
  readonly draining: number;
  readonly stale: number;
  readonly closed: number;
  /** Grouped by Service and protocol; groups with stale entries first. */
  readonly groups: readonly ServiceGroup[];
  /** DNATed entries whose destination is no known Service (another DNAT, or a Service missing from the input). */
  readonly unattributed: readonly UnattributedGroup[];
}

export interface ClassifiedEntry {
  readonly entry: ConntrackEntry;
  readonly port: ServicePortRef;
  readonly verdict: Verdict;
  readonly attribution: 'service' | 'inferred';
}

/** Attribute DNATed entries to Service ports and judge their targets; entries without DNAT are left out. */
export function classifyEntries(entries: readonly ConntrackEntry[], index: ServiceIndex): { classified: ClassifiedEntry[]; unattributed: ConntrackEntry[]; dnat: number } {
  const classified: ClassifiedEntry[] = [];
  const unattributed: ConntrackEntry[] = [];
  const pending: ConntrackEntry[] = [];
  let dnat = 0;
  for (const entry of entries) {
    const target = dnatTarget(entry);
    if (target === undefined) continue;
    dnat++;
    const o = entry.original;
    const port = index.frontends.get(frontendKey(entry.protocol, o.dst, o.dport)) ?? index.nodePorts.get(nodePortKey(entry.protocol, o.dport));
    if (port === undefined) pending.push(entry);
    else classified.push({ entry, port, verdict: verdictOf(entry, port, index), attribution: 'service' });
  }
  // No Service object for these destinations: infer the Service of a destination from
  // entries of it that reach a known endpoint (exactly one Service port must match).
  const inferred = new Map<string, ServicePortRef | null>();
  for (const entry of pending) {
    const target = dnatTarget(entry)!;
    const refs = index.targets.get(frontendKey(entry.protocol, target.ip, target.port));
    if (refs === undefined) continue;
    const dest = destinationKey(entry);
    for (const ref of refs) {
      const seen = inferred.get(dest);
      if (seen === undefined) inferred.set(dest, ref);
      else if (seen !== null && !sameRef(seen, ref)) inferred.set(dest, null);
    }
  }
  // A known Service IP on a port it does not serve is not inferred onto another Service.
  const frontendIps = new Set([...index.frontends.keys()].map((key) => key.split('|')[1]));
  for (const entry of pending) {
    const port = inferred.get(destinationKey(entry));
    if (port == null || frontendIps.has(entry.original.dst)) unattributed.push(entry);
    else classified.push({ entry, port, verdict: verdictOf(entry, port, index), attribution: 'inferred' });
  }
  return { classified, unattributed, dnat };
}

function destinationKey(entry: ConntrackEntry): string {
  return frontendKey(entry.protocol, entry.original.dst, entry.original.dport);
}

function sameRef(a: ServicePortRef, b: ServicePortRef): boolean {
  return serviceKey(a.service) === serviceKey(b.service) && a.portName === b.portName && a.protocol === b.protocol;
}

function endpointState(entry: ConntrackEntry, port: ServicePortRef, index: ServiceIndex): EndpointState | undefined {
  return index.endpoints.get(serviceKey(port.service))?.get(entry.reply.src);
}

function verdictOf(entry: ConntrackEntry, port: ServicePortRef, index: ServiceIndex): Verdict {
  if (entry.state !== undefined && CLOSED_STATES.has(entry.state)) return 'closed';
  const state = endpointState(entry, port, index);
  if (state === undefined || !state.serving) return 'stale';
  return state.terminating ? 'draining' : 'live';
}

function stateOf(entry: ConntrackEntry): string {
  if (entry.state !== undefined) return entry.state;
  return entry.flags.includes('UNREPLIED') ? 'UNREPLIED' : 'REPLIED';
}

/** The whole diagnosis: classify and group by Service and protocol. */
export function diagnose(entries: readonly ConntrackEntry[], index: ServiceIndex): DiagnoseReport {
  const { classified, unattributed, dnat } = classifyEntries(entries, index);
  interface Acc {
    namespace: string;
    service: string;
    protocol: string;
    live: number;
    draining: number;
    stale: number;
    closed: number;
    staleByState: Record<string, number>;
    staleTargets: Map<string, { entries: number; why: 'gone' | 'not-serving' }>;
    attribution: 'service' | 'inferred';
  }
  const groups = new Map<string, Acc>();
  for (const c of classified) {
    const key = `${serviceKey(c.port.service)}|${c.entry.protocol}`;
    let g = groups.get(key);
    if (g === undefined) {
      g = {
        namespace: c.port.service.namespace,
        service: c.port.service.name,
        protocol: c.entry.protocol,
        live: 0,
        draining: 0,
        stale: 0,
        closed: 0,
        staleByState: {},
        staleTargets: new Map(),
        attribution: c.attribution,
      };
      groups.set(key, g);
    }
    g[c.verdict]++;
    if (c.verdict === 'stale') {
      const state = stateOf(c.entry);
      g.staleByState[state] = (g.staleByState[state] ?? 0) + 1;
      const target = formatAddress(c.entry.reply.src, c.entry.reply.sport);
      const why = endpointState(c.entry, c.port, index) === undefined ? 'gone' : 'not-serving';
      const t = g.staleTargets.get(target) ?? { entries: 0, why };
      t.entries++;
      g.staleTargets.set(target, t);
    }
  }
  const out: ServiceGroup[] = [...groups.values()].map((g) => ({
    namespace: g.namespace,
    service: g.service,
    protocol: g.protocol,
    live: g.live,
    draining: g.draining,
    stale: g.stale,
    closed: g.closed,
    staleByState: g.staleByState,
    staleTargets: [...g.staleTargets.entries()]
      .map(([target, t]) => ({ target, entries: t.entries, why: t.why }))
      .sort((a, b) => b.entries - a.entries || a.target.localeCompare(b.target)),
    attribution: g.attribution,
  }));
  out.sort((a, b) => b.stale - a.stale || `${a.namespace}/${a.service}/${a.protocol}`.localeCompare(`${b.namespace}/${b.service}/${b.protocol}`));
  const unat = new Map<string, UnattributedGroup>();
  for (const e of unattributed) {
    const destination = formatAddress(e.original.dst, e.original.dport);
    const key = `${e.protocol}|${destination}`;
    const g = unat.get(key);
    unat.set(key, { destination, protocol: e.protocol, entries: (g?.entries ?? 0) + 1 });
  }
  const sum = (v: Verdict) => out.reduce((n, g) => n + g[v], 0);
  return {
    entries: entries.length,
    dnat,
    live: sum('live'),
    draining: sum('draining'),
    stale: sum('stale'),
    closed: sum('closed'),
    groups: out,
    unattributed: [...unat.values()].sort((a, b) => b.entries - a.entries),
  };
}

export interface StaleCount {
  readonly namespace: string;
  readonly service: string;
  readonly protocol: string;
  readonly stale: number;
}

/** The agent metric's samples: stale entries per Service and protocol (groups without any are left out). */
export function staleCounts(report: DiagnoseReport): StaleCount[] {
  return report.groups.filter((g) => g.stale > 0).map((g) => ({ namespace: g.namespace, service: g.service, protocol: g.protocol, stale: g.stale }));
}
