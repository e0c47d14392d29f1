/**
 * The Node informer of the webhook (spec §5): client-node's ListWatch (list,
 * then watch from the list's resourceVersion; relist on 410 Gone) with what
 * client-node 2.x leaves to its users:
 *
 * - restart after errors, with backoff (ListWatch stops on any error but 410 and
 *   its own idle timeout: a refused connection, a 5xx, a dropped stream);
 * - chunked lists (`limit`/`continue`, restarted whole when a continue token expires);
 * - a deadline on every list page (a hung API server must not hang the informer);
 * - metadata-only transfer (`as=PartialObjectMetadata`, falling back to full
 *   objects on servers without it) and trimming of every object to what sizing
 *   reads: name, labels, our annotations. Nothing else is kept;
 * - watch bookmarks (`allowWatchBookmarks`) and a server-side `timeoutSeconds`,
 *   as client-go's reflector does, so that reconnects resume from a recent
 *   resourceVersion instead of relisting.
 */
import { CoreV1Api, KubeConfig, ListWatch, V1ListMeta, Watch } from '@kubernetes/client-node';
import type { KubernetesListObject, KubernetesObject, RequestContext } from '@kubernetes/client-node';
import type { Logger } from '../server/logger.ts';
import { backoffDelay, describeApiError, requestOptions, statusOf } from './api.ts';
import type { NodeRecord } from './candidate-nodes.ts';
import { conntrackFromAnnotations, ownAnnotations } from './node-annotations.ts';

export const NODES_PATH = '/api/v1/nodes';
/** Metadata-only list and watch, with plain JSON as the fallback (client-go's metadata informer does the same). */
export const METADATA_LIST_ACCEPT = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';
export const METADATA_WATCH_ACCEPT = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json';

export interface NodeSink {
  upsert(node: NodeRecord): void;
  remove(name: string): void;
}

export interface NodeInformerOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly sink: NodeSink;
  /** Nodes per list page (`limit`). */
  readonly pageSize?: number;
  /** Deadline of each list page. */
  readonly requestTimeoutMs?: number;
  /** Reconnect a watch that sent nothing (not even a bookmark) for this long. */
  readonly watchIdleTimeoutMs?: number;
  /** Server-side watch duration (`timeoutSeconds`); client-go picks 5–10 minutes at random. */
  readonly watchTimeoutSeconds?: () => number;
  /** Restart delays after errors. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export interface NodeInformerStatus {
  readonly synced: boolean;
  readonly nodes: number;
  /** Consecutive failures since the last successful list or event. */
  readonly failures: number;
  readonly lastError: string | undefined;
}

/** A Node reduced to what the informer's cache keeps. */
export interface TrimmedNode extends KubernetesObject {
  metadata: { name: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
}

export function trimNode(obj: KubernetesObject | undefined): TrimmedNode {
  const meta = obj?.metadata;
  const trimmed: TrimmedNode = { metadata: { name: typeof meta?.name === 'string' ? meta.name : '' } };
  if (typeof meta?.resourceVersion === 'string') trimmed.metadata.resourceVersion = meta.resourceVersion;
  if (meta?.labels != null) trimmed.metadata.labels = Object.freeze({ ...meta.labels });
  const own = ownAnnotations(meta?.annotations);
  if (Object.keys(own).length > 0) trimmed.metadata.annotations = own;
  return trimmed;
}

export function recordOf(node: TrimmedNode): NodeRecord {
  return {
    name: node.metadata.name,
    labels: node.metadata.labels ?? {},
    values: Object.freeze(conntrackFromAnnotations(node.metadata.annotations)),
  };
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

/** client-node's Watch with bookmarks, a server-side timeout, trimming, and a stop switch. */
class NodeWatch extends Watch {
  readonly #timeoutSeconds: () => number;
  readonly #stopped: () => boolean;
  constructor(kc: KubeConfig, idleTimeoutMs: number, timeoutSeconds: () => number, stopped: () => boolean) {
    super(new AcceptingKubeConfig(kc, METADATA_WATCH_ACCEPT));
    // Watch's idle deadline (30 s in 2.0) would cut quiet watches before the API
    // server's once-a-minute bookmark arrives. It is private in the typings.
    Reflect.set(this, 'requestTimeoutMs', idleTimeoutMs);
    this.#timeoutSeconds = timeoutSeconds;
    this.#stopped = stopped;
  }
  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: WatchCallback,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.#stopped()) {
      // ListWatch starts a watch after a list that finished after stop(): refuse it.
      const controller = new AbortController();
      queueMicrotask(() => done(new Error('informer stopped')));
      return controller;
    }
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.#timeoutSeconds() };
    const controller = await super.watch(
      path,
      params,
      (phase, obj, raw) => {
        if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') callback(phase, trimNode(obj as KubernetesObject), raw);
        else callback(phase, obj, raw);
      },
      done,
    );
    // stop() cannot abort a watch still waiting for its response headers (ListWatch
    // holds no controller yet): end it as soon as it is there.
    if (this.#stopped()) controller.abort();
    return controller;
  }
}

export class NodeInformer {
  readonly synced: Promise<void>;
  readonly #o: Required<Omit<NodeInformerOptions, 'backoff'>> & { backoff: { initialMs: number; maxMs: number } };
  readonly #informer: ListWatch<TrimmedNode>;
  readonly #core: CoreV1Api;
  readonly #abort = new AbortController();
  #markSynced!: () => void;
  #synced = false;
  #stopped = false;
  #started = false;
  #failures = 0;
  #lastError: string | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #nodes = 0;

  constructor(options: NodeInformerOptions) {
    this.#o = {
      pageSize: 500,
      requestTimeoutMs: 30_000,
      watchIdleTimeoutMs: 90_000,
      watchTimeoutSeconds: () => 300 + Math.floor(Math.random() * 300),
      ...options,
      backoff: options.backoff ?? { initialMs: 1000, maxMs: 30_000 },
    };
    this.synced = new Promise((resolve) => {
      this.#markSynced = resolve;
    });
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    const watch = new NodeWatch(options.kubeConfig, this.#o.watchIdleTimeoutMs, this.#o.watchTimeoutSeconds, () => this.#stopped);
    this.#informer = new ListWatch<TrimmedNode>(NODES_PATH, watch, () => this.#list(), false, undefined, undefined, {
      // ListWatch's own reconnect delay (up to 30 s): cut short by stop(), and never keeping the process alive.
      delayFn: (ms) => this.#delay(ms),
    });
    const { sink } = options;
    const upsert = (obj: TrimmedNode): void => {
      this.#healthy();
      if (obj.metadata.name !== '') sink.upsert(recordOf(obj));
    };
    this.#informer.on('add', (obj) => {
      this.#nodes++;
      upsert(obj);
    });
    this.#informer.on('update', upsert);
    this.#informer.on('delete', (obj) => {
      this.#nodes = Math.max(0, this.#nodes - 1);
      this.#healthy();
      sink.remove(obj.metadata.name);
    });
    this.#informer.on('error', (err: unknown) => this.#onError(err));
  }

  status(): NodeInformerStatus {
    return { synced: this.#synced, nodes: this.#nodes, failures: this.#failures, lastError: this.#lastError };
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
  async #list(): Promise<KubernetesListObject<TrimmedNode>> {
    const items: TrimmedNode[] = [];
    let cont: string | undefined;
    let limit: number | undefined = this.#o.pageSize;
    let resourceVersion = '';
    for (;;) {
      if (this.#stopped) throw new Error('informer stopped');
      let page;
      try {
        page = await this.#core.listNode(
          { limit, _continue: cont },
          requestOptions({ timeoutMs: this.#o.requestTimeoutMs, signal: this.#abort.signal, headers: { Accept: METADATA_LIST_ACCEPT } }),
        );
      } catch (error) {
        if (cont !== undefined && statusOf(error) === 410) {
          // The snapshot behind the continue token is gone: list again, in one piece.
          this.#o.log.info('node list continue token expired; listing again without chunks');
          items.length = 0;
          cont = undefined;
          limit = undefined;
          continue;
        }
        throw error;
      }
      for (const node of page.items) items.push(trimNode(node));
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      cont = page.metadata?._continue || undefined;
      if (cont === undefined) break;
    }
    if (this.#stopped) throw new Error('informer stopped');
    // ListWatch applies the items right after this promise settles, before any timer runs.
    setImmediate(() => this.#onListed(items.length));
    const metadata = new V1ListMeta();
    metadata.resourceVersion = resourceVersion;
    return { apiVersion: 'v1', kind: 'NodeList', metadata, items };
  }

  #onListed(count: number): void {
    this.#healthy();
    if (!this.#synced) {
      this.#synced = true;
      this.#o.log.info({ nodes: count }, 'node informer synced');
      this.#markSynced();
    } else {
      this.#o.log.debug({ nodes: count }, 'nodes relisted');
    }
  }

  #healthy(): void {
    if (this.#failures > 0) {
      this.#o.log.info({ failures: this.#failures }, 'node informer recovered');
      this.#failures = 0;
      this.#lastError = undefined;
    }
  }

  #onError(err: unknown): void {
    if (this.#stopped) return; // stop() aborts the watch, which reports an AbortError
    this.#failures++;
    this.#lastError = describeApiError(err);
    const delay = backoffDelay(this.#failures, this.#o.backoff.initialMs, this.#o.backoff.maxMs);
    const fields = { problem: this.#lastError, retryInMs: delay, failures: this.#failures };
    if (this.#failures === 1) this.#o.log.warn(fields, 'node informer interrupted; sizing uses the last known nodes meanwhile');
    else this.#o.log.debug(fields, 'node informer still failing');
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (!this.#stopped) this.#run();
    }, delay);
    this.#restartTimer.unref();
  }
}
