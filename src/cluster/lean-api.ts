/**
 * A small Kubernetes API client over node:http(s), for the agent: JSON requests
 * (get, list pages, merge patch) and watch streams, nothing else. Importing
 * @kubernetes/client-node costs about 80 MiB of RSS (its KubeConfig pulls in every
 * generated API and model, ~980 modules), more than the rest of the agent; the
 * agent reads two resources and patches one Node, so it does this itself. The
 * webhook keeps client-node.
 *
 * Credentials come from `ApiCredentials`: client-node's KubeConfig has that shape
 * (tests and fallbacks pass one) and so does lean-kubeconfig.ts.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { RequestOptions } from 'node:https';

/** What a request needs of a kubeconfig: the server, and TLS options and headers (Authorization) per request. */
export interface ApiCredentials {
  getCurrentCluster(): { readonly server: string } | null;
  applyToHTTPSOptions(opts: RequestOptions): Promise<void>;
}

/** A response with a status other than 2xx; `body` is the parsed Status when there is one. */
export class ApiStatusError extends Error {
  readonly code: number;
  readonly body: unknown;
  constructor(code: number, body: unknown) {
    const message = typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string' ? (body as { message: string }).message : undefined;
    super(`HTTP ${code}${message === undefined ? '' : `: ${message}`}`);
    this.name = 'ApiStatusError';
    this.code = code;
    this.body = body;
  }
}

export type Query = Readonly<Record<string, string | number | boolean | undefined>>;

export interface CallOptions {
  readonly query?: Query;
  /** Sent as JSON. */
  readonly body?: unknown;
  readonly contentType?: string;
  readonly accept?: string;
  /** Whole-request deadline (headers and body). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
}

export interface WatchOptions {
  readonly query?: Query;
  readonly accept?: string;
  /** Abort when nothing (not even a bookmark) arrives for this long: rejects with a TimeoutError. */
  readonly idleTimeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** The response came with 200: the stream is open. */
  readonly onConnected?: () => void;
  /** One event: `type` ADDED, MODIFIED, DELETED, BOOKMARK or ERROR. */
  readonly onEvent: (type: string, object: unknown) => void;
}

/** Responses larger than this are refused (a list page of 500 objects is a few MiB). */
const MAX_BODY_BYTES = 256 * 1024 * 1024;

function urlOf(server: string, path: string, query: Query | undefined): URL {
  const url = new URL(server.replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  return url;
}

function parseBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export class ApiClient {
  readonly #creds: ApiCredentials;

  constructor(creds: ApiCredentials) {
    this.#creds = creds;
  }

  get server(): string {
    return this.#creds.getCurrentCluster()?.server ?? '';
  }

  /** One call; resolves with the parsed JSON body of a 2xx, rejects with ApiStatusError for any other status. */
  async json(method: string, path: string, o: CallOptions): Promise<unknown> {
    const timeout = AbortSignal.timeout(o.timeoutMs);
    const signal = o.signal === undefined ? timeout : AbortSignal.any([o.signal, timeout]);
    const body = o.body === undefined ? undefined : JSON.stringify(o.body);
    const headers: Record<string, string> = { Accept: o.accept ?? 'application/json' };
    if (body !== undefined) headers['Content-Type'] = o.contentType ?? 'application/json';
    const res = await this.#send(method, urlOf(this.server, path, o.query), headers, signal, body);
    const text = await readAll(res, signal);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw new ApiStatusError(status, parseBody(text));
    return JSON.parse(text) as unknown;
  }

  /**
   * One watch (`watch=true` is added): resolves when the server ends the stream,
   * rejects on a status other than 200 (ApiStatusError), a broken stream, the idle
   * deadline (an Error named TimeoutError) or the signal (AbortError).
   */
  async watch(path: string, o: WatchOptions): Promise<void> {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(o.signal?.reason);
    if (o.signal?.aborted === true) throw abortError();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    let timedOut = false;
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, o.idleTimeoutMs);
      idle.unref();
    };
    try {
      arm();
      const headers = { Accept: o.accept ?? 'application/json' };
      const res = await this.#send('GET', urlOf(this.server, path, { ...o.query, watch: true }), headers, controller.signal);
      if (res.statusCode !== 200) throw new ApiStatusError(res.statusCode ?? 0, parseBody(await readAll(res, controller.signal)));
      arm();
      o.onConnected?.();
      await new Promise<void>((resolve, reject) => {
        let rest = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          arm();
          const text = rest + chunk;
          let start = 0;
          for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
            const line = text.slice(start, nl);
            start = nl + 1;
            if (line.trim() === '') continue;
            let event: { type?: unknown; object?: unknown };
            try {
              event = JSON.parse(line) as { type?: unknown; object?: unknown };
            } catch {
              continue; // as client-node's Watch: a line that is not JSON is skipped
            }
            if (typeof event.type === 'string') o.onEvent(event.type, event.object);
          }
          rest = text.slice(start);
          if (rest.length > MAX_BODY_BYTES) res.destroy(new Error('watch event too large'));
        });
        res.once('end', () => resolve());
        res.once('error', reject);
        res.once('close', () => (res.complete ? resolve() : reject(controller.signal.aborted ? abortError() : new Error('watch stream closed early'))));
      });
    } catch (error) {
      if (timedOut) throw Object.assign(new Error(`watch sent nothing for ${o.idleTimeoutMs} ms`), { name: 'TimeoutError' });
      if (controller.signal.aborted) throw abortError();
      throw error;
    } finally {
      clearTimeout(idle);
      o.signal?.removeEventListener('abort', onAbort);
      controller.abort();
    }
  }

  async #send(method: string, url: URL, headers: Record<string, string>, signal: AbortSignal, body?: string): Promise<IncomingMessage> {
    const opts: RequestOptions = { method, headers: { ...headers } };
    if (body !== undefined) (opts.headers as Record<string, string>)['Content-Length'] = String(Buffer.byteLength(body));
    await this.#creds.applyToHTTPSOptions(opts);
    signal.throwIfAborted();
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { ...opts, signal }, resolve);
      req.once('error', (error) => reject(signal.aborted ? (signal.reason instanceof Error && signal.reason.name === 'TimeoutError' ? signal.reason : abortError()) : error));
      req.end(body);
    });
  }
}

function abortError(): Error {
  return Object.assign(new Error('aborted'), { name: 'AbortError' });
}

/** The whole body as text (bounded); the signal still applies. */
function readAll(res: IncomingMessage, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onAbort = (): void => {
      res.destroy();
      reject(signal.reason instanceof Error && signal.reason.name === 'TimeoutError' ? signal.reason : abortError());
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    res.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) res.destroy(new Error(`response over ${MAX_BODY_BYTES} bytes`));
      else chunks.push(c);
    });
    res.once('end', () => {
      signal.removeEventListener('abort', onAbort);
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    res.once('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      reject(e);
    });
  });
}
