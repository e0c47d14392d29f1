/** Prometheus metrics of the webhook (prom-client), served on a separate plain-HTTP port. */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface WebhookMetrics {
  readonly registry: Registry;
  readonly admissions: Counter<'outcome'>;
  readonly decisions: Counter<'decision' | 'reason'>;
  readonly latency: Histogram<'outcome'>;
  readonly conntrackValues: Counter<'key' | 'source'>;
  readonly injectedSleep: Histogram;
  readonly injectedGrace: Histogram;
  readonly certificateExpiry: Gauge;
  readonly certificateReloads: Counter<'result'>;
  readonly ready: Gauge;
}

export function createWebhookMetrics(): WebhookMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'safe_termination_' });
  const registers = [registry];
  return {
    registry,
    admissions: new Counter({
      name: 'safe_termination_admissions_total',
      help: 'Admission reviews answered, by outcome (patched, allowed, denied, invalid, error).',
      labelNames: ['outcome'],
      registers,
    }),
    decisions: new Counter({
      name: 'safe_termination_decisions_total',
      help: 'Decisions on pods: injected, unchanged, skipped (with reason), denied, ignored (with reason).',
      labelNames: ['decision', 'reason'],
      registers,
    }),
    latency: new Histogram({
      name: 'safe_termination_admission_duration_seconds',
      help: 'Time from request arrival to response, by outcome.',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    conntrackValues: new Counter({
      name: 'safe_termination_conntrack_values_used_total',
      help: 'Conntrack timeouts used to size a sleep, by key and by the source that gave the value.',
      labelNames: ['key', 'source'],
      registers,
    }),
    injectedSleep: new Histogram({
      name: 'safe_termination_injected_sleep_seconds',
      help: 'PreStop sleeps handed out to pods (decision injected), seconds.',
      buckets: [1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600],
      registers,
    }),
    injectedGrace: new Histogram({
      name: 'safe_termination_injected_grace_seconds',
      help: 'Termination grace periods of the pods injected (decision injected), seconds.',
      buckets: [10, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600],
      registers,
    }),
    certificateExpiry: new Gauge({
      name: 'safe_termination_certificate_expiry_timestamp_seconds',
      help: 'Expiry time of the serving certificate in use, seconds since the epoch.',
      registers,
    }),
    certificateReloads: new Counter({
      name: 'safe_termination_certificate_reloads_total',
      help: 'Serving certificate reloads, by result (success, error).',
      labelNames: ['result'],
      registers,
    }),
    ready: new Gauge({ name: 'safe_termination_ready', help: '1 when the webhook reports ready.', registers }),
  };
}
