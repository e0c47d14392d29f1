/** The sizing model's constants; its defaults are declared with their flags in settings.ts. */
export { INVALID_ANNOTATION_POLICIES, MODEL_DEFAULTS, TCP_SIZINGS, parseKubeVersion } from './settings.ts';
export type { InvalidAnnotationPolicy, KubeVersion, ModelDefaults, TcpSizing } from './settings.ts';
import type { KubeVersion } from './settings.ts';

/** Kubernetes' default terminationGracePeriodSeconds. */
export const API_DEFAULT_GRACE_SECONDS = 30;

/** The native sleep action is on by default from this release (PodLifecycleSleepAction). */
export const NATIVE_SLEEP_SINCE = { major: 1, minor: 30 } as const;

export function supportsNativeSleep(v: KubeVersion): boolean {
  return v.major > NATIVE_SLEEP_SINCE.major || (v.major === NATIVE_SLEEP_SINCE.major && v.minor >= NATIVE_SLEEP_SINCE.minor);
}
