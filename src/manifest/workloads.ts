/**
 * Where the pods are in a manifest: a Pod is one itself; the workload kinds
 * carry a pod template at a fixed path; a List holds objects. A kind of another
 * API group than Kubernetes' own (OpenShift DeploymentConfig, Argo Rollout,
 * Knative Service, any custom resource) has a pod template where the workload
 * APIs keep one — spec.template, or spec.jobTemplate.spec.template (its pods are
 * then a Job's) — when what is there is pod-shaped (a spec with containers).
 * Everything else passes through untouched; of those other API groups' objects,
 * the caller is told (`untemplated`), since their pods, if any, are made where
 * inject cannot see them.
 */

export type Path = ReadonlyArray<string | number>;

export interface PodTarget {
  /** Path in the document to the pod-shaped object: the Pod itself or the template. */
  readonly path: Path;
  readonly kind: string;
  readonly apiVersion: string;
  readonly name: string | undefined;
  readonly generateName: string | undefined;
  readonly namespace: string | undefined;
  /** A pod template (no namespace, no grace default) rather than a Pod. */
  readonly template: boolean;
  /** Its pods are owned by a Job: the decision sees a Job owner (skipped unless --inject-job-pods). */
  readonly jobPods: boolean;
}

/** An object of another API group than Kubernetes' own, with no pod template where one is looked for. */
export interface UntemplatedObject {
  /** Path of the object in the document (`[]`, or into a List's items). */
  readonly path: Path;
  readonly kind: string;
  readonly apiVersion: string;
  readonly name: string | undefined;
  readonly generateName: string | undefined;
  readonly namespace: string | undefined;
  /** Why it holds no pod template (or why its template is left alone), for people. */
  readonly reason: string;
  /** A pod template is there, but its API refuses what inject adds (REFUSED_GROUPS). */
  readonly refused: boolean;
}

interface Workload {
  readonly groups: readonly string[];
  readonly template: Path;
  readonly jobPods?: boolean;
}

/** Kind → API groups it belongs to ('' is core) and the path of its pod template. */
export const WORKLOADS: Readonly<Record<string, Workload>> = {
  Deployment: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  StatefulSet: { groups: ['apps'], template: ['spec', 'template'] },
  DaemonSet: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  ReplicaSet: { groups: ['apps', 'extensions'], template: ['spec', 'template'] },
  ReplicationController: { groups: [''], template: ['spec', 'template'] },
  Job: { groups: ['batch'], template: ['spec', 'template'], jobPods: true },
  CronJob: { groups: ['batch'], template: ['spec', 'jobTemplate', 'spec', 'template'], jobPods: true },
};

/** Where a kind of another API group keeps its pod template, in the order looked at. */
export const GENERIC_TEMPLATES: ReadonlyArray<{ readonly path: Path; readonly jobPods: boolean }> = [
  { path: ['spec', 'template'], jobPods: false },
  { path: ['spec', 'jobTemplate', 'spec', 'template'], jobPods: true },
];

/**
 * API groups whose pod-shaped templates must not be injected, and why. Knative
 * Serving's revision template is a restricted PodSpec: its API refuses a
 * container's `lifecycle` and `terminationGracePeriodSeconds` (knative/serving
 * #1314, #6381, #16463), so an injected Service could not be applied.
 */
export const REFUSED_GROUPS: Readonly<Record<string, string>> = {
  'serving.knative.dev':
    "Knative's revision template refuses lifecycle hooks and terminationGracePeriodSeconds, so inject leaves it alone; the webhook injects the pods of its Deployment when they are created",
};

/** Kubernetes' own API groups: their kinds are all known, and those not in WORKLOADS have no pod template. */
export function isKubernetesGroup(group: string): boolean {
  return ['', 'apps', 'batch', 'extensions', 'policy', 'autoscaling'].includes(group) || group.endsWith('.k8s.io') || group === 'k8s.io';
}

/** A pod template: a mapping whose spec is a mapping with a list of containers. */
function isPodTemplate(v: unknown): boolean {
  return isRecord(v) && isRecord(v['spec']) && Array.isArray(v['spec']['containers']);
}

export function apiGroup(apiVersion: string): string {
  const slash = apiVersion.indexOf('/');
  return slash === -1 ? '' : apiVersion.slice(0, slash);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The value at `path`, or undefined. */
export function valueAt(root: unknown, path: Path): unknown {
  let v = root;
  for (const key of path) {
    if (typeof key === 'number') v = Array.isArray(v) ? (v as unknown[])[key] : undefined;
    else v = isRecord(v) ? v[key] : undefined;
    if (v === undefined) return undefined;
  }
  return v;
}

/**
 * Every Pod and pod template in a document value, in document order. Items of
 * typed lists (DeploymentList…) without apiVersion/kind take the list's. Objects
 * of other API groups than Kubernetes' own that hold no pod template are added to
 * `untemplated`, when given.
 */
export function findTargets(value: unknown, base: Path = [], inherited?: { apiVersion: string; kind: string }, untemplated?: UntemplatedObject[]): PodTarget[] {
  if (!isRecord(value)) return [];
  const apiVersion = str(value['apiVersion']) ?? inherited?.apiVersion ?? '';
  const kind = str(value['kind']) ?? inherited?.kind ?? '';
  const items = value['items'];
  if ((kind === 'List' || kind.endsWith('List')) && Array.isArray(items)) {
    const itemType = kind === 'List' ? undefined : { apiVersion, kind: kind.slice(0, -'List'.length) };
    return items.flatMap((item, i) => findTargets(item, [...base, 'items', i], itemType, untemplated));
  }
  const meta = isRecord(value['metadata']) ? value['metadata'] : {};
  const common = {
    kind,
    apiVersion,
    name: str(meta['name']),
    generateName: str(meta['generateName']),
    namespace: str(meta['namespace']),
  };
  if (kind === 'Pod' && apiGroup(apiVersion) === '') return [{ ...common, path: base, template: false, jobPods: false }];
  const group = apiGroup(apiVersion);
  const w = WORKLOADS[kind];
  if (w !== undefined && w.groups.includes(group)) return [{ ...common, path: [...base, ...w.template], template: true, jobPods: w.jobPods ?? false }];
  if (isKubernetesGroup(group) || kind === '') return [];
  const refused = REFUSED_GROUPS[group];
  if (refused !== undefined) {
    untemplated?.push({ ...common, path: base, reason: refused, refused: true });
    return [];
  }
  for (const g of GENERIC_TEMPLATES) {
    if (isPodTemplate(valueAt(value, g.path))) return [{ ...common, path: [...base, ...g.path], template: true, jobPods: g.jobPods }];
  }
  const near = GENERIC_TEMPLATES.find((g) => valueAt(value, g.path) !== undefined);
  untemplated?.push({
    ...common,
    path: base,
    refused: false,
    reason:
      near === undefined
        ? 'no pod template at spec.template or spec.jobTemplate.spec.template'
        : `${dottedPath(near.path)} is not a pod template (no spec.containers list)`,
  });
  return [];
}

/** "Deployment shop/web", "Pod web-*". */
export function targetLabel(t: Pick<PodTarget, 'kind' | 'name' | 'generateName' | 'namespace'>): string {
  const name = t.name ?? (t.generateName !== undefined ? `${t.generateName}*` : '<unnamed>');
  return `${t.kind || '<no kind>'} ${t.namespace !== undefined ? `${t.namespace}/` : ''}${name}`;
}

/** "spec.template.spec.containers[0]" from a path. */
export function dottedPath(path: Path): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (!/^[A-Za-z_][\w-]*$/.test(key)) out += `[${JSON.stringify(key)}]`;
    else out += out === '' ? key : `.${key}`;
  }
  return out;
}
