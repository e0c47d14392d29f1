/**
 * The fixed AdmissionReview answer of the reference servers (bench/ceiling.ts and
 * bench/fastify-floor.ts): one text, so both send the same bytes. Imports nothing,
 * so the ceiling stays bare.
 */
export const FIXED_ANSWER = JSON.stringify({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  response: { uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true },
});
