/**
 * Endpoint churn per Service, counted by the agent from the EndpointSlices it
 * watches (service-endpoints.ts): the signal of the `ServiceEndpointChurn` alert,
 * which needs nothing but the chart's own agent (kube-state-metrics dropped
 * `kube_endpoint_address_available`; kube-proxy's own metrics are rarely scraped).
 *
 * A change is one endpoint address of a Service's EndpointSlice that appears,
 * disappears, or changes its ready/serving/terminating conditions — what makes
 * every kube-proxy rewrite its rules, and what can leave stale conntrack entries.
 * A pod scaled down counts 2 (terminating, then gone); a rolling restart of one
 * pod about 4 (the new pod added, made ready; the old one terminating, gone).
 *
 * Every node's agent sees every slice, so each counts only the endpoints whose
 * `nodeName` is its own node: the Service's churn is the sum over nodes, with no
 * duplicate series (endpoints without a nodeName are not counted by anyone). What
 * the first list shows is the starting state, not a change. Pure: no I/O; the
 * sink is the Prometheus counter.
 */
import type { TrimmedSlice } from './service-endpoints.ts';

export interface EndpointChangeSink {
  /** Add `n` (≥ 0; 0 creates the series) to the Service's count. */
  add(namespace: string, service: string, n: number): void;
  /** The Service has had no endpoint on this node for a while: drop its series. */
  forget(namespace: string, service: string): void;
}

export interface EndpointChangeOptions {
  /** This agent's node: only endpoints with this nodeName are counted. */
  readonly nodeName: string;
  readonly sink: EndpointChangeSink;
  /** Keep a Service's series this long after its last endpoint on this node left (default 15 minutes), so the last changes are scraped. */
  readonly forgetAfterMs?: number;
  readonly now?: () => number;
}

interface SliceState {
  readonly namespace: string;
  readonly service: string;
  /** Address → conditions, of this node's endpoints only. */
  readonly endpoints: ReadonlyMap<string, string>;
}

const sliceKey = (s: TrimmedSlice): string => `${s.metadata.namespace}/${s.metadata.name}`;
const serviceKeyOf = (namespace: string, service: string): string => `${namespace}/${service}`;

function conditionsOf(e: TrimmedSlice['endpoints'][number]): string {
  const c = e.conditions ?? {};
  const v = (b: boolean | undefined): string => (b === undefined ? '-' : b ? '1' : '0');
  return `${v(c.ready)}${v(c.serving)}${v(c.terminating)}`;
}

/** Changes between two states of one slice's endpoints on this node. */
export function countChanges(before: ReadonlyMap<string, string>, after: ReadonlyMap<string, string>): number {
  let n = 0;
  for (const [address, conditions] of after) if (before.get(address) !== conditions) n++;
  for (const address of before.keys()) if (!after.has(address)) n++;
  return n;
}

export class EndpointChangeCounter {
  readonly #o: Required<Omit<EndpointChangeOptions, 'now'>> & { now: () => number };
  readonly #slices = new Map<string, SliceState>();
  /** Slices with endpoints on this node, per Service. */
  readonly #perService = new Map<string, Set<string>>();
  /** Services without endpoints on this node, since when. */
  readonly #idleSince = new Map<string, { namespace: string; service: string; since: number }>();

  constructor(o: EndpointChangeOptions) {
    this.#o = { forgetAfterMs: 15 * 60_000, ...o, now: o.now ?? Date.now };
  }

  /** A slice was added or replaced; `counting` is false while the first list is applied. */
  upsert(slice: TrimmedSlice, counting: boolean): void {
    const key = sliceKey(slice);
    const namespace = slice.metadata.namespace;
    const service = slice.metadata.labels?.['kubernetes.io/service-name'];
    const before = this.#slices.get(key);
    const endpoints = new Map<string, string>();
    if (service !== undefined) {
      for (const e of slice.endpoints) {
        if (e.nodeName !== this.#o.nodeName) continue;
        for (const address of e.addresses) endpoints.set(address, conditionsOf(e));
      }
    }
    if (before !== undefined && (before.service !== service || before.namespace !== namespace)) {
      // Relabelled to another Service (not done by the controller; possible by hand): gone from the old one.
      this.#record(before, new Map(), counting);
      this.#detach(key, before);
    }
    const previous = before !== undefined && before.service === service ? before.endpoints : new Map<string, string>();
    if (service === undefined || (endpoints.size === 0 && previous.size === 0)) {
      if (before !== undefined) this.#detach(key, before);
      this.#slices.delete(key);
      this.#sweep();
      return;
    }
    const state: SliceState = { namespace, service, endpoints };
    this.#record(state, previous, counting);
    if (endpoints.size > 0) {
      this.#slices.set(key, state);
      this.#attach(key, state);
    } else {
      this.#slices.delete(key);
      this.#detach(key, state);
    }
    this.#sweep();
  }

  /** A slice was deleted: its endpoints on this node are gone. */
  remove(slice: TrimmedSlice, counting: boolean): void {
    const key = sliceKey(slice);
    const before = this.#slices.get(key);
    if (before === undefined) return;
    this.#slices.delete(key);
    this.#record({ ...before, endpoints: new Map() }, before.endpoints, counting);
    this.#detach(key, before);
    this.#sweep();
  }

  /** Services counted now (with endpoints on this node, or recently). */
  services(): number {
    return this.#perService.size + this.#idleSince.size;
  }

  #record(after: SliceState, before: ReadonlyMap<string, string>, counting: boolean): void {
    const n = counting ? countChanges(before, after.endpoints) : 0;
    this.#o.sink.add(after.namespace, after.service, n);
  }

  #attach(key: string, s: SliceState): void {
    const sk = serviceKeyOf(s.namespace, s.service);
    let set = this.#perService.get(sk);
    if (set === undefined) this.#perService.set(sk, (set = new Set()));
    set.add(key);
    this.#idleSince.delete(sk);
  }

  #detach(key: string, s: SliceState): void {
    const sk = serviceKeyOf(s.namespace, s.service);
    const set = this.#perService.get(sk);
    set?.delete(key);
    if (set === undefined || set.size === 0) {
      this.#perService.delete(sk);
      if (!this.#idleSince.has(sk)) this.#idleSince.set(sk, { namespace: s.namespace, service: s.service, since: this.#o.now() });
    }
  }

  #sweep(): void {
    const now = this.#o.now();
    for (const [sk, idle] of this.#idleSince) {
      if (now - idle.since < this.#o.forgetAfterMs) continue;
      this.#idleSince.delete(sk);
      this.#o.sink.forget(idle.namespace, idle.service);
    }
  }
}
