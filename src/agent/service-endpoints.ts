/**
 * The current Services and EndpointSlices of the whole cluster, for the agent's
 * stale-entry count: two informers (list, then watch; see lean-informer.ts)
 * keeping only what classification reads — a Service's IPs, ports and node ports;
 * a slice's Service name, ports and endpoint addresses with their conditions and
 * node (for the per-node endpoint-change count, endpoint-changes.ts) — and
 * the ServiceIndex of diagnose/endpoints.ts built from them when it is asked for
 * after a change.
 *
 * `current()` answers only while the data can be trusted: both informers have
 * listed once, and neither has been failing for longer than `maxFailingMs`. An
 * index the API server has not updated for minutes would call entries to every
 * pod created meanwhile stale; the agent reports nothing instead.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '../shared/logger.ts';
import type { ResourceInformerStatus } from '../cluster/informer-common.ts';
import type { ApiCredentials } from '../cluster/lean-api.ts';
import { LeanInformer } from '../cluster/lean-informer.ts';
import type { LeanInformerOptions, LeanObject } from '../cluster/lean-informer.ts';
import { buildServiceIndex, SERVICE_NAME_LABEL } from '../diagnose/endpoints.ts';
import type { IndexProblem, ServiceIndex } from '../diagnose/endpoints.ts';

export const SERVICES_PATH = '/api/v1/services';
export const ENDPOINTSLICES_PATH = '/apis/discovery.k8s.io/v1/endpointslices';
const FORBIDDEN_HINT = 'the agent needs list and watch on services and discovery.k8s.io endpointslices (chart: agent.staleConntrack.enabled grants them)';

type Json = Record<string, unknown>;

interface TrimmedMeta {
  name: string;
  namespace: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
}

export interface TrimmedService extends KubernetesObject {
  kind: 'Service';
  metadata: TrimmedMeta;
  spec: {
    clusterIP?: string;
    clusterIPs?: string[];
    externalIPs?: string[];
    ports: Array<{ name?: string; protocol?: string; port: number; nodePort?: number }>;
  };
  status?: { loadBalancer: { ingress: Array<{ ip: string }> } };
}

/** Told of every slice as it arrives; `synced`: the informer has listed everything once. */
export interface SliceListener {
  upsert(slice: TrimmedSlice, synced: boolean): void;
  remove(slice: TrimmedSlice, synced: boolean): void;
}

export interface TrimmedSlice extends KubernetesObject {
  kind: 'EndpointSlice';
  metadata: TrimmedMeta;
  addressType?: string;
  ports: Array<{ name?: string; protocol?: string; port?: number }>;
  endpoints: Array<{ addresses: string[]; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean }; nodeName?: string }>;
}

const obj = (v: unknown): Json | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const int = (v: unknown): number | undefined => (typeof v === 'number' && Number.isInteger(v) ? v : undefined);
const bool = (v: unknown): boolean | undefined => (typeof v === 'boolean' ? v : undefined);
const strings = (v: unknown): string[] => arr(v).filter((x): x is string => typeof x === 'string');

function metaOf(v: unknown, label?: string): TrimmedMeta | undefined {
  const m = obj(obj(v)?.['metadata']);
  const name = str(m?.['name']);
  if (m === undefined || name === undefined) return undefined;
  const meta: TrimmedMeta = { name, namespace: str(m['namespace']) ?? '' };
  const rv = str(m['resourceVersion']);
  if (rv !== undefined) meta.resourceVersion = rv;
  const value = label === undefined ? undefined : str(obj(m['labels'])?.[label]);
  if (label !== undefined && value !== undefined) meta.labels = { [label]: value };
  return meta;
}

/** A Service (list item or watch object) reduced to what classification reads. */
export function trimService(v: unknown): TrimmedService | undefined {
  const metadata = metaOf(v);
  if (metadata === undefined) return undefined;
  const spec = obj(obj(v)?.['spec']) ?? {};
  const out: TrimmedService = { kind: 'Service', metadata, spec: { ports: [] } };
  const clusterIP = str(spec['clusterIP']);
  if (clusterIP !== undefined) out.spec.clusterIP = clusterIP;
  const clusterIPs = strings(spec['clusterIPs']);
  if (clusterIPs.length > 0) out.spec.clusterIPs = clusterIPs;
  const externalIPs = strings(spec['externalIPs']);
  if (externalIPs.length > 0) out.spec.externalIPs = externalIPs;
  for (const p of arr(spec['ports'])) {
    const port = int(obj(p)?.['port']);
    if (port === undefined) continue;
    const kept: TrimmedService['spec']['ports'][number] = { port };
    const name = str(obj(p)?.['name']);
    const protocol = str(obj(p)?.['protocol']);
    const nodePort = int(obj(p)?.['nodePort']);
    if (name !== undefined) kept.name = name;
    if (protocol !== undefined) kept.protocol = protocol;
    if (nodePort !== undefined) kept.nodePort = nodePort;
    out.spec.ports.push(kept);
  }
  const ingress = arr(obj(obj(obj(v)?.['status'])?.['loadBalancer'])?.['ingress'])
    .map((i) => str(obj(i)?.['ip']))
    .filter((ip): ip is string => ip !== undefined && ip !== '')
    .map((ip) => ({ ip }));
  if (ingress.length > 0) out.status = { loadBalancer: { ingress } };
  return out;
}

/**
 * An EndpointSlice reduced to what classification reads; FQDN slices and slices of
 * no Service are kept empty. With `onlyNode`, the endpoints of other nodes are
 * dropped too (the endpoint-change count alone needs no more).
 */
export function trimSlice(v: unknown, onlyNode?: string): TrimmedSlice | undefined {
  const metadata = metaOf(v, SERVICE_NAME_LABEL);
  if (metadata === undefined) return undefined;
  const o = obj(v) ?? {};
  const addressType = str(o['addressType']);
  const out: TrimmedSlice = { kind: 'EndpointSlice', metadata, ports: [], endpoints: [] };
  if (addressType !== undefined) out.addressType = addressType;
  // Kept (empty) rather than dropped: a DELETE or an update that makes a slice irrelevant must still reach the cache.
  if (addressType === 'FQDN' || metadata.labels === undefined) return out;
  for (const p of arr(o['ports'])) {
    const kept: TrimmedSlice['ports'][number] = {};
    const name = str(obj(p)?.['name']);
    const protocol = str(obj(p)?.['protocol']);
    const port = int(obj(p)?.['port']);
    if (name !== undefined) kept.name = name;
    if (protocol !== undefined) kept.protocol = protocol;
    if (port !== undefined) kept.port = port;
    out.ports.push(kept);
  }
  for (const e of arr(o['endpoints'])) {
    const addresses = strings(obj(e)?.['addresses']);
    if (addresses.length === 0) continue;
    const nodeName = str(obj(e)?.['nodeName']);
    if (onlyNode !== undefined && nodeName !== onlyNode) continue;
    const c = obj(obj(e)?.['conditions']);
    const conditions: NonNullable<TrimmedSlice['endpoints'][number]['conditions']> = {};
    const ready = bool(c?.['ready']);
    const serving = bool(c?.['serving']);
    const terminating = bool(c?.['terminating']);
    if (ready !== undefined) conditions.ready = ready;
    if (serving !== undefined) conditions.serving = serving;
    if (terminating !== undefined) conditions.terminating = terminating;
    out.endpoints.push(nodeName === undefined ? { addresses, conditions } : { addresses, conditions, nodeName });
  }
  return out;
}

export interface ServiceEndpointsOptions {
  readonly kubeConfig: ApiCredentials;
  readonly log: Logger;
  /** Past this long failing, the data is no longer current (default 2 minutes). */
  readonly maxFailingMs?: number;
  /** Watch Services too (the stale count needs them; the endpoint-change count does not). Default true. */
  readonly services?: boolean;
  /** Count endpoint changes per Service (endpoint-changes.ts) from the slices as they arrive. */
  readonly endpointChanges?: SliceListener;
  /** Told of every slice as it arrives or goes (the conntrack reaper's endpoint tracker); `synced`: after the first list. */
  readonly onSlice?: { upsert(slice: TrimmedSlice, synced: boolean): void; remove(slice: TrimmedSlice, synced: boolean): void };
  /** Keep only this node's endpoints (when nothing but the endpoint-change count reads the slices). */
  readonly onlyNode?: string;
  /** Informer tuning (tests). */
  readonly informer?: Pick<LeanInformerOptions<LeanObject>, 'pageSize' | 'requestTimeoutMs' | 'watchIdleTimeoutMs' | 'watchTimeoutSeconds' | 'backoff'>;
}

export type EndpointsState =
  | { readonly state: 'current'; readonly index: ServiceIndex }
  | { readonly state: 'syncing' }
  | { readonly state: 'outdated'; readonly failingForMs: number; readonly problem: string | undefined };

export interface ServiceEndpointsStatus {
  readonly services: ResourceInformerStatus;
  readonly endpointSlices: ResourceInformerStatus;
}

/** The status of the Services informer when Services are not watched: never synced, so `current()` stays `syncing`. */
const NOT_WATCHED: ResourceInformerStatus = { synced: false, objects: 0, failures: 0, lastError: undefined, failingSince: undefined };

export class ServiceEndpoints {
  readonly synced: Promise<void>;
  readonly #log: Logger;
  readonly #maxFailingMs: number;
  readonly #services: LeanInformer<TrimmedService> | undefined;
  readonly #slices: LeanInformer<TrimmedSlice>;
  #version = 0;
  #built: { version: number; index: ServiceIndex } | undefined;

  constructor(o: ServiceEndpointsOptions) {
    this.#log = o.log;
    this.#maxFailingMs = o.maxFailingMs ?? 120_000;
    const changes = o.endpointChanges;
    const onChange = (): void => {
      this.#version++;
    };
    this.#services = o.services === false ? undefined : new LeanInformer<TrimmedService>({
      ...o.informer,
      kubeConfig: o.kubeConfig,
      log: o.log,
      resource: 'services',
      path: SERVICES_PATH,
      trim: trimService,
      onChange,
      forbiddenHint: FORBIDDEN_HINT,
    });
    this.#slices = new LeanInformer<TrimmedSlice>({
      ...o.informer,
      kubeConfig: o.kubeConfig,
      log: o.log,
      resource: 'endpointslices',
      path: ENDPOINTSLICES_PATH,
      trim: (v) => trimSlice(v, o.onlyNode),
      onChange,
      ...(changes === undefined && o.onSlice === undefined
        ? {}
        : {
            // The first list is the starting state; after it (watch events, relists) every difference counts.
            onUpsert: (slice: TrimmedSlice) => {
              const synced = this.#slices.status().synced;
              changes?.upsert(slice, synced);
              o.onSlice?.upsert(slice, synced);
            },
            onRemove: (slice: TrimmedSlice) => {
              const synced = this.#slices.status().synced;
              changes?.remove(slice, synced);
              o.onSlice?.remove(slice, synced);
            },
          }),
      forbiddenHint: FORBIDDEN_HINT,
    });
    this.synced = Promise.all([this.#services?.synced, this.#slices.synced]).then(() => undefined);
  }

  start(): void {
    this.#services?.start();
    this.#slices.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.#services?.stop(), this.#slices.stop()]);
  }

  status(): ServiceEndpointsStatus {
    return { services: this.#services?.status() ?? NOT_WATCHED, endpointSlices: this.#slices.status() };
  }

  /**
   * The EndpointSlices have been listed and their watch has not been failing for
   * longer than `maxFailingMs` (default: the option's): the conntrack reaper's test.
   */
  slicesCurrent(now = Date.now(), maxFailingMs = this.#maxFailingMs): boolean {
    const e = this.#slices.status();
    return e.synced && (e.failingSince === undefined || now - e.failingSince <= maxFailingMs);
  }

  /** The index of the current endpoints, or why there is none to trust. */
  current(now = Date.now()): EndpointsState {
    const s = this.#services?.status() ?? NOT_WATCHED;
    const e = this.#slices.status();
    if (!s.synced || !e.synced) return { state: 'syncing' };
    const since = Math.min(s.failingSince ?? Infinity, e.failingSince ?? Infinity);
    if (since !== Infinity && now - since > this.#maxFailingMs) {
      return { state: 'outdated', failingForMs: now - since, problem: s.lastError ?? e.lastError };
    }
    if (this.#built?.version !== this.#version) {
      const version = this.#version;
      const problems: IndexProblem[] = [];
      const index = buildServiceIndex([...(this.#services?.list() ?? []), ...this.#slices.list()], problems);
      for (const p of problems.slice(0, 3)) this.#log.debug({ kind: p.kind, name: p.name, problem: p.problem }, 'object skipped by the endpoint index');
      this.#built = { version, index };
    }
    return { state: 'current', index: this.#built.index };
  }
}
