/**
 * The diagnosis (the rules and the report are described in classify.ts), one entry
 * at a time: `add()` each conntrack entry as it is read, `report()` at the end. This
 * is the only implementation of the classification: `diagnose(entries, index)` is
 * this tally over a list. No entry is kept: entries attributed to a Service by their
 * destination are counted at once; the others (a destination that is no known
 * Service, whose Service may be inferred from its endpoints) are kept as counts per
 * distinct flow shape (destination, target, state), which are few. This is what
 * lets the agent read a node's table of 100k+ entries in bounded memory.
 *
 * Pure: no I/O. test/diagnose/tally.test.ts checks that reports mid-way and at the
 * end equal `diagnose` of the entries so far, on real captures and random tables.
 */
import type { DiagnoseReport, ServiceGroup, UnattributedGroup, Verdict } from './report.ts';
import { formatAddress } from './conntrack.ts';
import { frontendKey, nodePortKey, serviceKey } from './endpoints.ts';
import type { EndpointState, ServiceIndex, ServicePortRef } from './endpoints.ts';

/** Connection states whose entry a new connection replaces (nf_conntrack_proto_tcp.c: a SYN in TIME_WAIT/CLOSE reopens). */
export const CLOSED_STATES: ReadonlySet<string> = new Set(['TIME_WAIT', 'CLOSE', 'CLOSED']);

/**
 * What the tally reads of a conntrack entry. A ConntrackEntry is one; the agent's
 * table reader makes these directly (parseFlow in host/conntrack-table.ts) to spare
 * the garbage of full entries on 100k-entry tables.
 */
export interface TallyEntry {
  readonly protocol: string;
  readonly state: string | undefined;
  readonly flags: readonly string[];
  readonly original: { readonly dst: string; readonly dport: number | undefined };
  readonly reply: { readonly src: string; readonly sport: number | undefined };
}

interface Group {
  readonly namespace: string;
  readonly service: string;
  readonly protocol: string;
  live: number;
  draining: number;
  stale: number;
  closed: number;
  readonly staleByState: Record<string, number>;
  readonly staleTargets: Map<string, { entries: number; why: 'gone' | 'not-serving' }>;
  readonly attribution: 'service' | 'inferred';
}

/** What classification needs of an entry whose destination is no known Service. */
interface Pending {
  readonly protocol: string;
  readonly dst: string;
  readonly dport: number | undefined;
  readonly targetIp: string;
  readonly targetPort: number | undefined;
  /** The state shown for stale entries (`ESTABLISHED`, …; UDP `UNREPLIED`/`REPLIED`). */
  readonly state: string;
  readonly closed: boolean;
  count: number;
}

export class DiagnoseTally {
  readonly #index: ServiceIndex;
  #entries = 0;
  #dnat = 0;
  readonly #groups = new Map<string, Group>();
  readonly #pending = new Map<string, Pending>();

  constructor(index: ServiceIndex) {
    this.#index = index;
  }

  /** Entries added so far. */
  get entries(): number {
    return this.#entries;
  }

  add(entry: TallyEntry): void {
    this.#entries++;
    const o = entry.original;
    const r = entry.reply;
    // dnatTarget() of conntrack.ts: the reply source differs from the original destination.
    if (r.src === o.dst && r.sport === o.dport) return;
    const target = { ip: r.src, port: r.sport };
    this.#dnat++;
    const state = entry.state ?? (entry.flags.includes('UNREPLIED') ? 'UNREPLIED' : 'REPLIED');
    const closed = entry.state !== undefined && CLOSED_STATES.has(entry.state);
    const port =
      this.#index.frontends.get(frontendKey(entry.protocol, o.dst, o.dport)) ?? this.#index.nodePorts.get(nodePortKey(entry.protocol, o.dport));
    if (port !== undefined) {
      countInto(this.#groups, this.#index, port, entry.protocol, target.ip, target.port, state, closed, 'service', 1);
      return;
    }
    const key = `${entry.protocol}\u0000${o.dst}\u0000${o.dport ?? ''}\u0000${target.ip}\u0000${target.port ?? ''}\u0000${state}\u0000${closed ? 1 : 0}`;
    const p = this.#pending.get(key);
    if (p !== undefined) p.count++;
    else {
      this.#pending.set(key, { protocol: entry.protocol, dst: o.dst, dport: o.dport, targetIp: target.ip, targetPort: target.port, state, closed, count: 1 });
    }
  }

  /** The diagnosis of everything added so far (the tally can go on afterwards). */
  report(): DiagnoseReport {
    const groups = new Map<string, Group>();
    for (const [k, g] of this.#groups) groups.set(k, cloneGroup(g));
    const pending = [...this.#pending.values()];
    // Infer the Service of a destination from entries of it that reach a known endpoint
    // (exactly one Service port must match); a known Service IP on a port it does not
    // serve is not inferred onto another Service.
    const inferred = new Map<string, ServicePortRef | null>();
    for (const p of pending) {
      const refs = this.#index.targets.get(frontendKey(p.protocol, p.targetIp, p.targetPort));
      if (refs === undefined) continue;
      const dest = frontendKey(p.protocol, p.dst, p.dport);
      for (const ref of refs) {
        const seen = inferred.get(dest);
        if (seen === undefined) inferred.set(dest, ref);
        else if (seen !== null && !sameRef(seen, ref)) inferred.set(dest, null);
      }
    }
    const frontendIps = new Set([...this.#index.frontends.keys()].map((key) => key.split('|')[1]));
    const unattributed = new Map<string, UnattributedGroup>();
    for (const p of pending) {
      const port = inferred.get(frontendKey(p.protocol, p.dst, p.dport));
      if (port == null || frontendIps.has(p.dst)) {
        const destination = formatAddress(p.dst, p.dport);
        const key = `${p.protocol}|${destination}`;
        unattributed.set(key, { destination, protocol: p.protocol, entries: (unattributed.get(key)?.entries ?? 0) + p.count });
      } else {
        countInto(groups, this.#index, port, p.protocol, p.targetIp, p.targetPort, p.state, p.closed, 'inferred', p.count);
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
      staleByState: { ...g.staleByState },
      staleTargets: [...g.staleTargets.entries()]
        .map(([target, t]) => ({ target, entries: t.entries, why: t.why }))
        .sort((a, b) => b.entries - a.entries || a.target.localeCompare(b.target)),
      attribution: g.attribution,
    }));
    out.sort((a, b) => b.stale - a.stale || `${a.namespace}/${a.service}/${a.protocol}`.localeCompare(`${b.namespace}/${b.service}/${b.protocol}`));
    const sum = (v: Verdict): number => out.reduce((n, g) => n + g[v], 0);
    return {
      entries: this.#entries,
      dnat: this.#dnat,
      live: sum('live'),
      draining: sum('draining'),
      stale: sum('stale'),
      closed: sum('closed'),
      groups: out,
      unattributed: [...unattributed.values()].sort((a, b) => b.entries - a.entries),
    };
  }
}

function countInto(
  groups: Map<string, Group>,
  index: ServiceIndex,
  port: ServicePortRef,
  protocol: string,
  targetIp: string,
  targetPort: number | undefined,
  state: string,
  closed: boolean,
  attribution: 'service' | 'inferred',
  n: number,
): void {
  const key = `${serviceKey(port.service)}|${protocol}`;
  let g = groups.get(key);
  if (g === undefined) {
    g = {
      namespace: port.service.namespace,
      service: port.service.name,
      protocol,
      live: 0,
      draining: 0,
      stale: 0,
      closed: 0,
      staleByState: {},
      staleTargets: new Map(),
      attribution,
    };
    groups.set(key, g);
  }
  const endpoint: EndpointState | undefined = index.endpoints.get(serviceKey(port.service))?.get(targetIp);
  const verdict: Verdict = closed ? 'closed' : endpoint === undefined || !endpoint.serving ? 'stale' : endpoint.terminating ? 'draining' : 'live';
  g[verdict] += n;
  if (verdict !== 'stale') return;
  g.staleByState[state] = (g.staleByState[state] ?? 0) + n;
  const target = formatAddress(targetIp, targetPort);
  const t = g.staleTargets.get(target);
  if (t !== undefined) t.entries += n;
  else g.staleTargets.set(target, { entries: n, why: endpoint === undefined ? 'gone' : 'not-serving' });
}

function cloneGroup(g: Group): Group {
  return {
    ...g,
    staleByState: { ...g.staleByState },
    staleTargets: new Map([...g.staleTargets].map(([k, v]) => [k, { ...v }])),
  };
}

function sameRef(a: ServicePortRef, b: ServicePortRef): boolean {
  return serviceKey(a.service) === serviceKey(b.service) && a.portName === b.portName && a.protocol === b.protocol;
}
