/**
 * Kubernetes schema validation of rendered objects: the OpenAPI schema
 * (kubernetes-models) plus unknown fields (the field names of
 * @kubernetes/client-node's generated models). CRD kinds are checked by the tests.
 */
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
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
import { ValidatingAdmissionPolicy } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy';
import { ValidatingAdmissionPolicyBinding } from 'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding';
import type { K8sObject } from './render.ts';
import { unknownFields } from '../support/pod-validation.ts';

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: any) => Validatable;

/** apiVersion/kind → the kubernetes-models class and the client-node model name. */
const MODELS: Readonly<Record<string, readonly [ModelClass, string]>> = {
  'v1/ConfigMap': [ConfigMap, 'V1ConfigMap'],
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
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy': [ValidatingAdmissionPolicy, 'V1ValidatingAdmissionPolicy'],
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding': [ValidatingAdmissionPolicyBinding, 'V1ValidatingAdmissionPolicyBinding'],
};

/** Kinds without a Kubernetes schema here (CRDs): checked field by field in the tests. */
export const CRD_KINDS: ReadonlySet<string> = new Set([
  'cert-manager.io/v1/Issuer',
  'cert-manager.io/v1/Certificate',
  'monitoring.coreos.com/v1/ServiceMonitor',
  'monitoring.coreos.com/v1/PrometheusRule',
]);

/** A DNS-1123 subdomain (most object names): dot-separated labels, at most 253 characters. */
export function isDnsSubdomain(s: string): boolean {
  return s.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(s);
}

/** A DNS-1035 label (Service names): at most 63 characters, a letter first. */
export function isDns1035Label(s: string): boolean {
  return s.length <= 63 && /^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(s);
}

/** A label value: at most 63 characters, alphanumerics at both ends. */
export function isLabelValue(v: unknown): boolean {
  return typeof v === 'string' && v.length <= 63 && /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v);
}

/** A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters. */
export function isLabelKey(k: string): boolean {
  const slash = k.lastIndexOf('/');
  const name = slash === -1 ? k : k.slice(slash + 1);
  if (slash !== -1 && !isDnsSubdomain(k.slice(0, slash))) return false;
  return name.length <= 63 && /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(name);
}

/** The label maps of an object the API server validates: its own, its pod template's and its selectors'. */
function labelMaps(o: K8sObject): Array<[string, Record<string, unknown>]> {
  const maps: Array<[string, unknown]> = [
    ['metadata.labels', o.metadata?.labels],
    ['spec.template.metadata.labels', o.spec?.template?.metadata?.labels],
    ['spec.selector.matchLabels', o.spec?.selector?.matchLabels],
    ['spec.podSelector.matchLabels', o.spec?.podSelector?.matchLabels],
  ];
  if (o.kind === 'Service') maps.push(['spec.selector', o.spec?.selector]);
  return maps.filter((m): m is [string, Record<string, unknown>] => typeof m[1] === 'object' && m[1] !== null);
}

/** What is wrong with `o` as a Kubernetes object; empty when valid. CRD kinds: only the metadata (and cert-manager's own limits). */
export function objectProblems(o: K8sObject): string[] {
  const out: string[] = [];
  const id = `${o.kind}/${o.metadata?.name ?? '?'}`;
  const gvk = `${o.apiVersion}/${o.kind}`;
  if (typeof o.metadata?.name !== 'string' || !isDnsSubdomain(o.metadata.name)) {
    out.push(`${id}: metadata.name is not a valid name`);
  } else if (o.kind === 'Service' && !isDns1035Label(o.metadata.name)) {
    out.push(`${id}: metadata.name is not a DNS-1035 label (a Service name: at most 63 characters, a letter first, no dots)`);
  }
  for (const [where, labels] of labelMaps(o)) {
    for (const [k, v] of Object.entries(labels)) {
      if (!isLabelKey(k)) out.push(`${id}: ${where}: ${k} is not a valid label key`);
      if (!isLabelValue(v)) out.push(`${id}: ${where}: ${k}=${String(v)} is not a valid label value`);
    }
  }
  if (gvk === 'cert-manager.io/v1/Certificate') out.push(...certificateProblems(o).map((p) => `${id}: ${p}`));
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

/** What cert-manager's webhook refuses in a Certificate (its validation: commonName at most 64 characters, names valid). */
function certificateProblems(o: K8sObject): string[] {
  const out: string[] = [];
  const spec = o.spec ?? {};
  if (spec.commonName !== undefined && (typeof spec.commonName !== 'string' || spec.commonName.length > 64)) out.push(`spec.commonName ${String(spec.commonName)} is longer than 64 characters`);
  if (typeof spec.secretName !== 'string' || !isDnsSubdomain(spec.secretName)) out.push(`spec.secretName ${String(spec.secretName)} is not a valid Secret name`);
  for (const name of spec.dnsNames ?? []) if (typeof name !== 'string' || !isDnsSubdomain(name) || name.split('.').some((l: string) => l.length > 63)) out.push(`spec.dnsNames: ${String(name)} is not a DNS name`);
  if (spec.commonName === undefined && (spec.dnsNames ?? []).length === 0) out.push('neither commonName nor dnsNames');
  return out;
}
