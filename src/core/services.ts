/**
 * The Services that select a pod: container ports are optional in
 * Kubernetes, so every Service in the pod's namespace whose selector matches the
 * pod's labels adds the protocols of its ports. Pure: the webhook fills the index
 * from a Service informer (src/cluster/service-informer.ts), the CLI from the
 * Services in its manifests and `--services FILE`.
 *
 * What counts:
 * - a Service with a non-empty selector. Without one (an empty `selector: {}` is
 *   the same: the API server stores it as none) the Service has no endpoints
 *   chosen by labels: its EndpointSlices are written by hand or by another
 *   controller, and nothing ties them to this pod;
 * - not a headless Service (`clusterIP: None`): kube-proxy writes no DNAT rules for
 *   it, clients reach the pod's own IP after a DNS lookup, so no conntrack entry
 *   carries a translation that could outlive the endpoint (the DNS record's removal
 *   is covered by propagation-delay, which every pod gets);
 * - not an ExternalName Service (a DNS CNAME, no proxying, no selector in effect).
 */
import { PROTOCOLS } from './annotations.ts';
import type { Protocol } from './annotations.ts';

/** A Service that counts, reduced to what matching reads. */
export interface ServiceFact {
  readonly namespace: string;
  readonly name: string;
  /** Equality-based and non-empty. */
  readonly selector: Readonly<Record<string, string>>;
  /** Sorted, without duplicates; a port without `protocol` is TCP. */
  readonly protocols: readonly Protocol[];
}

/** A Service that selects the pod and the protocols its ports add: what the decision core receives. */
export interface SelectingService {
  /** "namespace/name" */
  readonly service: string;
  readonly protocols: readonly Protocol[];
}

/** Why a Service does not count. */
export type ServiceExclusion = 'no-selector' | 'headless' | 'external-name';

export type ServiceReading =
  | { readonly kind: 'counts'; readonly fact: ServiceFact }
  | { readonly kind: 'excluded'; readonly namespace: string; readonly name: string; readonly why: ServiceExclusion };

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

const ORDER: readonly Protocol[] = ['sctp', 'tcp', 'udp'];

export function protocolOf(text: string | undefined): Protocol {
  const p = (text ?? 'TCP').toLowerCase();
  return (PROTOCOLS as readonly string[]).includes(p) ? (p as Protocol) : 'tcp';
}

/**
 * A Service object (from the API or a manifest) → what matching needs, or why it
 * does not count; undefined when it has no name. `namespace` stands in for a
 * missing `metadata.namespace` (a manifest's objects without one share it).
 */
export function readService(raw: unknown, namespace = ''): ServiceReading | undefined {
  const meta = obj(obj(raw)?.['metadata']);
  const name = str(meta?.['name']);
  if (name === undefined || name === '') return undefined;
  const ns = str(meta?.['namespace']) || namespace;
  const spec = obj(obj(raw)?.['spec']) ?? {};
  const excluded = (why: ServiceExclusion): ServiceReading => ({ kind: 'excluded', namespace: ns, name, why });
  if (str(spec['type']) === 'ExternalName') return excluded('external-name');
  if (str(spec['clusterIP']) === 'None') return excluded('headless');
  const selector: Record<string, string> = {};
  for (const [k, v] of Object.entries(obj(spec['selector']) ?? {})) if (typeof v === 'string') selector[k] = v;
  if (Object.keys(selector).length === 0) return excluded('no-selector');
  const found = new Set<Protocol>();
  const ports = Array.isArray(spec['ports']) ? (spec['ports'] as unknown[]) : [];
  for (const p of ports) found.add(protocolOf(str(obj(p)?.['protocol'])));
  return { kind: 'counts', fact: { namespace: ns, name, selector: Object.freeze(selector), protocols: ORDER.filter((p) => found.has(p)) } };
}

interface Entry {
  readonly fact: ServiceFact;
  /** The selector's keys and values, flat and sorted by key (the first pair files the entry). */
  readonly keys: readonly string[];
  readonly values: readonly string[];
  readonly selecting: SelectingService;
}

/** label key → label value → the Services filed under that pair, by name. */
type Buckets = Map<string, Map<string, Map<string, Entry>>>;

/**
 * Services by namespace, each filed under one pair of its selector: a pod can only
 * be selected by a Service whose every pair is among the pod's labels, so looking
 * up the pod's own label pairs finds every candidate. An admission costs one map
 * lookup per pod label plus a full check of the few candidates, however many
 * Services the namespace holds.
 */
export class ServiceIndex {
  readonly #namespaces = new Map<string, Buckets>();
  readonly #entries = new Map<string, Entry>();

  get size(): number {
    return this.#entries.size;
  }

  upsert(fact: ServiceFact): void {
    this.remove(fact.namespace, fact.name);
    const pairs = Object.entries(fact.selector).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (pairs.length === 0) return;
    const entry: Entry = {
      fact,
      keys: pairs.map(([k]) => k),
      values: pairs.map(([, v]) => v),
      selecting: Object.freeze({ service: `${fact.namespace}/${fact.name}`, protocols: fact.protocols }),
    };
    const key = entry.keys[0] as string;
    const value = entry.values[0] as string;
    let buckets = this.#namespaces.get(fact.namespace);
    if (buckets === undefined) {
      buckets = new Map();
      this.#namespaces.set(fact.namespace, buckets);
    }
    let byValue = buckets.get(key);
    if (byValue === undefined) {
      byValue = new Map();
      buckets.set(key, byValue);
    }
    let bucket = byValue.get(value);
    if (bucket === undefined) {
      bucket = new Map();
      byValue.set(value, bucket);
    }
    bucket.set(fact.name, entry);
    this.#entries.set(entry.selecting.service, entry);
  }

  /** A Service read from the API or a manifest: filed if it counts, dropped otherwise (it may have counted before). */
  apply(reading: ServiceReading): void {
    if (reading.kind === 'counts') this.upsert(reading.fact);
    else this.remove(reading.namespace, reading.name);
  }

  remove(namespace: string, name: string): void {
    const id = `${namespace}/${name}`;
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    this.#entries.delete(id);
    const key = entry.keys[0] as string;
    const value = entry.values[0] as string;
    const buckets = this.#namespaces.get(namespace);
    const byValue = buckets?.get(key);
    const bucket = byValue?.get(value);
    bucket?.delete(name);
    if (bucket?.size === 0) byValue?.delete(value);
    if (byValue?.size === 0) buckets?.delete(key);
    if (buckets?.size === 0) this.#namespaces.delete(namespace);
  }

  clear(): void {
    this.#namespaces.clear();
    this.#entries.clear();
  }

  /** The Services of `namespace` whose selector matches `labels`, by name. */
  match(namespace: string, labels: Readonly<Record<string, string>> | null | undefined): readonly SelectingService[] {
    if (labels == null) return NONE;
    const buckets = this.#namespaces.get(namespace);
    if (buckets === undefined) return NONE;
    let out: Entry[] | undefined;
    for (const key in labels) {
      const byValue = buckets.get(key);
      if (byValue === undefined || !Object.hasOwn(labels, key)) continue;
      const value = labels[key];
      const bucket = typeof value === 'string' ? byValue.get(value) : undefined;
      if (bucket === undefined) continue;
      for (const entry of bucket.values()) if (selects(entry, labels)) (out ??= []).push(entry);
    }
    if (out === undefined) return NONE;
    if (out.length > 1) out.sort((a, b) => (a.fact.name < b.fact.name ? -1 : a.fact.name > b.fact.name ? 1 : 0));
    return out.map((e) => e.selecting);
  }
}

const NONE: readonly SelectingService[] = Object.freeze([]);

/** Every pair of the entry's selector is among the labels (the first one is, by how it was found). */
function selects(entry: Entry, labels: Readonly<Record<string, string>>): boolean {
  const { keys, values } = entry;
  for (let i = 1; i < keys.length; i++) {
    const k = keys[i] as string;
    if (labels[k] !== values[i] || !Object.hasOwn(labels, k)) return false;
  }
  return true;
}
