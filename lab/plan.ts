/**
 * The backend's pod spec and the termination plan the decision core computes for it
 * from the lab node's conntrack sysctls (read back from the node namespace, source
 * `local`, as `safe-termination` does outside a cluster).
 */
import { CONNTRACK_KEYS, LINUX_DEFAULTS, layerFacts, staticFacts, sysctlName } from '../src/core/conntrack.ts';
import type { ConntrackFacts, PartialConntrackValues } from '../src/core/conntrack.ts';
import { MODEL_DEFAULTS } from '../src/core/model.ts';
import { Annotation } from '../src/core/names.ts';
import { decide } from '../src/core/plan.ts';
import { podSchema } from '../src/core/pod.ts';
import type { Plan } from '../src/core/plan.ts';
import { readNodeSysctls } from './world.ts';

/** A backend pod of the lab's Service: one container serving DNS-like UDP and HTTP-like TCP. */
export function backendPod(propagationBudget: string | undefined): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      namespace: 'lab',
      generateName: 'echo-6f7c9d-',
      labels: { app: 'echo' },
      annotations: propagationBudget === undefined ? {} : { [Annotation.propagationDelay]: propagationBudget },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'echo-6f7c9d', uid: '5b2f8a3e-2c7d-4b1e-9f0a-6d3c2e1b0a99', controller: true }],
    },
    spec: {
      containers: [
        {
          name: 'echo',
          image: 'registry.example.com/echo:1.0',
          ports: [
            { name: 'dns', containerPort: 53, protocol: 'UDP' },
            { name: 'http', containerPort: 8080, protocol: 'TCP' },
          ],
        },
      ],
      terminationGracePeriodSeconds: 30,
    },
  };
}

export async function nodeFacts(nodeNs: string): Promise<ConntrackFacts> {
  const raw = await readNodeSysctls(
    nodeNs,
    CONNTRACK_KEYS.map((k) => sysctlName(k)),
  );
  const values: PartialConntrackValues = {};
  for (const key of CONNTRACK_KEYS) {
    const v = raw[sysctlName(key)];
    if (v !== undefined && Number.isFinite(v)) values[key] = v;
  }
  return layerFacts([{ source: 'local', values }], staticFacts(LINUX_DEFAULTS));
}

export function planFor(pod: unknown, facts: ConntrackFacts): Plan {
  const parsed = podSchema.parse(pod);
  const decision = decide(parsed, { defaults: MODEL_DEFAULTS, facts, kubeVersion: undefined });
  if (decision.kind !== 'inject') throw new Error(`the decision core did not inject the lab's pod: ${decision.kind}`);
  return decision.plan;
}

/** One line for the output: what the plan is and why. */
export function describePlan(plan: Plan): string {
  const s = plan.sleep;
  const why =
    s.kind === 'model'
      ? `propagation-delay ${s.propagationDelay.value}s (${s.propagationDelay.source}) + ${s.waitKey ?? 'no wait'} ${s.conntrackWait}s` +
        (s.waitKey !== undefined ? ` (${plan.conntrack[s.waitKey]?.source ?? '?'})` : '')
      : 'prestop-sleep annotation';
  return `preStop sleep ${plan.sleepSeconds}s = ${why}; grace ${plan.gracePeriodSeconds}s (was ${plan.originalGracePeriodSeconds}s); protocols ${plan.protocols.join(',')}; mode ${plan.mode.mode}`;
}
