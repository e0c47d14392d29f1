/** Pods as the API server stores them, and the decision record the webhook writes on them. */
import { Annotation } from '../src/core/names.ts';
import type { DecisionRecord } from '../src/core/record.ts';

export interface StoredPod {
  metadata: { name: string; namespace: string; annotations?: Record<string, string>; labels?: Record<string, string>; ownerReferences?: Array<{ kind: string }> };
  spec: {
    terminationGracePeriodSeconds?: number;
    containers: Array<{ name: string; ports?: unknown[]; lifecycle?: { preStop?: { sleep?: { seconds: number }; exec?: { command: string[] } } } }>;
  };
}

/** The pod's `safe-termination.io/injected` record, or undefined when it has none. */
export function recordOf(pod: StoredPod): DecisionRecord | undefined {
  const text = pod.metadata.annotations?.[Annotation.injected];
  return text === undefined ? undefined : (JSON.parse(text) as DecisionRecord);
}
