/**
 * Where the pods are in a manifest: a Pod is one itself; the workload kinds
 * carry a pod template at a fixed path; a List holds objects. Everything else
 * has none and passes through untouched.
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
 * typed lists (DeploymentList…) without apiVersion/kind take the list's.
 */
export function findTargets(value: unknown, base: Path = [], inherited?: { apiVersion: string; kind: string }): PodTarget[] {
  if (!isRecord(value)) return [];
  const apiVersion = str(value['apiVersion']) ?? inherited?.apiVersion ?? '';
  const kind = str(value['kind']) ?? inherited?.kind ?? '';
  const items = value['items'];
  if ((kind === 'List' || kind.endsWith('List')) && Array.isArray(items)) {
    const itemType = kind === 'List' ? undefined : { apiVersion, kind: kind.slice(0, -'List'.length) };
    return items.flatMap((item, i) => findTargets(item, [...base, 'items', i], itemType));
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
  const w = WORKLOADS[kind];
  if (w === undefined || !w.groups.includes(apiGroup(apiVersion))) return [];
  return [{ ...common, path: [...base, ...w.template], template: true, jobPods: w.jobPods ?? false }];
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
