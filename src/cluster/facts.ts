/**
 * The webhook's facts in a cluster (spec §5): per value, the candidate nodes'
 * agent annotations, else kube-proxy's configuration, else the static values;
 * and the server version. Everything is read in the background into memory:
 * `conntrackFor` and `kubeVersion` do no I/O, so a slow or dead API server never
 * delays an admission, it only leaves the last known (or fallback) facts in place.
 */
import { layerFacts, staticFacts, withIpvsUdpTimeout } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackValues, PartialConntrackValues } from '../core/conntrack.ts';
import type { FactsSource, FactsWiring } from '../core/facts.ts';
import type { KubeVersion } from '../core/model.ts';
import { localFactsWiring } from '../host/local-facts.ts';
import type { LocalFactsConfig } from '../host/local-facts.ts';
import type { Logger } from '../shared/logger.ts';
import { CandidateIndex } from './candidate-nodes.ts';
import { resolveClusterAccess } from './kubeconfig.ts';
import type { ClusterAccess } from './kubeconfig.ts';
import type { ConfigMapRef } from './kube-proxy-config.ts';
import { KubeProxySource } from './kube-proxy-source.ts';
import { NodeInformer } from './node-informer.ts';
import type { NodeInformerOptions } from './node-informer.ts';
import { ServerVersion } from './server-version.ts';
import { ServiceIndex } from '../core/services.ts';
import { ServiceInformer } from './service-informer.ts';
import type { ServerVersionOptions } from './server-version.ts';

/** kube-proxy's values over the static ones: what a node without annotations has. */
export function fallbackFacts(kubeProxy: PartialConntrackValues, staticValues: ConntrackFacts): ConntrackFacts {
  return layerFacts([{ source: 'kube-proxy', values: kubeProxy }], staticValues);
}

/** Knobs for tests (shorter backoffs and timeouts); production uses the defaults. */
export interface ClusterFactsTuning {
  readonly informer?: Pick<NodeInformerOptions, 'pageSize' | 'requestTimeoutMs' | 'watchIdleTimeoutMs' | 'watchTimeoutSeconds' | 'backoff'>;
  readonly version?: Pick<ServerVersionOptions, 'requestTimeoutMs' | 'backoff'>;
  readonly kubeProxyRequestTimeoutMs?: number;
}

/** What the cluster wiring reads of the configuration (serve's, or the CLI's). */
export interface ClusterFactsConfig {
  readonly staticConntrack: ConntrackValues;
  readonly kubernetesVersion: KubeVersion | undefined;
  /** undefined: kube-proxy's configuration is not read. */
  readonly kubeProxyConfigMap: ConfigMapRef | undefined;
  readonly kubeProxyIntervalSeconds: number;
  readonly informerSyncTimeoutSeconds: number;
  /** Keep a Service informer: the Services selecting a pod add their protocols. */
  readonly servicesInformer?: boolean;
}

export interface ClusterFactsWiring extends FactsWiring {
  readonly index: CandidateIndex;
  readonly informer: NodeInformer;
  /** Present when `servicesInformer` is on. */
  readonly services: { readonly index: ServiceIndex; readonly informer: ServiceInformer } | undefined;
  /** kube-proxy in IPVS mode: its UDP timeout, as last read (undefined in other modes, or not read). */
  ipvsUdpTimeout(): number | undefined;
}

export async function clusterFactsWiring(
  config: ClusterFactsConfig,
  log: Logger,
  access: Exclude<ClusterAccess, { kind: 'none' }>,
  tuning: ClusterFactsTuning = {},
): Promise<ClusterFactsWiring> {
  const { kubeConfig } = access;
  log.info(
    { api: access.server, via: access.kind === 'kubeconfig' ? access.path : 'in-cluster service account' },
    'reading conntrack facts from the Kubernetes API (node annotations, then kube-proxy, then static values)',
  );
  const staticValues = staticFacts(config.staticConntrack);
  const index = new CandidateIndex(staticValues);
  const informer = new NodeInformer({ kubeConfig, log, sink: index, ...tuning.informer });
  const kubeProxy =
    config.kubeProxyConfigMap === undefined
      ? undefined
      : new KubeProxySource({
          kubeConfig,
          log,
          ref: config.kubeProxyConfigMap,
          intervalMs: config.kubeProxyIntervalSeconds * 1000,
          requestTimeoutMs: tuning.kubeProxyRequestTimeoutMs,
          onChange: (values) => index.setFallback(fallbackFacts(values, staticValues)),
        });
  const version = config.kubernetesVersion === undefined ? new ServerVersion({ kubeConfig, log, ...tuning.version }) : undefined;
  const services =
    config.servicesInformer === true
      ? (() => {
          const serviceIndex = new ServiceIndex();
          return { index: serviceIndex, informer: new ServiceInformer({ kubeConfig, log, index: serviceIndex, ...tuning.informer }) };
        })()
      : undefined;
  informer.start();
  services?.informer.start();

  const facts: FactsSource = {
    // kube-proxy in IPVS mode raises the UDP wait on every node (spec §5).
    conntrackFor: (placement) => withIpvsUdpTimeout(index.conntrackFor(placement), kubeProxy?.ipvsUdpTimeout),
    kubeVersion: () => config.kubernetesVersion ?? version?.version,
    ...(services === undefined ? {} : { servicesFor: (namespace: string, labels: Readonly<Record<string, string>> | null | undefined) => services.index.match(namespace, labels) }),
  };

  // Ready at the first sync of everything, or at the sync timeout: never later.
  let timer: NodeJS.Timeout | undefined;
  const timeoutMs = config.informerSyncTimeoutSeconds * 1000;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const synced = Promise.all([informer.synced, kubeProxy?.firstRead, version?.firstRead, services?.informer.synced]).then(() => 'synced' as const);
  const ready = Promise.race([synced, timedOut]).then((how) => {
    clearTimeout(timer);
    if (how === 'timeout') {
      const s = informer.status();
      const svc = services?.informer.status();
      log.warn(
        {
          timeoutSeconds: config.informerSyncTimeoutSeconds,
          nodesSynced: s.synced,
          problem: s.lastError,
          ...(svc === undefined ? {} : { servicesSynced: svc.synced, servicesProblem: svc.lastError }),
        },
        'cluster facts not synced in time; ready anyway, sizing with what is known (kube-proxy or static values for unknown nodes)',
      );
    }
  });

  return {
    facts,
    ready,
    index,
    informer,
    services,
    ipvsUdpTimeout: () => kubeProxy?.ipvsUdpTimeout,
    stop: async () => {
      clearTimeout(timer);
      kubeProxy?.stop();
      version?.stop();
      await Promise.all([informer.stop(), services?.informer.stop()]);
    },
  };
}

/**
 * The facts wiring for `serve` (spec §5, issue 3): `--kubeconfig` → that API; in a
 * pod → the in-cluster API; neither → this machine's /proc/sys (localFactsWiring).
 */
export function selectFactsWiring(
  env: Readonly<Record<string, string | undefined>>,
  options: { readonly inClusterRoot?: string; readonly tuning?: ClusterFactsTuning } = {},
): (config: ClusterFactsConfig & LocalFactsConfig & { readonly kubeconfig: string | undefined }, log: Logger) => Promise<FactsWiring> {
  return async (config, log) => {
    const access = resolveClusterAccess({ kubeconfig: config.kubeconfig, env, inClusterRoot: options.inClusterRoot });
    if (access.kind === 'none') return localFactsWiring(config, log);
    return clusterFactsWiring(config, log, access, options.tuning);
  };
}
