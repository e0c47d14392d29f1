/**
 * The parts of a v1 Pod the decision reads, validated with zod. Everything else
 * in the pod is ignored here (and never copied): the patch addresses the
 * original object by index.
 */
import { z } from 'zod';

const stringMap = z.record(z.string(), z.string());

const portSchema = z.object({
  protocol: z.string().nullish(),
});

const lifecycleSchema = z.looseObject({
  preStop: z.unknown().optional(),
});

const containerSchema = z.object({
  name: z.string(),
  ports: z.array(portSchema).nullish(),
  lifecycle: lifecycleSchema.nullish(),
});

const initContainerSchema = z.object({
  name: z.string(),
  restartPolicy: z.string().nullish(),
  ports: z.array(portSchema).nullish(),
});

const selectorRequirementSchema = z.object({
  key: z.string(),
  operator: z.string(),
  values: z.array(z.string()).nullish(),
});

const nodeSelectorTermSchema = z.object({
  matchExpressions: z.array(selectorRequirementSchema).nullish(),
  matchFields: z.array(selectorRequirementSchema).nullish(),
});

const affinitySchema = z.object({
  nodeAffinity: z
    .object({
      requiredDuringSchedulingIgnoredDuringExecution: z
        .object({ nodeSelectorTerms: z.array(nodeSelectorTermSchema) })
        .nullish(),
    })
    .nullish(),
});

const ownerReferenceSchema = z.object({
  apiVersion: z.string(),
  kind: z.string(),
  name: z.string().optional(),
  controller: z.boolean().nullish(),
});

export const podSchema = z.object({
  metadata: z
    .object({
      name: z.string().nullish(),
      generateName: z.string().nullish(),
      namespace: z.string().nullish(),
      labels: stringMap.nullish(),
      annotations: stringMap.nullish(),
      ownerReferences: z.array(ownerReferenceSchema).nullish(),
    })
    .nullish(),
  spec: z.object({
    containers: z.array(containerSchema),
    initContainers: z.array(initContainerSchema).nullish(),
    // An int64: values beyond 2^53 arrive as inexact (still whole) numbers; the plan skips them.
    terminationGracePeriodSeconds: z.number().refine(Number.isInteger, 'expected an integer').nullish(),
    nodeName: z.string().nullish(),
    nodeSelector: stringMap.nullish(),
    affinity: affinitySchema.nullish(),
    os: z.object({ name: z.string() }).nullish(),
  }),
});

export type Pod = z.infer<typeof podSchema>;
export type Container = Pod['spec']['containers'][number];
export type InitContainer = NonNullable<Pod['spec']['initContainers']>[number];
export type NodeSelectorRequirement = z.infer<typeof selectorRequirementSchema>;
export type NodeSelectorTerm = z.infer<typeof nodeSelectorTermSchema>;

/** Where a pod may be scheduled: what candidate-node selection reads. */
export interface PodPlacement {
  nodeName?: string | null | undefined;
  nodeSelector?: Readonly<Record<string, string>> | null | undefined;
  requiredTerms?: readonly NodeSelectorTerm[] | undefined;
}

export function placementOf(pod: Pod): PodPlacement {
  return {
    nodeName: pod.spec.nodeName,
    nodeSelector: pod.spec.nodeSelector,
    requiredTerms:
      pod.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
        ?.nodeSelectorTerms,
  };
}

/** Longer than any valid namespace/name; bounds what unvalidated input puts in a log line. */
const MAX_DISPLAY_NAME = 320;

/** "namespace/name", or "namespace/generateName*" for pods not yet named. */
export function podDisplayName(pod: Pick<Pod, 'metadata'>, namespace?: string): string {
  const meta = pod.metadata;
  const ns = meta?.namespace ?? namespace ?? '';
  const name = meta?.name ?? (meta?.generateName ? `${meta.generateName}*` : '<unnamed>');
  const full = ns ? `${ns}/${name}` : name;
  return full.length > MAX_DISPLAY_NAME ? `${full.slice(0, MAX_DISPLAY_NAME)}…` : full;
}

export function isNativeSidecar(c: InitContainer): boolean {
  return c.restartPolicy === 'Always';
}
