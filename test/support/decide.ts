/** Running the pure decision on realistic pods, for core tests. */
import { LINUX_DEFAULTS, staticFacts, layerFacts } from '../../src/core/conntrack.ts';
import type { ConntrackFacts, PartialConntrackValues, ConntrackSource } from '../../src/core/conntrack.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';
import type { KubeVersion, ModelDefaults } from '../../src/core/model.ts';
import { decide } from '../../src/core/plan.ts';
import type { Decision, Plan } from '../../src/core/plan.ts';
import { podSchema } from '../../src/core/pod.ts';
import type { Pod } from '../../src/core/pod.ts';
import { defaultedPod } from './pods.ts';
import type { PodOptions } from './pods.ts';

export interface DecideOptions {
  readonly defaults?: Partial<ModelDefaults>;
  readonly facts?: ConntrackFacts;
  readonly kubeVersion?: KubeVersion;
}

export function factsFrom(source: ConntrackSource, values: PartialConntrackValues): ConntrackFacts {
  return layerFacts([{ source, values }], staticFacts(LINUX_DEFAULTS));
}

export function parsePod(raw: unknown): Pod {
  return podSchema.parse(raw);
}

export function decideRaw(raw: unknown, o: DecideOptions = {}): Decision {
  return decide(parsePod(raw), {
    defaults: { ...MODEL_DEFAULTS, ...o.defaults },
    facts: o.facts ?? staticFacts(LINUX_DEFAULTS),
    kubeVersion: o.kubeVersion,
  });
}

export function decidePod(pod: PodOptions = {}, o: DecideOptions = {}): Decision {
  return decideRaw(defaultedPod(pod), o);
}

export function planOf(d: Decision): Plan {
  if (d.kind !== 'inject') throw new Error(`expected inject, got ${d.kind}: ${d.kind === 'skip' ? d.reason : d.kind === 'deny' ? d.message : ''}`);
  return d.plan;
}

export const UDP = [{ containerPort: 53, protocol: 'UDP' as const, name: 'dns' }];
export const TCP = [{ containerPort: 8080, protocol: 'TCP' as const, name: 'http' }];
