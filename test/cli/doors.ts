/**
 * One core, two doors: the pods of a manifest as the API server would send
 * them to the webhook, and the comparison of the webhook's result with the CLI's.
 */
import { parseAllDocuments } from 'yaml';
import { findTargets, valueAt } from '../../src/manifest/workloads.ts';
import type { PodTarget } from '../../src/manifest/workloads.ts';

/** The owner the controller of each workload kind gives its pods. */
const POD_OWNER: Readonly<Record<string, { apiVersion: string; kind: string }>> = {
  Deployment: { apiVersion: 'apps/v1', kind: 'ReplicaSet' },
  StatefulSet: { apiVersion: 'apps/v1', kind: 'StatefulSet' },
  DaemonSet: { apiVersion: 'apps/v1', kind: 'DaemonSet' },
  ReplicaSet: { apiVersion: 'apps/v1', kind: 'ReplicaSet' },
  ReplicationController: { apiVersion: 'v1', kind: 'ReplicationController' },
  Job: { apiVersion: 'batch/v1', kind: 'Job' },
  CronJob: { apiVersion: 'batch/v1', kind: 'Job' },
  // Kinds of other API groups (a pod template at spec.template: workloads.ts).
  DeploymentConfig: { apiVersion: 'v1', kind: 'ReplicationController' },
  Rollout: { apiVersion: 'apps/v1', kind: 'ReplicaSet' },
};
/** A template at spec.jobTemplate.spec.template of another kind: its pods are a Job's. */
const JOB_OWNER = { apiVersion: 'batch/v1', kind: 'Job' };

export interface ManifestPod {
  readonly target: PodTarget;
  /** "Deployment shop/web #2" */
  readonly label: string;
  /** As the API server would post it (namespace, owner, API defaults). */
  readonly pod: Record<string, any>;
}

/** Every Pod and pod template of a manifest text, as API-server pods. */
export function manifestPods(text: string): ManifestPod[] {
  const out: ManifestPod[] = [];
  const trimmed = text.trimStart();
  const values: unknown[] = trimmed.startsWith('{') ? [JSON.parse(text)] : parseAllDocuments(text, { merge: true }).map((d: any) => d.toJS());
  values.forEach((value, i) => {
    for (const target of findTargets(value)) {
      const shape = valueAt(value, target.path) as { metadata?: Record<string, unknown>; spec: Record<string, unknown> };
      out.push({ target, label: `${target.kind} ${target.namespace ?? ''}/${target.name ?? ''} (document ${i + 1})`, pod: apiPod(shape, target) });
    }
  });
  return out;
}

/**
 * The pod a controller creates from a template (or the Pod itself), after the
 * API server's defaulting of terminationGracePeriodSeconds — applied alike to
 * both doors' results, so they compare as the cluster would see them.
 */
export function apiPod(shape: { metadata?: Record<string, unknown>; spec: Record<string, unknown> }, t: PodTarget): Record<string, any> {
  const metadata: Record<string, any> = structuredClone(shape.metadata ?? {});
  metadata['namespace'] ??= t.namespace ?? 'default';
  const owner = POD_OWNER[t.kind] ?? (t.jobPods ? JOB_OWNER : undefined);
  if (t.template && owner !== undefined) {
    delete metadata['name'];
    metadata['generateName'] = `${t.name ?? 'pod'}-`;
    metadata['ownerReferences'] = [{ ...owner, name: t.name ?? 'owner', uid: '6a1f4c2e-0d7b-4c1a-9f3e-2b8d5e7a9c10', controller: true, blockOwnerDeletion: true }];
  }
  const spec: Record<string, any> = structuredClone(shape.spec);
  spec['terminationGracePeriodSeconds'] ??= 30;
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}

/** The Services of a manifest as the API server would store them (namespace defaulted), for the webhook door. */
export function manifestServices(text: string): Array<Record<string, any>> {
  let values: unknown[];
  try {
    values = text.trimStart().startsWith('{') ? [JSON.parse(text)] : parseAllDocuments(text, { merge: true }).map((d: any) => d.toJS());
  } catch {
    return [];
  }
  const out: Array<Record<string, any>> = [];
  const visit = (v: any): void => {
    if (v === null || typeof v !== 'object') return;
    if (v.kind === 'List' && Array.isArray(v.items)) v.items.forEach(visit);
    else if (v.kind === 'Service' && v.apiVersion === 'v1') {
      const svc = structuredClone(v);
      svc.metadata ??= {};
      svc.metadata.namespace ??= 'default';
      out.push(svc);
    }
  };
  values.forEach(visit);
  return out;
}
