/** Applying a webhook's answer to the reviewed pod, as the API server does. */
import fjp from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';

export interface ReviewAnswer {
  readonly uid: string;
  readonly allowed: boolean;
  readonly patchType?: string;
  readonly patch?: string;
  readonly status?: { code?: number; message?: string };
  readonly warnings?: string[];
}

export function decodePatch(answer: ReviewAnswer): Operation[] {
  if (answer.patch === undefined) return [];
  if (answer.patchType !== 'JSONPatch') throw new Error(`patchType ${String(answer.patchType)} is not JSONPatch`);
  return JSON.parse(Buffer.from(answer.patch, 'base64').toString('utf8')) as Operation[];
}

/** RFC 6902 application with validation; throws when any operation does not apply. */
export function applyOps<T>(doc: T, ops: readonly Operation[]): T {
  const copy = structuredClone(doc);
  if (ops.length === 0) return copy;
  const error = fjp.validate(ops as Operation[], copy);
  if (error) throw error;
  return fjp.applyPatch(copy, ops as Operation[], true, true).newDocument;
}

export function applyAnswer<T>(doc: T, answer: ReviewAnswer): T {
  return applyOps(doc, decodePatch(answer));
}
