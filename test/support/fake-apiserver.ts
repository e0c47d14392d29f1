/**
 * An in-test Kubernetes API server: just enough of the real wire protocol for
 * @kubernetes/client-node to run informers, reads and patches against it, and
 * switches to make it misbehave the way real ones do.
 *
 * Served:
 * - GET  /version (and /version/)
 * - GET  /api/v1/nodes            list: `limit`/`continue` chunks over one snapshot
 *                                 (410 Expired once compacted), `resourceVersion`
 * - GET  /api/v1/nodes?watch=true chunked JSON lines: ADDED / MODIFIED / DELETED,
 *                                 BOOKMARK (with `allowWatchBookmarks=true`), replay
 *                                 from `resourceVersion`, 410 Expired when it is
 *                                 older than the kept history (an ERROR event, as the
 *                                 watch cache answers, or an HTTP 410), `timeoutSeconds`
 * - GET  /api/v1/nodes/{name}
 * - PATCH /api/v1/nodes/{name}    merge patch (RFC 7386) and JSON patch (RFC 6902),
 *                                 merged into the stored Node: new resourceVersion,
 *                                 MODIFIED to watchers; annotations validated
 * - GET  /api/v1/namespaces/{ns}/configmaps/{name}
 * - GET  /api/v1/services, /apis/discovery.k8s.io/v1/endpointslices (all namespaces):
 *                                 list and watch exactly as for nodes (chunks,
 *                                 resourceVersion, bookmarks, replay, 410)
 * - `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
 *   (metadata-only objects), as the API server negotiates it
 * - errors as `Status` objects; bearer-token authentication when a token is set
 *
 * Misbehaviour: `fault()` answers matching requests (by method, path, watch or
 * any predicate, for N times or until removed) with an HTTP status, late, never
 * (until removed), by resetting the connection, or after running a hook;
 * `dropWatches()` cuts open watch streams, `endWatches()` closes them cleanly,
 * `compact()` forgets history so that old resourceVersions and continue tokens
 * get 410 Gone, `advance()` moves the resourceVersion (writes elsewhere).
 *
 *   const api = await startFakeApiServer();            // { tls, token, unixSocket, … }
 *   api.setNodes([makeNode('n1', { labels, annotations })]);
 *   kc.loadFromString(api.kubeconfig());               // or --kubeconfig api.writeKubeconfig()
 *   const f = api.fault({ kind: 'status', code: 503 }, { path: '/api/v1/nodes', watch: true }, 2);
 *   api.setServices([makeService('ns', 'dns', '10.96.0.10', [{ port: 53, protocol: 'UDP' }])]);
 *   api.setEndpointSlices([makeEndpointSlice('ns', 'dns', [{ port: 53, protocol: 'UDP' }], [{ ip: '10.244.1.2' }])]);
 *   await api.stop();
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fjp from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { makeCerts } from './webhook.ts';
import type { CertDir } from './webhook.ts';

type Json = Record<string, any>;

export interface FakeApiServerOptions {
  /** Serve HTTPS with a fresh test CA (needed for in-cluster configuration tests). */
  readonly tls?: boolean;
  /** Require `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** What /version answers. */
  readonly version?: { major: string; minor: string; gitVersion: string };
  /** Also listen on this Unix socket path (reachable from other network namespaces). */
  readonly unixSocket?: string;
  /** Honour `as=PartialObjectMetadata` (default true); false behaves like a server that ignores it. */
  readonly metadataProjection?: boolean;
  /** How a watch from a compacted resourceVersion is refused (default 'event', as the watch cache does). */
  readonly expiredWatch?: 'event' | 'status';
  /** Watch events kept for replay (default 1000). */
  readonly historyLimit?: number;
  /** First resourceVersion (default 1000). */
  readonly initialResourceVersion?: number;
}

export interface FaultMatch {
  readonly method?: string;
  /** Exact path, or a pattern tested against the path. */
  readonly path?: string | RegExp;
  /** true: only watches; false: only non-watch requests. */
  readonly watch?: boolean;
  /** Any other condition on the request (query parameters, headers). */
  readonly when?: (req: LoggedRequest) => boolean;
}

export type Fault =
  | { readonly kind: 'status'; readonly code: number; readonly message?: string }
  | { readonly kind: 'delay'; readonly ms: number }
  | { readonly kind: 'hang' }
  | { readonly kind: 'reset' }
  /** Run `fn` (e.g. `compact()` just before a request is served), then answer normally. */
  | { readonly kind: 'run'; readonly fn: () => void };

export interface FaultHandle {
  remove(): void;
}

export interface LoggedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly accept: string | undefined;
  readonly contentType: string | undefined;
  readonly authorization: string | undefined;
  readonly body: string | undefined;
  readonly at: number;
}

/** The collections served with list and watch. */
export type Collection = 'nodes' | 'services' | 'endpointslices';

const COLLECTIONS: Readonly<Record<Collection, { path: string; kind: string; apiVersion: string; namespaced: boolean }>> = {
  nodes: { path: '/api/v1/nodes', kind: 'Node', apiVersion: 'v1', namespaced: false },
  services: { path: '/api/v1/services', kind: 'Service', apiVersion: 'v1', namespaced: true },
  endpointslices: { path: '/apis/discovery.k8s.io/v1/endpointslices', kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', namespaced: true },
};

interface WatchConn {
  readonly collection: Collection;
  readonly res: ServerResponse;
  readonly bookmarks: boolean;
  readonly metadataOnly: boolean;
  timer: NodeJS.Timeout | undefined;
}

interface Event {
  readonly collection: Collection;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly object: Json;
  readonly rv: number;
}

interface Snapshot {
  readonly rv: number;
  readonly items: Json[];
}

interface ActiveFault {
  readonly fault: Fault;
  readonly match: FaultMatch;
  remaining: number;
  /** Requests a 'hang' fault holds; they go on when the fault is removed. */
  readonly held: Set<() => void>;
}

export interface FakeApiServer {
  readonly url: string;
  /** CA of the HTTPS server (tls: true). */
  readonly ca: Buffer | undefined;
  readonly requests: LoggedRequest[];
  /** Kubeconfig YAML for this server (`server` overrides the URL, e.g. a bridge in another netns). */
  kubeconfig(o?: { server?: string; token?: string }): string;
  /** Write the kubeconfig to a temp file (removed at stop) and return its path. */
  writeKubeconfig(o?: { server?: string; token?: string }): string;
  resourceVersion(): string;
  nodes(): Json[];
  node(name: string): Json | undefined;
  /** Replace all nodes: emits ADDED/MODIFIED/DELETED for the differences. */
  setNodes(nodes: readonly Json[]): void;
  upsertNode(node: Json): Json;
  deleteNode(name: string): boolean;
  setConfigMap(namespace: string, name: string, data: Record<string, string> | undefined): void;
  /** Services (all namespaces), as stored. */
  services(): Json[];
  /** Replace all Services: ADDED/MODIFIED/DELETED to watchers for the differences. */
  setServices(services: readonly Json[]): void;
  upsertService(service: Json): Json;
  deleteService(namespace: string, name: string): boolean;
  endpointSlices(): Json[];
  /** Replace all EndpointSlices: ADDED/MODIFIED/DELETED to watchers for the differences. */
  setEndpointSlices(slices: readonly Json[]): void;
  upsertEndpointSlice(slice: Json): Json;
  deleteEndpointSlice(namespace: string, name: string): boolean;
  setVersion(v: { major: string; minor: string; gitVersion: string }): void;
  /** Writes elsewhere in the cluster: the resourceVersion moves on without Node events. */
  advance(n?: number): void;
  /** Send a BOOKMARK at the current resourceVersion to watches that allow them. */
  bookmark(): number;
  /** Forget the event history and list snapshots: older resourceVersions and continue tokens get 410. */
  compact(): void;
  /** Destroy the connections of open watches mid-stream. */
  dropWatches(): number;
  /** End open watches cleanly (as the server does at timeoutSeconds). */
  endWatches(): number;
  watchCount(): number;
  fault(fault: Fault, match?: FaultMatch, times?: number): FaultHandle;
  clearFaults(): void;
  stop(): Promise<void>;
}

const DEFAULT_VERSION = { major: '1', minor: '31', gitVersion: 'v1.31.4' };
const PARTIAL = 'PartialObjectMetadata';
const META_API_VERSION = 'meta.k8s.io/v1';

/** A Node as a real cluster stores it: with the status bulk that sizing must not keep. */
export function makeNode(
  name: string,
  o: { labels?: Record<string, string>; annotations?: Record<string, string>; images?: number } = {},
): Json {
  const images = Array.from({ length: o.images ?? 8 }, (_, i) => ({
    names: [`registry.example.com/team/app-${i}@sha256:${'ab'.repeat(32)}`, `registry.example.com/team/app-${i}:v1.${i}.0`],
    sizeBytes: 50_000_000 + i,
  }));
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        ...o.labels,
      },
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
        'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///run/containerd/containerd.sock',
        ...o.annotations,
      },
    },
    spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'], providerID: `kind://docker/kind/${name}` },
    status: {
      addresses: [
        { type: 'InternalIP', address: '172.18.0.3' },
        { type: 'Hostname', address: name },
      ],
      allocatable: { cpu: '8', 'ephemeral-storage': '102626232Ki', memory: '32823276Ki', pods: '110' },
      capacity: { cpu: '8', 'ephemeral-storage': '102626232Ki', memory: '32823276Ki', pods: '110' },
      conditions: ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
        type,
        status: type === 'Ready' ? 'True' : 'False',
        lastHeartbeatTime: '2024-05-01T12:00:00Z',
        lastTransitionTime: '2024-05-01T11:00:00Z',
        reason: type === 'Ready' ? 'KubeletReady' : `KubeletHasNo${type}`,
        message: 'kubelet is posting ready status',
      })),
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      images,
      nodeInfo: {
        architecture: 'amd64',
        bootID: randomUUID(),
        containerRuntimeVersion: 'containerd://1.7.18',
        kernelVersion: '6.8.0-31-generic',
        kubeProxyVersion: 'v1.31.4',
        kubeletVersion: 'v1.31.4',
        machineID: 'c0ffee'.repeat(5) + 'ab',
        operatingSystem: 'linux',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        systemUUID: randomUUID(),
      },
    },
  };
}

/** A Service as the API server returns it (defaulted fields included). */
export function makeService(
  namespace: string,
  name: string,
  clusterIP: string,
  ports: ReadonlyArray<{ name?: string; port: number; protocol?: string; targetPort?: number; nodePort?: number }>,
): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace, name, labels: { app: name } },
    spec: {
      type: ports.some((p) => p.nodePort !== undefined) ? 'NodePort' : 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ipFamilies: [clusterIP.includes(':') ? 'IPv6' : 'IPv4'],
      ipFamilyPolicy: 'SingleStack',
      internalTrafficPolicy: 'Cluster',
      sessionAffinity: 'None',
      selector: { app: name },
      ports: ports.map((p) => ({
        ...(p.name !== undefined ? { name: p.name } : {}),
        port: p.port,
        protocol: p.protocol ?? 'TCP',
        targetPort: p.targetPort ?? p.port,
        ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
      })),
    },
    status: { loadBalancer: {} },
  };
}

/** An EndpointSlice as the EndpointSlice controller writes it for `service`. */
export function makeEndpointSlice(
  namespace: string,
  service: string,
  ports: ReadonlyArray<{ name?: string; port: number; protocol?: string }>,
  endpoints: ReadonlyArray<{ ip: string; ready?: boolean; serving?: boolean; terminating?: boolean; node?: string }>,
  o: { name?: string } = {},
): Json {
  const v6 = endpoints.some((e) => e.ip.includes(':'));
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace,
      name: o.name ?? `${service}-x7k2q`,
      labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: service, uid: randomUUID(), controller: true, blockOwnerDeletion: true }],
    },
    addressType: v6 ? 'IPv6' : 'IPv4',
    ports: ports.map((p) => ({ ...(p.name !== undefined ? { name: p.name } : {}), port: p.port, protocol: p.protocol ?? 'TCP' })),
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
      nodeName: e.node ?? 'worker-1',
      targetRef: { kind: 'Pod', namespace, name: `${service}-${e.ip.replaceAll(/[.:]/g, '-')}`, uid: randomUUID() },
    })),
  };
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

const REASONS: Readonly<Record<number, string>> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  406: 'NotAcceptable',
  409: 'Conflict',
  410: 'Expired',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

/** The representation an Accept header asks for: full objects, metadata-only, or none acceptable. */
function negotiate(accept: string | undefined, as: 'PartialObjectMetadata' | 'PartialObjectMetadataList', projection: boolean): 'full' | 'partial' | undefined {
  if (accept === undefined || accept.trim() === '') return 'full';
  for (const clause of accept.split(',')) {
    const [type = '', ...params] = clause.split(';').map((p) => p.trim());
    const p: Record<string, string> = {};
    for (const kv of params) {
      const i = kv.indexOf('=');
      if (i > 0) p[kv.slice(0, i).toLowerCase()] = kv.slice(i + 1);
    }
    if (p['q'] === '0') continue;
    const mt = type.toLowerCase();
    if (mt !== 'application/json' && mt !== '*/*' && mt !== 'application/*') continue;
    if (p['as'] === undefined) return 'full';
    if (projection && p['as'] === as && p['g'] === 'meta.k8s.io' && p['v'] === 'v1') return 'partial';
    // a representation this server cannot give: try the next clause
  }
  return undefined;
}

function partial(obj: Json): Json {
  return { kind: PARTIAL, apiVersion: META_API_VERSION, metadata: obj['metadata'] };
}

/** Equal but for the fields the server sets (uid, resourceVersion, creationTimestamp). */
/** A list item: the object without kind and apiVersion. */
function withoutType(o: Json): Json {
  const item = { ...o };
  Reflect.deleteProperty(item, 'kind');
  Reflect.deleteProperty(item, 'apiVersion');
  return item;
}

/** Equal but for the fields the server sets, whatever the kind. */
function sameObject(stored: Json, next: Json): boolean {
  const strip = (o: Json): string => {
    const meta: Json = { ...(o['metadata'] ?? {}) };
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp']) Reflect.deleteProperty(meta, k);
    return JSON.stringify({ ...o, apiVersion: '', kind: '', metadata: meta });
  };
  return strip(stored) === strip(next);
}

function sameContent(stored: Json | undefined, next: Json): boolean {
  if (stored === undefined) return false;
  const strip = (o: Json): string => {
    const meta: Json = { ...(o['metadata'] ?? {}) };
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp']) Reflect.deleteProperty(meta, k);
    return JSON.stringify({ ...o, apiVersion: 'v1', kind: 'Node', metadata: meta });
  };
  return strip(stored) === strip(next);
}

/** RFC 7386. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return patch;
  const out: Json = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Json) } : {};
  for (const [k, v] of Object.entries(patch as Json)) {
    if (v === null) Reflect.deleteProperty(out, k);
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** The API server's checks on metadata.annotations / labels keys and values (apimachinery validation). */
function metadataProblem(meta: Json): string | undefined {
  for (const field of ['annotations', 'labels'] as const) {
    const map = meta[field];
    if (map === undefined) continue;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) return `metadata.${field}: must be a map of strings`;
    let size = 0;
    for (const [k, v] of Object.entries(map as Json)) {
      if (typeof v !== 'string') return `metadata.${field}[${k}]: must be a string, got ${typeof v}`;
      const slash = k.lastIndexOf('/');
      const prefix = slash === -1 ? undefined : k.slice(0, slash);
      const name = slash === -1 ? k : k.slice(slash + 1);
      if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) return `metadata.${field}: Invalid value: "${k}": name part must be a qualified name`;
      if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) return `metadata.${field}: Invalid value: "${k}": prefix part must be a DNS subdomain`;
      size += k.length + v.length;
    }
    if (field === 'annotations' && size > 256 * 1024) return 'metadata.annotations: Too long: must have at most 262144 bytes';
  }
  return undefined;
}

export async function startFakeApiServer(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const projection = options.metadataProjection ?? true;
  const historyLimit = options.historyLimit ?? 1000;
  let rv = options.initialResourceVersion ?? 1000;
  /** Watches from a resourceVersion below this get 410. */
  let compactedAt = rv;
  let version = options.version ?? DEFAULT_VERSION;
  const nodes = new Map<string, Json>();
  /** Services and EndpointSlices by `namespace/name`. */
  const namespaced: Record<Exclude<Collection, 'nodes'>, Map<string, Json>> = { services: new Map(), endpointslices: new Map() };
  const itemsOf = (c: Collection): Map<string, Json> => (c === 'nodes' ? nodes : namespaced[c]);
  const configMaps = new Map<string, Json>();
  const history: Event[] = [];
  const snapshots = new Map<string, Snapshot>();
  const watches = new Set<WatchConn>();
  const sockets = new Set<Socket>();
  const faults: ActiveFault[] = [];
  const requests: LoggedRequest[] = [];
  const tempFiles: string[] = [];
  let stopping = false;

  const certs: CertDir | undefined = options.tls ? makeCerts() : undefined;

  // ------------------------------------------------------------ state

  const clone = <T>(v: T): T => structuredClone(v);

  const emit = (type: Event['type'], object: Json, collection: Collection = 'nodes'): void => {
    const ev: Event = { collection, type, object: clone(object), rv: Number(object['metadata']['resourceVersion']) };
    history.push(ev);
    while (history.length > historyLimit) {
      const dropped = history.shift()!;
      compactedAt = Math.max(compactedAt, dropped.rv);
    }
    for (const w of watches) if (w.collection === collection) writeEvent(w, type, ev.object);
  };

  const store = (node: Json): Json => {
    const name = String(node['metadata']?.['name'] ?? '');
    if (name === '') throw new Error('fake API server: a node needs metadata.name');
    const old = nodes.get(name);
    const next = clone(node);
    next['apiVersion'] = 'v1';
    next['kind'] = 'Node';
    next['metadata'] = {
      ...next['metadata'],
      uid: old?.['metadata']['uid'] ?? randomUUID(),
      creationTimestamp: old?.['metadata']['creationTimestamp'] ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      resourceVersion: String(++rv),
    };
    nodes.set(name, next);
    emit(old === undefined ? 'ADDED' : 'MODIFIED', next);
    return clone(next);
  };

  const remove = (name: string): boolean => {
    const old = nodes.get(name);
    if (old === undefined) return false;
    nodes.delete(name);
    const gone = clone(old);
    gone['metadata']['resourceVersion'] = String(++rv);
    emit('DELETED', gone);
    return true;
  };

  const keyOf = (o: Json): string => `${String(o['metadata']?.['namespace'] ?? '')}/${String(o['metadata']?.['name'] ?? '')}`;

  /** Store a Service or EndpointSlice: server-set metadata, a new resourceVersion, an event. */
  const storeIn = (collection: Exclude<Collection, 'nodes'>, obj: Json): Json => {
    const { kind, apiVersion } = COLLECTIONS[collection];
    const meta = obj['metadata'] ?? {};
    if (!meta['name'] || !meta['namespace']) throw new Error(`fake API server: a ${kind} needs metadata.namespace and metadata.name`);
    const items = namespaced[collection];
    const key = keyOf(obj);
    const old = items.get(key);
    const next = clone(obj);
    next['apiVersion'] = apiVersion;
    next['kind'] = kind;
    next['metadata'] = {
      ...next['metadata'],
      uid: old?.['metadata']['uid'] ?? randomUUID(),
      creationTimestamp: old?.['metadata']['creationTimestamp'] ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      resourceVersion: String(++rv),
    };
    items.set(key, next);
    emit(old === undefined ? 'ADDED' : 'MODIFIED', next, collection);
    return clone(next);
  };

  const removeFrom = (collection: Exclude<Collection, 'nodes'>, namespace: string, name: string): boolean => {
    const items = namespaced[collection];
    const old = items.get(`${namespace}/${name}`);
    if (old === undefined) return false;
    items.delete(`${namespace}/${name}`);
    const gone = clone(old);
    gone['metadata']['resourceVersion'] = String(++rv);
    emit('DELETED', gone, collection);
    return true;
  };

  const replaceAll = (collection: Exclude<Collection, 'nodes'>, list: readonly Json[]): void => {
    const items = namespaced[collection];
    const keys = new Set(list.map(keyOf));
    for (const [key, old] of [...items]) if (!keys.has(key)) removeFrom(collection, old['metadata']['namespace'], old['metadata']['name']);
    for (const o of list) {
      const stored = items.get(keyOf(o));
      if (stored === undefined || !sameObject(stored, o)) storeIn(collection, o);
    }
  };

  // ------------------------------------------------------------ HTTP

  const send = (res: ServerResponse, code: number, body: Json): void => {
    if (res.headersSent || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
    res.end(text);
  };
  const fail = (res: ServerResponse, code: number, message: string, details?: Json): void =>
    send(res, code, status(code, REASONS[code] ?? 'Unknown', message, details));

  const writeEvent = (w: WatchConn, type: string, object: Json): void => {
    if (w.res.destroyed || w.res.writableEnded) return;
    w.res.write(`${JSON.stringify({ type, object: w.metadataOnly && type !== 'ERROR' ? partial(object) : object })}\n`);
  };

  const closeWatch = (w: WatchConn): void => {
    clearTimeout(w.timer);
    watches.delete(w);
  };

  const readBody = (req: IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 3 * 1024 * 1024) req.destroy(new Error('body too large'));
        else chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });

  const matches = (m: FaultMatch, logged: LoggedRequest, isWatch: boolean): boolean =>
    (m.method === undefined || m.method === logged.method) &&
    (m.path === undefined || (typeof m.path === 'string' ? m.path === logged.path : m.path.test(logged.path))) &&
    (m.watch === undefined || m.watch === isWatch) &&
    (m.when === undefined || m.when(logged));

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname;
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? 'GET';
    const isWatch = query['watch'] === 'true' || query['watch'] === '1';
    const body = method === 'PATCH' || method === 'POST' || method === 'PUT' ? await readBody(req) : undefined;
    const logged: LoggedRequest = {
      method,
      path,
      query,
      accept: req.headers.accept,
      contentType: req.headers['content-type'],
      authorization: req.headers.authorization,
      body,
      at: Date.now(),
    };
    requests.push(logged);

    for (const f of faults) {
      if (f.remaining === 0 || !matches(f.match, logged, isWatch)) continue;
      if (f.remaining > 0) f.remaining--;
      switch (f.fault.kind) {
        case 'status':
          fail(res, f.fault.code, f.fault.message ?? `fake API server: injected ${f.fault.code}`);
          return;
        case 'reset':
          req.socket.destroy();
          return;
        case 'delay':
          await new Promise((r) => setTimeout(r, (f.fault as { ms: number }).ms));
          if (res.destroyed || stopping) return;
          break;
        case 'hang':
          await new Promise<void>((resume) => f.held.add(resume));
          if (res.destroyed || stopping) return;
          break;
        case 'run':
          f.fault.fn();
          break;
      }
      break;
    }

    if (options.token !== undefined && req.headers.authorization !== `Bearer ${options.token}`) {
      fail(res, 401, 'Unauthorized');
      return;
    }

    if (path === '/version' || path === '/version/') {
      send(res, 200, {
        ...version,
        gitCommit: '0123456789abcdef0123456789abcdef01234567',
        gitTreeState: 'clean',
        buildDate: '2024-12-10T11:36:36Z',
        goVersion: 'go1.22.9',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
      return;
    }

    const served = (Object.keys(COLLECTIONS) as Collection[]).find((c) => c !== 'nodes' && COLLECTIONS[c].path === path);
    if (served !== undefined) {
      if (method !== 'GET') return fail(res, 405, `the fake API server does not ${method} the ${served} collection`);
      if (query['labelSelector'] || query['fieldSelector']) return fail(res, 400, 'fake API server: selectors are not implemented');
      if (isWatch) return startWatch(req, res, query, served);
      const rep = negotiate(req.headers.accept, 'PartialObjectMetadataList', projection);
      if (rep === undefined) return fail(res, 406, `only the following media types are accepted: application/json, ${req.headers.accept ?? ''}`);
      return list(res, query, rep, served);
    }

    if (path === '/api/v1/nodes') {
      if (method !== 'GET') return fail(res, 405, `the fake API server does not ${method} the node collection`);
      if (query['labelSelector'] || query['fieldSelector']) return fail(res, 400, 'fake API server: selectors are not implemented');
      if (isWatch) return startWatch(req, res, query);
      const rep = negotiate(req.headers.accept, 'PartialObjectMetadataList', projection);
      if (rep === undefined) return fail(res, 406, `only the following media types are accepted: application/json, ${req.headers.accept ?? ''}`);
      return list(res, query, rep);
    }

    const nodeMatch = /^\/api\/v1\/nodes\/([^/]+)$/.exec(path);
    if (nodeMatch !== null) {
      const name = decodeURIComponent(nodeMatch[1]!);
      const node = nodes.get(name);
      if (node === undefined) return fail(res, 404, `nodes "${name}" not found`, { name, kind: 'nodes' });
      if (method === 'GET') {
        const rep = negotiate(req.headers.accept, 'PartialObjectMetadata', projection);
        if (rep === undefined) return fail(res, 406, 'not acceptable');
        return send(res, 200, rep === 'partial' ? partial(node) : node);
      }
      if (method === 'PATCH') return patchNode(res, node, req.headers['content-type'] ?? '', body ?? '');
      return fail(res, 405, `the fake API server does not ${method} nodes`);
    }

    const cmMatch = /^\/api\/v1\/namespaces\/([^/]+)\/configmaps\/([^/]+)$/.exec(path);
    if (cmMatch !== null && method === 'GET') {
      const [ns, name] = [decodeURIComponent(cmMatch[1]!), decodeURIComponent(cmMatch[2]!)];
      const cm = configMaps.get(`${ns}/${name}`);
      if (cm === undefined) return fail(res, 404, `configmaps "${name}" not found`, { name, kind: 'configmaps' });
      return send(res, 200, cm);
    }

    fail(res, 404, 'the server could not find the requested resource');
  };

  const list = (res: ServerResponse, query: Record<string, string>, rep: 'full' | 'partial', collection: Collection = 'nodes'): void => {
    let snap: Snapshot;
    let offset = 0;
    const token = query['continue'];
    if (token) {
      let decoded: { id?: string; offset?: number };
      try {
        decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { id?: string; offset?: number };
      } catch {
        return fail(res, 400, 'continue key is not valid');
      }
      const s = decoded.id === undefined ? undefined : snapshots.get(decoded.id);
      if (s === undefined) {
        return fail(res, 410, 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      snap = s;
      offset = decoded.offset ?? 0;
    } else {
      snap = { rv, items: [...itemsOf(collection).values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b))).map(clone) };
    }
    const limit = query['limit'] ? Number(query['limit']) : 0;
    const end = limit > 0 ? Math.min(snap.items.length, offset + limit) : snap.items.length;
    const items = snap.items.slice(offset, end);
    const metadata: Json = { resourceVersion: String(snap.rv) };
    if (end < snap.items.length) {
      const id = token ? (JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { id: string }).id : randomUUID();
      snapshots.set(id, snap);
      metadata['continue'] = Buffer.from(JSON.stringify({ id, offset: end })).toString('base64url');
      metadata['remainingItemCount'] = snap.items.length - end;
    }
    if (rep === 'partial') {
      // A real API server encodes an empty metadata-only list's items as null (Go's nil slice).
      send(res, 200, { kind: 'PartialObjectMetadataList', apiVersion: META_API_VERSION, metadata, items: items.length === 0 ? null : items.map(partial) });
    } else {
      // Like the API server, list items carry no kind or apiVersion… except that nodes always did here.
      const { kind, apiVersion } = COLLECTIONS[collection];
      send(res, 200, { kind: `${kind}List`, apiVersion, metadata, items: collection === 'nodes' ? items : items.map(withoutType) });
    }
  };

  const startWatch = (req: IncomingMessage, res: ServerResponse, query: Record<string, string>, collection: Collection = 'nodes'): void => {
    const rep = negotiate(req.headers.accept, 'PartialObjectMetadata', projection);
    if (rep === undefined) return fail(res, 406, 'not acceptable');
    const from = query['resourceVersion'];
    const fromRv = from === undefined || from === '' || from === '0' ? undefined : Number(from);
    if (fromRv !== undefined && !Number.isSafeInteger(fromRv)) return fail(res, 400, `resourceVersion: Invalid value: "${from}"`);
    const expired = fromRv !== undefined && fromRv < compactedAt;
    if (expired && options.expiredWatch === 'status') {
      return fail(res, 410, `too old resource version: ${fromRv} (${compactedAt})`);
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w: WatchConn = {
      collection,
      res,
      bookmarks: query['allowWatchBookmarks'] === 'true',
      metadataOnly: rep === 'partial',
      timer: undefined,
    };
    if (expired) {
      writeEvent(w, 'ERROR', status(410, 'Expired', `too old resource version: ${fromRv} (${compactedAt})`));
      res.end();
      return;
    }
    watches.add(w);
    res.on('close', () => closeWatch(w));
    if (fromRv === undefined) {
      // "Start at most recent": synthetic ADDED events for the current state.
      for (const n of itemsOf(collection).values()) writeEvent(w, 'ADDED', n);
    } else {
      for (const ev of history) if (ev.collection === collection && ev.rv > fromRv) writeEvent(w, ev.type, ev.object);
    }
    const timeout = Number(query['timeoutSeconds'] ?? 0);
    if (timeout > 0) {
      w.timer = setTimeout(() => {
        closeWatch(w);
        res.end();
      }, timeout * 1000);
    }
  };

  const patchNode = (res: ServerResponse, node: Json, contentType: string, text: string): void => {
    const type = contentType.split(';')[0]!.trim().toLowerCase();
    let patch: unknown;
    try {
      patch = JSON.parse(text);
    } catch (error) {
      return fail(res, 400, `error decoding patch: ${(error as Error).message}`);
    }
    let next: Json;
    if (type === 'application/merge-patch+json') {
      if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return fail(res, 400, 'merge patch must be a JSON object');
      const pm = (patch as Json)['metadata'];
      if (pm?.['resourceVersion'] !== undefined && pm['resourceVersion'] !== node['metadata']['resourceVersion']) {
        return fail(res, 409, `Operation cannot be fulfilled on nodes "${node['metadata']['name']}": the object has been modified; please apply your changes to the latest version and try again`);
      }
      next = mergePatch(clone(node), patch) as Json;
    } else if (type === 'application/json-patch+json') {
      if (!Array.isArray(patch)) return fail(res, 400, 'json patch must be an array of operations');
      try {
        next = fjp.applyPatch(clone(node), patch as Operation[], true, false).newDocument;
      } catch (error) {
        return fail(res, 422, `the server rejected our request due to an error in our request: ${(error as Error).message}`);
      }
    } else {
      return fail(res, 415, `the fake API server supports merge and JSON patches, not ${JSON.stringify(type)}`);
    }
    if (next['metadata']?.['name'] !== node['metadata']['name']) return fail(res, 422, 'metadata.name: Invalid value: field is immutable');
    const problem = metadataProblem(next['metadata'] ?? {});
    if (problem !== undefined) return fail(res, 422, `Node "${node['metadata']['name']}" is invalid: ${problem}`);
    if (JSON.stringify(next) === JSON.stringify(node)) return send(res, 200, node); // a no-op patch writes nothing
    send(res, 200, store(next));
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) fail(res, 500, `fake API server bug: ${(error as Error).message}`);
      else res.destroy();
    });
  };

  const makeServer = (): Server => {
    const server = certs ? createHttpsServer({ cert: readFileSync(certs.certFile), key: readFileSync(certs.keyFile) }, handler) : createHttpServer(handler);
    // TCP level, also for HTTPS: a connection still in its TLS handshake must not outlive stop().
    server.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    return server;
  };

  const server = makeServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  let unixServer: Server | undefined;
  if (options.unixSocket !== undefined) {
    unixServer = makeServer();
    rmSync(options.unixSocket, { force: true });
    await new Promise<void>((resolve) => unixServer!.listen(options.unixSocket, resolve));
  }
  const url = `${certs ? 'https' : 'http'}://127.0.0.1:${port}`;

  const kubeconfig = (o: { server?: string; token?: string } = {}): string => {
    const server = o.server ?? url;
    const cluster = certs
      ? `    certificate-authority-data: ${certs.ca.toString('base64')}\n`
      : '    insecure-skip-tls-verify: true\n';
    const token = o.token ?? options.token;
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${server}`,
      cluster.trimEnd(),
      'users:',
      '- name: fake',
      token === undefined ? '  user: {}' : `  user:\n    token: ${token}`,
      'contexts:',
      '- name: fake',
      '  context:',
      '    cluster: fake',
      '    user: fake',
      'current-context: fake',
      '',
    ].join('\n');
  };

  return {
    url,
    ca: certs?.ca,
    requests,
    kubeconfig,
    writeKubeconfig: (o) => {
      const dir = mkdtempSync(join(tmpdir(), 'st-kubeconfig-'));
      const file = join(dir, 'kubeconfig');
      writeFileSync(file, kubeconfig(o), { mode: 0o600 });
      tempFiles.push(dir);
      return file;
    },
    resourceVersion: () => String(rv),
    nodes: () => [...nodes.values()].map(clone),
    node: (name) => {
      const n = nodes.get(name);
      return n === undefined ? undefined : clone(n);
    },
    setNodes: (list) => {
      const names = new Set(list.map((n) => String(n['metadata']['name'])));
      for (const name of [...nodes.keys()]) if (!names.has(name)) remove(name);
      // Like the API server, an update that changes nothing writes nothing.
      for (const n of list) if (!sameContent(nodes.get(String(n['metadata']['name'])), n)) store(n);
    },
    upsertNode: store,
    deleteNode: remove,
    setConfigMap: (namespace, name, data) => {
      const key = `${namespace}/${name}`;
      if (data === undefined) configMaps.delete(key);
      else {
        configMaps.set(key, {
          kind: 'ConfigMap',
          apiVersion: 'v1',
          metadata: { name, namespace, uid: randomUUID(), resourceVersion: String(++rv) },
          data,
        });
      }
    },
    services: () => [...namespaced.services.values()].map(clone),
    setServices: (list) => replaceAll('services', list),
    upsertService: (o) => storeIn('services', o),
    deleteService: (namespace, name) => removeFrom('services', namespace, name),
    endpointSlices: () => [...namespaced.endpointslices.values()].map(clone),
    setEndpointSlices: (list) => replaceAll('endpointslices', list),
    upsertEndpointSlice: (o) => storeIn('endpointslices', o),
    deleteEndpointSlice: (namespace, name) => removeFrom('endpointslices', namespace, name),
    setVersion: (v) => {
      version = v;
    },
    advance: (n = 1) => {
      rv += n;
    },
    bookmark: () => {
      let sent = 0;
      for (const w of watches) {
        if (!w.bookmarks) continue;
        const { kind, apiVersion } = COLLECTIONS[w.collection];
        writeEvent(w, 'BOOKMARK', { kind, apiVersion, metadata: { resourceVersion: String(rv) } });
        sent++;
      }
      return sent;
    },
    compact: () => {
      history.length = 0;
      snapshots.clear();
      compactedAt = rv;
    },
    dropWatches: () => {
      const n = watches.size;
      for (const w of [...watches]) {
        closeWatch(w);
        w.res.socket?.destroy();
      }
      return n;
    },
    endWatches: () => {
      const n = watches.size;
      for (const w of [...watches]) {
        closeWatch(w);
        w.res.end();
      }
      return n;
    },
    watchCount: () => watches.size,
    fault: (fault, match = {}, times = -1) => {
      const f: ActiveFault = { fault, match, remaining: times, held: new Set() };
      faults.push(f);
      return {
        remove: () => {
          const i = faults.indexOf(f);
          if (i !== -1) faults.splice(i, 1);
          release(f);
        },
      };
    },
    clearFaults: () => {
      for (const f of faults.splice(0)) release(f);
    },
    stop: async () => {
      stopping = true;
      for (const f of faults.splice(0)) release(f);
      for (const w of [...watches]) closeWatch(w);
      const closed = Promise.all(
        [server, unixServer].filter((s): s is Server => s !== undefined).map((s) => new Promise<void>((r) => s.close(() => r()))),
      );
      for (const s of sockets) s.destroy();
      await closed;
      if (options.unixSocket !== undefined) rmSync(options.unixSocket, { force: true });
      for (const dir of tempFiles) rmSync(dir, { recursive: true, force: true });
      certs?.remove();
    },
  };

  function release(f: ActiveFault): void {
    for (const resume of [...f.held]) resume();
    f.held.clear();
  }
}

/** Poll until `check` is true (or throw after `timeoutMs`, naming `what`). */
export async function waitUntil(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
