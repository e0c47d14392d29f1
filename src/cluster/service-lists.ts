/**
 * Services and EndpointSlices straight from the API server: one paginated list
 * of each (no informer: `diagnose` is a one-shot command). Needs list on
 * services and discovery.k8s.io endpointslices in all namespaces.
 */
import { CoreV1Api, DiscoveryV1Api, KubeConfig } from '@kubernetes/client-node';
import { allOrEveryFailure } from '../shared/settle.ts';
import { describeApiError, statusOf } from './api-errors.ts';

export interface ClusterSource {
  /** A kubeconfig file; undefined: the in-cluster service account. */
  readonly kubeconfig: string | undefined;
  readonly timeoutMs?: number;
}

const PAGE = 500;

/** Services and EndpointSlices as plain objects with `kind` set, ready for buildServiceIndex. */
export async function listServicesAndSlices(source: ClusterSource): Promise<unknown[]> {
  const kc = new KubeConfig();
  if (source.kubeconfig !== undefined) kc.loadFromFile(source.kubeconfig);
  else kc.loadFromCluster();
  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const kinds = ['Services', 'EndpointSlices'] as const;
  const work = allOrEveryFailure(
    [
      paginate(async (_continue) => core.listServiceForAllNamespaces({ limit: PAGE, _continue })),
      paginate(async (_continue) => discovery.listEndpointSliceForAllNamespaces({ limit: PAGE, _continue })),
    ],
    (failures) => {
      const refused = failures.some((f) => statusOf(f.error) === 401 || statusOf(f.error) === 403);
      const hint = refused ? ' (diagnose needs list on services and discovery.k8s.io endpointslices in all namespaces)' : '';
      return `${failures.map((f) => `cannot list ${kinds[f.index]}: ${describeApiError(f.error)}`).join('; ')}${hint}`;
    },
  );
  void work.catch(() => undefined); // a late failure after the timeout is not an unhandled rejection
  const timeoutMs = source.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`the API server did not answer the Service/EndpointSlice lists within ${timeoutMs / 1000}s`));
    }, timeoutMs);
  });
  try {
    const [services, slices] = await Promise.race([work, timeout]);
    // List items carry no kind; keep only the fields the index reads.
    return [
      ...services.map((s) => ({ kind: 'Service', metadata: s.metadata, spec: s.spec, status: s.status })),
      ...slices.map((s) => ({ kind: 'EndpointSlice', metadata: s.metadata, addressType: s.addressType, ports: s.ports, endpoints: s.endpoints })),
    ];
  } finally {
    clearTimeout(timer);
  }
}

async function paginate<T>(page: (cont: string | undefined) => Promise<{ items: T[]; metadata?: { _continue?: string } }>): Promise<T[]> {
  const out: T[] = [];
  let cont: string | undefined;
  for (let n = 0; n < 10_000; n++) {
    const list = await page(cont);
    out.push(...list.items);
    cont = list.metadata?._continue;
    if (cont === undefined || cont === '') break;
  }
  return out;
}
