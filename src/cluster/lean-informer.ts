/**
 * The agent's list+watch cache of one resource, on lean-api.ts instead of
 * client-node (lean-api.ts says why). Same behaviour as ResourceInformer (which
 * the webhook keeps, on client-node's ListWatch):
 *
 * - list in pages (`limit`/`continue`; an expired continue token lists again in
 *   one piece), each page with a deadline; every object trimmed as it arrives;
 * - then watch from the list's resourceVersion with bookmarks and a server-side
 *   `timeoutSeconds`; a watch the server ends is resumed from the last
 *   resourceVersion seen (an event or a bookmark), not relisted (after a growing
 *   delay from the second that ended before any event); 410 Gone (a
 *   status or an ERROR event) relists; a watch silent past the idle deadline is
 *   resumed at once;
 * - a relist replaces the cache: objects missing from it are removed, new ones
 *   added, ones with another resourceVersion replaced (ListWatch's rule);
 * - any other failure: retried with backoff, resuming the watch when a
 *   resourceVersion is known; `status()` says since when it has been failing.
 */
import { backoffDelay, describeApiError, statusOf } from './api-errors.ts';
import { defaultLogLines, listAllPages } from './informer-common.ts';
import type { InformerLogLines, InformerOptions, ListPage, ResourceInformerStatus } from './informer-common.ts';
import { ApiClient } from './lean-api.ts';
import type { ApiCredentials } from './lean-api.ts';

export interface LeanObject {
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly resourceVersion?: string };
}

export type LeanInformerOptions<T extends LeanObject> = InformerOptions<T, ApiCredentials>;

const keyOf = (o: LeanObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

export class LeanInformer<T extends LeanObject> {
  readonly synced: Promise<void>;
  readonly #o: LeanInformerOptions<T> & { pageSize: number; requestTimeoutMs: number; watchIdleTimeoutMs: number; backoff: { initialMs: number; maxMs: number } };
  readonly #lines: InformerLogLines;
  readonly #api: ApiClient;
  readonly #abort = new AbortController();
  readonly #objects = new Map<string, T>();
  #resourceVersion = '';
  #markSynced!: () => void;
  #synced = false;
  #stopped = false;
  #started = false;
  #failures = 0;
  #failingSince: number | undefined;
  #lastError: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  /** Watches in a row that the server ended before any event: resumed after a growing delay (as ListWatch). */
  #quietEnds = 0;

  constructor(options: LeanInformerOptions<T>) {
    this.#o = { pageSize: 500, requestTimeoutMs: 30_000, watchIdleTimeoutMs: 90_000, ...options, backoff: options.backoff ?? { initialMs: 1000, maxMs: 30_000 } };
    this.#lines = options.logLines ?? defaultLogLines(options.resource);
    this.#api = new ApiClient(options.kubeConfig);
    this.synced = new Promise((resolve) => {
      this.#markSynced = resolve;
    });
  }

  list(): readonly T[] {
    return [...this.#objects.values()];
  }

  status(): ResourceInformerStatus {
    return { synced: this.#synced, objects: this.#objects.size, failures: this.#failures, lastError: this.#lastError, failingSince: this.#failingSince };
  }

  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    void this.#loop();
  }

  stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#wake?.();
    return Promise.resolve();
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      try {
        if (this.#resourceVersion === '') await this.#relist();
        if (this.#stopped) break;
        if (this.#quietEnds > 1) await this.#sleep(Math.min(1000 * 2 ** (this.#quietEnds - 2), 30_000));
        if (this.#stopped) break;
        await this.#watch();
      } catch (error) {
        if (this.#stopped) break;
        this.#quietEnds = 0;
        if (statusOf(error) === 410) {
          this.#resourceVersion = '';
          continue;
        }
        if ((error as { name?: unknown }).name === 'TimeoutError' && this.#resourceVersion !== '') continue; // idle watch: resume
        await this.#sleep(this.#failed(error));
      }
    }
  }

  /** One full list, page by page, then the cache replaced by it. */
  async #relist(): Promise<void> {
    const listed = await listAllPages<T>({
      pageSize: this.#o.pageSize,
      readPage: async (limit, cont) => {
        const page = (await this.#api.json('GET', this.#o.path, {
          query: { limit, continue: cont },
          timeoutMs: this.#o.requestTimeoutMs,
          signal: this.#abort.signal,
        })) as ListPage & { metadata?: { continue?: string } };
        return { items: page.items, resourceVersion: page.metadata?.resourceVersion, continue: page.metadata?.continue };
      },
      trim: (obj) => this.#o.trim(obj),
      stopped: () => this.#stopped,
      onContinueExpired: () => this.#o.log.info({ ...this.#lines.fields }, this.#lines.continueExpired),
    });
    if (listed === undefined) return;
    const { items, resourceVersion } = listed;
    const fresh = new Map(items.map((o) => [keyOf(o), o]));
    for (const [key, old] of this.#objects) {
      if (!fresh.has(key)) {
        this.#objects.delete(key);
        this.#o.onRemove?.(old);
      }
    }
    for (const obj of items) this.#put(obj);
    this.#resourceVersion = resourceVersion;
    this.#healthy();
    this.#o.onChange?.();
    const fields = { ...this.#lines.fields, [this.#lines.countField]: items.length };
    if (!this.#synced) {
      this.#synced = true;
      this.#o.log.info(fields, this.#lines.synced);
      this.#markSynced();
    } else {
      this.#o.log.debug(fields, this.#lines.relisted);
    }
  }

  /** Add or replace (when its resourceVersion differs); false when nothing changed. */
  #put(obj: T): boolean {
    const key = keyOf(obj);
    const found = this.#objects.get(key);
    if (found !== undefined && found.metadata.resourceVersion !== undefined && found.metadata.resourceVersion === obj.metadata.resourceVersion) return false;
    this.#objects.set(key, obj);
    this.#o.onUpsert?.(obj);
    return true;
  }

  async #watch(): Promise<void> {
    let gone = false;
    this.#quietEnds++;
    await this.#api.watch(this.#o.path, {
      query: {
        resourceVersion: this.#resourceVersion,
        allowWatchBookmarks: true,
        timeoutSeconds: (this.#o.watchTimeoutSeconds ?? (() => 300 + Math.floor(Math.random() * 300)))(),
      },
      idleTimeoutMs: this.#o.watchIdleTimeoutMs,
      signal: this.#abort.signal,
      onConnected: () => this.#healthy(),
      onEvent: (type, object) => {
        if (this.#stopped || gone) return;
        this.#quietEnds = 0;
        if (type === 'ERROR') {
          // A Status: 410 when the resourceVersion is too old.
          if ((object as { code?: unknown } | undefined)?.code === 410) gone = true;
          return;
        }
        const rv = (object as { metadata?: { resourceVersion?: unknown } } | undefined)?.metadata?.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
          const obj = this.#o.trim(object);
          if (obj !== undefined) {
            if (type === 'DELETED') {
              const key = keyOf(obj);
              if (this.#objects.delete(key)) {
                this.#o.onRemove?.(obj);
                this.#changed();
              }
            } else if (this.#put(obj)) this.#changed();
          }
        }
        if (typeof rv === 'string' && rv !== '') this.#resourceVersion = rv;
      },
    });
    if (gone) {
      this.#resourceVersion = '';
      this.#quietEnds = 0;
    }
  }

  #changed(): void {
    this.#healthy();
    this.#o.onChange?.();
  }

  #healthy(): void {
    if (this.#failures > 0) {
      this.#o.log.info({ ...this.#lines.fields, failures: this.#failures }, this.#lines.recovered);
      this.#failures = 0;
      this.#failingSince = undefined;
      this.#lastError = undefined;
    }
  }

  /** Records a failure; returns the backoff delay. */
  #failed(err: unknown): number {
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
    return delay;
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.#timer = setTimeout(resolve, ms);
      this.#timer.unref();
    });
  }
}
