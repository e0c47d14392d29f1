/**
 * Prometheus metrics of the agent (prom-client). Table usage and the kernel's
 * counters are read at scrape time, as node_exporter does; the timeouts are the
 * values of the latest reading (what the agent publishes).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import type { PartialConntrackValues } from '../core/conntrack.ts';
import { STALE_ENTRIES_METRIC } from '../diagnose/probe.ts';
import { CONNTRACK_STATS, readConntrackStat, readConntrackUsage } from './conntrack-stats.ts';
import type { PublishResult } from './annotator.ts';
import type { EndpointChangeSink } from './endpoint-changes.ts';
import type { ReapMetrics } from './reaper.ts';

export interface AgentMetrics {
  readonly registry: Registry;
  /** Record the latest sysctl reading. */
  setTimeouts(values: PartialConntrackValues): void;
  publish(result: PublishResult): void;
  /** The stale-entry metrics; registered only when that count is on. */
  readonly stale: StaleMetrics | undefined;
  /** safe_termination_endpoint_changes_total; registered only when that count is on. */
  readonly endpointChanges: EndpointChangeSink | undefined;
  /** The conntrack reaper's metrics; registered only when it is on. */
  readonly reap: ReapMetrics | undefined;
}

export const REAPED_METRIC = 'safe_termination_conntrack_reaped_total';
export const REAP_ERRORS_METRIC = 'safe_termination_conntrack_reap_errors_total';

export const ENDPOINT_CHANGES_METRIC = 'safe_termination_endpoint_changes_total';

/** Why a stale-entry scan gave no count, or `ok`. */
export type StaleScanResult = 'ok' | 'unreadable' | 'no-endpoints' | 'error';

export interface StaleMetrics {
  /** safe_termination_conntrack_stale_entries{namespace,service,protocol}. */
  readonly entries: Gauge<'namespace' | 'service' | 'protocol'>;
  /** A scan's outcome; anything but `ok` also clears the stale series (no count is better than a wrong one). */
  scanned(result: StaleScanResult, details?: { seconds: number; entries: number }): void;
}

export const STAT_HELP: Readonly<Record<(typeof CONNTRACK_STATS)[number], string>> = {
  found: 'Conntrack lookups that found an entry, summed over CPUs (/proc/net/stat/nf_conntrack).',
  invalid: 'Packets conntrack could not track, summed over CPUs.',
  insert_failed: 'Entries that could not be inserted (a race or a full table), summed over CPUs; rising means dropped flows.',
  drop: 'Packets dropped because the table was full, summed over CPUs.',
  early_drop: 'Entries evicted early to make room in a full table, summed over CPUs.',
  search_restart: 'Table lookups restarted because of a concurrent resize, summed over CPUs.',
};

export function createAgentMetrics(dirs: {
  conntrackProcDir: string;
  procNetDir: string;
  staleConntrackIntervalSeconds?: number;
  endpointChanges?: boolean;
  reap?: boolean;
}): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'safe_termination_agent_' });
  const registers = [registry];
  new Gauge({
    name: 'safe_termination_conntrack_entries',
    help: 'Entries in the conntrack table (nf_conntrack_count); 0 when conntrack is not loaded (see safe_termination_conntrack_available).',
    registers,
    async collect() {
      const { entries } = await readConntrackUsage(dirs.conntrackProcDir);
      if (entries === undefined) this.reset();
      else this.set(entries);
    },
  });
  new Gauge({
    name: 'safe_termination_conntrack_entries_limit',
    help: 'Size limit of the conntrack table (nf_conntrack_max).',
    registers,
    async collect() {
      const { limit } = await readConntrackUsage(dirs.conntrackProcDir);
      if (limit === undefined) this.reset();
      else this.set(limit);
    },
  });
  new Gauge({
    name: 'safe_termination_conntrack_available',
    help: '1 when this node\'s conntrack sysctls are readable (nf_conntrack loaded), else 0.',
    registers,
    async collect() {
      const { limit } = await readConntrackUsage(dirs.conntrackProcDir);
      this.set(limit === undefined ? 0 : 1);
    },
  });
  // One collect reads the stat file for all counters.
  let statRead: Promise<Record<string, number> | undefined> | undefined;
  const stat = (): Promise<Record<string, number> | undefined> => {
    statRead ??= readConntrackStat(dirs.procNetDir).finally(() => {
      setImmediate(() => (statRead = undefined));
    });
    return statRead;
  };
  new Gauge({
    name: 'safe_termination_conntrack_stat_available',
    help: '1 when /proc/net/stat/nf_conntrack is readable, else 0: then the safe_termination_conntrack_stat_*_total counters have no sample (not 0).',
    registers,
    async collect() {
      this.set((await stat()) === undefined ? 0 : 1);
    },
  });
  for (const name of CONNTRACK_STATS) {
    new Counter({
      name: `safe_termination_conntrack_stat_${name}_total`,
      help: STAT_HELP[name],
      registers,
      async collect() {
        const sums = await stat();
        this.reset();
        const v = sums?.[name];
        // Unreadable (or a kernel without this column): no sample at all, rather than a 0 that looks like health.
        if (v === undefined) this.remove();
        else this.inc(v);
      },
    });
  }
  const timeouts = new Gauge({
    name: 'safe_termination_conntrack_timeout_seconds',
    help: 'Conntrack timeouts read from this node\'s sysctls and published as Node annotations, by key (udp-timeout, …).',
    labelNames: ['key'],
    registers,
  });
  const publishes = new Counter({
    name: 'safe_termination_agent_publishes_total',
    help: 'Attempts to publish the conntrack annotations on the Node, by result (patched, error).',
    labelNames: ['result'],
    registers,
  });
  const lastPublish = new Gauge({
    name: 'safe_termination_agent_last_publish_timestamp_seconds',
    help: 'Time of the last successful annotation patch, seconds since the epoch.',
    registers,
  });
  return {
    registry,
    stale: (dirs.staleConntrackIntervalSeconds ?? 0) > 0 ? createStaleMetrics(registry) : undefined,
    endpointChanges: dirs.endpointChanges === true ? createEndpointChangeMetrics(registry) : undefined,
    reap: dirs.reap === true ? createReapMetrics(registry) : undefined,
    setTimeouts(values) {
      for (const key of CONNTRACK_KEYS) {
        const v = values[key];
        if (v === undefined) timeouts.remove({ key });
        else timeouts.set({ key }, v);
      }
    },
    publish(result) {
      publishes.inc({ result });
      if (result === 'patched') lastPublish.setToCurrentTime();
    },
  };
}

function createEndpointChangeMetrics(registry: Registry): EndpointChangeSink {
  const changes = new Counter({
    name: ENDPOINT_CHANGES_METRIC,
    help: 'Changes of the endpoints on this node in a Service\'s EndpointSlices (an address added or removed, or its ready/serving/terminating conditions changed), by the Service\'s namespace and name; sum over nodes for the Service\'s churn.',
    labelNames: ['namespace', 'service'],
    registers: [registry],
  });
  return {
    add(namespace, service, n) {
      changes.inc({ namespace, service }, n);
    },
    forget(namespace, service) {
      changes.remove({ namespace, service });
    },
  };
}

function createStaleMetrics(registry: Registry): StaleMetrics {
  const registers = [registry];
  const entries = new Gauge({
    name: STALE_ENTRIES_METRIC.name,
    help: STALE_ENTRIES_METRIC.help,
    labelNames: [...STALE_ENTRIES_METRIC.labelNames],
    registers,
  });
  const available = new Gauge({
    name: 'safe_termination_conntrack_stale_available',
    help: '1 when the last stale-entry scan counted (conntrack table readable, Services and EndpointSlices current), else 0; see safe_termination_conntrack_stale_scans_total for why.',
    registers,
  });
  const scans = new Counter({
    name: 'safe_termination_conntrack_stale_scans_total',
    help: 'Stale-entry scans of the conntrack table, by result (ok, unreadable: no /proc/net/nf_conntrack nor conntrack tool, no-endpoints: Services/EndpointSlices not synced or outdated, error).',
    labelNames: ['result'],
    registers,
  });
  const duration = new Gauge({
    name: 'safe_termination_conntrack_stale_scan_duration_seconds',
    help: 'Time the last successful stale-entry scan took (reading and classifying the whole table).',
    registers,
  });
  const scanned = new Gauge({
    name: 'safe_termination_conntrack_stale_scanned_entries',
    help: 'Conntrack entries read by the last successful stale-entry scan.',
    registers,
  });
  available.set(0);
  for (const result of ['ok', 'unreadable', 'no-endpoints', 'error']) scans.inc({ result }, 0);
  return {
    entries,
    scanned(result, details) {
      scans.inc({ result });
      available.set(result === 'ok' ? 1 : 0);
      if (result !== 'ok') entries.reset();
      if (details !== undefined) {
        duration.set(details.seconds);
        scanned.set(details.entries);
      }
    },
  };
}

function createReapMetrics(registry: Registry): ReapMetrics {
  const registers = [registry];
  const labelNames = ['namespace', 'service', 'protocol'] as const;
  const reaped = new Counter({
    name: REAPED_METRIC,
    help: 'Conntrack entries the reaper deleted because their DNAT target had left every EndpointSlice of the Service (at least --reap-hold before), by the Service\'s namespace and name and the protocol.',
    labelNames,
    registers,
  });
  const dryRun = new Counter({
    name: 'safe_termination_conntrack_reap_dry_run_total',
    help: 'With --reap-dry-run: conntrack entries the reaper would have deleted, by Service and protocol (an entry still there at the next sweep counts again).',
    labelNames,
    registers,
  });
  const errors = new Counter({
    name: REAP_ERRORS_METRIC,
    help: 'Failures of the conntrack reaper: a conntrack -D that failed (one per Service frontend and target), or a sweep that could not read the table.',
    registers,
  });
  const sweeps = new Counter({
    name: 'safe_termination_conntrack_reap_sweeps_total',
    help: 'Sweeps of the conntrack table by the reaper, by result (ok, not-ready: EndpointSlices not listed or not current, error: table unreadable).',
    labelNames: ['result'],
    registers,
  });
  const duration = new Gauge({
    name: 'safe_termination_conntrack_reap_sweep_duration_seconds',
    help: 'Time the last reaper sweep took (reading the table and deleting, rate limit included).',
    registers,
  });
  errors.inc(0);
  for (const result of ['ok', 'not-ready', 'error']) sweeps.inc({ result }, 0);
  return {
    reaped: (labels, n) => reaped.inc(labels, n),
    wouldReap: (labels, n) => dryRun.inc(labels, n),
    errors: (n) => errors.inc(n),
    swept(result, seconds) {
      sweeps.inc({ result });
      if (seconds !== undefined) duration.set(seconds);
    },
  };
}
