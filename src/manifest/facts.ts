/**
 * The conntrack values and cluster version the offline CLI decides with, and
 * where each came from (spec §5). For each value the first source that has it wins:
 *   1. `--conntrack key=seconds,…`                                  (recorded as `static`)
 *   2. the node agent's annotations on the pod's candidate nodes,   (`nodes`)
 *      then kube-proxy's ConfigMap — from the live cluster          (`kube-proxy`)
 *      (`--kubeconfig`) or from a `kubectl get nodes -o yaml` dump
 *      (`--from-node-annotations`), through the webhook's own
 *      candidate-node index (src/cluster/candidate-nodes.ts);
 *      with neither, this machine's /proc/sys/net/netfilter         (`local`)
 *   3. the static values (`--static-*`, Linux defaults)             (`static`)
 */
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { CandidateIndex, candidateNodes, isUnconstrained } from '../cluster/candidate-nodes.ts';
import type { ClusterAccess } from '../cluster/kubeconfig.ts';
import type { ConfigMapRef } from '../cluster/kube-proxy-config.ts';
import type { ClusterFactsConfig } from '../cluster/facts.ts';
import { CONNTRACK_KEYS, layerFacts, staticFacts, sysctlName, withIpvsUdpTimeout } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackKey, ConntrackSource, ConntrackValues, PartialConntrackValues } from '../core/conntrack.ts';
import type { KubeVersion, ModelDefaults } from '../core/model.ts';
import type { PodPlacement } from '../core/pod.ts';
import { readConntrackSysctls } from '../host/sysctl.ts';
import { createLogger } from '../shared/logger.ts';
import { CodedError } from '../shared/errors.ts';
import type { ErrorParams } from '../shared/errors.ts';
import type { NodeDump } from './nodes.ts';

export interface Origin {
  /** For the sizing arithmetic: "local /proc", "static, --conntrack". */
  readonly short: string;
  /** For the table: "local: /proc/sys/net/netfilter/nf_conntrack_udp_timeout". */
  readonly long: string;
}

export interface ConntrackView {
  readonly facts: ConntrackFacts;
  /** Per key, where the value came from, for people. */
  readonly origins: Readonly<Record<ConntrackKey, Origin>>;
}

export interface ManifestFacts {
  conntrackFor(placement: PodPlacement): ConntrackView;
  readonly kubeVersion: KubeVersion | undefined;
  /** "--kubernetes-version", "the cluster's /version", or why it is unknown. */
  readonly kubeVersionOrigin: string;
  /** For --verbose: what was read and what was missing. */
  readonly notes: readonly string[];
}

/** Where the cluster's facts come from, when not from this machine. */
export type ClusterInput =
  | { readonly kind: 'dump'; readonly file: string; readonly dump: NodeDump }
  | {
      readonly kind: 'api';
      readonly access: Exclude<ClusterAccess, { kind: 'none' }>;
      readonly kubeProxyConfigMap: ConfigMapRef | undefined;
      readonly syncTimeoutSeconds: number;
      /** Where the client's own log lines go (--verbose), else nowhere. */
      readonly log: ((line: string) => void) | undefined;
    };

export interface FactsOptions {
  /** `--conntrack` values. */
  readonly explicit: PartialConntrackValues;
  readonly staticValues: ConntrackValues;
  /** `--static-*` flags that were given (the others are Linux defaults). */
  readonly staticFlags: Readonly<Partial<Record<ConntrackKey, string>>>;
  readonly procDir: string;
  readonly cluster: ClusterInput | undefined;
  readonly kubeVersion: KubeVersion | undefined;
  readonly defaults: ModelDefaults;
}

/** The cluster could not be read: an input problem (exit 1), not a usage error. */
export class ClusterReadError extends CodedError<'CLUSTER_UNREADABLE'> {
  constructor(params: ErrorParams<'CLUSTER_UNREADABLE'>) {
    super('CLUSTER_UNREADABLE', params);
    this.name = 'ClusterReadError';
  }
}

const EXPLICIT: Origin = { short: 'static, --conntrack', long: 'static: --conntrack' };

export async function resolveFacts(o: FactsOptions): Promise<ManifestFacts> {
  const notes: string[] = [];
  const staticOrigin = (key: ConntrackKey): Origin => {
    const flag = o.staticFlags[key];
    return flag !== undefined ? { short: `static, ${flag}`, long: `static: ${flag}` } : { short: 'static default', long: 'static: Linux default' };
  };
  const statics = staticFacts(o.staticValues);
  /** `--conntrack` over facts from below, with the origins of both. */
  const withExplicit = (below: ConntrackFacts, originOf: (key: ConntrackKey, source: ConntrackSource) => Origin): ConntrackView => {
    const facts = layerFacts([{ source: 'static', values: o.explicit }], below);
    const origins = {} as Record<ConntrackKey, Origin>;
    for (const key of CONNTRACK_KEYS) origins[key] = o.explicit[key] !== undefined ? EXPLICIT : originOf(key, below[key].source);
    return { facts, origins };
  };
  const fixedVersion = (v: KubeVersion | undefined, fromCluster: boolean): Pick<ManifestFacts, 'kubeVersion' | 'kubeVersionOrigin'> => ({
    kubeVersion: o.kubeVersion ?? v,
    kubeVersionOrigin:
      o.kubeVersion !== undefined ? '--kubernetes-version' : v !== undefined ? "the cluster's /version" : fromCluster ? "unknown: the cluster's /version did not answer (counts as current)" : 'not given (counts as a current cluster)',
  });

  const cluster = o.cluster;
  if (cluster === undefined) {
    const reading = await readConntrackSysctls(o.procDir);
    if (reading.missing.length > 0) notes.push(`not readable in ${o.procDir}: ${reading.missing.map(sysctlName).join(', ')}; static values stand in`);
    const below = layerFacts([{ source: 'local', values: reading.values }], statics);
    const view = withExplicit(below, (key, source) =>
      source === 'local' ? { short: 'local /proc', long: `local: ${join(o.procDir, sysctlName(key))}` } : staticOrigin(key),
    );
    return { conntrackFor: () => view, ...fixedVersion(undefined, false), notes };
  }

  let index: CandidateIndex;
  let where: string;
  let kubeProxy = '';
  let ipvsUdpTimeout: number | undefined;
  let clusterVersion: KubeVersion | undefined;
  if (cluster.kind === 'dump') {
    index = new CandidateIndex(statics);
    for (const node of cluster.dump.nodes) index.upsert(node);
    where = cluster.file;
    notes.push(`read ${cluster.dump.nodes.length} node${cluster.dump.nodes.length === 1 ? '' : 's'} from ${cluster.file}`, ...cluster.dump.warnings);
  } else {
    const read = await readCluster(o, cluster);
    index = read.index;
    clusterVersion = read.version;
    ipvsUdpTimeout = read.ipvsUdpTimeout;
    where = cluster.access.kind === 'kubeconfig' ? `the cluster of ${cluster.access.path}` : 'the cluster';
    kubeProxy = cluster.kubeProxyConfigMap === undefined ? '' : `${cluster.kubeProxyConfigMap.namespace}/${cluster.kubeProxyConfigMap.name}`;
    notes.push(`read ${index.size} node${index.size === 1 ? '' : 's'} from ${where} (${cluster.access.server})`);
    if (ipvsUdpTimeout !== undefined) {
      notes.push(`kube-proxy runs in IPVS mode (ConfigMap ${kubeProxy}): UDP flows also live ${ipvsUdpTimeout}s in IPVS's connection table, so the UDP wait is at least that`);
    }
  }
  if (![...index.nodes()].some((n) => Object.keys(n.values).length > 0)) {
    notes.push(`no node in ${where} has conntrack.safe-termination.io annotations (is the node agent running?)`);
  }
  const all = [...index.nodes()];
  return {
    conntrackFor: (placement) => {
      const matching = isUnconstrained(placement) ? all : candidateNodes(placement, all, (name) => index.node(name));
      const none = matching.length === 0;
      const candidates = none ? all : matching;
      const facts = index.conntrackFor(placement);
      const raised = withIpvsUdpTimeout(facts, ipvsUdpTimeout);
      return withExplicit(raised, (key, source) => {
        if (source === 'nodes') {
          const annotated = candidates.filter((n) => n.values[key] !== undefined).length;
          const over = `${candidates.length} candidate node${candidates.length === 1 ? '' : 's'}${none ? ' (none matches the placement: all nodes)' : ''}`;
          return { short: 'nodes', long: `nodes: max over ${over}, ${annotated} annotated, in ${where}` };
        }
        if (source === 'kube-proxy' && raised[key] !== facts[key]) {
          return { short: 'kube-proxy IPVS', long: `kube-proxy: IPVS udpTimeout (mode ipvs) in ConfigMap ${kubeProxy}, over conntrack's ${facts[key].value}s` };
        }
        if (source === 'kube-proxy') return { short: 'kube-proxy', long: `kube-proxy: ConfigMap ${kubeProxy}` };
        return staticOrigin(key);
      });
    },
    ...fixedVersion(clusterVersion, cluster.kind === 'api'),
    notes,
  };
}

/**
 * The webhook's cluster wiring (node informer, kube-proxy ConfigMap, /version),
 * run until it has synced once, then stopped: the CLI decides on that snapshot.
 */
async function readCluster(
  o: FactsOptions,
  c: Extract<ClusterInput, { kind: 'api' }>,
): Promise<{ index: CandidateIndex; version: KubeVersion | undefined; ipvsUdpTimeout: number | undefined }> {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      c.log?.(chunk.toString('utf8'));
      done();
    },
  });
  const log = createLogger(c.log === undefined ? 'silent' : 'info', sink);
  const config: ClusterFactsConfig = {
    kubernetesVersion: o.kubeVersion,
    staticConntrack: o.staticValues,
    informerSyncTimeoutSeconds: c.syncTimeoutSeconds,
    kubeProxyConfigMap: c.kubeProxyConfigMap,
    kubeProxyIntervalSeconds: 3600,
  };
  const { clusterFactsWiring } = await import('../cluster/facts.ts');
  const wiring = await clusterFactsWiring(config, log, c.access);
  try {
    await wiring.ready;
    const status = wiring.informer.status();
    if (!status.synced) {
      throw new ClusterReadError({ server: c.access.server, seconds: c.syncTimeoutSeconds, lastError: status.lastError });
    }
    return { index: wiring.index, version: wiring.facts.kubeVersion(), ipvsUdpTimeout: wiring.ipvsUdpTimeout() };
  } finally {
    await wiring.stop();
  }
}
