/**
 * Keeps this node's `conntrack.safe-termination.io/*` annotations equal to the
 * latest reading: one JSON merge patch (RFC 7386) when a value differs from what
 * the Node carries, nothing otherwise (a write on every tick of every agent
 * would wake every Node informer of the cluster). The Node is read at start,
 * after any failure, and every `verifyEveryMs` (someone may have edited the
 * annotations). Failures are retried with backoff, forever: the API server may
 * be away for a while, the agent stays up and keeps serving metrics meanwhile.
 * Values the agent cannot read are left as they are, never deleted.
 */
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import type { PartialConntrackValues } from '../core/conntrack.ts';
import type { Logger } from '../shared/logger.ts';
import { backoffDelay, describeApiError, statusOf } from '../cluster/api-errors.ts';
import { ApiClient } from '../cluster/lean-api.ts';
import type { ApiCredentials, CallOptions } from '../cluster/lean-api.ts';
import { annotationsFor, nodeAnnotationKey, OBSERVED_AT_ANNOTATION, ownAnnotations } from '../cluster/node-annotations.ts';

export type PublishResult = 'patched' | 'error';

export interface NodeAnnotatorOptions {
  readonly kubeConfig: ApiCredentials;
  readonly nodeName: string;
  readonly log: Logger;
  readonly requestTimeoutMs?: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly verifyEveryMs?: number;
  readonly onPublish?: (result: PublishResult) => void;
}

interface Desired {
  readonly values: PartialConntrackValues;
  readonly observedAt: Date;
}

export interface AnnotatorStatus {
  /** Our annotations as last seen on the Node; undefined until read. */
  readonly onNode: Readonly<Record<string, string>> | undefined;
  readonly failures: number;
  readonly lastError: string | undefined;
}

interface NodeMeta {
  readonly metadata?: { readonly annotations?: Record<string, string> | null };
}

const nodePath = (name: string): string => `/api/v1/nodes/${encodeURIComponent(name)}`;

export class NodeAnnotator {
  readonly #o: NodeAnnotatorOptions;
  readonly #api: ApiClient;
  readonly #abort = new AbortController();
  #desired: Desired | undefined;
  #onNode: Record<string, string> | undefined;
  #verifyAt = 0;
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #lastError: string | undefined;
  #stopped = false;
  #idle: Array<() => void> = [];

  constructor(o: NodeAnnotatorOptions) {
    this.#o = o;
    this.#api = new ApiClient(o.kubeConfig);
  }

  status(): AnnotatorStatus {
    return { onNode: this.#onNode, failures: this.#failures, lastError: this.#lastError };
  }

  /** The latest reading; published when it differs from the Node. */
  setDesired(values: PartialConntrackValues, observedAt: Date): void {
    if (Object.keys(values).length === 0) return;
    this.#desired = { values, observedAt };
    this.#kick();
  }

  /** Resolves when no reconcile is running or waiting for a retry (tests). */
  whenIdle(): Promise<void> {
    if (!this.#running && this.#timer === undefined) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  stop(): void {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#settle();
  }

  #kick(): void {
    if (this.#running || this.#timer !== undefined || this.#stopped) return;
    void this.#reconcile();
  }

  #options(): CallOptions {
    return { timeoutMs: this.#o.requestTimeoutMs ?? 10_000, signal: this.#abort.signal };
  }

  async #reconcile(): Promise<void> {
    this.#running = true;
    const { nodeName: name, log } = this.#o;
    try {
      for (;;) {
        const desired = this.#desired;
        if (desired === undefined || this.#stopped) break;
        if (this.#onNode === undefined || Date.now() >= this.#verifyAt) {
          const node = (await this.#api.json('GET', nodePath(name), this.#options())) as NodeMeta;
          this.#onNode = ownAnnotations(node.metadata?.annotations);
          this.#verifyAt = Date.now() + (this.#o.verifyEveryMs ?? 15 * 60_000);
        }
        const changed = changedValues(desired.values, this.#onNode);
        if (changed.length > 0) {
          const annotations = annotationsFor(desired.values, desired.observedAt);
          const node = (await this.#api.json('PATCH', nodePath(name), {
            ...this.#options(),
            body: { metadata: { annotations } },
            contentType: 'application/merge-patch+json',
          })) as NodeMeta;
          this.#onNode = ownAnnotations(node.metadata?.annotations);
          log.info({ node: name, annotations, changed }, 'conntrack annotations published');
          this.#o.onPublish?.('patched');
        }
        if (this.#failures > 0) log.info({ node: name, failures: this.#failures }, 'API server reachable again');
        this.#failures = 0;
        this.#lastError = undefined;
        if (this.#desired === desired) break; // else a newer reading arrived meanwhile
      }
    } catch (error) {
      if (!this.#stopped) this.#failed(error);
    } finally {
      this.#running = false;
      this.#settle();
    }
  }

  #failed(error: unknown): void {
    this.#failures++;
    this.#onNode = undefined; // unknown after a failure: read again
    this.#lastError = describeApiError(error);
    this.#o.onPublish?.('error');
    const b = this.#o.backoff ?? { initialMs: 1000, maxMs: 60_000 };
    const delay = backoffDelay(this.#failures, b.initialMs, b.maxMs);
    const status = statusOf(error);
    const fields = { node: this.#o.nodeName, problem: this.#lastError, retryInMs: delay, failures: this.#failures };
    if (this.#failures === 1) {
      const hint =
        status === 404 ? `; no Node named ${this.#o.nodeName} (check --node-name / NODE_NAME)` : status === 403 ? '; the agent needs get and patch on nodes' : '';
      this.#o.log.warn(fields, `cannot publish conntrack annotations${hint}; retrying with backoff`);
    } else {
      this.#o.log.debug(fields, 'still cannot publish conntrack annotations');
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#kick();
    }, delay);
    this.#timer.unref();
  }

  #settle(): void {
    if (this.#running || this.#timer !== undefined) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }
}

/** Keys whose value differs from the Node's annotation; observed-at only when it is missing. */
function changedValues(values: PartialConntrackValues, onNode: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const key of CONNTRACK_KEYS) {
    const v = values[key];
    if (v !== undefined && onNode[nodeAnnotationKey(key)] !== String(v)) out.push(key);
  }
  if (onNode[OBSERVED_AT_ANNOTATION] === undefined) out.push('observed-at');
  return out;
}
