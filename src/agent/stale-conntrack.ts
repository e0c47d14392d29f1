/**
 * The agent's stale-entry count (`--stale-conntrack-interval`, off by default):
 * every interval, read this node's whole conntrack table and count the entries a
 * Service's DNAT sent to an endpoint that is gone or no longer serving, by Service
 * and protocol — what `safe-termination diagnose` prints, as the gauge
 * safe_termination_conntrack_stale_entries{namespace,service,protocol}.
 *
 * - Entries are classified as they are read (DiagnoseTally): memory does not grow
 *   with the table; a read has a deadline; scans never overlap.
 * - No count rather than a wrong one: until the Services and EndpointSlices have
 *   been listed, or once the API server has been unreachable for a while, or when
 *   the table cannot be read, the series are cleared and
 *   safe_termination_conntrack_stale_available is 0. Each such state is logged
 *   once when it begins, not every interval.
 * - Nothing here can stop the agent: every failure ends as a scan result.
 */
import type { Logger } from '../shared/logger.ts';
import { DiagnoseTally } from '../diagnose/tally.ts';
import type { DiagnoseReport } from '../diagnose/report.ts';
import { setStaleGauge } from '../diagnose/probe.ts';
import { ConntrackUnreadableError } from '../host/conntrack-table.ts';
import type { ConntrackTable, TableRead } from '../host/conntrack-table.ts';
import type { EndpointsState } from './service-endpoints.ts';
import type { StaleMetrics, StaleScanResult } from './metrics.ts';

export interface StaleMonitorOptions {
  readonly table: Pick<ConntrackTable, 'read'>;
  readonly endpoints: { current(): EndpointsState; readonly synced: Promise<void> };
  readonly metrics: StaleMetrics;
  readonly log: Logger;
  readonly intervalMs: number;
}

export interface StaleMonitorStatus {
  readonly result: StaleScanResult | undefined;
  readonly problem: string | undefined;
  /** Stale entries in the last successful scan. */
  readonly stale: number | undefined;
  readonly source: TableRead['source'] | undefined;
}

export interface ScanOutcome {
  readonly result: StaleScanResult;
  readonly report?: DiagnoseReport;
  readonly read?: TableRead;
  readonly problem?: string;
}

export class StaleConntrackMonitor {
  readonly #o: StaleMonitorOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<ScanOutcome> | undefined;
  #stopped = false;
  #started = false;
  readonly #abort = new AbortController();
  /** What was last logged, so that a state is said once. */
  #said: string | undefined;
  #status: StaleMonitorStatus = { result: undefined, problem: undefined, stale: undefined, source: undefined };

  constructor(o: StaleMonitorOptions) {
    this.#o = o;
  }

  status(): StaleMonitorStatus {
    return this.#status;
  }

  /** Scan every interval; the first scan as soon as the endpoints have synced. */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#schedule(this.#o.intervalMs);
    void this.#o.endpoints.synced.then(() => {
      if (!this.#stopped) this.#scanThenSchedule();
    });
  }

  stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    return (this.#running ?? Promise.resolve()).then(() => undefined);
  }

  /** One scan now (concurrent calls share it). */
  scan(): Promise<ScanOutcome> {
    this.#running ??= this.#scan().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#scanThenSchedule(), ms);
    this.#timer.unref();
  }

  #scanThenSchedule(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.scan().finally(() => this.#schedule(this.#o.intervalMs));
  }

  async #scan(): Promise<ScanOutcome> {
    const { metrics, log } = this.#o;
    const started = process.hrtime.bigint();
    let outcome: ScanOutcome;
    try {
      outcome = await this.#measure();
    } catch (error) {
      outcome = { result: 'error', problem: error instanceof Error ? error.message : String(error) };
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (this.#stopped) return outcome;
    if (outcome.result === 'ok' && outcome.report !== undefined && outcome.read !== undefined) {
      setStaleGauge(metrics.entries, outcome.report);
      metrics.scanned('ok', { seconds, entries: outcome.report.entries });
    } else {
      metrics.scanned(outcome.result);
    }
    this.#status = {
      result: outcome.result,
      problem: outcome.problem,
      stale: outcome.report?.stale,
      source: outcome.read?.source ?? this.#status.source,
    };
    this.#say(outcome, seconds, log);
    return outcome;
  }

  async #measure(): Promise<ScanOutcome> {
    const endpoints = this.#o.endpoints.current();
    if (endpoints.state === 'syncing') return { result: 'no-endpoints', problem: 'Services and EndpointSlices not listed yet' };
    if (endpoints.state === 'outdated') {
      const problem = `the API server has not been reachable for ${Math.round(endpoints.failingForMs / 1000)}s${endpoints.problem === undefined ? '' : ` (${endpoints.problem})`}`;
      return { result: 'no-endpoints', problem };
    }
    const tally = new DiagnoseTally(endpoints.index);
    try {
      const read = await this.#o.table.read((e) => tally.add(e), this.#abort.signal);
      return { result: 'ok', report: tally.report(), read };
    } catch (error) {
      if (error instanceof ConntrackUnreadableError) return { result: 'unreadable', problem: error.message };
      throw error;
    }
  }

  /** Log a state when it begins (and problems when they change), not every interval. */
  #say(o: ScanOutcome, seconds: number, log: Logger): void {
    const stale = o.report?.stale ?? 0;
    // A stable key per state: the problem text of an outdated index or a failure changes every time.
    const key =
      o.result === 'ok' ? `ok:${o.read?.source ?? ''}:${stale > 0 ? 'stale' : 'clean'}`
      : o.result === 'unreadable' ? `unreadable:${o.problem ?? ''}`
      : o.result === 'no-endpoints' ? `no-endpoints:${o.problem?.startsWith('Services and EndpointSlices not listed') === true ? 'syncing' : 'outdated'}`
      : 'error';
    const fields = { seconds: Math.round(seconds * 1000) / 1000, entries: o.report?.entries, stale, source: o.read?.source };
    if (o.result === 'ok' && o.report !== undefined) {
      log.debug({ ...fields, dnat: o.report.dnat, live: o.report.live, draining: o.report.draining, closed: o.report.closed }, 'stale conntrack scan');
      if ((o.read?.skipped ?? 0) > 0 && this.#said !== key) {
        log.warn({ skipped: o.read?.skipped, first: o.read?.firstSkipped }, 'some conntrack lines were not understood and not counted');
      }
    }
    if (key === this.#said) {
      if (o.result === 'error') log.debug({ problem: o.problem }, 'stale conntrack scan failed again');
      return;
    }
    const before = this.#said;
    this.#said = key;
    switch (o.result) {
      case 'ok': {
        const top = o.report?.groups
          .filter((g) => g.stale > 0)
          .slice(0, 5)
          .map((g) => `${g.namespace}/${g.service} ${g.protocol} ×${g.stale} → ${g.staleTargets.map((t) => `${t.target} (${t.why})`).slice(0, 2).join(', ')}`);
        if (stale > 0) log.info({ ...fields, top }, 'stale conntrack entries: flows still sent to endpoints that are gone or not serving');
        else log.info(fields, before?.startsWith('ok:') === true ? 'no stale conntrack entries any more' : 'counting stale conntrack entries');
        return;
      }
      case 'unreadable':
        log.warn({ problem: o.problem }, 'cannot read the conntrack table: stale entries are not counted (safe_termination_conntrack_stale_available 0) until it becomes readable');
        return;
      case 'no-endpoints':
        if (before === undefined && o.problem?.startsWith('Services and EndpointSlices not listed') === true) {
          log.info('waiting for the Services and EndpointSlices before counting stale conntrack entries');
        } else {
          log.warn({ problem: o.problem }, 'Service endpoints not current: stale conntrack entries are not counted meanwhile');
        }
        return;
      case 'error':
        log.warn({ problem: o.problem }, 'stale conntrack scan failed; trying again next interval');
        return;
    }
  }
}
