/**
 * The agent's side of `diagnose`: measure stale conntrack entries periodically and
 * publish them as a gauge. The class does no I/O itself: the agent passes how to
 * read conntrack (e.g. `() => listConntrack()` from src/host/conntrack-tool.ts) and
 * how to get the current Services/EndpointSlices (its own informer or list).
 */
import { diagnose, staleCounts } from './classify.ts';
import type { DiagnoseReport } from './report.ts';
import type { ConntrackEntry } from './conntrack.ts';
import type { ServiceIndex } from './endpoints.ts';

/** The proposed metric (a Gauge). */
export const STALE_ENTRIES_METRIC = {
  name: 'safe_termination_conntrack_stale_entries',
  help: 'Conntrack entries DNATed for a Service whose target is no longer a serving endpoint of it (stale entries: their packets go to a gone pod), by Service and protocol.',
  labelNames: ['namespace', 'service', 'protocol'] as const,
} as const;

/** The part of a prom-client Gauge the probe uses (structural: no prom-client import here). */
export interface StaleGauge {
  reset(): void;
  set(labels: { namespace: string; service: string; protocol: string }, value: number): void;
}

/** Replace the gauge's samples with the report's stale counts (Services without stale entries disappear). */
export function setStaleGauge(gauge: StaleGauge, report: DiagnoseReport): void {
  gauge.reset();
  for (const c of staleCounts(report)) gauge.set({ namespace: c.namespace, service: c.service, protocol: c.protocol }, c.stale);
}

export interface StaleProbeOptions {
  readonly readConntrack: () => Promise<{ readonly entries: readonly ConntrackEntry[] }>;
  readonly serviceIndex: () => ServiceIndex | Promise<ServiceIndex>;
  /** Updated after every successful measurement. */
  readonly gauge?: StaleGauge;
}

export class StaleConntrackProbe {
  readonly #options: StaleProbeOptions;
  #last: DiagnoseReport | undefined;
  #running: Promise<DiagnoseReport> | undefined;

  constructor(options: StaleProbeOptions) {
    this.#options = options;
  }

  /** The last successful report, if any. */
  get last(): DiagnoseReport | undefined {
    return this.#last;
  }

  /** Read conntrack and the endpoints, classify, update the gauge. Concurrent calls share one run. */
  measure(): Promise<DiagnoseReport> {
    this.#running ??= this.#measure().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #measure(): Promise<DiagnoseReport> {
    const [index, listing] = await Promise.all([this.#options.serviceIndex(), this.#options.readConntrack()]);
    const report = diagnose(listing.entries, index);
    this.#last = report;
    if (this.#options.gauge !== undefined) setStaleGauge(this.#options.gauge, report);
    return report;
  }
}
