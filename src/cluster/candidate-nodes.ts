/**
 * Candidate nodes of a pod not yet scheduled, and the conntrack facts
 * over them. Pure: no I/O. The index is fed by the Node informer and read by
 * every admission, so reads are precomputed where they can be:
 *
 * - no placement constraints: one precomputed answer (the maximum over all nodes);
 * - `spec.nodeName`: one map lookup;
 * - `matchFields` on `metadata.name` (DaemonSet pods): lookups of the named nodes;
 * - other selectors: a scan, cached per distinct placement until a node changes.
 *
 * Each node contributes, per value, its own annotation or else the next source
 * (kube-proxy, static): a node without the agent may land the pod too. The
 * answer is the maximum per value; on a tie a measured node value wins. A
 * placement that matches no known node (a node not seen yet, a node group
 * scaled to zero) is answered as if unconstrained: the cluster's nodes are the
 * best evidence of what the new node will be.
 */
import { CONNTRACK_KEYS, layerFacts } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackKey, ConntrackValue, PartialConntrackValues } from '../core/conntrack.ts';
import type { NodeSelectorRequirement, NodeSelectorTerm, PodPlacement } from '../core/pod.ts';

/** What sizing keeps of a Node: nothing else (memory stays bounded on big clusters). */
export interface NodeRecord {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly values: PartialConntrackValues;
}

/** The only field `matchFields` supports (the API server rejects any other). */
export const NODE_NAME_FIELD = 'metadata.name';

// ---------------------------------------------------------------- matching

function parseInt64(text: string): bigint | undefined {
  if (!/^[+-]?\d{1,19}$/.test(text)) return undefined;
  const n = BigInt(text);
  return n >= -(2n ** 63n) && n < 2n ** 63n ? n : undefined;
}

/** One NodeSelectorRequirement against the value of its key (undefined: key absent). */
export function requirementMatches(value: string | undefined, req: NodeSelectorRequirement): boolean {
  const values = req.values ?? [];
  switch (req.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      // The API server requires exactly one integer value; anything else matches nothing.
      if (value === undefined || values.length !== 1) return false;
      const have = parseInt64(value);
      const want = parseInt64(values[0]!);
      if (have === undefined || want === undefined) return false;
      return req.operator === 'Gt' ? have > want : have < want;
    }
    default:
      return false;
  }
}

/** A term matches when all its requirements do; an empty term matches nothing. */
export function termMatches(node: Pick<NodeRecord, 'name' | 'labels'>, term: NodeSelectorTerm): boolean {
  const exprs = term.matchExpressions ?? [];
  const fields = term.matchFields ?? [];
  if (exprs.length === 0 && fields.length === 0) return false;
  for (const req of exprs) if (!requirementMatches(node.labels[req.key], req)) return false;
  for (const req of fields) {
    if (req.key !== NODE_NAME_FIELD) return false;
    if (!requirementMatches(node.name, req)) return false;
  }
  return true;
}

export function selectorMatches(labels: Readonly<Record<string, string>>, selector: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return true;
}

/** True when the pod could land on this node (nodeName, nodeSelector, required node affinity). */
export function nodeMatches(node: Pick<NodeRecord, 'name' | 'labels'>, placement: PodPlacement): boolean {
  if (placement.nodeName) return node.name === placement.nodeName;
  if (placement.nodeSelector && !selectorMatches(node.labels, placement.nodeSelector)) return false;
  const terms = placement.requiredTerms;
  if (terms !== undefined && terms !== null) return terms.some((t) => termMatches(node, t));
  return true;
}

export function isUnconstrained(placement: PodPlacement): boolean {
  return (
    !placement.nodeName &&
    (placement.nodeSelector == null || Object.keys(placement.nodeSelector).length === 0) &&
    placement.requiredTerms == null
  );
}

/** Node names a term can only match (`matchFields metadata.name In [...]`), or undefined. */
function namesOfTerm(term: NodeSelectorTerm): readonly string[] | undefined {
  let names: readonly string[] | undefined;
  for (const req of term.matchFields ?? []) {
    if (req.key === NODE_NAME_FIELD && req.operator === 'In') {
      const vs = req.values ?? [];
      names = names === undefined ? vs : names.filter((n) => vs.includes(n));
    }
  }
  return names;
}

/** The nodes a placement allows, from `nodes`; `lookup` finds one node by name. */
export function candidateNodes(
  placement: PodPlacement,
  nodes: Iterable<NodeRecord>,
  lookup: (name: string) => NodeRecord | undefined,
): NodeRecord[] {
  if (placement.nodeName) {
    const n = lookup(placement.nodeName);
    return n === undefined ? [] : [n];
  }
  const terms = placement.requiredTerms;
  // DaemonSet pods: every term names its nodes; look them up instead of scanning.
  if (terms != null && terms.length > 0) {
    const named = terms.map(namesOfTerm);
    if (named.every((n) => n !== undefined)) {
      const out = new Map<string, NodeRecord>();
      for (const names of named) {
        for (const name of names) {
          const n = lookup(name);
          if (n !== undefined && !out.has(name) && nodeMatches(n, placement)) out.set(name, n);
        }
      }
      return [...out.values()];
    }
  }
  const out: NodeRecord[] = [];
  for (const n of nodes) if (nodeMatches(n, placement)) out.push(n);
  return out;
}

// ---------------------------------------------------------------- facts

/** Per value, the largest; on a tie a value measured on a node wins. */
export function maxFacts(all: Iterable<ConntrackFacts>, fallback: ConntrackFacts): ConntrackFacts {
  const out = { ...fallback } as Record<ConntrackKey, ConntrackValue>;
  let first = true;
  for (const facts of all) {
    for (const key of CONNTRACK_KEYS) {
      const v = facts[key];
      const cur = out[key];
      if (first || v.value > cur.value || (v.value === cur.value && v.source === 'nodes' && cur.source !== 'nodes')) out[key] = v;
    }
    first = false;
  }
  return Object.freeze(out);
}

interface Entry {
  readonly node: NodeRecord;
  /** This node's values over the fallback; recomputed when the fallback changes. */
  facts: ConntrackFacts;
}

const CACHE_LIMIT = 512;

/**
 * Nodes by name with their layered facts, and the facts per placement.
 * `conntrackFor` is synchronous and allocation-light: it is on the admission path.
 */
export class CandidateIndex {
  #entries = new Map<string, Entry>();
  #fallback: ConntrackFacts;
  #all: ConntrackFacts;
  #dirty = false;
  #cache = new Map<string, ConntrackFacts>();
  #scheduled = false;

  /** `fallback`: the facts below the nodes (kube-proxy over static, say). */
  constructor(fallback: ConntrackFacts) {
    this.#fallback = fallback;
    this.#all = fallback;
  }

  get size(): number {
    return this.#entries.size;
  }

  get fallback(): ConntrackFacts {
    return this.#fallback;
  }

  node(name: string): NodeRecord | undefined {
    return this.#entries.get(name)?.node;
  }

  nodes(): IterableIterator<NodeRecord> {
    const it = this.#entries.values();
    return (function* () {
      for (const e of it) yield e.node;
    })();
  }

  /** Add or replace a node. Returns false when nothing sizing reads changed. */
  upsert(node: NodeRecord): boolean {
    const old = this.#entries.get(node.name);
    if (old !== undefined && sameRecord(old.node, node)) return false;
    this.#entries.set(node.name, { node, facts: this.#layer(node) });
    this.#invalidate();
    return true;
  }

  remove(name: string): boolean {
    if (!this.#entries.delete(name)) return false;
    this.#invalidate();
    return true;
  }

  /** Replace the facts below the nodes (a source below changed). */
  setFallback(fallback: ConntrackFacts): void {
    if (fallback === this.#fallback || sameFacts(fallback, this.#fallback)) return;
    this.#fallback = fallback;
    for (const e of this.#entries.values()) e.facts = this.#layer(e.node);
    this.#invalidate();
  }

  /** The facts for a pod with this placement. */
  conntrackFor(placement: PodPlacement): ConntrackFacts {
    if (this.#dirty) this.#recompute();
    if (isUnconstrained(placement)) return this.#all;
    if (placement.nodeName) {
      const e = this.#entries.get(placement.nodeName);
      return e !== undefined ? e.facts : this.#all;
    }
    const key = placementKey(placement);
    const hit = this.#cache.get(key);
    if (hit !== undefined) return hit;
    const nodes = candidateNodes(placement, this.nodes(), (n) => this.#entries.get(n)?.node);
    const facts = nodes.length === 0 ? this.#all : maxFacts(nodes.map((n) => this.#entries.get(n.name)!.facts), this.#fallback);
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(key, facts);
    return facts;
  }

  #layer(node: NodeRecord): ConntrackFacts {
    return layerFacts([{ source: 'nodes', values: node.values }], this.#fallback);
  }

  #invalidate(): void {
    this.#dirty = true;
    this.#cache.clear();
    // A relist adds thousands of nodes in one synchronous burst: recompute once after it.
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => {
        this.#scheduled = false;
        if (this.#dirty) this.#recompute();
      });
    }
  }

  #recompute(): void {
    this.#dirty = false;
    this.#all = this.#entries.size === 0 ? this.#fallback : maxFacts(Array.from(this.#entries.values(), (e) => e.facts), this.#fallback);
  }
}

function sameRecord(a: NodeRecord, b: NodeRecord): boolean {
  return sameMap(a.labels, b.labels) && sameMap(a.values as Record<string, number>, b.values as Record<string, number>);
}

function sameMap<V>(a: Readonly<Record<string, V>>, b: Readonly<Record<string, V>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (a[k] !== b[k]) return false;
  return true;
}

function sameFacts(a: ConntrackFacts, b: ConntrackFacts): boolean {
  return CONNTRACK_KEYS.every((k) => a[k].value === b[k].value && a[k].source === b[k].source);
}

function placementKey(p: PodPlacement): string {
  return JSON.stringify([p.nodeSelector ?? null, p.requiredTerms ?? null]);
}
