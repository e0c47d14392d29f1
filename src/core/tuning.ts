/**
 * Timeout tuning advice: the node's conntrack timeouts next to the
 * values the incident write-up recommends, and what each costs in preStop sleep.
 * Advice only: the product never changes a timeout. Pure.
 *
 * The write-up's values, as tested here rather than taken on trust:
 * - udp-timeout 30 → 10, udp-timeout-stream 120 → 30: each second off is a second
 *   off the sleep of the UDP pods it sizes. A flow quiet for longer than
 *   the timeout gets a new entry, and so a fresh backend choice: harmless for
 *   request/answer UDP (DNS), a re-pick for long-lived UDP streams.
 * - tcp-timeout-time-wait 120 → 30: harmless (a new SYN replaces a TIME_WAIT entry
 *   anyway); sizes a sleep only with --tcp-sizing time-wait.
 * - tcp-timeout-established 432000 → 3600: sizes no sleep. kube-proxy already sets
 *   86400 (its `conntrack.tcpEstablishedTimeout` default); at 3600 a keep-alive
 *   connection through a Service that is idle for over an hour loses its entry and
 *   its next packet is translated afresh, to any backend: it breaks. Not advised.
 * - tcp-timeout-close-wait: the write-up has no value (kube-proxy sets 3600).
 */
import type { ConntrackKey } from './conntrack.ts';
import { CONNTRACK_KEYS, sysctlName } from './conntrack.ts';
import type { TcpSizing } from './model.ts';

/** The write-up's recommended values ("Option 5: Reduce Conntrack Timeouts"). */
export const WRITE_UP_TIMEOUTS: Readonly<Partial<Record<ConntrackKey, number>>> = Object.freeze({
  'udp-timeout': 10,
  'udp-timeout-stream': 30,
  'tcp-timeout-time-wait': 30,
  'tcp-timeout-established': 3600,
});

/** Where an operator sets each value: the sysctl, and the kube-proxy field that writes it at kube-proxy's start. */
export const TIMEOUT_SETTINGS: Readonly<Record<ConntrackKey, { readonly sysctl: string; readonly kubeProxy: string | undefined }>> = Object.freeze({
  'udp-timeout': { sysctl: `net.netfilter.${sysctlName('udp-timeout')}`, kubeProxy: 'conntrack.udpTimeout' },
  'udp-timeout-stream': { sysctl: `net.netfilter.${sysctlName('udp-timeout-stream')}`, kubeProxy: 'conntrack.udpStreamTimeout' },
  'tcp-timeout-time-wait': { sysctl: `net.netfilter.${sysctlName('tcp-timeout-time-wait')}`, kubeProxy: undefined },
  'tcp-timeout-close-wait': { sysctl: `net.netfilter.${sysctlName('tcp-timeout-close-wait')}`, kubeProxy: 'conntrack.tcpCloseWaitTimeout' },
  'tcp-timeout-established': { sysctl: `net.netfilter.${sysctlName('tcp-timeout-established')}`, kubeProxy: 'conntrack.tcpEstablishedTimeout' },
});

/** What the model needs to turn a conntrack wait into a sleep. */
export interface SleepModel {
  readonly propagationDelaySeconds: number;
  readonly maxSleepSeconds: number;
  readonly tcpSizing: TcpSizing;
}

/** The model's sleep for a conntrack wait: min(max-sleep, propagation + wait), at least 1. */
export function sleepForWait(waitSeconds: number, m: Pick<SleepModel, 'propagationDelaySeconds' | 'maxSleepSeconds'>): number {
  return Math.max(1, Math.min(m.maxSleepSeconds, m.propagationDelaySeconds + waitSeconds));
}

export interface TimeoutAdvice {
  readonly key: ConntrackKey;
  /** The node's value, seconds; undefined when it could not be read. */
  readonly current: number | undefined;
  /** The write-up's value; undefined when it gives none. */
  readonly recommended: number | undefined;
  /** The pods whose sleep this value sizes (with the given tcp-sizing); undefined: none. */
  readonly sizes: string | undefined;
  /** Their sleep with the node's value and with the write-up's (a pod of that one protocol), when both are known. */
  readonly sleepNow: number | undefined;
  readonly sleepRecommended: number | undefined;
  /** sleepNow − sleepRecommended, when positive; else 0. */
  readonly savedSeconds: number;
  /** Whether the write-up's value is advisable here; why not, when not. */
  readonly caution: string | undefined;
}

const CAUTIONS: Readonly<Partial<Record<ConntrackKey, string>>> = {
  'tcp-timeout-established':
    'not advised: sizes no sleep; a keep-alive connection idle longer breaks (kube-proxy sets 86400)',
};

function sizedPods(key: ConntrackKey, tcpSizing: TcpSizing): { pods: string; applies: boolean } | undefined {
  switch (key) {
    case 'udp-timeout':
      return { pods: 'UDP pods', applies: true };
    case 'udp-timeout-stream':
      return { pods: 'UDP pods with udp-streams', applies: true };
    case 'tcp-timeout-time-wait':
      return { pods: 'TCP pods with --tcp-sizing time-wait', applies: tcpSizing === 'time-wait' };
    case 'tcp-timeout-close-wait':
      return { pods: 'TCP pods with --tcp-sizing close-wait', applies: tcpSizing === 'close-wait' };
    case 'tcp-timeout-established':
      return undefined;
  }
}

/**
 * Per conntrack value: the node's, the write-up's, and the sleep of the pods it
 * sizes under each. A TCP sizing the model does not use still shows what the
 * sleep would be with it (`sizes` names the flag).
 */
export function timeoutAdvice(current: Partial<Record<ConntrackKey, number>>, m: SleepModel): TimeoutAdvice[] {
  return CONNTRACK_KEYS.map((key) => {
    const now = current[key];
    const recommended = WRITE_UP_TIMEOUTS[key];
    const sized = sizedPods(key, m.tcpSizing);
    const sleepNow = sized !== undefined && now !== undefined ? sleepForWait(now, m) : undefined;
    const sleepRecommended = sized !== undefined && recommended !== undefined ? sleepForWait(recommended, m) : undefined;
    const saved = sleepNow !== undefined && sleepRecommended !== undefined ? Math.max(0, sleepNow - sleepRecommended) : 0;
    return { key, current: now, recommended, sizes: sized?.pods, sleepNow, sleepRecommended, savedSeconds: saved, caution: CAUTIONS[key] };
  });
}

/** One plan's sleep with one of the conntrack values it used lowered to the write-up's. */
export interface PlanTuning {
  readonly key: ConntrackKey;
  readonly current: number;
  readonly recommended: number;
  readonly sleepNow: number;
  readonly sleepRecommended: number;
  readonly savedSeconds: number;
}

/**
 * For a model-sized sleep: each conntrack value it used whose write-up value is
 * lower, and the sleep that value would give (the other values kept). Only the
 * changes that shorten the sleep are returned.
 */
export function planTuning(
  used: Readonly<Partial<Record<ConntrackKey, { readonly value: number }>>>,
  sleep: { readonly seconds: number; readonly propagationDelaySeconds: number; readonly maxSleepSeconds: number },
): PlanTuning[] {
  const out: PlanTuning[] = [];
  const keys = CONNTRACK_KEYS.filter((k) => used[k] !== undefined);
  for (const key of keys) {
    const recommended = WRITE_UP_TIMEOUTS[key];
    const current = used[key]?.value;
    if (recommended === undefined || current === undefined || recommended >= current || CAUTIONS[key] !== undefined) continue;
    const wait = Math.max(...keys.map((k) => (k === key ? recommended : (used[k]?.value ?? 0))));
    const after = sleepForWait(wait, { propagationDelaySeconds: sleep.propagationDelaySeconds, maxSleepSeconds: sleep.maxSleepSeconds });
    if (after >= sleep.seconds) continue;
    out.push({ key, current, recommended, sleepNow: sleep.seconds, sleepRecommended: after, savedSeconds: sleep.seconds - after });
  }
  return out;
}

/** "sysctl -w net.netfilter.nf_conntrack_udp_timeout=10, or kube-proxy's conntrack.udpTimeout: 10s" */
export function howToSet(key: ConntrackKey, seconds: number): string {
  const s = TIMEOUT_SETTINGS[key];
  const sysctl = `sysctl -w ${s.sysctl}=${seconds}`;
  return s.kubeProxy === undefined ? `${sysctl} (kube-proxy has no field for it)` : `kube-proxy's ${s.kubeProxy}: ${seconds}s, or ${sysctl}`;
}
