/**
 * A list+watch cache of one resource, trimmed to what its user reads: the one
 * home of the informer machinery (the Node informer, node-informer.ts, and the
 * agent's Service and EndpointSlice informers are built on it). client-node's
 * ListWatch does list-then-watch from the list's resourceVersion and relists on
 * 410 Gone; this adds what client-node 2.x leaves to its users:
 *
 * - restart after errors, with backoff (ListWatch stops on any error but 410 and
 *   its own idle timeout: a refused connection, a 5xx, a dropped stream);
 * - chunked lists (`limit`/`continue`, restarted whole when a continue token
 *   expires) with a deadline on every page (a hung API server must not hang the
 *   informer);
 * - every object trimmed as it arrives, from lists and watch events alike;
 * - optionally an Accept header on lists and watches (e.g. metadata-only
 *   transfer, `as=PartialObjectMetadata`, with plain JSON as the fallback);
 * - watch bookmarks (`allowWatchBookmarks`) and a server-side `timeoutSeconds`,
 *   as client-go's reflector does, so that reconnects resume from a recent
 *   resourceVersion instead of relisting; and a client-side idle deadline above
 *   the bookmark period;
 * - `status()`: synced, and since when it has been failing (a cache that has not
 *   been able to follow the API server for a while is no longer current).
 */
import { KubeConfig, ListWatch, V1ListMeta, Watch } from '@kubernetes/client-node';
import type { ConfigurationOptions, KubernetesListObject, KubernetesObject, RequestContext } from '@kubernetes/client-node';
import { backoffDelay, describeApiError, requestOptions, statusOf } from './api.ts';
import { defaultLogLines, listAllPages } from './informer-common.ts';
import type { InformerLogLines, InformerOptions, ListPage, ResourceInformerStatus } from './informer-common.ts';

export type { InformerLogLines, ListPage, ResourceInformerStatus } from './informer-common.ts';


export interface ResourceInformerOptions<T extends KubernetesObject> extends InformerOptions<T, KubeConfig> {
  /** One list page (a generated client's list call). */
  readonly listPage: (params: { limit: number | undefined; _continue: string | undefined }, options: ConfigurationOptions) => Promise<ListPage>;
  /** Accept headers of the list pages and of the watch (default: the generated client's and Watch's). */
  readonly accept?: { readonly list: string; readonly watch: string };
}

/** KubeConfig for the watch: same cluster and credentials, plus an Accept header. */
class AcceptingKubeConfig extends KubeConfig {
  readonly #base: KubeConfig;
  readonly #accept: string;
  constructor(base: KubeConfig, accept: string) {
    super();
    this.#base = base;
    this.#accept = accept;
  }
  override getCurrentCluster(): ReturnType<KubeConfig['getCurrentCluster']> {
    return this.#base.getCurrentCluster();
  }
  override async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
    await this.#base.applySecurityAuthentication(ctx);
    ctx.setHeaderParam('Accept', this.#accept);
  }
}

type WatchCallback = (phase: string, obj: unknown, raw?: unknown) => void;

interface WatchHooks {
  readonly timeoutSeconds: () => number;
  readonly stopped: () => boolean;
  readonly trim: (obj: unknown) => KubernetesObject | undefined;
  /** The watch's response arrived with 200: the cache follows the server again. */
  readonly connected: () => void;
}

/** client-node's Watch with bookmarks, a server-side timeout, trimming, a stop switch and a "connected" signal. */
class TrimmingWatch extends Watch {
  readonly #o: WatchHooks;
  constructor(kc: KubeConfig, idleTimeoutMs: number, o: WatchHooks) {
    super(kc);
    // Watch's idle deadline (30 s in 2.0) would cut quiet watches before the API
    // server's once-a-minute bookmark arrives. It is private in the typings.
    Reflect.set(this, 'requestTimeoutMs', idleTimeoutMs);
    this.#o = o;
  }
  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.#o.stopped()) {
      // ListWatch starts a watch after a list that finished after stop(): refuse it.
      const controller = new AbortController();
      queueMicrotask(() => done(new Error('informer stopped')));
      return controller;
    }
    let ended = false;
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.#o.timeoutSeconds() };
    const controller = await super.watch(
      path,
      params,
      (phase, obj, raw) => {
        if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') {
          const trimmed = this.#o.trim(obj);
          if (trimmed !== undefined) callback(phase, trimmed, raw);
        } else {
          callback(phase, obj, raw);
        }
      },
      (err) => {
        ended = true;
        done(err);
      },
    );
    // stop() cannot abort a watch still waiting for its response headers (ListWatch
    // holds no controller yet): end it as soon as it is there.
    if (this.#o.stopped()) controller.abort();
    // The response came with 200 and the stream is open: the cache follows the server again.
    else if (!ended) this.#o.connected();
    return controller;
  }
}

export class ResourceInformer<T extends KubernetesObject> {
  readonly synced: Promise<void>;
  readonly #o: ResourceInformerOptions<T> & { pageSize: number; requestTimeoutMs: number; backoff: { initialMs: number; maxMs: number } };
  readonly #lines: InformerLogLines;
  readonly #informer: ListWatch<T>;
  readonly #abort = new AbortController();
  #markSynced!: () => void;
  #synced = false;
  #stopped = false;
  #started = false;
  #failures = 0;
  #failingSince: number | undefined;
  #lastError: string | undefined;
  #restartTimer: NodeJS.Timeout | undefined;

  constructor(options: ResourceInformerOptions<T>) {
    this.#o = { pageSize: 500, requestTimeoutMs: 30_000, ...options, backoff: options.backoff ?? { initialMs: 1000, maxMs: 30_000 } };
    this.#lines = options.logLines ?? defaultLogLines(options.resource);
    this.synced = new Promise((resolve) => {
      this.#markSynced = resolve;
    });
    const { accept } = options;
    const kc = accept === undefined ? options.kubeConfig : new AcceptingKubeConfig(options.kubeConfig, accept.watch);
    const watch = new TrimmingWatch(kc, options.watchIdleTimeoutMs ?? 90_000, {
      timeoutSeconds: options.watchTimeoutSeconds ?? (() => 300 + Math.floor(Math.random() * 300)),
      stopped: () => this.#stopped,
      trim: (obj) => options.trim(obj),
      connected: () => this.#healthy(),
    });
    this.#informer = new ListWatch<T>(options.path, watch, () => this.#list(), false, undefined, undefined, {
      // ListWatch's own reconnect delay (up to 30 s): cut short by stop(), and never keeping the process alive.
      delayFn: (ms) => this.#delay(ms),
    });
    const { onUpsert, onRemove, onChange } = options;
    const changed = (obj: T, call: ((obj: T) => void) | undefined): void => {
      this.#healthy();
      call?.(obj);
      onChange?.();
    };
    this.#informer.on('add', (obj) => changed(obj, onUpsert));
    this.#informer.on('update', (obj) => changed(obj, onUpsert));
    this.#informer.on('delete', (obj) => changed(obj, onRemove));
    this.#informer.on('error', (err: unknown) => this.#onError(err));
  }

  /** The cached objects (trimmed). */
  list(): readonly T[] {
    return this.#informer.list();
  }

  status(): ResourceInformerStatus {
    return {
      synced: this.#synced,
      objects: this.#informer.list().length,
      failures: this.#failures,
      lastError: this.#lastError,
      failingSince: this.#failingSince,
    };
  }

  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#run();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    this.#abort.abort();
    await this.#informer.stop();
  }

  #delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      this.#abort.signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }

  #run(): void {
    this.#informer.start().catch((err: unknown) => this.#onError(err));
  }

  /** One full list, page by page, trimmed as it arrives. */
  async #list(): Promise<KubernetesListObject<T>> {
    const accept = this.#o.accept === undefined ? {} : { headers: { Accept: this.#o.accept.list } };
    const listed = await listAllPages<T>({
      pageSize: this.#o.pageSize,
      readPage: async (limit, cont) => {
        const page = await this.#o.listPage(
          { limit, _continue: cont },
          requestOptions({ timeoutMs: this.#o.requestTimeoutMs, signal: this.#abort.signal, ...accept }),
        );
        return { items: page.items, resourceVersion: page.metadata?.resourceVersion, continue: page.metadata?._continue };
      },
      trim: (obj) => this.#o.trim(obj),
      stopped: () => this.#stopped,
      onContinueExpired: () => this.#o.log.info({ ...this.#lines.fields }, this.#lines.continueExpired),
    });
    if (listed === undefined) throw new Error('informer stopped');
    const { items, resourceVersion } = listed;
    // ListWatch applies the items right after this promise settles, before any timer runs.
    setImmediate(() => this.#onListed(items.length));
    const metadata = new V1ListMeta();
    metadata.resourceVersion = resourceVersion;
    return { metadata, items };
  }

  #onListed(count: number): void {
    this.#healthy();
    this.#o.onChange?.();
    const fields = { ...this.#lines.fields, [this.#lines.countField]: count };
    if (!this.#synced) {
      this.#synced = true;
      this.#o.log.info(fields, this.#lines.synced);
      this.#markSynced();
    } else {
      this.#o.log.debug(fields, this.#lines.relisted);
    }
  }

  #healthy(): void {
    if (this.#failures > 0) {
      this.#o.log.info({ ...this.#lines.fields, failures: this.#failures }, this.#lines.recovered);
      this.#failures = 0;
      this.#failingSince = undefined;
      this.#lastError = undefined;
    }
  }

  #onError(err: unknown): void {
    if (this.#stopped) return; // stop() aborts the watch, which reports an AbortError
    this.#failures++;
    this.#failingSince ??= Date.now();
    this.#lastError = describeApiError(err);
    const delay = backoffDelay(this.#failures, this.#o.backoff.initialMs, this.#o.backoff.maxMs);
    const fields = { ...this.#lines.fields, problem: this.#lastError, retryInMs: delay, failures: this.#failures };
    if (this.#failures === 1) {
      const hint = statusOf(err) === 403 && this.#o.forbiddenHint !== undefined ? `; ${this.#o.forbiddenHint}` : '';
      this.#o.log.warn(fields, `${this.#lines.interrupted}${hint}; ${this.#lines.meanwhile}`);
    } else {
      this.#o.log.debug(fields, this.#lines.stillFailing);
    }
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (!this.#stopped) this.#run();
    }, delay);
    this.#restartTimer.unref();
  }
}
