/**
 * The conntrack reaper's rule, pure: which conntrack entries may be
 * deleted. Fed the EndpointSlices as the informer sees them and asked entry by
 * entry; no I/O, time passed in.
 *
 * An entry is reapable only when all of these hold:
 * - the EndpointSlices have been listed once (`markSynced`): before that, an
 *   endpoint missing from the cache may just not be listed yet;
 * - it is TCP, UDP or SCTP with ports, and has a DNAT: its reply source
 *   (`ip:port`, the target) differs from its original destination;
 * - the target was an endpoint (address × slice port, same protocol) of some
 *   EndpointSlice, and then left every EndpointSlice — removed, not merely
 *   terminating or not serving: an endpoint still listed under any condition is
 *   never reaped — at least `holdMs` ago.
 * A target never seen in a slice (NodePort hostPorts, CNI port maps, other
 * software's DNAT) is never reaped, and nor is an entry without DNAT (a direct
 * connection to a pod IP). An endpoint that comes back (the same IP reused by a
 * new pod, a slice re-created) stops being gone at once.
 *
 * Memory is bounded: a gone endpoint is remembered for `memoryMs` after its hold
 * ends (default 5 minutes: the first sweep after the hold removes the
 * entries that existed; the window catches entries kube-proxy's lagging rules
 * still create for a while; the conntrack timeouts themselves — up to 5 days for
 * an established TCP flow — are no guide, since a reaped entry does not come
 * back), and at most `maxGone` of them (the oldest forgotten first). The slices'
 * own endpoint keys are what the informer already caches.
 */
import type { TrimmedSlice } from './service-endpoints.ts';
import { SERVICE_NAME_LABEL } from '../diagnose/endpoints.ts';

export const REAP_PROTOCOLS: ReadonlySet<string> = new Set(['tcp', 'udp', 'sctp']);
export const DEFAULT_GONE_MEMORY_MS = 300_000;
export const DEFAULT_MAX_GONE = 100_000;

/** What the rule reads of an entry (a TallyEntry is one). */
export interface ReapCandidate {
  readonly protocol: string;
  readonly original: { readonly dst: string; readonly dport: number | undefined };
  readonly reply: { readonly src: string; readonly sport: number | undefined };
}

export interface GoneEndpoint {
  /** `tcp|10.0.0.5|8080` */
  readonly key: string;
  readonly protocol: string;
  readonly ip: string;
  readonly port: number;
  /** The Service of the last slice that listed it (the metric's labels). */
  readonly namespace: string;
  readonly service: string;
  /** When it left the last slice (ms). */
  readonly goneAt: number;
  /** goneAt + hold: from then on its entries are reaped. */
  readonly dueAt: number;
}

export interface EndpointTrackerOptions {
  readonly holdMs: number;
  readonly memoryMs?: number;
  readonly maxGone?: number;
  /** Called when an endpoint goes (for event-driven sweeps). */
  readonly onGone?: (e: GoneEndpoint) => void;
}

interface Owner {
  count: number;
  namespace: string;
  service: string;
}

export function endpointKey(protocol: string, ip: string, port: number): string {
  return `${protocol.toLowerCase()}|${ip.toLowerCase()}|${port}`;
}

/** The endpoint keys of a slice: every address × every port with a number. */
function sliceEndpoints(slice: TrimmedSlice): string[] {
  const keys = new Set<string>();
  for (const p of slice.ports) {
    if (p.port === undefined) continue;
    const protocol = (p.protocol ?? 'TCP').toLowerCase();
    for (const e of slice.endpoints) for (const ip of e.addresses) keys.add(endpointKey(protocol, ip, p.port));
  }
  return [...keys];
}

const sliceId = (s: TrimmedSlice): string => `${s.metadata.namespace}/${s.metadata.name}`;

export class EndpointTracker {
  readonly #o: Required<Omit<EndpointTrackerOptions, 'onGone'>> & Pick<EndpointTrackerOptions, 'onGone'>;
  /** Endpoint keys per slice, as last seen. */
  readonly #slices = new Map<string, { keys: string[]; namespace: string; service: string }>();
  /** How many slices list each endpoint. */
  readonly #owners = new Map<string, Owner>();
  /** Endpoints that left every slice after the sync, oldest first. */
  readonly #gone = new Map<string, GoneEndpoint>();
  #synced = false;

  constructor(o: EndpointTrackerOptions) {
    this.#o = { memoryMs: o.holdMs + (o.memoryMs ?? DEFAULT_GONE_MEMORY_MS), maxGone: o.maxGone ?? DEFAULT_MAX_GONE, holdMs: o.holdMs, onGone: o.onGone };
  }

  get synced(): boolean {
    return this.#synced;
  }

  /** The informers have listed once: from now on, leaving means gone. */
  markSynced(): void {
    this.#synced = true;
  }

  upsert(slice: TrimmedSlice, now: number): void {
    const id = sliceId(slice);
    const keys = sliceEndpoints(slice);
    const namespace = slice.metadata.namespace;
    const service = slice.metadata.labels?.[SERVICE_NAME_LABEL] ?? '';
    const before = this.#slices.get(id);
    // Add first, so that an endpoint moving within the slice is never counted gone.
    for (const k of keys) {
      const o = this.#owners.get(k);
      if (o === undefined) this.#owners.set(k, { count: 1, namespace, service });
      else {
        o.count++;
        o.namespace = namespace;
        o.service = service;
      }
      this.#gone.delete(k);
    }
    if (keys.length > 0) this.#slices.set(id, { keys, namespace, service });
    else this.#slices.delete(id);
    if (before !== undefined) this.#release(before.keys, now);
  }

  remove(slice: TrimmedSlice, now: number): void {
    const id = sliceId(slice);
    const before = this.#slices.get(id);
    if (before === undefined) return;
    this.#slices.delete(id);
    this.#release(before.keys, now);
  }

  #release(keys: readonly string[], now: number): void {
    for (const k of keys) {
      const o = this.#owners.get(k);
      if (o === undefined) continue;
      if (--o.count > 0) continue;
      this.#owners.delete(k);
      if (!this.#synced) continue;
      const [protocol = '', ip = '', port = '0'] = k.split('|');
      const gone: GoneEndpoint = { key: k, protocol, ip, port: Number(port), namespace: o.namespace, service: o.service, goneAt: now, dueAt: now + this.#o.holdMs };
      this.#gone.delete(k);
      this.#gone.set(k, gone);
      while (this.#gone.size > this.#o.maxGone) {
        const oldest = this.#gone.keys().next().value;
        if (oldest === undefined) break;
        this.#gone.delete(oldest);
      }
      this.#o.onGone?.(gone);
    }
  }

  /** Forget gone endpoints whose memory window (hold + memoryMs) has passed. */
  expire(now: number): void {
    for (const [k, g] of this.#gone) {
      if (now - g.goneAt < this.#o.memoryMs) break;
      this.#gone.delete(k);
    }
  }

  /** The gone endpoint an entry's DNAT still targets, if the entry is to be reaped now; else undefined. */
  reapable(e: ReapCandidate, now: number): GoneEndpoint | undefined {
    if (!this.#synced || this.#gone.size === 0) return undefined;
    if (!REAP_PROTOCOLS.has(e.protocol)) return undefined;
    const port = e.reply.sport;
    if (port === undefined || e.original.dport === undefined) return undefined;
    if (e.reply.src === e.original.dst && port === e.original.dport) return undefined; // no DNAT
    const g = this.#gone.get(endpointKey(e.protocol, e.reply.src, port));
    if (g === undefined || now < g.dueAt || now - g.goneAt >= this.#o.memoryMs) return undefined;
    return g;
  }

  /** Is this endpoint listed in a slice now (any condition)? */
  listed(protocol: string, ip: string, port: number): boolean {
    return this.#owners.has(endpointKey(protocol, ip, port));
  }

  /** Gone endpoints in memory, oldest first. */
  gone(): GoneEndpoint[] {
    return [...this.#gone.values()];
  }

  get goneCount(): number {
    return this.#gone.size;
  }

  get endpointCount(): number {
    return this.#owners.size;
  }
}
