/** What a diagnosis reports: entries by verdict, grouped by Service and protocol. */

export type Verdict = 'live' | 'draining' | 'stale' | 'closed';

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

export interface StaleCount {
  readonly namespace: string;
  readonly service: string;
  readonly protocol: string;
  readonly stale: number;
}
