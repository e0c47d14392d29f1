/** The public names: renaming any of these breaks users. */
import { annotatedSettings } from './settings.ts';
import type { AnnotatedSetting, AnnotationSuffix } from './settings.ts';

export const PREFIX = 'safe-termination.io/';

export const INJECT_LABEL = `${PREFIX}inject`;
export const NAMESPACE_OPT_IN_VALUE = 'enabled';
export const POD_OPT_OUT_LABEL_VALUE = 'disabled';

type SettingKeys = { readonly [K in AnnotatedSetting]: `${typeof PREFIX}${AnnotationSuffix<K>}` };

/** The pod annotations: one per annotated setting, and the record of what was injected. */
export const Annotation: SettingKeys & { readonly injected: `${typeof PREFIX}injected` } = Object.freeze({
  ...(Object.fromEntries(annotatedSettings().map(([name, s]) => [name, `${PREFIX}${s.annotation}`])) as SettingKeys),
  injected: `${PREFIX}injected`,
});

export const KNOWN_ANNOTATIONS: readonly string[] = Object.values(Annotation);

export const NODE_ANNOTATION_PREFIX = 'conntrack.safe-termination.io/';

/** Kubelet marks mirror pods of static pods with this annotation. */
export const MIRROR_POD_ANNOTATION = 'kubernetes.io/config.mirror';
