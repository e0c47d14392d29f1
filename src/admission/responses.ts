/** Small constructors for conformant AdmissionReview responses. */
import { MAX_WARNING_LENGTH } from '../core/annotations.ts';
import type { Operation } from '../core/patch.ts';
import { REVIEW_API_VERSION, REVIEW_KIND } from './review.ts';
import type { AdmissionResponse, AdmissionReviewResponse } from './review.ts';

const MAX_WARNINGS = 10;

export function review(response: AdmissionResponse): AdmissionReviewResponse {
  return { apiVersion: REVIEW_API_VERSION, kind: REVIEW_KIND, response };
}

export function allowed(uid: string, warnings: readonly string[] = []): AdmissionReviewResponse {
  return review(withWarnings({ uid, allowed: true }, warnings));
}

export function patched(uid: string, ops: readonly Operation[], warnings: readonly string[] = []): AdmissionReviewResponse {
  const patch = Buffer.from(JSON.stringify(ops)).toString('base64');
  return review(withWarnings({ uid, allowed: true, patchType: 'JSONPatch', patch }, warnings));
}

export function denied(uid: string, message: string, warnings: readonly string[] = []): AdmissionReviewResponse {
  return review(withWarnings({ uid, allowed: false, status: { code: 400, reason: 'BadRequest', message } }, warnings));
}

function withWarnings(r: AdmissionResponse, warnings: readonly string[]): AdmissionResponse {
  if (warnings.length === 0) return r;
  return { ...r, warnings: boundWarnings(warnings) };
}

/** At most ten warnings, each under 120 characters and free of control characters. */
export function boundWarnings(warnings: readonly string[]): string[] {
  const out = warnings.slice(0, MAX_WARNINGS).map(shorten);
  if (warnings.length > MAX_WARNINGS) out[MAX_WARNINGS - 1] = `…and ${warnings.length - MAX_WARNINGS + 1} more warnings`;
  return out;
}

function shorten(w: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = w.replace(/[\u0000-\u001f\u007f]/g, ' ');
  const chars = Array.from(clean);
  return chars.length <= MAX_WARNING_LENGTH ? clean : `${chars.slice(0, MAX_WARNING_LENGTH - 1).join('')}…`;
}
