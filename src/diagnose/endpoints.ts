/**
 * Services and their current endpoints, from Kubernetes objects: a dump such as
 * `kubectl get services,endpointslices -A -o yaml` (or json), or the objects a
 * list call returned. Pure: objects in, an index out.
 *
 * EndpointSlices do not carry the Service's cluster IP, so a dump of slices alone
 * cannot say which VIP belongs to which Service; the classifier then infers it from
 * entries that reach a current endpoint (see classify.ts). With Service objects
 * the mapping is exact.
 */
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';

export type ServiceProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
}

/** One port of one Service. */
export interface ServicePortRef {
  readonly service: ServiceRef;
  /** `""` for an unnamed port. */
  readonly portName: string;
  readonly protocol: ServiceProtocol;
}

/** Conditions of an endpoint address, with the API's nil rules applied. */
export interface EndpointState {
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
}

export interface ServiceIndex {
  /** Number of Service and EndpointSlice objects read. */
  readonly serviceCount: number;
  readonly sliceCount: number;
  /** `proto|ip|port` of every cluster IP, external IP and load-balancer IP. */
  readonly frontends: ReadonlyMap<string, ServicePortRef>;
  /** `proto|nodePort`. */
  readonly nodePorts: ReadonlyMap<string, ServicePortRef>;
  /** `namespace/name` → endpoint IP → conditions (merged over the Service's slices). */
  readonly endpoints: ReadonlyMap<string, ReadonlyMap<string, EndpointState>>;
  /** `proto|ip|targetPort` of every endpoint → the Service ports it serves (to infer a VIP's Service). */
  readonly targets: ReadonlyMap<string, readonly ServicePortRef[]>;
  /** Objects of kinds this index does not use (e.g. v1 Endpoints), by kind. */
  readonly ignoredKinds: Readonly<Record<string, number>>;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

export function serviceKey(s: ServiceRef): string {
  return `${s.namespace}/${s.name}`;
}

export function frontendKey(protocol: string, ip: string, port: number | undefined): string {
  return `${protocol.toUpperCase()}|${ip.toLowerCase()}|${port ?? ''}`;
}

export function nodePortKey(protocol: string, port: number | undefined): string {
  return `${protocol.toUpperCase()}|${port ?? ''}`;
}

const protocolSchema = z
  .string()
  .nullish()
  .transform((p): ServiceProtocol | undefined => {
    const up = (p ?? 'TCP').toUpperCase();
    return up === 'TCP' || up === 'UDP' || up === 'SCTP' ? up : undefined;
  });

const metadataSchema = z.object({
  name: z.string().nullish(),
  namespace: z.string().nullish(),
  labels: z.record(z.string(), z.string()).nullish(),
});

const serviceSchema = z.object({
  kind: z.literal('Service'),
  metadata: metadataSchema,
  spec: z
    .object({
      clusterIP: z.string().nullish(),
      clusterIPs: z.array(z.string()).nullish(),
      externalIPs: z.array(z.string()).nullish(),
      ports: z
        .array(
          z.object({
            name: z.string().nullish(),
            protocol: protocolSchema,
            port: z.number().int(),
            nodePort: z.number().int().nullish(),
          }),
        )
        .nullish(),
    })
    .nullish(),
  status: z
    .object({
      loadBalancer: z.object({ ingress: z.array(z.object({ ip: z.string().nullish() })).nullish() }).nullish(),
    })
    .nullish(),
});

const sliceSchema = z.object({
  kind: z.literal('EndpointSlice'),
  metadata: metadataSchema,
  addressType: z.string().nullish(),
  ports: z
    .array(z.object({ name: z.string().nullish(), protocol: protocolSchema, port: z.number().int().nullish() }))
    .nullish(),
  endpoints: z
    .array(
      z.object({
        addresses: z.array(z.string()),
        conditions: z
          .object({ ready: z.boolean().nullish(), serving: z.boolean().nullish(), terminating: z.boolean().nullish() })
          .nullish(),
      }),
    )
    .nullish(),
});

type ServiceObject = z.infer<typeof serviceSchema>;
type SliceObject = z.infer<typeof sliceSchema>;

/**
 * Kubernetes objects from YAML or JSON text: one object, a List (`items`), or
 * several YAML documents. Throws with the document number on a syntax error.
 */
export function parseKubernetesObjects(text: string): unknown[] {
  const out: unknown[] = [];
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, n) => {
    if (doc.errors.length > 0) throw new Error(`document ${n + 1}: ${doc.errors[0]?.message ?? 'invalid YAML/JSON'}`);
    flatten(doc.toJS() as unknown, out);
  });
  return out;
}

function flatten(value: unknown, out: unknown[]): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const v of value) flatten(v, out);
    return;
  }
  const items = (value as { items?: unknown }).items;
  const kind = (value as { kind?: unknown }).kind;
  if (Array.isArray(items) && (kind === undefined || (typeof kind === 'string' && kind.endsWith('List')))) {
    for (const item of items) flatten(item, out);
    return;
  }
  out.push(value);
}

export interface IndexProblem {
  readonly kind: string;
  readonly name: string;
  readonly problem: string;
}

/** Build the index; objects of other kinds are counted and skipped, malformed ones reported. */
export function buildServiceIndex(objects: readonly unknown[], problems: IndexProblem[] = []): ServiceIndex {
  const frontends = new Map<string, ServicePortRef>();
  const nodePorts = new Map<string, ServicePortRef>();
  const endpoints = new Map<string, Map<string, EndpointState>>();
  const targets = new Map<string, ServicePortRef[]>();
  const ignoredKinds: Record<string, number> = {};
  let serviceCount = 0;
  let sliceCount = 0;
  for (const obj of objects) {
    const kind = typeof (obj as { kind?: unknown }).kind === 'string' ? (obj as { kind: string }).kind : '(no kind)';
    if (kind === 'Service') {
      const r = serviceSchema.safeParse(obj);
      if (!r.success) {
        problems.push({ kind, name: nameOf(obj), problem: r.error.issues[0]?.message ?? 'invalid' });
        continue;
      }
      serviceCount++;
      addService(r.data, frontends, nodePorts);
    } else if (kind === 'EndpointSlice') {
      const r = sliceSchema.safeParse(obj);
      if (!r.success) {
        problems.push({ kind, name: nameOf(obj), problem: r.error.issues[0]?.message ?? 'invalid' });
        continue;
      }
      sliceCount++;
      addSlice(r.data, endpoints, targets);
    } else {
      ignoredKinds[kind] = (ignoredKinds[kind] ?? 0) + 1;
    }
  }
  return { serviceCount, sliceCount, frontends, nodePorts, endpoints, targets, ignoredKinds };
}

function nameOf(obj: unknown): string {
  const m = (obj as { metadata?: { namespace?: unknown; name?: unknown } }).metadata;
  return `${typeof m?.namespace === 'string' ? m.namespace : ''}/${typeof m?.name === 'string' ? m.name : ''}`;
}

function addService(svc: ServiceObject, frontends: Map<string, ServicePortRef>, nodePorts: Map<string, ServicePortRef>): void {
  const service: ServiceRef = { namespace: svc.metadata.namespace ?? 'default', name: svc.metadata.name ?? '' };
  const spec = svc.spec;
  if (spec == null) return;
  const ips = new Set<string>();
  for (const ip of [...(spec.clusterIPs ?? []), spec.clusterIP ?? '']) {
    if (ip !== '' && ip !== 'None') ips.add(ip.toLowerCase());
  }
  for (const ip of spec.externalIPs ?? []) ips.add(ip.toLowerCase());
  for (const ing of svc.status?.loadBalancer?.ingress ?? []) if (ing.ip) ips.add(ing.ip.toLowerCase());
  for (const port of spec.ports ?? []) {
    if (port.protocol === undefined) continue;
    const ref: ServicePortRef = { service, portName: port.name ?? '', protocol: port.protocol };
    for (const ip of ips) frontends.set(frontendKey(port.protocol, ip, port.port), ref);
    if (port.nodePort != null && port.nodePort > 0) nodePorts.set(nodePortKey(port.protocol, port.nodePort), ref);
  }
}

/** The API's rules: ready nil means ready; serving nil means the same as ready; terminating nil means false. */
function conditionsOf(c: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null } | null | undefined): EndpointState {
  const ready = c?.ready ?? true;
  return { ready, serving: c?.serving ?? ready, terminating: c?.terminating ?? false };
}

function better(a: EndpointState, b: EndpointState): EndpointState {
  const rank = (s: EndpointState) => (s.serving ? 2 : 0) + (s.terminating ? 0 : 1);
  return rank(b) > rank(a) ? b : a;
}

function addSlice(slice: SliceObject, endpoints: Map<string, Map<string, EndpointState>>, targets: Map<string, ServicePortRef[]>): void {
  const name = slice.metadata.labels?.[SERVICE_NAME_LABEL];
  if (name === undefined || slice.addressType === 'FQDN') return;
  const service: ServiceRef = { namespace: slice.metadata.namespace ?? 'default', name };
  const key = serviceKey(service);
  let byIp = endpoints.get(key);
  if (byIp === undefined) {
    byIp = new Map();
    endpoints.set(key, byIp);
  }
  for (const ep of slice.endpoints ?? []) {
    const state = conditionsOf(ep.conditions);
    for (const raw of ep.addresses) {
      const ip = raw.toLowerCase();
      const before = byIp.get(ip);
      byIp.set(ip, before === undefined ? state : better(before, state));
      for (const port of slice.ports ?? []) {
        if (port.protocol === undefined || port.port == null) continue;
        const tkey = frontendKey(port.protocol, ip, port.port);
        const refs = targets.get(tkey) ?? [];
        if (!refs.some((r) => serviceKey(r.service) === key && r.portName === (port.name ?? ''))) {
          refs.push({ service, portName: port.name ?? '', protocol: port.protocol });
        }
        targets.set(tkey, refs);
      }
    }
  }
}
