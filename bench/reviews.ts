/**
 * The three realistic reviews of the benchmark: pods as the API server
 * posts them to a mutating webhook on CREATE — defaulted, with the service-account
 * volume, tolerations and `managedFields` (which the API server fills in before
 * admission and the webhook must not spend time on).
 */
import { defaultedPod, reviewOf } from '../test/support/pods.ts';
import type { ContainerOptions } from '../test/support/pods.ts';

export interface BenchReview {
  /** Short id used on the command line and in the table. */
  readonly id: string;
  readonly title: string;
  readonly pod: Record<string, unknown>;
  readonly body: Buffer;
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** FieldsV1 of an object, as the API server's field manager records it (`f:`/`k:` keys). */
function fieldsV1(value: unknown): Json {
  if (Array.isArray(value)) {
    const out: Record<string, Json> = {};
    for (const item of value) {
      const name = (item as { name?: unknown } | null)?.name;
      const port = (item as { containerPort?: unknown } | null)?.containerPort;
      const key = typeof name === 'string' ? `k:{"name":"${name}"}` : typeof port === 'number' ? `k:{"containerPort":${port},"protocol":"TCP"}` : 'v:item';
      out[key] = { '.': {}, ...(fieldsV1(item) as Record<string, Json>) };
    }
    return out;
  }
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, Json> = {};
    for (const [k, v] of Object.entries(value)) out[`f:${k}`] = typeof v === 'object' && v !== null ? fieldsV1(v) : {};
    return out;
  }
  return {};
}

/** Adds the managedFields entry the ReplicaSet controller's create leaves on the pod. */
function withManagedFields(pod: Record<string, unknown>): Record<string, unknown> {
  const metadata = pod['metadata'] as Record<string, unknown>;
  const rest = Object.fromEntries(Object.entries(pod).filter(([k]) => k !== 'metadata' && k !== 'status'));
  metadata['managedFields'] = [
    {
      manager: 'kube-controller-manager',
      operation: 'Update',
      apiVersion: 'v1',
      time: '2026-11-26T10:00:00Z',
      fieldsType: 'FieldsV1',
      fieldsV1: fieldsV1({ metadata: { generateName: '', labels: metadata['labels'], ownerReferences: metadata['ownerReferences'], annotations: metadata['annotations'] ?? {} }, ...rest }),
    },
  ];
  metadata['creationTimestamp'] = '2026-11-26T10:00:00Z';
  metadata['uid'] = '3c2f6e0a-8d0b-4d8e-a5f4-6b3b7f0d2a91';
  return pod;
}

function env(n: number, valueBytes: number, prefix = 'SETTING'): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (let i = 0; i < n; i++) {
    if (i % 10 === 9) out.push({ name: `${prefix}_REF_${i}`, valueFrom: { secretKeyRef: { name: 'app-secrets', key: `key-${i}` } } });
    else out.push({ name: `${prefix}_${i}`, value: `v${i}-`.padEnd(valueBytes, 'abcdefghijklmnopqrstuvwxyz0123456789') });
  }
  return out;
}

function probes(port: number): Record<string, unknown> {
  const probe = (path: string) => ({ httpGet: { path, port, scheme: 'HTTP' }, timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3 });
  return { readinessProbe: probe('/ready'), livenessProbe: probe('/live') };
}

/** Extra container fields a real workload carries, patched into defaultedPod's containers. */
function enrich(containers: unknown[], envPer: number, envBytes: number): void {
  containers.forEach((c, i) => {
    const container = c as Record<string, unknown>;
    container['env'] = env(envPer, envBytes);
    container['args'] = ['--config=/etc/app/config.yaml', `--instance=${i}`, '--log-format=json'];
    const ports = container['ports'] as Array<{ containerPort: number }> | undefined;
    if (ports?.[0]) Object.assign(container, probes(ports[0].containerPort));
    container['securityContext'] = { runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, readOnlyRootFilesystem: true };
  });
}

export function oneContainerPod(): Record<string, unknown> {
  const pod = defaultedPod();
  enrich((pod['spec'] as { containers: unknown[] }).containers, 6, 24);
  return withManagedFields(pod);
}

/** 18 app containers (one keeping its own preStop hook, one serving UDP), 2 native sidecars. */
export function twentyContainerPod(): Record<string, unknown> {
  const containers: ContainerOptions[] = [];
  for (let i = 0; i < 18; i++) {
    if (i === 0) containers.push({ name: 'app', ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }] });
    else if (i === 1) containers.push({ name: 'dns-cache', ports: [{ containerPort: 5353, protocol: 'UDP', name: 'dns' }] });
    else if (i === 2) containers.push({ name: 'drainer', lifecycle: { preStop: { exec: { command: ['/bin/drain', '--wait=10s'] } } } });
    else containers.push({ name: `worker-${i}`, ports: [{ containerPort: 9000 + i, protocol: 'TCP', name: `w${i}` }] });
  }
  const pod = defaultedPod({
    containers,
    initContainers: [
      { name: 'mesh-proxy', restartPolicy: 'Always', ports: [{ containerPort: 15001, protocol: 'TCP', name: 'proxy' }] },
      { name: 'log-shipper', restartPolicy: 'Always' },
    ],
    annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9102', 'safe-termination.io/shutdown-budget': '20s' },
  });
  const spec = pod['spec'] as { containers: unknown[]; initContainers: unknown[] };
  enrich(spec.containers, 12, 32);
  enrich(spec.initContainers, 8, 32);
  return withManagedFields(pod);
}

/** A pod of about 1 MiB on the wire: big env blocks and a large annotation (and their managedFields). */
export function oneMebibytePod(target = 1024 * 1024): Record<string, unknown> {
  const build = (envCount: number) => {
    const pod = defaultedPod({
      containers: [
        { name: 'app', ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }] },
        { name: 'sidecar', ports: [{ containerPort: 9090, protocol: 'TCP', name: 'metrics' }] },
      ],
      annotations: { 'example.com/rendered-config': JSON.stringify({ routes: Array.from({ length: 800 }, (_, i) => ({ path: `/api/v1/resource-${i}`, upstream: `svc-${i % 40}.backend.svc.cluster.local:8080`, timeoutMs: 3000 })) }) },
    });
    enrich((pod['spec'] as { containers: unknown[] }).containers, envCount, 200);
    return withManagedFields(pod);
  };
  // Grow the env blocks until the review reaches the target size.
  let lo = 10;
  let hi = 4000;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (JSON.stringify(reviewOf(build(mid))).length < target) lo = mid + 1;
    else hi = mid;
  }
  return build(lo);
}

export function benchReviews(): BenchReview[] {
  const make = (id: string, title: string, pod: Record<string, unknown>): BenchReview => ({
    id,
    title,
    pod,
    body: Buffer.from(JSON.stringify(reviewOf(pod, { uid: '705ab4f5-6393-11e8-b7cc-42010a800002' }))),
  });
  return [
    make('1c', 'defaulted 1-container pod', oneContainerPod()),
    make('20c', '20-container pod with sidecars', twentyContainerPod()),
    make('1mib', '~1 MiB pod', oneMebibytePod()),
  ];
}
