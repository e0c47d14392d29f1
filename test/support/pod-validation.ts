/**
 * Checks that an object is a valid v1 Pod as the API server would accept it:
 * the Kubernetes OpenAPI schema (kubernetes-models), no unknown fields (the
 * field names of @kubernetes/client-node's generated models), and the lifecycle
 * rules of pod validation: one handler per hook, 1 ≤ sleep.seconds ≤ grace.
 */
import * as k8s from '@kubernetes/client-node';
import { Pod } from 'kubernetes-models/v1/Pod';

interface AttributeType {
  readonly baseName: string;
  readonly type: string;
}
type ModelClass = { attributeTypeMap?: readonly AttributeType[]; getAttributeTypeMap?: () => readonly AttributeType[] };

const models = k8s as unknown as Record<string, ModelClass | undefined>;

function attributes(type: string): readonly AttributeType[] | undefined {
  const m = models[type];
  return m?.getAttributeTypeMap?.() ?? m?.attributeTypeMap;
}

/** Unknown field paths in `value` read as client-node model `type` (e.g. "V1Pod"). */
export function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1] as string, `${path}/${i}`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object') for (const [k, v] of Object.entries(value)) unknownFields(v, map[1] as string, `${path}/${k}`, out);
    return;
  }
  const attrs = attributes(type);
  if (attrs === undefined || typeof value !== 'object' || Array.isArray(value)) return;
  const known = new Map(attrs.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    const t = known.get(k);
    if (t === undefined) out.push(`${path}/${k}: unknown field`);
    else unknownFields(v, t, `${path}/${k}`, out);
  }
}

function hookProblems(hook: unknown, path: string, grace: number, out: string[]): void {
  if (hook === undefined || hook === null) return;
  const h = hook as Record<string, unknown>;
  const handlers = ['exec', 'httpGet', 'tcpSocket', 'sleep'].filter((k) => h[k] !== undefined && h[k] !== null);
  if (handlers.length !== 1) out.push(`${path}: must specify exactly one handler, has ${handlers.length}`);
  const sleep = h['sleep'] as { seconds?: unknown } | undefined;
  if (sleep) {
    const s = sleep.seconds;
    if (typeof s !== 'number' || !Number.isInteger(s) || s < 1) out.push(`${path}/sleep/seconds: must be an integer ≥ 1`);
    else if (s > grace) out.push(`${path}/sleep/seconds: ${s} exceeds terminationGracePeriodSeconds ${grace}`);
  }
  const exec = h['exec'] as { command?: unknown } | undefined;
  if (exec && (!Array.isArray(exec.command) || exec.command.length === 0)) out.push(`${path}/exec/command: required`);
}

/** Problems with `pod` as a v1 Pod; empty when valid. */
export function podProblems(pod: unknown): string[] {
  const out: string[] = [];
  try {
    new Pod(pod as ConstructorParameters<typeof Pod>[0]).validate();
  } catch (e) {
    out.push(`schema: ${(e as Error).message}`);
  }
  unknownFields(pod, 'V1Pod', '', out);
  const spec = (pod as { spec?: Record<string, unknown> }).spec ?? {};
  const graceValue = spec['terminationGracePeriodSeconds'];
  const grace = typeof graceValue === 'number' ? graceValue : 30;
  const all = [
    ...((spec['containers'] as unknown[] | undefined) ?? []).map((c, i) => [c, `/spec/containers/${i}`] as const),
    ...((spec['initContainers'] as unknown[] | undefined) ?? []).map((c, i) => [c, `/spec/initContainers/${i}`] as const),
  ];
  for (const [c, path] of all) {
    const lifecycle = (c as { lifecycle?: { preStop?: unknown; postStart?: unknown } }).lifecycle;
    hookProblems(lifecycle?.preStop, `${path}/lifecycle/preStop`, grace, out);
    hookProblems(lifecycle?.postStart, `${path}/lifecycle/postStart`, Number.POSITIVE_INFINITY, out);
  }
  return out;
}
