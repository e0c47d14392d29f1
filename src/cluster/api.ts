/**
 * Small helpers over @kubernetes/client-node 2.x: per-request timeouts and
 * cancellation (the generated clients have none: a hung API server would hang
 * the caller forever), extra headers, and error descriptions without secrets.
 */
import { ApiException, Observable, PatchStrategy } from '@kubernetes/client-node';
import type { ConfigurationOptions, ObservableMiddleware, RequestContext, ResponseContext } from '@kubernetes/client-node';

export interface RequestOptions {
  /** Whole-request deadline (headers and body). */
  readonly timeoutMs: number;
  /** Aborts the request early (the owner stops). */
  readonly signal?: AbortSignal | undefined;
  readonly headers?: Readonly<Record<string, string>>;
}

/** ConfigurationOptions for one call of a generated API method. */
export function requestOptions(o: RequestOptions): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (ctx: RequestContext) => {
      const timeout = AbortSignal.timeout(o.timeoutMs);
      ctx.setSignal(o.signal === undefined ? timeout : AbortSignal.any([o.signal, timeout]));
      for (const [k, v] of Object.entries(o.headers ?? {})) ctx.setHeaderParam(k, v);
      return new Observable(Promise.resolve(ctx));
    },
    post: (res: ResponseContext) => new Observable(Promise.resolve(res)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

export const MERGE_PATCH_HEADERS = { 'Content-Type': PatchStrategy.MergePatch } as const;

/** The HTTP status of a failed call (ApiException or a watch error), if there was one. */
export function statusOf(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  if (typeof error === 'object' && error !== null) {
    const e = error as { statusCode?: unknown; code?: unknown };
    if (typeof e.statusCode === 'number') return e.statusCode;
    if (typeof e.code === 'number') return e.code;
  }
  return undefined;
}

/** One short line: "HTTP 403: nodes is forbidden: …", "connect ECONNREFUSED 127.0.0.1:6443", "timed out". */
export function describeApiError(error: unknown): string {
  if (error instanceof ApiException) {
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
