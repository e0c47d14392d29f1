/**
 * Kubernetes schema validation of rendered objects: the OpenAPI schema
 * (kubernetes-models) plus unknown fields (the field names of
 * @kubernetes/client-node's generated models). CRD kinds are checked by the tests.
 */
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import type { K8sObject } from './render.ts';
import { unknownFields } from '../support/pod-validation.ts';

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: any) => Validatable;

/** apiVersion/kind → the kubernetes-models class and the client-node model name. */
const MODELS: Readonly<Record<string, readonly [ModelClass, string]>> = {
  'v1/Secret': [Secret, 'V1Secret'],
  'v1/Service': [Service, 'V1Service'],
  'v1/ServiceAccount': [ServiceAccount, 'V1ServiceAccount'],
  'apps/v1/Deployment': [Deployment, 'V1Deployment'],
  'apps/v1/DaemonSet': [DaemonSet, 'V1DaemonSet'],
  'policy/v1/PodDisruptionBudget': [PodDisruptionBudget, 'V1PodDisruptionBudget'],
  'rbac.authorization.k8s.io/v1/ClusterRole': [ClusterRole, 'V1ClusterRole'],
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': [ClusterRoleBinding, 'V1ClusterRoleBinding'],
  'rbac.authorization.k8s.io/v1/Role': [Role, 'V1Role'],
  'rbac.authorization.k8s.io/v1/RoleBinding': [RoleBinding, 'V1RoleBinding'],
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': [MutatingWebhookConfiguration, 'V1MutatingWebhookConfiguration'],
  'networking.k8s.io/v1/NetworkPolicy': [NetworkPolicy, 'V1NetworkPolicy'],
};

/** Kinds without a Kubernetes schema here (CRDs): checked field by field in the tests. */
export const CRD_KINDS: ReadonlySet<string> = new Set([
  'cert-manager.io/v1/Issuer',
  'cert-manager.io/v1/Certificate',
  'monitoring.coreos.com/v1/ServiceMonitor',
  'monitoring.coreos.com/v1/PrometheusRule',
]);

/** What is wrong with `o` as a Kubernetes object; empty when valid. CRD kinds: only the metadata. */
export function objectProblems(o: K8sObject): string[] {
  const out: string[] = [];
  const id = `${o.kind}/${o.metadata?.name ?? '?'}`;
  const gvk = `${o.apiVersion}/${o.kind}`;
  if (typeof o.metadata?.name !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.metadata.name) || o.metadata.name.length > 253) {
    out.push(`${id}: metadata.name is not a valid name`);
  }
  for (const [k, v] of Object.entries(o.metadata?.labels ?? {})) {
    if (typeof v !== 'string' || v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v)) out.push(`${id}: label ${k}=${v} is not a valid label value`);
  }
  const model = MODELS[gvk];
  if (model === undefined) {
    if (!CRD_KINDS.has(gvk)) out.push(`${id}: unexpected kind ${gvk}`);
    return out;
  }
  const [Model, clientName] = model;
  try {
    new Model(o).validate();
  } catch (e) {
    out.push(`${id}: schema: ${(e as Error).message}`);
  }
  const fields: string[] = [];
  unknownFields(o, clientName, '', fields);
  out.push(...fields.map((f) => `${id}: ${f}`));
  return out;
}

