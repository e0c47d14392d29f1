/**
 * The conntrack reaper (`--reap`): deletes the entries that still send
 * a flow to an endpoint that has left every EndpointSlice (the rule: reap-rule.ts).
 *
 * - Event-driven: when an endpoint goes, a sweep is scheduled for the moment its
 *   hold ends (`--reap-hold`); endpoints going together share a sweep. While gone
 *   endpoints are remembered, the table is swept again every `resweepMs` (entries
 *   kube-proxy's lagging rules still create). Sweeps never overlap; one requested
 *   during a sweep runs right after it. A sweep that fails is retried after
 *   `retryMs`, doubling up to `resweepMs`.
 * - A sweep streams the table (ConntrackTable: /proc/net/nf_conntrack or the
 *   tool), keeping only a count per (protocol, Service frontend, gone target):
 *   memory does not grow with the table.
 * - Each such group is deleted with one `conntrack -D` (host/conntrack-delete.ts
 *   says why), paced so that on average at most `maxPerSecond` entries go per
 *   second (a group counts its entries; one group larger than a second's budget
 *   goes at once, and the next waits for it to be paid off).
 * - `dryRun`: nothing is deleted; the would-be deletions are counted
 *   (safe_termination_conntrack_reap_dry_run_total) and logged.
 * - Nothing before the EndpointSlices have been listed, nothing while the API
 *   server has been unreachable for long (`endpointsCurrent`): a pod created
 *   meanwhile may have reused a gone endpoint's IP.
 * - One log line per Service and sweep; nothing here can stop the agent.
 */
import type { Logger } from '../shared/logger.ts';
import type { TallyEntry } from '../diagnose/tally.ts';
import type { TableRead } from '../host/conntrack-table.ts';
import type { DeleteResult, FlowGroup } from '../host/conntrack-delete.ts';
import type { EndpointTracker, GoneEndpoint } from './reap-rule.ts';

export interface ReapMetrics {
  reaped(labels: { namespace: string; service: string; protocol: string }, n: number): void;
  wouldReap(labels: { namespace: string; service: string; protocol: string }, n: number): void;
  errors(n: number): void;
  swept(result: SweepResult, seconds?: number): void;
}

export type SweepResult = 'ok' | 'not-ready' | 'error';

export interface ReaperOptions {
  readonly tracker: EndpointTracker;
  readonly table: { read(onEntry: (e: TallyEntry) => void, signal?: AbortSignal): Promise<TableRead> };
  readonly deleter: (g: FlowGroup) => Promise<DeleteResult>;
  readonly metrics: ReapMetrics;
  readonly log: Logger;
  readonly maxPerSecond: number;
  readonly dryRun: boolean;
  /** False while the EndpointSlices cannot be trusted (not synced, API server away for long). */
  readonly endpointsCurrent: () => boolean;
  /** Sweep again this often while gone endpoints are remembered (default 60 s). */
  readonly resweepMs?: number;
  /** Retry this soon after a sweep that could not run (default 5 s), twice as long after each further failure, up to `resweepMs`. */
  readonly retryMs?: number;
  readonly now?: () => number;
}

export interface SweepGroup extends FlowGroup {
  readonly namespace: string;
  readonly service: string;
  /** Entries seen in the scan. */
  readonly entries: number;
  /** Entries deleted (dry run: 0). */
  deleted: number;
  failed: boolean;
}

export interface SweepOutcome {
  readonly result: SweepResult;
  readonly problem?: string;
  /** Entries read. */
  readonly scanned: number;
  readonly groups: readonly SweepGroup[];
  readonly seconds: number;
  /** The time the sweep judged entries by (ms). */
  readonly startedAt: number;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class Reaper {
  readonly #o: ReaperOptions;
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #running: Promise<SweepOutcome> | undefined;
  #stopped = false;
  #started = false;
  /** Token bucket: entries that may be deleted now (negative: a debt to wait off). */
  #tokens: number;
  #tokensAt: number;
  #last: SweepOutcome | undefined;
  /** Sweeps in a row that did not succeed. */
  #failures = 0;

  constructor(o: ReaperOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#tokens = o.maxPerSecond;
    this.#tokensAt = this.#now();
  }

  status(): { dryRun: boolean; gone: number; lastSweep: { result: SweepResult; scanned: number; reaped: number; problem?: string } | undefined } {
    const l = this.#last;
    return {
      dryRun: this.#o.dryRun,
      gone: this.#o.tracker.goneCount,
      lastSweep: l === undefined ? undefined : { result: l.result, scanned: l.scanned, reaped: l.groups.reduce((s, g) => s + g.deleted, 0), ...(l.problem === undefined ? {} : { problem: l.problem }) },
    };
  }

  /** The last sweep's outcome. */
  get last(): SweepOutcome | undefined {
    return this.#last;
  }

  /** Begin reacting to endpoints going (and sweep once now, for those gone before the start). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#scheduleNext();
  }

  /** The tracker saw an endpoint go: sweep when its hold ends. */
  endpointGone(g: GoneEndpoint): void {
    if (this.#started) this.#at(g.dueAt);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => undefined);
  }

  /** One sweep now (one at a time: a call during a sweep gets that sweep). */
  sweep(): Promise<SweepOutcome> {
    this.#running ??= this.#sweep().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  #at(when: number): void {
    if (this.#stopped || when >= this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = when;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, when - this.#now()));
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#stopped) return;
    if (this.#running !== undefined) {
      // A sweep is reading the table: the endpoint may have gone after it began.
      void this.#running.then(() => this.#at(this.#now()));
      return;
    }
    void this.sweep().then((o) => this.#scheduleNext(o));
  }

  /** The next due hold, else a re-sweep while gone endpoints are remembered, else nothing. */
  #scheduleNext(last?: SweepOutcome): void {
    if (this.#stopped) return;
    const now = this.#now();
    const resweepMs = this.#o.resweepMs ?? 60_000;
    const retryMs = this.#o.retryMs ?? 5000;
    if (last !== undefined && last.result !== 'ok') {
      // Backing off: a table too big to read in time must not be read back to back.
      this.#failures++;
      this.#at(now + Math.min(retryMs * 2 ** (this.#failures - 1), Math.max(resweepMs, retryMs)));
      return;
    }
    if (last !== undefined) this.#failures = 0;
    const gone = this.#o.tracker.gone();
    if (gone.length === 0) return;
    // Holds that ended after the last sweep began (or all, before the first) are due.
    const covered = last?.startedAt ?? -Infinity;
    const due = gone.filter((g) => g.dueAt > covered).reduce((m, g) => Math.min(m, g.dueAt), Infinity);
    const next = Math.min(Math.max(due, now), now + resweepMs);
    this.#at(next);
  }

  async #sweep(): Promise<SweepOutcome> {
    const { tracker, metrics, log } = this.#o;
    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    const now = this.#now();
    tracker.expire(now);
    if (!tracker.synced || !this.#o.endpointsCurrent()) {
      const outcome: SweepOutcome = { result: 'not-ready', problem: 'EndpointSlices not listed yet, or the API server unreachable for long', scanned: 0, groups: [], seconds: seconds(), startedAt: now };
      metrics.swept('not-ready');
      this.#last = outcome;
      return outcome;
    }
    const groups = new Map<string, { group: FlowGroup; gone: GoneEndpoint; entries: number }>();
    let scanned = 0;
    try {
      await this.#o.table.read((e) => {
        scanned++;
        const gone = tracker.reapable(e, now);
        if (gone === undefined || e.original.dport === undefined || e.reply.sport === undefined) return;
        const key = `${e.protocol}|${e.original.dst}|${e.original.dport}|${gone.key}`;
        const g = groups.get(key);
        if (g !== undefined) g.entries++;
        else groups.set(key, { group: { protocol: e.protocol, origDst: e.original.dst, dport: e.original.dport, replySrc: e.reply.src, sport: e.reply.sport }, gone, entries: 1 });
      }, this.#abort.signal);
    } catch (error) {
      const problem = error instanceof Error ? error.message : String(error);
      metrics.errors(1);
      metrics.swept('error', seconds());
      log.warn({ problem }, 'conntrack reaper: cannot read the table; trying again shortly');
      this.#last = { result: 'error', problem, scanned, groups: [], seconds: seconds(), startedAt: now };
      return this.#last;
    }
    const done: SweepGroup[] = [];
    for (const { group, gone, entries } of groups.values()) {
      if (this.#stopped) break;
      const g: SweepGroup = { ...group, namespace: gone.namespace, service: gone.service, entries, deleted: 0, failed: false };
      done.push(g);
      const labels = { namespace: gone.namespace, service: gone.service, protocol: group.protocol };
      if (this.#o.dryRun) {
        metrics.wouldReap(labels, entries);
        continue;
      }
      await this.#pay(entries);
      if (this.#stopped) break;
      try {
        g.deleted = (await this.#o.deleter(group)).deleted;
        if (g.deleted > 0) metrics.reaped(labels, g.deleted);
      } catch (error) {
        g.failed = true;
        metrics.errors(1);
        log.warn({ problem: error instanceof Error ? error.message : String(error) }, 'conntrack reaper: a deletion failed');
      }
    }
    const outcome: SweepOutcome = { result: 'ok', scanned, groups: done, seconds: seconds(), startedAt: now };
    metrics.swept('ok', outcome.seconds);
    this.#say(outcome);
    this.#last = outcome;
    return outcome;
  }

  /** Wait until `n` entries fit the rate (token bucket of one second's worth). */
  async #pay(n: number): Promise<void> {
    const rate = this.#o.maxPerSecond;
    const refill = (): void => {
      const now = this.#now();
      this.#tokens = Math.min(rate, this.#tokens + ((now - this.#tokensAt) * rate) / 1000);
      this.#tokensAt = now;
    };
    refill();
    const need = Math.min(n, rate);
    while (this.#tokens < need && !this.#stopped) {
      await sleep(Math.ceil(((need - this.#tokens) * 1000) / rate), this.#abort.signal);
      refill();
    }
    this.#tokens -= n;
  }

  /** One line per Service (with its protocols and targets), and a debug line per sweep. */
  #say(o: SweepOutcome): void {
    const { log } = this.#o;
    const byService = new Map<string, SweepGroup[]>();
    for (const g of o.groups) {
      const k = `${g.namespace}/${g.service}`;
      const list = byService.get(k);
      if (list === undefined) byService.set(k, [g]);
      else list.push(g);
    }
    for (const gs of byService.values()) {
      const first = gs[0] as SweepGroup;
      const byProtocol: Record<string, number> = {};
      for (const g of gs) byProtocol[g.protocol] = (byProtocol[g.protocol] ?? 0) + (this.#o.dryRun ? g.entries : g.deleted);
      const targets = [...new Set(gs.map((g) => (g.replySrc.includes(':') ? `[${g.replySrc}]:${g.sport}` : `${g.replySrc}:${g.sport}`)))].slice(0, 5);
      const fields = {
        namespace: first.namespace,
        service: first.service,
        entries: gs.reduce((s, g) => s + g.entries, 0),
        ...(this.#o.dryRun ? { wouldReap: byProtocol } : { reaped: byProtocol }),
        targets,
        ...(gs.some((g) => g.failed) ? { failedDeletions: gs.filter((g) => g.failed).length } : {}),
      };
      log.info(fields, this.#o.dryRun ? 'conntrack reaper (dry run): stale entries to gone endpoints found, not deleted' : 'conntrack reaper: stale entries to gone endpoints deleted');
    }
    log.debug({ scanned: o.scanned, groups: o.groups.length, seconds: Math.round(o.seconds * 1000) / 1000, gone: this.#o.tracker.goneCount }, 'conntrack reaper sweep');
  }
}
