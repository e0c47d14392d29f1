/** The AdmissionReview v1 wire format: request validation and response shape. */
import { z } from 'zod';

export const REVIEW_API_VERSION = 'admission.k8s.io/v1';
export const REVIEW_KIND = 'AdmissionReview';

const groupVersionKind = z.object({ group: z.string(), version: z.string(), kind: z.string() });

export const admissionRequestSchema = z.object({
  uid: z.string().min(1).max(256),
  kind: groupVersionKind,
  subResource: z.string().optional(),
  operation: z.string(),
  namespace: z.string().optional(),
  name: z.string().optional(),
  object: z.unknown(),
  dryRun: z.boolean().optional(),
});

export const admissionReviewSchema = z.object({
  apiVersion: z.literal(REVIEW_API_VERSION),
  kind: z.literal(REVIEW_KIND),
  request: admissionRequestSchema,
});

export type AdmissionRequest = z.infer<typeof admissionRequestSchema>;

export interface AdmissionStatus {
  readonly code: number;
  readonly reason: string;
  readonly message: string;
}

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly patchType?: 'JSONPatch';
  readonly patch?: string;
  readonly status?: AdmissionStatus;
  readonly warnings?: readonly string[];
}

export interface AdmissionReviewResponse {
  readonly apiVersion: typeof REVIEW_API_VERSION;
  readonly kind: typeof REVIEW_KIND;
  readonly response: AdmissionResponse;
}
