/** The port through which decisions learn cluster facts. Synchronous: no I/O per request. */
import type { ConntrackFacts } from './conntrack.ts';
import type { KubeVersion } from './model.ts';
import type { PodPlacement } from './pod.ts';
import type { SelectingService } from './services.ts';

export interface FactsSource {
  /** Conntrack values for a pod that may land on the nodes its placement allows. */
  conntrackFor(placement: PodPlacement): ConntrackFacts;
  /** The cluster's version; undefined when unknown. */
  kubeVersion(): KubeVersion | undefined;
  /** The Services of `namespace` that select a pod with `labels`; absent: Services are not known. */
  servicesFor?(namespace: string, labels: Readonly<Record<string, string>> | null | undefined): readonly SelectingService[];
}

/** Facts that do not depend on placement: local /proc/sys or static values. */
export function fixedFacts(conntrack: ConntrackFacts, kubeVersion: KubeVersion | undefined): FactsSource {
  return { conntrackFor: () => conntrack, kubeVersion: () => kubeVersion };
}

/** Facts as the webhook holds them: ready once synced (or timed out), stopped at shutdown. */
export interface FactsWiring {
  readonly facts: FactsSource;
  /** Resolves when facts are ready (or their sync timeout passed). */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}
