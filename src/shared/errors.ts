/**
 * The error table: every error a user can see has a stable code, an HTTP status
 * (where it travels over HTTP) and a message template saying what was wrong,
 * with what value, and what is accepted.
 */

export const ErrorCode = {
  malformedReview: 'MALFORMED_REVIEW',
  invalidJson: 'INVALID_JSON',
  bodyTooLarge: 'BODY_TOO_LARGE',
  unsupportedMediaType: 'UNSUPPORTED_MEDIA_TYPE',
  notFound: 'NOT_FOUND',
  methodNotAllowed: 'METHOD_NOT_ALLOWED',
  requestTimeout: 'REQUEST_TIMEOUT',
  overloaded: 'OVERLOADED',
  internal: 'INTERNAL',
  invalidFlag: 'INVALID_FLAG',
  unknownFlag: 'UNKNOWN_FLAG',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

interface ErrorSpec {
  readonly status: number;
  readonly message: (detail: string) => string;
}

export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = {
  MALFORMED_REVIEW: { status: 400, message: (d) => `malformed AdmissionReview: ${d}; expected an admission.k8s.io/v1 AdmissionReview with a request` },
  INVALID_JSON: { status: 400, message: (d) => `request body is not valid JSON: ${d}` },
  BODY_TOO_LARGE: { status: 413, message: (d) => `request body is larger than ${d}` },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: (d) => `unsupported content type ${d}; expected application/json` },
  NOT_FOUND: { status: 404, message: (d) => `no route ${d}; the webhook serves POST /mutate, GET /healthz and GET /readyz` },
  METHOD_NOT_ALLOWED: { status: 405, message: (d) => `method not allowed: ${d}` },
  REQUEST_TIMEOUT: { status: 408, message: () => 'request took too long to arrive' },
  OVERLOADED: { status: 503, message: (d) => `too many request bytes in flight (${d}); retry shortly` },
  INTERNAL: { status: 500, message: () => 'internal error; see the webhook log' },
  INVALID_FLAG: { status: 0, message: (d) => d },
  UNKNOWN_FLAG: { status: 0, message: (d) => d },
};

/** The JSON body of every HTTP error the webhook returns. */
export interface ErrorBody {
  readonly code: ErrorCode;
  readonly message: string;
}

export function errorBody(code: ErrorCode, detail: string): { status: number; body: ErrorBody } {
  const spec = ERRORS[code];
  return { status: spec.status, body: { code, message: spec.message(detail) } };
}

/** A configuration or usage error: the CLI prints the message and exits 2. */
export class UsageError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'UsageError';
    this.code = code;
  }
}
