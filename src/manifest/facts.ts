/**
 * The conntrack values and cluster version the offline CLI decides with, and
 * where each came from: the webhook's own sources, stacked by CONNTRACK_LAYERS,
 * with `--conntrack` on top and the static flags at the bottom. The cluster's
 * sources come from the live cluster (`--kubeconfig`, synced once) or from a
 * `kubectl get nodes -o yaml` dump (`--from-node-annotations`); with neither,
 * this machine's /proc/sys/net/netfilter.
 */
import { Writable } from 'node:stream';
import { CandidateIndex } from '../cluster/candidate-nodes.ts';
import type { ClusterAccess } from '../cluster/kubeconfig.ts';
import type { ConfigMapRef } from '../cluster/kube-proxy-config.ts';
import { clusterFactsWiring } from '../cluster/facts.ts';
import type { ClusterFactsConfig } from '../cluster/facts.ts';
import { nodesLayer } from '../cluster/nodes-layer.ts';
import { fixedLayer, stackLayers, staticLayer, sysctlName } from '../core/conntrack.ts';
import type { ConntrackKey, ConntrackLayer, ConntrackValues, ConntrackView, Origin, PartialConntrackValues } from '../core/conntrack.ts';
import type { KubeVersion, ModelDefaults } from '../core/model.ts';
import type { PodPlacement } from '../core/pod.ts';
import { localLayer } from '../host/local-facts.ts';
import { readConntrackSysctls } from '../host/sysctl.ts';
import { createLogger } from '../shared/logger.ts';
import { CodedError } from '../shared/errors.ts';
import type { ErrorParams } from '../shared/errors.ts';
import type { NodeDump } from './nodes.ts';

export type { ConntrackView, Origin } from '../core/conntrack.ts';

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
  const base = staticLayer(o.staticValues, (key) => {
    const flag = o.staticFlags[key];
    return flag !== undefined ? { short: `static, ${flag}`, long: `static: ${flag}` } : { short: 'static default', long: 'static: Linux default' };
  });
  const explicit = fixedLayer('explicit', '--conntrack', o.explicit, () => EXPLICIT);
  const fixedVersion = (v: KubeVersion | undefined, fromCluster: boolean): Pick<ManifestFacts, 'kubeVersion' | 'kubeVersionOrigin'> => ({
    kubeVersion: o.kubeVersion ?? v,
    kubeVersionOrigin:
      o.kubeVersion !== undefined ? '--kubernetes-version' : v !== undefined ? "the cluster's /version" : fromCluster ? "unknown: the cluster's /version did not answer (counts as current)" : 'not given (counts as a current cluster)',
  });

  const cluster = o.cluster;
  if (cluster === undefined) {
    const reading = await readConntrackSysctls(o.procDir);
    if (reading.missing.length > 0) notes.push(`not readable in ${o.procDir}: ${reading.missing.map(sysctlName).join(', ')}; static values stand in`);
    const view = stackLayers([explicit, localLayer(o.procDir, reading)], base).explain({});
    return { conntrackFor: () => view, ...fixedVersion(undefined, false), notes };
  }

  let index: CandidateIndex;
  let where: string;
  let layers: readonly ConntrackLayer[];
  let clusterVersion: KubeVersion | undefined;
  if (cluster.kind === 'dump') {
    index = new CandidateIndex(base.facts);
    for (const node of cluster.dump.nodes) index.upsert(node);
    where = cluster.file;
    layers = [nodesLayer(index, { where })];
    notes.push(`read ${cluster.dump.nodes.length} node${cluster.dump.nodes.length === 1 ? '' : 's'} from ${cluster.file}`, ...cluster.dump.warnings);
  } else {
    const read = await readCluster(o, cluster);
    index = read.index;
    layers = read.layers;
    clusterVersion = read.version;
    where = cluster.access.kind === 'kubeconfig' ? `the cluster of ${cluster.access.path}` : 'the cluster';
    notes.push(`read ${index.size} node${index.size === 1 ? '' : 's'} from ${where} (${cluster.access.server})`);
    if (read.ipvsUdpTimeout !== undefined && cluster.kubeProxyConfigMap !== undefined) {
      const ref = cluster.kubeProxyConfigMap;
      notes.push(`kube-proxy runs in IPVS mode (ConfigMap ${ref.namespace}/${ref.name}): UDP flows also live ${read.ipvsUdpTimeout}s in IPVS's connection table, so the UDP wait is at least that`);
    }
  }
  if (![...index.nodes()].some((n) => Object.keys(n.values).length > 0)) {
    notes.push(`no node in ${where} has conntrack.safe-termination.io annotations (is the node agent running?)`);
  }
  const stack = stackLayers([explicit, ...layers], base);
  return {
    conntrackFor: (placement: PodPlacement) => stack.explain(placement),
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
): Promise<{ index: CandidateIndex; layers: readonly ConntrackLayer[]; version: KubeVersion | undefined; ipvsUdpTimeout: number | undefined }> {
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
  const wiring = await clusterFactsWiring(config, log, c.access);
  try {
    await wiring.ready;
    const status = wiring.nodesStatus();
    if (!status.synced) {
      throw new ClusterReadError({ server: c.access.server, seconds: c.syncTimeoutSeconds, lastError: status.lastError });
    }
    return { index: wiring.index, layers: wiring.layers, version: wiring.facts.kubeVersion(), ipvsUdpTimeout: wiring.ipvsUdpTimeout() };
  } finally {
    await wiring.stop();
  }
}
