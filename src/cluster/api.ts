/**
 * Small helpers over @kubernetes/client-node 2.x: per-request timeouts and
 * cancellation (the generated clients have none: a hung API server would hang
 * the caller forever), extra headers, and error descriptions without secrets.
 */
import { Observable, PatchStrategy } from '@kubernetes/client-node';
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

export { backoffDelay, describeApiError, statusOf } from './api-errors.ts';
