/**
 * The Node annotations the agent writes and the webhook reads:
 * `conntrack.safe-termination.io/<key>` (integer seconds) and `…/observed-at` (RFC 3339).
 */
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import type { ConntrackKey, PartialConntrackValues } from '../core/conntrack.ts';
import { NODE_ANNOTATION_PREFIX } from '../core/names.ts';

export const OBSERVED_AT_ANNOTATION = `${NODE_ANNOTATION_PREFIX}observed-at`;

export function nodeAnnotationKey(key: ConntrackKey): string {
  return `${NODE_ANNOTATION_PREFIX}${key}`;
}

export const NODE_ANNOTATION_KEYS: readonly string[] = [...CONNTRACK_KEYS.map(nodeAnnotationKey), OBSERVED_AT_ANNOTATION];

/** Largest value accepted from an annotation: int32 seconds, as sysctls hold. */
const MAX_SECONDS = 2_147_483_647;

/** "35" → 35; anything but a plain non-negative integer → undefined. */
export function parseSecondsAnnotation(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_SECONDS ? n : undefined;
}

/** The conntrack values a Node's annotations carry; keys absent or malformed are left out. */
export function conntrackFromAnnotations(annotations: Readonly<Record<string, string>> | null | undefined): PartialConntrackValues {
  const values: PartialConntrackValues = {};
  if (annotations == null) return values;
  for (const key of CONNTRACK_KEYS) {
    const v = parseSecondsAnnotation(annotations[nodeAnnotationKey(key)]);
    if (v !== undefined) values[key] = v;
  }
  return values;
}

/** Only our own annotations (the rest of a Node's annotations can be large: drop them early). */
export function ownAnnotations(annotations: Readonly<Record<string, string>> | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (annotations == null) return out;
  for (const key of NODE_ANNOTATION_KEYS) {
    const v = annotations[key];
    if (typeof v === 'string') out[key] = v;
  }
  return out;
}

/** RFC 3339 in UTC with whole seconds, as Kubernetes writes times: 2024-05-01T12:00:00Z. */
export function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The annotation values for a reading: integer seconds as strings, plus observed-at. */
export function annotationsFor(values: PartialConntrackValues, observedAt: Date): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of CONNTRACK_KEYS) {
    const v = values[key];
    if (v !== undefined) out[nodeAnnotationKey(key)] = String(v);
  }
  out[OBSERVED_AT_ANNOTATION] = rfc3339(observedAt);
  return out;
}
