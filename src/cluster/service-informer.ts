/**
 * The Service informer of the webhook: a ResourceInformer
 * (resource-informer.ts: list then watch, restarts with backoff, chunked lists
 * with deadlines, bookmarks, clean stop) over `/api/v1/services` in all
 * namespaces, every object trimmed to what matching reads — namespace, name,
 * selector, clusterIP and type, and the protocols of its ports — and handed to a
 * ServiceIndex (src/core/services.ts) as it arrives. Admissions read the index
 * and never wait for it: before the first list, or while the API server is away,
 * they see the Services last known (none at first), as with the Node informer.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../shared/logger.ts';
import { readService } from '../core/services.ts';
import type { ServiceIndex } from '../core/services.ts';
import { ResourceInformer } from './resource-informer.ts';
import type { InformerLogLines, ResourceInformerOptions } from './resource-informer.ts';

export const SERVICES_PATH = '/api/v1/services';
const FORBIDDEN_HINT = 'the webhook needs list and watch on services (chart: webhook.services.enabled grants them)';

const LOG_LINES: InformerLogLines = {
  fields: {},
  countField: 'services',
  synced: 'service informer synced',
  relisted: 'services relisted',
  recovered: 'service informer recovered',
  interrupted: 'service informer interrupted',
  meanwhile: 'protocols come from the last known Services meanwhile',
  stillFailing: 'service informer still failing',
  continueExpired: 'service list continue token expired; listing again without chunks',
};

/** A Service reduced to what matching reads; kept whole enough for the cache (name, namespace, resourceVersion). */
export interface TrimmedService extends KubernetesObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { type?: string; clusterIP?: string; selector?: Record<string, string>; ports: Array<{ protocol?: string }> };
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Everything else of a Service (IPs, annotations, managedFields, status) is dropped as it arrives. */
export function trimService(v: unknown): TrimmedService | undefined {
  const meta = obj(obj(v)?.['metadata']);
  const name = str(meta?.['name']);
  if (name === undefined) return undefined;
  const out: TrimmedService = { metadata: { name, namespace: str(meta?.['namespace']) ?? '' }, spec: { ports: [] } };
  const rv = str(meta?.['resourceVersion']);
  if (rv !== undefined) out.metadata.resourceVersion = rv;
  const spec = obj(obj(v)?.['spec']) ?? {};
  const type = str(spec['type']);
  if (type !== undefined) out.spec.type = type;
  const clusterIP = str(spec['clusterIP']);
  if (clusterIP !== undefined) out.spec.clusterIP = clusterIP;
  const selector = obj(spec['selector']);
  if (selector !== undefined) {
    const kept: Record<string, string> = {};
    for (const [k, val] of Object.entries(selector)) if (typeof val === 'string') kept[k] = val;
    out.spec.selector = kept;
  }
  // One entry per protocol is all matching reads.
  const seen = new Set<string>();
  for (const p of Array.isArray(spec['ports']) ? (spec['ports'] as unknown[]) : []) {
    const protocol = str(obj(p)?.['protocol']) ?? 'TCP';
    if (seen.has(protocol)) continue;
    seen.add(protocol);
    out.spec.ports.push({ protocol });
  }
  return out;
}

export interface ServiceInformerOptions
  extends Pick<ResourceInformerOptions<TrimmedService>, 'pageSize' | 'requestTimeoutMs' | 'watchIdleTimeoutMs' | 'watchTimeoutSeconds' | 'backoff'> {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly index: ServiceIndex;
}

export interface ServiceInformerStatus {
  readonly synced: boolean;
  /** Services in the cache (all of them, counting or not). */
  readonly services: number;
  readonly failures: number;
  readonly lastError: string | undefined;
}

export class ServiceInformer {
  readonly synced: Promise<void>;
  readonly #informer: ResourceInformer<TrimmedService>;

  constructor(options: ServiceInformerOptions) {
    const { index, ...rest } = options;
    const core = rest.kubeConfig.makeApiClient(CoreV1Api);
    this.#informer = new ResourceInformer<TrimmedService>({
      ...rest,
      resource: 'services',
      path: SERVICES_PATH,
      listPage: (params, requestOptions) => core.listServiceForAllNamespaces(params, requestOptions),
      trim: trimService,
      onUpsert: (svc) => {
        const reading = readService(svc);
        if (reading !== undefined) index.apply(reading);
      },
      onRemove: (svc) => index.remove(svc.metadata.namespace, svc.metadata.name),
      forbiddenHint: FORBIDDEN_HINT,
      logLines: LOG_LINES,
    });
    this.synced = this.#informer.synced;
  }

  status(): ServiceInformerStatus {
    const s = this.#informer.status();
    return { synced: s.synced, services: s.objects, failures: s.failures, lastError: s.lastError };
  }

  start(): void {
    this.#informer.start();
  }

  async stop(): Promise<void> {
    await this.#informer.stop();
  }
}
