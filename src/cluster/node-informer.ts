/**
 * The Node informer of the webhook: a ResourceInformer (resource-informer.ts:
 * list then watch, restarts with backoff, chunked lists with deadlines, bookmarks,
 * server-side watch timeouts, clean stop) over `/api/v1/nodes`, with what is
 * particular to Nodes:
 *
 * - metadata-only transfer (`as=PartialObjectMetadata`, falling back to full
 *   objects on servers without it);
 * - trimming of every object to what sizing reads: name, labels, our annotations.
 *   Nothing else is kept;
 * - every change handed to a NodeSink (the CandidateIndex) as a NodeRecord;
 * - its own log lines and status (`nodes`).
 */
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../shared/logger.ts';
import type { NodeRecord } from './candidate-nodes.ts';
import { conntrackFromAnnotations, ownAnnotations } from './node-annotations.ts';
import { ResourceInformer } from './resource-informer.ts';
import type { InformerLogLines, ResourceInformerOptions } from './resource-informer.ts';

export const NODES_PATH = '/api/v1/nodes';
/** Metadata-only list and watch, with plain JSON as the fallback (client-go's metadata informer does the same). */
export const METADATA_LIST_ACCEPT = 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json';
export const METADATA_WATCH_ACCEPT = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json';

const LOG_LINES: InformerLogLines = {
  fields: {},
  countField: 'nodes',
  synced: 'node informer synced',
  relisted: 'nodes relisted',
  recovered: 'node informer recovered',
  interrupted: 'node informer interrupted',
  meanwhile: 'sizing uses the last known nodes meanwhile',
  stillFailing: 'node informer still failing',
  continueExpired: 'node list continue token expired; listing again without chunks',
};

export interface NodeSink {
  upsert(node: NodeRecord): void;
  remove(name: string): void;
}

export interface NodeInformerOptions
  extends Pick<ResourceInformerOptions<TrimmedNode>, 'pageSize' | 'requestTimeoutMs' | 'watchIdleTimeoutMs' | 'watchTimeoutSeconds' | 'backoff'> {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly sink: NodeSink;
}

export interface NodeInformerStatus {
  readonly synced: boolean;
  readonly nodes: number;
  /** Consecutive failures since the last successful list, watch start or event. */
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

export class NodeInformer {
  readonly synced: Promise<void>;
  readonly #informer: ResourceInformer<TrimmedNode>;

  constructor(options: NodeInformerOptions) {
    const { sink, ...rest } = options;
    const core = rest.kubeConfig.makeApiClient(CoreV1Api);
    this.#informer = new ResourceInformer<TrimmedNode>({
      ...rest,
      resource: 'nodes',
      path: NODES_PATH,
      listPage: (params, requestOptions) => core.listNode(params, requestOptions),
      trim: (obj) => trimNode(obj as KubernetesObject | undefined),
      accept: { list: METADATA_LIST_ACCEPT, watch: METADATA_WATCH_ACCEPT },
      onUpsert: (node) => {
        if (node.metadata.name !== '') sink.upsert(recordOf(node));
      },
      onRemove: (node) => sink.remove(node.metadata.name),
      logLines: LOG_LINES,
    });
    this.synced = this.#informer.synced;
  }

  status(): NodeInformerStatus {
    const s = this.#informer.status();
    return { synced: s.synced, nodes: s.objects, failures: s.failures, lastError: s.lastError };
  }

  start(): void {
    this.#informer.start();
  }

  async stop(): Promise<void> {
    await this.#informer.stop();
  }
}
