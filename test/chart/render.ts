/**
 * Chart test support: render the chart with the real helm, parse the objects, and
 * the checks several test files share (label selectors, Pod Security). The
 * Kubernetes schema validation is in validate.ts (its imports are slow to load).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CACHE_DIR, helmPath, REPO_ROOT, runHelmAsync } from '../../scripts/helm.ts';
import type { HelmOptions, HelmResult } from '../../scripts/helm.ts';

export const CHART = join(REPO_ROOT, 'charts/safe-termination');
export const CI_DIR = join(CHART, 'ci');

/** Every ci/*-values.yaml, by mode name (`cert-manager` for ci/cert-manager-values.yaml). */
export function ciModes(): Map<string, string> {
  const modes = new Map<string, string>();
  for (const f of readdirSync(CI_DIR).sort()) {
    const m = /^(.+)-values\.yaml$/.exec(f);
    if (m) modes.set(m[1]!, join(CI_DIR, f));
  }
  return modes;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: any;
}

export interface RenderOptions {
  readonly valuesFiles?: readonly string[];
  /** `--set` expressions. */
  readonly set?: readonly string[];
  /** Values as YAML text (written to a temp file). */
  readonly values?: string;
  readonly release?: string;
  readonly namespace?: string;
  readonly extraArgs?: readonly string[];
  readonly helm?: HelmOptions;
}

export const RELEASE = 'safe-termination';
export const NAMESPACE = 'safe-termination';

/** Every file of the chart, recursively, sorted (what a render depends on). */
function chartFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...chartFiles(path));
    else out.push(path);
  }
  return out;
}

let chartDigest: string | undefined;
/** Digest of the chart's files and the helm binary: a render is a function of these and its arguments. */
function chartKey(): string {
  if (chartDigest === undefined) {
    const h = createHash('sha256');
    h.update(helmPath());
    for (const f of chartFiles(CHART)) h.update(f).update('\0').update(readFileSync(f)).update('\0');
    chartDigest = h.digest('hex');
  }
  return chartDigest;
}

const RENDER_CACHE = join(CACHE_DIR, '..', 'chart-renders');
const memo = new Map<string, Promise<HelmResult>>();

/**
 * `helm template` with these values; the raw result. Renders without a cluster are
 * cached (in memory and on disk, keyed by the chart's content, the helm binary and
 * the arguments), since the test files render the same modes many times; `fresh`
 * forces a new render (generate mode makes a new CA each time).
 */
export async function template(o: RenderOptions & { fresh?: boolean } = {}): Promise<HelmResult> {
  const args = ['template', o.release ?? RELEASE, CHART, '--namespace', o.namespace ?? NAMESPACE];
  for (const f of o.valuesFiles ?? []) args.push('--values', f);
  for (const s of o.set ?? []) args.push('--set', s);
  args.push(...(o.extraArgs ?? []));
  const cacheable = o.fresh !== true && o.helm?.kubeconfig === undefined;
  if (!cacheable) return helmTemplate(args, o);
  const h = createHash('sha256').update(chartKey()).update(JSON.stringify(args)).update(o.values ?? '');
  for (const f of o.valuesFiles ?? []) h.update(readFileSync(f));
  const key = h.digest('hex');
  let result = memo.get(key);
  if (result === undefined) {
    result = cachedRender(key, () => helmTemplate(args, o));
    memo.set(key, result);
  }
  return result;
}

let pruned = false;
/** Drop cached renders of other chart contents (they can only be stale). */
function pruneRenderCache(prefix: string): void {
  if (pruned) return;
  pruned = true;
  if (!existsSync(RENDER_CACHE)) return;
  for (const f of readdirSync(RENDER_CACHE)) if (!f.startsWith(prefix)) rmSync(join(RENDER_CACHE, f), { force: true });
}

async function cachedRender(key: string, renderNow: () => Promise<HelmResult>): Promise<HelmResult> {
  const prefix = `${chartKey().slice(0, 16)}-`;
  pruneRenderCache(prefix);
  const file = join(RENDER_CACHE, `${prefix}${key}.json`);
  if (existsSync(file)) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as HelmResult;
    } catch {
      // a torn or foreign file: render again
    }
  }
  const result = await renderNow();
  mkdirSync(RENDER_CACHE, { recursive: true });
  const temp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(temp, JSON.stringify(result));
  renameSync(temp, file);
  return result;
}

async function helmTemplate(args: string[], o: RenderOptions): Promise<HelmResult> {
  let dir: string | undefined;
  const all = [...args];
  if (o.values !== undefined) {
    dir = mkdtempSync(join(tmpdir(), 'st-chart-'));
    const file = join(dir, 'values.yaml');
    writeFileSync(file, o.values);
    all.push('--values', file);
  }
  try {
    return await runHelmAsync(all, o.helm);
  } finally {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  }
}

/** The rendered objects; throws with helm's message when the render fails. */
export async function render(o: RenderOptions & { fresh?: boolean } = {}): Promise<K8sObject[]> {
  const r = await template(o);
  if (r.status !== 0) throw new Error(`helm template failed (${r.status}): ${r.stderr.trim()}`);
  return parseObjects(r.stdout);
}

export function parseObjects(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) continue;
    out.push(value as K8sObject);
  }
  return out;
}

export function ofKind(objects: readonly K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

/** The only object of this kind (and name); throws when not exactly one. */
export function one(objects: readonly K8sObject[], kind: string, name?: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}

export function countByKind(objects: readonly K8sObject[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of objects) counts[o.kind] = (counts[o.kind] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)));
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] }>;
}

/** Kubernetes label selector semantics (apimachinery labels.Selector). */
export function selects(selector: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(value!)) return false;
        break;
      case 'NotIn':
        if (has && values.includes(value!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        throw new Error(`unknown operator ${e.operator}`);
    }
  }
  return true;
}

/** The pod template of a workload. */
export function podSpecOf(o: K8sObject): any {
  return o.spec.template.spec;
}

const ALLOWED_VOLUMES = new Set(['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']);

/**
 * Violations of the Pod Security Standard "restricted" (and so "baseline"), by the
 * controls of https://kubernetes.io/docs/concepts/security/pod-security-standards/,
 * plus this project's bar: a read-only root filesystem.
 */
export function restrictedProblems(pod: any): string[] {
  const out: string[] = [];
  if (pod.hostNetwork === true) out.push('hostNetwork');
  if (pod.hostPID === true) out.push('hostPID');
  if (pod.hostIPC === true) out.push('hostIPC');
  for (const v of pod.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (type === undefined || !ALLOWED_VOLUMES.has(type)) out.push(`volume ${v.name}: ${type} volumes are not allowed`);
  }
  const podSc = pod.securityContext ?? {};
  if (podSc.runAsUser === 0) out.push('pod runAsUser 0');
  for (const s of podSc.sysctls ?? []) out.push(`pod sysctl ${s.name}`);
  if (podSc.seLinuxOptions?.type !== undefined && !['container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t'].includes(podSc.seLinuxOptions.type)) out.push('pod seLinux type');
  if (podSc.appArmorProfile?.type === 'Unconfined') out.push('pod appArmor Unconfined');
  const containers = [...(pod.initContainers ?? []), ...(pod.containers ?? []), ...(pod.ephemeralContainers ?? [])];
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    const where = `container ${c.name}`;
    if (sc.privileged === true) out.push(`${where}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${where}: allowPrivilegeEscalation is not false`);
    if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) out.push(`${where}: runAsNonRoot is not true`);
    if ((sc.runAsUser ?? podSc.runAsUser) === 0) out.push(`${where}: runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? podSc.seccompProfile?.type;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(`${where}: seccompProfile is ${String(seccomp)}`);
    const drop: string[] = sc.capabilities?.drop ?? [];
    if (!drop.includes('ALL')) out.push(`${where}: capabilities do not drop ALL`);
    for (const cap of sc.capabilities?.add ?? []) if (cap !== 'NET_BIND_SERVICE') out.push(`${where}: adds capability ${cap}`);
    if (sc.procMount !== undefined && sc.procMount !== 'Default') out.push(`${where}: procMount ${sc.procMount}`);
    if (sc.appArmorProfile?.type === 'Unconfined') out.push(`${where}: appArmor Unconfined`);
    if (sc.readOnlyRootFilesystem !== true) out.push(`${where}: root filesystem is not read-only`);
    for (const p of c.ports ?? []) if (p.hostPort !== undefined && pod.hostNetwork !== true) out.push(`${where}: hostPort ${p.hostPort}`);
  }
  return out;
}

/** `fn` over `items`, at most `limit` at a time (the machine has few cores), in order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
