/** The defaults of the sizing model; every one is a flag and a chart value. */
import type { ExistingPrestop, PrestopModeSetting } from './annotations.ts';

export const TCP_SIZINGS = ['none', 'time-wait', 'close-wait'] as const;
export type TcpSizing = (typeof TCP_SIZINGS)[number];
export const INVALID_ANNOTATION_POLICIES = ['deny', 'ignore'] as const;
export type InvalidAnnotationPolicy = (typeof INVALID_ANNOTATION_POLICIES)[number];

export interface ModelDefaults {
  readonly propagationDelaySeconds: number;
  /** Unset: grace = original + sleep. Set: grace = max(original, sleep + budget). */
  readonly shutdownBudgetSeconds: number | undefined;
  readonly maxSleepSeconds: number;
  readonly tcpSizing: TcpSizing;
  readonly udpStreams: boolean;
  readonly prestopMode: PrestopModeSetting;
  readonly existingPrestop: ExistingPrestop;
  readonly invalidAnnotations: InvalidAnnotationPolicy;
  readonly injectJobPods: boolean;
}

export const MODEL_DEFAULTS: ModelDefaults = Object.freeze({
  propagationDelaySeconds: 5,
  shutdownBudgetSeconds: undefined,
  maxSleepSeconds: 300,
  tcpSizing: 'none',
  udpStreams: false,
  prestopMode: 'auto',
  existingPrestop: 'keep',
  invalidAnnotations: 'deny',
  injectJobPods: false,
});

/** Kubernetes' default terminationGracePeriodSeconds. */
export const API_DEFAULT_GRACE_SECONDS = 30;

/** The native sleep action is on by default from this release (PodLifecycleSleepAction). */
export const NATIVE_SLEEP_SINCE = { major: 1, minor: 30 } as const;

export interface KubeVersion {
  readonly major: number;
  readonly minor: number;
}

/** "1.29", "v1.30.2", "1.31+" → {major, minor}; undefined when unreadable. */
export function parseKubeVersion(text: string): KubeVersion | undefined {
  const m = /^v?(\d+)\.(\d+)(?:[.+-].*)?$/.exec(text.trim());
  if (m === null) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]) };
}

export function supportsNativeSleep(v: KubeVersion): boolean {
  return v.major > NATIVE_SLEEP_SINCE.major || (v.major === NATIVE_SLEEP_SINCE.major && v.minor >= NATIVE_SLEEP_SINCE.minor);
}
