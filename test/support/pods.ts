/**
 * Pods as the API server sends them to a mutating webhook: after defaulting and
 * the ServiceAccount admission plugin (token volume and mounts, default
 * tolerations), ReplicaSet pods with generateName and no name.
 */

export interface ContainerOptions {
  readonly name: string;
  readonly ports?: ReadonlyArray<{ containerPort: number; protocol?: 'TCP' | 'UDP' | 'SCTP'; name?: string }>;
  readonly lifecycle?: Record<string, unknown>;
  readonly restartPolicy?: 'Always';
}

export interface PodOptions {
  readonly namespace?: string;
  readonly generateName?: string;
  readonly name?: string;
  readonly annotations?: Record<string, string>;
  readonly labels?: Record<string, string>;
  readonly containers?: readonly ContainerOptions[];
  readonly initContainers?: readonly ContainerOptions[];
  readonly terminationGracePeriodSeconds?: number | null;
  readonly owner?: { kind: string; apiVersion: string; name: string } | null;
  readonly spec?: Record<string, unknown>;
}

const TOKEN_VOLUME = 'kube-api-access-7xk2p';

function container(o: ContainerOptions): Record<string, unknown> {
  const c: Record<string, unknown> = {
    name: o.name,
    image: `registry.example.com/${o.name}:1.0`,
    resources: { requests: { cpu: '100m', memory: '64Mi' } },
    volumeMounts: [{ name: TOKEN_VOLUME, readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  };
  if (o.ports) c['ports'] = o.ports.map((p) => ({ ...p, protocol: p.protocol ?? 'TCP' }));
  if (o.lifecycle) c['lifecycle'] = o.lifecycle;
  if (o.restartPolicy) c['restartPolicy'] = o.restartPolicy;
  return c;
}

export function defaultedPod(o: PodOptions = {}): Record<string, unknown> {
  const namespace = o.namespace ?? 'shop';
  const metadata: Record<string, unknown> = {
    namespace,
    labels: { app: 'web', 'pod-template-hash': '7d4b9c6f8d', ...o.labels },
  };
  if (o.name) metadata['name'] = o.name;
  else metadata['generateName'] = o.generateName ?? 'web-7d4b9c6f8d-';
  if (o.annotations) metadata['annotations'] = o.annotations;
  const owner = o.owner === undefined ? { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d4b9c6f8d' } : o.owner;
  if (owner) {
    metadata['ownerReferences'] = [{ ...owner, uid: '2d0c9a44-51d6-4d5e-9a0f-3f4f0e6b1c11', controller: true, blockOwnerDeletion: true }];
  }
  const spec: Record<string, unknown> = {
    volumes: [
      {
        name: TOKEN_VOLUME,
        projected: {
          sources: [
            { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
            { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
            { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
          ],
          defaultMode: 420,
        },
      },
    ],
    containers: (o.containers ?? [{ name: 'app', ports: [{ containerPort: 8080, protocol: 'TCP', name: 'http' }] }]).map(container),
    restartPolicy: 'Always',
    dnsPolicy: 'ClusterFirst',
    serviceAccountName: 'default',
    serviceAccount: 'default',
    securityContext: {},
    schedulerName: 'default-scheduler',
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
    ...o.spec,
  };
  if (o.initContainers) spec['initContainers'] = o.initContainers.map(container);
  if (o.terminationGracePeriodSeconds !== null) spec['terminationGracePeriodSeconds'] = o.terminationGracePeriodSeconds ?? 30;
  return { metadata, spec, status: {} };
}

export interface ReviewOptions {
  readonly uid?: string;
  readonly operation?: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  readonly kind?: { group: string; version: string; kind: string };
  readonly subResource?: string;
}

let counter = 0;

/** The AdmissionReview the API server posts for `object`. */
export function reviewOf(object: Record<string, unknown>, o: ReviewOptions = {}): Record<string, unknown> {
  const namespace = (object['metadata'] as { namespace?: string } | undefined)?.namespace ?? 'shop';
  const kind = o.kind ?? { group: '', version: 'v1', kind: 'Pod' };
  const request: Record<string, unknown> = {
    uid: o.uid ?? `705ab4f5-6393-11e8-b7cc-42010a8000${String(++counter).padStart(2, '0')}`,
    kind,
    resource: { group: '', version: 'v1', resource: 'pods' },
    requestKind: kind,
    requestResource: { group: '', version: 'v1', resource: 'pods' },
    namespace,
    operation: o.operation ?? 'CREATE',
    userInfo: {
      username: 'system:serviceaccount:kube-system:replicaset-controller',
      uid: 'a8c1b1f0-0000-4000-8000-000000000001',
      groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'],
    },
    object,
    oldObject: null,
    dryRun: false,
    options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
  };
  if (o.subResource) request['subResource'] = o.subResource;
  return { kind: 'AdmissionReview', apiVersion: 'admission.k8s.io/v1', request };
}
