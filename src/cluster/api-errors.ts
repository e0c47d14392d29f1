/**
 * The Kubernetes API's errors and retry delays, with no client library: shared by
 * the client-node helpers (api.ts) and the agent's own client (lean-api.ts).
 * A failed call is client-node's ApiException or the agent's ApiStatusError: both
 * carry the HTTP status as `code` and the response as `body`.
 */

/** ApiException (client-node) or ApiStatusError (lean-api.ts): an HTTP status and its body. */
function isStatusError(error: unknown): error is Error & { code: number; body: unknown } {
  return error instanceof Error && typeof (error as { code?: unknown }).code === 'number' && 'body' in error;
}

/** The HTTP status of a failed call (ApiException or a watch error), if there was one. */
export function statusOf(error: unknown): number | undefined {
  if (isStatusError(error)) return error.code;
  if (typeof error === 'object' && error !== null) {
    const e = error as { statusCode?: unknown; code?: unknown };
    if (typeof e.statusCode === 'number') return e.statusCode;
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

/** One short line: "HTTP 403: nodes is forbidden: …", "connect ECONNREFUSED 127.0.0.1:6443", "timed out". */
export function describeApiError(error: unknown): string {
  if (isStatusError(error)) {
    const message = statusMessage(error.body);
    return clip(`HTTP ${error.code}${message ? `: ${message}` : ''}`);
  }
  if (error instanceof Error) {
    if (error.name === 'TimeoutError') return 'timed out';
    if (error.name === 'AbortError') return 'aborted';
    const cause = (error as { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as { code?: unknown }).code;
      return clip(typeof code === 'string' ? `${cause.message} (${code})` : cause.message);
    }
    const status = statusOf(error);
    return clip(status !== undefined ? `HTTP ${status}: ${error.message}` : error.message);
  }
  return clip(String(error));
}

/** The message of a Kubernetes Status body (a string or an object). */
function statusMessage(body: unknown): string | undefined {
  let b: unknown = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body.trim().slice(0, 200) || undefined;
    }
  }
  if (typeof b === 'object' && b !== null && typeof (b as { message?: unknown }).message === 'string') {
    return (b as { message: string }).message;
  }
  return undefined;
}

function clip(s: string): string {
  return s.length > 300 ? `${s.slice(0, 299)}…` : s;
}

/** Exponential backoff with ±20% jitter: attempt 1 → initial, doubling up to max. */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.max(0, Math.min(attempt - 1, 30)));
  return Math.round(base * (0.8 + 0.4 * random()));
}
