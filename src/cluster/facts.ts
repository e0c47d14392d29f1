/**
 * The webhook's facts: in a cluster, conntrack values from the cluster's sources
 * (node annotations, kube-proxy, IPVS) over the static values, in the order of
 * CONNTRACK_LAYERS; the Services selecting a pod; the server version. Everything
 * is read in the background into memory: `conntrackFor` and `kubeVersion` do no
 * I/O, so a slow or dead API server never delays an admission, it only leaves
 * the last known (or fallback) facts in place. Outside a cluster, this machine's
 * /proc/sys (localFactsWiring).
 *
 * This module loads no Kubernetes client: each part imports its own when made.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { stackLayers, staticFacts, staticLayer } from '../core/conntrack.ts';
import type { ConntrackLayer, ConntrackValues } from '../core/conntrack.ts';
import type { FactsSource, FactsWiring } from '../core/facts.ts';
import type { KubeVersion } from '../core/model.ts';
import { ServiceIndex } from '../core/services.ts';
import { localFactsWiring } from '../host/local-facts.ts';
import type { LocalFactsConfig } from '../host/local-facts.ts';
import type { Logger } from '../shared/logger.ts';
import { CandidateIndex } from './candidate-nodes.ts';
import { accessKind } from './in-pod.ts';
import type { ClusterAccess } from './kubeconfig.ts';
import type { ConfigMapRef } from './kube-proxy-config.ts';
import type { KubeProxySource } from './kube-proxy-source.ts';
import type { NodeInformerOptions } from './node-informer.ts';
import { nodesLayer } from './nodes-layer.ts';
import type { ServerVersionOptions } from './server-version.ts';

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

/** One thing the cluster wiring reads in the background into memory. */
export interface ClusterPart {
  /** "nodes", "services": names its fields in the log. */
  readonly name: string;
  start(): void;
  /** Settles after the first read, whatever its outcome. */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
  /** A conntrack source; its precedence is its kind's place in CONNTRACK_LAYERS. */
  readonly layer?: ConntrackLayer;
  kubeVersion?(): KubeVersion | undefined;
  servicesFor?: FactsSource['servicesFor'];
  /** An informer's state: listed once yet, and its last problem. */
  status?(): { readonly synced: boolean; readonly lastError: string | undefined };
}

/** What a part is made from. */
export interface ClusterContext {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly config: ClusterFactsConfig;
  readonly tuning: ClusterFactsTuning;
  /** The candidate-node index the Node informer fills. */
  readonly index: CandidateIndex;
  /** For people: "the cluster of ~/.kube/config". */
  readonly where: string;
  /** kube-proxy's ConfigMap reader, one for every part that reads it; undefined when not configured. */
  kubeProxy(): Promise<KubeProxySource | undefined>;
}

function layerPart(name: string, layer: ConntrackLayer, status?: ClusterPart['status']): ClusterPart {
  return { name, start: () => layer.start(), ready: layer.ready, stop: () => layer.stop(), layer, ...(status === undefined ? {} : { status }) };
}

/** The cluster's parts; each loads what it needs when made. Their order is start order, not precedence. */
const CLUSTER_PARTS: ReadonlyArray<(c: ClusterContext) => Promise<ClusterPart | undefined>> = [
  async (c) => {
    const { NodeInformer } = await import('./node-informer.ts');
    const informer = new NodeInformer({ kubeConfig: c.kubeConfig, log: c.log, sink: c.index, ...c.tuning.informer });
    return layerPart('nodes', nodesLayer(c.index, { where: c.where, feed: informer }), () => informer.status());
  },
  async (c) => {
    const kubeProxy = await c.kubeProxy();
    return kubeProxy && layerPart('kube-proxy', kubeProxy);
  },
  async (c) => {
    const kubeProxy = await c.kubeProxy();
    return kubeProxy && layerPart('ipvs', (await import('./ipvs-layer.ts')).ipvsLayer(kubeProxy));
  },
  async (c) => {
    if (c.config.servicesInformer !== true) return undefined;
    const { ServiceInformer } = await import('./service-informer.ts');
    const index = new ServiceIndex();
    const informer = new ServiceInformer({ kubeConfig: c.kubeConfig, log: c.log, index, ...c.tuning.informer });
    return {
      name: 'services',
      start: () => informer.start(),
      ready: informer.synced,
      stop: () => informer.stop(),
      servicesFor: (namespace, labels) => index.match(namespace, labels),
      status: () => informer.status(),
    };
  },
  async (c) => {
    if (c.config.kubernetesVersion !== undefined) return undefined;
    const { ServerVersion } = await import('./server-version.ts');
    // Asks at once, then again with backoff until it answers.
    const version = new ServerVersion({ kubeConfig: c.kubeConfig, log: c.log, ...c.tuning.version });
    return { name: 'version', start: () => {}, ready: version.firstRead, stop: async () => version.stop(), kubeVersion: () => version.version };
  },
];

export interface ClusterFactsWiring extends FactsWiring {
  /** The cluster's conntrack sources, highest first; the static values are not among them. */
  readonly layers: readonly ConntrackLayer[];
  readonly index: CandidateIndex;
  /** The Node informer's state. */
  nodesStatus(): { readonly synced: boolean; readonly lastError: string | undefined };
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
  const base = staticLayer(config.staticConntrack);
  let kubeProxyReader: Promise<KubeProxySource | undefined> | undefined;
  const context: ClusterContext = {
    kubeConfig,
    log,
    config,
    tuning,
    index: new CandidateIndex(staticFacts(config.staticConntrack)),
    where: access.kind === 'kubeconfig' ? `the cluster of ${access.path}` : 'the cluster',
    kubeProxy: () =>
      (kubeProxyReader ??= (async () => {
        const ref = config.kubeProxyConfigMap;
        if (ref === undefined) return undefined;
        const { KubeProxySource } = await import('./kube-proxy-source.ts');
        return new KubeProxySource({ kubeConfig, log, ref, intervalMs: config.kubeProxyIntervalSeconds * 1000, requestTimeoutMs: tuning.kubeProxyRequestTimeoutMs });
      })()),
  };
  const parts = (await Promise.all(CLUSTER_PARTS.map((make) => make(context)))).filter((p) => p !== undefined);
  const stack = stackLayers(parts.flatMap((p) => (p.layer === undefined ? [] : [p.layer])), base);
  log.info(
    { api: access.server, via: access.kind === 'kubeconfig' ? access.path : 'in-cluster service account' },
    `reading conntrack facts from the Kubernetes API (${stack.layers.map((l) => l.label).join(', then ')})`,
  );
  for (const part of parts) part.start();
  const kubeProxy = await context.kubeProxy();

  const version = parts.find((p) => p.kubeVersion !== undefined);
  const services = parts.find((p) => p.servicesFor !== undefined);
  const facts: FactsSource = {
    conntrackFor: (placement) => stack.facts(placement),
    kubeVersion: () => config.kubernetesVersion ?? version?.kubeVersion?.(),
    ...(services?.servicesFor === undefined ? {} : { servicesFor: services.servicesFor }),
  };

  // Ready at the first sync of everything, or at the sync timeout: never later.
  let timer: NodeJS.Timeout | undefined;
  const timeoutMs = config.informerSyncTimeoutSeconds * 1000;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const synced = Promise.all(parts.map((p) => p.ready)).then(() => 'synced' as const);
  const ready = Promise.race([synced, timedOut]).then((how) => {
    clearTimeout(timer);
    if (how === 'timeout') {
      const fields: Record<string, unknown> = { timeoutSeconds: config.informerSyncTimeoutSeconds };
      for (const p of parts) {
        const s = p.status?.();
        if (s !== undefined) Object.assign(fields, { [`${p.name}Synced`]: s.synced, [`${p.name}Problem`]: s.lastError });
      }
      log.warn(fields, 'cluster facts not synced in time; ready anyway, sizing with what is known (kube-proxy or static values for unknown nodes)');
    }
  });

  const nodes = parts.find((p) => p.name === 'nodes');
  return {
    facts,
    ready,
    layers: stack.layers.filter((l) => l !== base),
    index: context.index,
    nodesStatus: () => nodes?.status?.() ?? { synced: false, lastError: undefined },
    ipvsUdpTimeout: () => kubeProxy?.ipvsUdpTimeout,
    stop: async () => {
      clearTimeout(timer);
      await Promise.all(parts.map((p) => p.stop()));
    },
  };
}

/**
 * The facts wiring for `serve`: `--kubeconfig` → that API; in a pod → the
 * in-cluster API; neither → this machine's /proc/sys. The Kubernetes client is
 * loaded only for a cluster (it costs a second of start-up).
 */
export function selectFactsWiring(
  env: Readonly<Record<string, string | undefined>>,
  options: { readonly inClusterRoot?: string; readonly tuning?: ClusterFactsTuning } = {},
): (config: ClusterFactsConfig & LocalFactsConfig & { readonly kubeconfig: string | undefined }, log: Logger) => Promise<FactsWiring> {
  return async (config, log) => {
    if (accessKind(config.kubeconfig, env, options.inClusterRoot) === 'none') return localFactsWiring(config, log);
    const { resolveClusterAccess } = await import('./kubeconfig.ts');
    const access = resolveClusterAccess({ kubeconfig: config.kubeconfig, env, inClusterRoot: options.inClusterRoot });
    if (access.kind === 'none') return localFactsWiring(config, log);
    return clusterFactsWiring(config, log, access, options.tuning);
  };
}
