/**
 * `safe-termination agent` (DaemonSet, hostNetwork): reads this node's conntrack
 * sysctls at start and every interval, publishes them as Node annotations,
 * and serves /healthz and Prometheus metrics.
 *
 * It stays healthy through everything it cannot help: an API server that is
 * away (the annotator retries with backoff), a kernel without conntrack (said
 * once; nothing is published until the sysctls appear, e.g. when kube-proxy
 * loads nf_conntrack), no cluster at all (metrics only).
 */
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { Server } from 'node:http';
import { sysctlName } from '../core/conntrack.ts';
import type { AgentAccess } from '../cluster/lean-kubeconfig.ts';
import { ConntrackTable } from '../host/conntrack-table.ts';
import type { ConntrackTableOptions } from '../host/conntrack-table.ts';
import { readConntrackSysctls } from '../host/sysctl.ts';
import type { Logger, LogLevel } from '../shared/logger.ts';
import { limitSlowClients, writeMetrics } from '../shared/metrics-endpoint.ts';
import { NodeAnnotator } from './annotator.ts';
import type { NodeAnnotatorOptions } from './annotator.ts';
import { createAgentMetrics } from './metrics.ts';
import type { AgentMetrics } from './metrics.ts';
import { ServiceEndpoints } from './service-endpoints.ts';
import type { ServiceEndpointsOptions } from './service-endpoints.ts';
import { StaleConntrackMonitor } from './stale-conntrack.ts';
import { readConntrackStat } from './conntrack-stats.ts';
import { EndpointChangeCounter } from './endpoint-changes.ts';
import { deleteFlowGroup } from '../host/conntrack-delete.ts';
import type { DeleteOptions } from '../host/conntrack-delete.ts';
import { EndpointTracker } from './reap-rule.ts';
import { Reaper } from './reaper.ts';
import type { ReaperOptions } from './reaper.ts';

export interface AgentConfig {
  /** undefined only outside a cluster, where the agent publishes nothing. */
  readonly nodeName: string | undefined;
  readonly intervalSeconds: number;
  readonly metricsPort: number;
  readonly bindAddress: string;
  readonly conntrackProcDir: string;
  readonly procNetDir: string;
  /** 0: the stale-entry count is off. */
  readonly staleConntrackIntervalSeconds: number;
  /** Count endpoint changes per Service (safe_termination_endpoint_changes_total). */
  readonly endpointChanges: boolean;
  /** The conntrack reaper. */
  readonly reap: boolean;
  readonly reapHoldSeconds: number;
  readonly reapMaxPerSecond: number;
  readonly reapDryRun: boolean;
  readonly conntrackReadTimeoutSeconds: number;
  readonly kubeconfig: string | undefined;
  readonly logLevel: LogLevel;
}

export interface AgentTuning {
  readonly annotator?: Pick<NodeAnnotatorOptions, 'backoff' | 'requestTimeoutMs' | 'verifyEveryMs'>;
  /** Interval in milliseconds instead of the config's seconds (tests). */
  readonly intervalMs?: number;
  /** The stale-entry count (tests): its interval in ms, endpoint informers, table reader. */
  readonly staleConntrack?: {
    readonly intervalMs?: number;
    readonly endpoints?: Pick<ServiceEndpointsOptions, 'maxFailingMs' | 'informer'>;
    readonly table?: Partial<ConntrackTableOptions>;
  };
  /** The conntrack reaper (tests): sweep timings, the deletion tool. */
  readonly reap?: Pick<ReaperOptions, 'resweepMs' | 'retryMs'> & { readonly delete?: DeleteOptions };
}

export interface RunningAgent {
  readonly port: number;
  readonly metrics: AgentMetrics;
  readonly annotator: NodeAnnotator | undefined;
  /** The stale-entry count, when --stale-conntrack-interval is set and the API server is reachable. */
  readonly staleConntrack: StaleConntrackMonitor | undefined;
  /** The conntrack reaper, when --reap is on and the API server is reachable. */
  readonly reaper: Reaper | undefined;
  /** Read the sysctls now and publish if needed (the interval timer does this too). */
  tick(): Promise<void>;
  stop(): Promise<void>;
}

type Availability = 'unknown' | 'available' | 'partial' | 'absent';

export async function startAgent(config: AgentConfig, log: Logger, access: AgentAccess, tuning: AgentTuning = {}): Promise<RunningAgent> {
  const metrics = createAgentMetrics({ ...config, reap: config.reap && access.kind !== 'none' });
  let annotator: NodeAnnotator | undefined;
  if (access.kind === 'none') {
    log.warn('not in a pod and no --kubeconfig: serving metrics only, publishing no Node annotations');
  } else if (config.nodeName === undefined) {
    throw new Error('no node name: set --node-name or NODE_NAME (the chart sets it from the downward API)');
  } else {
    annotator = new NodeAnnotator({
      kubeConfig: access.kubeConfig,
      nodeName: config.nodeName,
      log,
      onPublish: (r) => metrics.publish(r),
      ...tuning.annotator,
    });
    log.info({ node: config.nodeName, api: access.server }, 'publishing conntrack timeouts as Node annotations');
  }

  let availability: Availability = 'unknown';
  let statReadable: boolean | undefined;
  const tick = async (): Promise<void> => {
    const observedAt = new Date();
    const readable = (await readConntrackStat(config.procNetDir)) !== undefined;
    if (readable !== statReadable) {
      const fields = { file: join(config.procNetDir, 'stat', 'nf_conntrack') };
      if (!readable) {
        log.warn(fields, 'conntrack statistics unreadable: the safe_termination_conntrack_stat_*_total counters (insert_failed, drop, …) have no samples and safe_termination_conntrack_stat_available is 0');
      } else if (statReadable === false) log.info(fields, 'conntrack statistics readable');
      statReadable = readable;
    }
    const reading = await readConntrackSysctls(config.conntrackProcDir);
    const got = Object.keys(reading.values).length;
    const now: Availability = got === 0 ? 'absent' : reading.missing.length > 0 ? 'partial' : 'available';
    if (now !== availability) {
      // Said once per change, not once per tick.
      if (now === 'absent') {
        log.warn(
          { dir: config.conntrackProcDir },
          'no conntrack sysctls on this node (nf_conntrack not loaded?); publishing nothing until they appear',
        );
      } else if (now === 'partial') {
        log.warn({ dir: config.conntrackProcDir, missing: reading.missing.map(sysctlName) }, 'some conntrack sysctls are missing; publishing the others');
      } else if (availability !== 'unknown') {
        log.info({ dir: config.conntrackProcDir }, 'conntrack sysctls readable');
      }
      availability = now;
    }
    metrics.setTimeouts(reading.values);
    annotator?.setDesired(reading.values, observedAt);
  };

  const readOnce = (): Promise<void> =>
    tick().catch((error: unknown) => log.error({ problem: error instanceof Error ? error.message : String(error) }, 'reading conntrack sysctls failed'));
  // The first scrape already has this node's values.
  await readOnce();

  const stale = startStaleCount(config, log, access, metrics, tuning);

  const server = createAgentServer(metrics, () => ({
    node: config.nodeName ?? null,
    conntrack: availability,
    publish: annotator?.status(),
    staleConntrack: stale?.monitor?.status(),
    reaper: stale?.reaper?.status(),
  }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => {
      void stale?.stop();
      reject(error);
    });
    server.listen(config.metricsPort, config.bindAddress, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.metricsPort;

  const intervalMs = tuning.intervalMs ?? config.intervalSeconds * 1000;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const loop = (): void => {
    void readOnce().finally(() => {
      if (!stopped) timer = setTimeout(loop, intervalMs);
    });
  };
  timer = setTimeout(loop, intervalMs);
  log.info({ port, intervalSeconds: intervalMs / 1000 }, 'agent serving /healthz and /metrics');

  return {
    port,
    metrics,
    annotator,
    staleConntrack: stale?.monitor,
    reaper: stale?.reaper,
    tick,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      annotator?.stop();
      await stale?.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await closed;
      log.info('agent stopped');
    },
  };
}

/**
 * The informers of the Services' endpoints, for the stale-entry count of
 * --stale-conntrack-interval (with its scan loop), the endpoint-change count of
 * --endpoint-changes (EndpointSlices only) and the conntrack reaper of --reap
 * (EndpointSlices of every node, with its sweeps), started.
 */
function startStaleCount(
  config: AgentConfig,
  log: Logger,
  access: AgentAccess,
  metrics: AgentMetrics,
  tuning: AgentTuning,
): { monitor: StaleConntrackMonitor | undefined; reaper: Reaper | undefined; stop: () => Promise<void> } | undefined {
  const seconds = config.staleConntrackIntervalSeconds;
  const counting = seconds > 0 && metrics.stale !== undefined;
  const sink = metrics.endpointChanges;
  const reaping = config.reap && metrics.reap !== undefined;
  if (!counting && sink === undefined && !reaping) return undefined;
  if (access.kind === 'none' || config.nodeName === undefined) {
    if (counting) log.warn('--stale-conntrack-interval needs the Kubernetes API (Services and EndpointSlices): not counting stale conntrack entries');
    if (sink !== undefined) log.warn('--endpoint-changes needs the Kubernetes API (EndpointSlices) and a node name: not counting endpoint changes');
    if (config.reap) log.warn('--reap needs the Kubernetes API (EndpointSlices) and a node name: not reaping conntrack entries');
    return undefined;
  }
  const changes = sink === undefined ? undefined : new EndpointChangeCounter({ nodeName: config.nodeName, sink });
  let reaper: Reaper | undefined;
  const tracker = reaping
    ? new EndpointTracker({ holdMs: config.reapHoldSeconds * 1000, onGone: (g) => reaper?.endpointGone(g) })
    : undefined;
  const endpoints = new ServiceEndpoints({
    kubeConfig: access.kubeConfig,
    log,
    services: counting,
    // The change count alone keeps only this node's endpoints: a small cache on every node of a large cluster.
    // (The reaper needs every node's: this node's flows go to pods anywhere.)
    ...(counting || reaping ? {} : { onlyNode: config.nodeName }),
    ...(changes === undefined ? {} : { endpointChanges: changes }),
    ...(tracker === undefined
      ? {}
      : {
          onSlice: {
            upsert: (slice, synced) => {
              if (synced) tracker.markSynced();
              tracker.upsert(slice, Date.now());
            },
            remove: (slice, synced) => {
              if (synced) tracker.markSynced();
              tracker.remove(slice, Date.now());
            },
          },
        }),
    ...tuning.staleConntrack?.endpoints,
  });
  if (changes !== undefined) log.info({ node: config.nodeName }, 'counting endpoint changes per Service (watching EndpointSlices)');
  const table = counting || reaping ? new ConntrackTable({ procNetDir: config.procNetDir, deadlineMs: config.conntrackReadTimeoutSeconds * 1000, ...tuning.staleConntrack?.table }) : undefined;
  if (tracker !== undefined && table !== undefined && metrics.reap !== undefined) {
    const deleteOptions = { ...(tuning.staleConntrack?.table?.bin === undefined ? {} : { bin: tuning.staleConntrack.table.bin }), ...tuning.reap?.delete };
    reaper = new Reaper({
      tracker,
      table,
      deleter: (g) => deleteFlowGroup(g, deleteOptions),
      metrics: metrics.reap,
      log,
      maxPerSecond: config.reapMaxPerSecond,
      dryRun: config.reapDryRun,
      // Stricter than the stale count: a pod created while the watch fails may reuse a gone endpoint's IP.
      endpointsCurrent: () => endpoints.slicesCurrent(Date.now(), 30_000),
      ...(tuning.reap?.resweepMs === undefined ? {} : { resweepMs: tuning.reap.resweepMs }),
      ...(tuning.reap?.retryMs === undefined ? {} : { retryMs: tuning.reap.retryMs }),
    });
    const r = reaper;
    void endpoints.synced.then(() => {
      tracker.markSynced();
      r.start();
    });
    log.info(
      { holdSeconds: config.reapHoldSeconds, maxPerSecond: config.reapMaxPerSecond, dryRun: config.reapDryRun },
      config.reapDryRun ? 'conntrack reaper on, dry run: counting the entries to endpoints gone from every EndpointSlice, deleting none' : 'conntrack reaper on: deleting the conntrack entries to endpoints gone from every EndpointSlice',
    );
  }
  const stopReaper = async (): Promise<void> => {
    await reaper?.stop();
  };
  if (!counting || metrics.stale === undefined || table === undefined) {
    endpoints.start();
    return {
      monitor: undefined,
      reaper,
      stop: async () => {
        await stopReaper();
        await endpoints.stop();
      },
    };
  }
  const intervalMs = tuning.staleConntrack?.intervalMs ?? seconds * 1000;
  const monitor = new StaleConntrackMonitor({ table, endpoints, metrics: metrics.stale, log, intervalMs });
  endpoints.start();
  monitor.start();
  log.info({ intervalSeconds: intervalMs / 1000, table: table.path }, 'counting stale conntrack entries per Service (watching Services and EndpointSlices)');
  if (seconds < 60) log.warn({ intervalSeconds: seconds }, 'reading a large conntrack table this often costs CPU; 60s or more is recommended');
  return {
    monitor,
    reaper,
    stop: async () => {
      await stopReaper();
      await monitor.stop();
      await endpoints.stop();
    },
  };
}

function createAgentServer(metrics: AgentMetrics, status: () => unknown): Server {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET' });
      res.end('method not allowed\n');
      return;
    }
    if (path === '/healthz' || path === '/readyz') {
      // Healthy whatever the API server or the kernel does: nothing here is fixed by a restart.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify({ status: 'ok', ...(status() as object) })}\n`);
      return;
    }
    if (path === '/metrics') {
      writeMetrics(metrics.registry, res);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: the agent serves GET /healthz and GET /metrics\n');
  });
  limitSlowClients(server);
  return server;
}
