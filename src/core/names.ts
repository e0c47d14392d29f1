/** The public names of spec §3. Renaming any of these breaks users. */

export const PREFIX = 'safe-termination.io/';

export const INJECT_LABEL = `${PREFIX}inject`;
export const NAMESPACE_OPT_IN_VALUE = 'enabled';
export const POD_OPT_OUT_LABEL_VALUE = 'disabled';

export const Annotation = {
  inject: `${PREFIX}inject`,
  prestopSleep: `${PREFIX}prestop-sleep`,
  propagationDelay: `${PREFIX}propagation-delay`,
  shutdownBudget: `${PREFIX}shutdown-budget`,
  maxSleep: `${PREFIX}max-sleep`,
  protocols: `${PREFIX}protocols`,
  udpStreams: `${PREFIX}udp-streams`,
  containers: `${PREFIX}containers`,
  excludeContainers: `${PREFIX}exclude-containers`,
  prestopMode: `${PREFIX}prestop-mode`,
  existingPrestop: `${PREFIX}existing-prestop`,
  injected: `${PREFIX}injected`,
} as const;

export const KNOWN_ANNOTATIONS: readonly string[] = Object.values(Annotation);

export const NODE_ANNOTATION_PREFIX = 'conntrack.safe-termination.io/';

/** Kubelet marks mirror pods of static pods with this annotation. */
export const MIRROR_POD_ANNOTATION = 'kubernetes.io/config.mirror';
