/**
 * The candidate nodes' agent annotations as a conntrack source: per value, the
 * maximum over the nodes a pod may land on, each node's own annotation or else
 * what the sources below give (candidate-nodes.ts). Fed by the Node informer in
 * the webhook, by a node dump or a one-time sync in the CLI.
 */
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackLayer, PartialConntrackValues } from '../core/conntrack.ts';
import { candidateNodes, isUnconstrained } from './candidate-nodes.ts';
import type { CandidateIndex } from './candidate-nodes.ts';

export interface NodesLayerOptions {
  /** For people: "nodes.yaml", "the cluster of ~/.kube/config". */
  readonly where: string;
  /** What keeps the index current (the Node informer); none for a dump. */
  readonly feed?: { start(): void; readonly synced: Promise<void>; stop(): Promise<void> };
}

export function nodesLayer(index: CandidateIndex, o: NodesLayerOptions): ConntrackLayer {
  // The index answers with shared objects (per placement, per node): so do we.
  const answers = new WeakMap<ConntrackFacts, PartialConntrackValues>();
  return {
    kind: 'nodes',
    label: 'node annotations',
    start: () => o.feed?.start(),
    ready: o.feed?.synced ?? Promise.resolve(),
    values: (placement, below) => {
      // Each node's facts are layered over `below`; unchanged, this costs a comparison.
      index.setFallback(below);
      const facts = index.conntrackFor(placement);
      let out = answers.get(facts);
      if (out === undefined) {
        out = {};
        for (const key of CONNTRACK_KEYS) if (facts[key].source === 'nodes') out[key] = facts[key].value;
        answers.set(facts, out);
      }
      return out;
    },
    describe: (key, placement) => {
      const all = [...index.nodes()];
      const matching = isUnconstrained(placement) ? all : candidateNodes(placement, all, (name) => index.node(name));
      const none = matching.length === 0;
      const candidates = none ? all : matching;
      const annotated = candidates.filter((n) => n.values[key] !== undefined).length;
      const over = `${candidates.length} candidate node${candidates.length === 1 ? '' : 's'}${none ? ' (none matches the placement: all nodes)' : ''}`;
      return { short: 'nodes', long: `nodes: max over ${over}, ${annotated} annotated, in ${o.where}` };
    },
    stop: async () => {
      await o.feed?.stop();
    },
  };
}
