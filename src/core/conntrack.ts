/** Conntrack facts: the timeouts sizing reads, and where each came from. */
import type { PodPlacement } from './pod.ts';

export const CONNTRACK_KEYS = [
  'udp-timeout',
  'udp-timeout-stream',
  'tcp-timeout-time-wait',
  'tcp-timeout-close-wait',
  'tcp-timeout-established',
] as const;
export type ConntrackKey = (typeof CONNTRACK_KEYS)[number];

export const CONNTRACK_SOURCES = ['nodes', 'kube-proxy', 'local', 'static'] as const;
export type ConntrackSource = (typeof CONNTRACK_SOURCES)[number];

export interface ConntrackValue {
  readonly value: number;
  readonly source: ConntrackSource;
}

export type ConntrackFacts = Readonly<Record<ConntrackKey, ConntrackValue>>;
export type ConntrackValues = Readonly<Record<ConntrackKey, number>>;
export type PartialConntrackValues = Partial<Record<ConntrackKey, number>>;

/** Linux defaults (net/netfilter/nf_conntrack_proto_*.c). */
export const LINUX_DEFAULTS: ConntrackValues = Object.freeze({
  'udp-timeout': 30,
  'udp-timeout-stream': 120,
  'tcp-timeout-time-wait': 120,
  'tcp-timeout-close-wait': 60,
  'tcp-timeout-established': 432000,
});

/** The sysctl behind a key: udp-timeout → nf_conntrack_udp_timeout. */
export function sysctlName(key: ConntrackKey): string {
  return `nf_conntrack_${key.replaceAll('-', '_')}`;
}

export function staticFacts(values: ConntrackValues): ConntrackFacts {
  const out = {} as Record<ConntrackKey, ConntrackValue>;
  for (const key of CONNTRACK_KEYS) out[key] = { value: values[key], source: 'static' };
  return Object.freeze(out);
}

/** A layer of `layerFacts`: fixed values, or values for a pod's placement given the layers below. */
export interface FactsLayer {
  readonly source: ConntrackSource;
  readonly values: PartialConntrackValues | ((placement: PodPlacement, below: ConntrackFacts) => PartialConntrackValues);
}

const ANYWHERE: PodPlacement = Object.freeze({});

/**
 * Layer sources: for each key the first layer that has a value wins; `fallback`
 * (the static values) answers the rest. Folded from the bottom up, so a layer
 * may read what the layers below it give.
 */
export function layerFacts(layers: readonly FactsLayer[], fallback: ConntrackFacts, placement: PodPlacement = ANYWHERE): ConntrackFacts {
  return fold(layers, fallback, placement, undefined);
}

/** Per key, the layer that gave the value and what the layers below it gave. */
type Given = Partial<Record<ConntrackKey, { readonly layer: number; readonly below: ConntrackFacts }>>;

function fold(layers: readonly FactsLayer[], fallback: ConntrackFacts, placement: PodPlacement, given: Given | undefined): ConntrackFacts {
  let facts = fallback;
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i]!;
    const values = typeof layer.values === 'function' ? layer.values(placement, facts) : layer.values;
    let out: Record<ConntrackKey, ConntrackValue> | undefined;
    for (const key of CONNTRACK_KEYS) {
      const value = values[key];
      if (value === undefined) continue;
      out ??= { ...facts };
      out[key] = { value, source: layer.source };
      if (given !== undefined) given[key] = { layer: i, below: facts };
    }
    if (out !== undefined) facts = Object.freeze(out);
  }
  return facts;
}

// ---------------------------------------------------------------- sources

/** Where a value came from, for people: short in the sizing arithmetic, long in the table. */
export interface Origin {
  readonly short: string;
  readonly long: string;
}

/**
 * The conntrack sources, highest precedence first: for each key the first that
 * answers wins, the static values answer last. Every wiring (the webhook's, the
 * CLI's) stacks its sources by this list; `source` is what their values record.
 */
export const CONNTRACK_LAYERS = [
  { kind: 'explicit', source: 'static' }, // the CLI's --conntrack
  { kind: 'ipvs', source: 'kube-proxy' }, // kube-proxy in IPVS mode raises the UDP wait
  { kind: 'nodes', source: 'nodes' }, // the agent's annotations on the candidate nodes
  { kind: 'local', source: 'local' }, // this machine's /proc/sys, outside a cluster
  { kind: 'kube-proxy', source: 'kube-proxy' }, // kube-proxy's ConfigMap
  { kind: 'static', source: 'static' },
] as const satisfies ReadonlyArray<{ readonly kind: string; readonly source: ConntrackSource }>;
export type LayerKind = (typeof CONNTRACK_LAYERS)[number]['kind'];

const RANK = new Map<LayerKind, number>(CONNTRACK_LAYERS.map((l, i) => [l.kind, i]));

export function sourceOf(kind: LayerKind): ConntrackSource {
  return CONNTRACK_LAYERS[RANK.get(kind)!]!.source;
}

/**
 * One source of conntrack values, read in the background into memory: `values`
 * is synchronous and does no I/O (every admission calls it).
 */
export interface ConntrackLayer {
  readonly kind: LayerKind;
  /** For the log: "node annotations". */
  readonly label: string;
  /** Begins background reads; nothing for fixed values. */
  start(): void;
  /** Settles after the first read, whatever its outcome. */
  readonly ready: Promise<void>;
  /**
   * The keys it answers for a pod with `placement`; `below`: what the sources
   * under it give. Never changed once returned: new values, a new object.
   */
  values(placement: PodPlacement, below: ConntrackFacts): PartialConntrackValues;
  /** For people: where its value of `key` came from. */
  describe(key: ConntrackKey, placement: PodPlacement, below: ConntrackFacts): Origin;
  stop(): Promise<void>;
}

/** The bottom of every stack: complete values. */
export interface StaticLayer extends ConntrackLayer {
  readonly kind: 'static';
  readonly facts: ConntrackFacts;
}

/** Values known at start (flags, a file read once). */
export function fixedLayer(kind: LayerKind, label: string, values: PartialConntrackValues, describe: (key: ConntrackKey) => Origin): ConntrackLayer {
  return { kind, label, start: () => {}, ready: Promise.resolve(), values: () => values, describe: (key) => describe(key), stop: async () => {} };
}

export function staticLayer(values: ConntrackValues, describe: (key: ConntrackKey) => Origin = () => ({ short: 'static', long: 'static' })): StaticLayer {
  return { ...fixedLayer('static', 'static values', values, describe), kind: 'static', facts: staticFacts(values) };
}

export interface ConntrackView {
  readonly facts: ConntrackFacts;
  /** Per key, where the value came from, for people. */
  readonly origins: Readonly<Record<ConntrackKey, Origin>>;
}

/** Sources ordered by CONNTRACK_LAYERS, the static values at the bottom. */
export interface LayerStack {
  /** Highest precedence first. */
  readonly layers: readonly ConntrackLayer[];
  facts(placement: PodPlacement): ConntrackFacts;
  /** The facts and where each came from. */
  explain(placement: PodPlacement): ConntrackView;
}

/** Stack sources by CONNTRACK_LAYERS: one of each kind at most, one static layer. */
export function stackLayers(sources: readonly ConntrackLayer[], base: StaticLayer): LayerStack {
  const layers = [...sources, base].sort((a, b) => RANK.get(a.kind)! - RANK.get(b.kind)!);
  const kinds = layers.map((l) => l.kind);
  const twice = kinds.filter((k, i) => kinds.indexOf(k) !== i);
  if (twice.length > 0) throw new Error(`conntrack sources stacked twice: ${twice.join(', ')}`);
  const above = layers.slice(0, -1);
  const folded: readonly FactsLayer[] = above.map((l) => ({ source: sourceOf(l.kind), values: (p: PodPlacement, below: ConntrackFacts) => l.values(p, below) }));
  // On the admission path: a layer given the same input and answering the same values gives the same output.
  const memo = above.map(() => new WeakMap<ConntrackFacts, WeakMap<PartialConntrackValues, ConntrackFacts>>());
  const facts = (placement: PodPlacement): ConntrackFacts => {
    let out = base.facts;
    for (let i = above.length - 1; i >= 0; i--) {
      const values = above[i]!.values(placement, out);
      let byValues = memo[i]!.get(out);
      if (byValues === undefined) memo[i]!.set(out, (byValues = new WeakMap()));
      let next = byValues.get(values);
      if (next === undefined) byValues.set(values, (next = fold([{ source: folded[i]!.source, values }], out, placement, undefined)));
      out = next;
    }
    return out;
  };
  return {
    layers,
    facts,
    explain: (placement) => {
      const given: Given = {};
      const facts = fold(folded, base.facts, placement, given);
      const origins = {} as Record<ConntrackKey, Origin>;
      for (const key of CONNTRACK_KEYS) {
        const g = given[key];
        origins[key] = g === undefined ? base.describe(key, placement, base.facts) : above[g.layer]!.describe(key, placement, g.below);
      }
      return { facts, origins };
    },
  };
}

/** The kernel's IPVS UDP timeout when kube-proxy's `ipvs.udpTimeout` is 0 or unset (`ipvsadm --set`'s third value). */
export const IPVS_KERNEL_UDP_TIMEOUT = 300;

/**
 * kube-proxy in IPVS mode: UDP flows live on in IPVS's own connection table for
 * `ipvsUdpTimeout` after their last packet, besides conntrack, so the UDP wait
 * (udp-timeout, and udp-timeout-stream for streams) is the larger of the two:
 * these are the keys where IPVS's is larger.
 */
export function ipvsRaise(facts: ConntrackFacts, ipvsUdpTimeout: number | undefined): PartialConntrackValues {
  const out: PartialConntrackValues = {};
  if (ipvsUdpTimeout === undefined) return out;
  for (const key of ['udp-timeout', 'udp-timeout-stream'] as const) {
    if (ipvsUdpTimeout > facts[key].value) out[key] = ipvsUdpTimeout;
  }
  return out;
}

