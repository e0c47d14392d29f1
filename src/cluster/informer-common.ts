/** What the informers (resource-informer.ts on client-node, lean-informer.ts for the agent) share: options, page shape, status, log lines. */

import type { Logger } from '../shared/logger.ts';
import { statusOf } from './api-errors.ts';

export interface ListPage {
  /** null from a real API server for an empty PartialObjectMetadataList (Go's nil slice). */
  readonly items: readonly unknown[] | null;
  readonly metadata?: { readonly resourceVersion?: string; readonly _continue?: string } | undefined;
}

/** What the informer says in its logs; the defaults name the resource in a `resource` field. */
export interface InformerLogLines {
  /** Fields on every line. */
  readonly fields: Readonly<Record<string, string>>;
  /** The field that carries the object count on the synced and relisted lines. */
  readonly countField: string;
  readonly synced: string;
  readonly relisted: string;
  readonly recovered: string;
  /** The first failure's line is `${interrupted}; ${forbiddenHint}; ${meanwhile}` (the hint on HTTP 403 only). */
  readonly interrupted: string;
  readonly meanwhile: string;
  readonly stillFailing: string;
  readonly continueExpired: string;
}

/** The options of both informers; each adds what its transport needs. */
export interface InformerOptions<T, Credentials> {
  readonly kubeConfig: Credentials;
  readonly log: Logger;
  /** For logs: `services`, `endpointslices`. */
  readonly resource: string;
  /** The collection's path, watched with `?watch=true` (e.g. `/api/v1/services`). */
  readonly path: string;
  /** The object as kept; undefined drops it (metadata.name and namespace must be kept, and resourceVersion). */
  readonly trim: (obj: unknown) => T | undefined;
  /** Called for every object added to or replaced in the cache (watch events and relists alike). */
  readonly onUpsert?: (obj: T) => void;
  /** Called for every object dropped from the cache (watch events and relists alike). */
  readonly onRemove?: (obj: T) => void;
  /** Called after every change of the cache (add, update, delete, relist). */
  readonly onChange?: () => void;
  /** A hint for the first failure's log line (e.g. the RBAC this needs). */
  readonly forbiddenHint?: string;
  /** The log lines, when the user has its own wording (default: generic lines naming `resource`). */
  readonly logLines?: InformerLogLines;
  /** Objects per list page (`limit`). */
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

export interface ResourceInformerStatus {
  readonly synced: boolean;
  readonly objects: number;
  /** Consecutive failures since the last successful list, watch start or event. */
  readonly failures: number;
  readonly lastError: string | undefined;
  /** When the current run of failures began (ms since the epoch); undefined when healthy. */
  readonly failingSince: number | undefined;
}

export function defaultLogLines(resource: string): InformerLogLines {
  return {
    fields: { resource },
    countField: 'objects',
    synced: 'informer synced',
    relisted: 'relisted',
    recovered: 'informer recovered',
    interrupted: 'informer interrupted',
    meanwhile: 'retrying with backoff',
    stillFailing: 'informer still failing',
    continueExpired: 'list continue token expired; listing again without chunks',
  };
}


/** One page as the transport read it, its continue token under one name. */
export interface ReadPage {
  readonly items: readonly unknown[] | null;
  readonly resourceVersion: string | undefined;
  readonly continue: string | undefined;
}

export interface ListAllOptions<T> {
  readonly pageSize: number | undefined;
  readPage(limit: number | undefined, cont: string | undefined): Promise<ReadPage>;
  trim(obj: unknown): T | undefined;
  stopped(): boolean;
  /** The snapshot behind a continue token is gone (410): the list starts again, in one piece. */
  onContinueExpired(): void;
}

/** One full list, page by page, trimmed as it arrives; undefined once stopped. */
export async function listAllPages<T>(o: ListAllOptions<T>): Promise<{ items: T[]; resourceVersion: string } | undefined> {
  const items: T[] = [];
  let cont: string | undefined;
  let limit = o.pageSize;
  let resourceVersion = '';
  for (;;) {
    if (o.stopped()) return undefined;
    let page: ReadPage;
    try {
      page = await o.readPage(limit, cont);
    } catch (error) {
      if (cont !== undefined && statusOf(error) === 410) {
        o.onContinueExpired();
        items.length = 0;
        cont = undefined;
        limit = undefined;
        continue;
      }
      throw error;
    }
    for (const obj of page.items ?? []) {
      const trimmed = o.trim(obj);
      if (trimmed !== undefined) items.push(trimmed);
    }
    resourceVersion = page.resourceVersion ?? resourceVersion;
    cont = page.continue || undefined;
    if (cont === undefined) break;
  }
  return o.stopped() ? undefined : { items, resourceVersion };
}
