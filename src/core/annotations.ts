/**
 * Reading the pod annotations into settings, with a problem for
 * every value that breaks the rules. Pure: no defaults are applied here.
 */
import { Annotation, KNOWN_ANNOTATIONS, PREFIX } from './names.ts';
import { annotatedSettings } from './settings.ts';
import type { AnnotatedSetting, PodSettings } from './settings.ts';

export { EXISTING_PRESTOP, PRESTOP_MODES, PROTOCOLS } from './settings.ts';
export type { ExistingPrestop, PodSettings, PrestopModeSetting, Protocol } from './settings.ts';

/** One annotation whose value breaks the rules. */
export interface AnnotationProblem {
  readonly key: string;
  readonly value: string;
  /** The accepted form, for the message. */
  readonly accepted: string;
}

export interface SettingsResult {
  readonly settings: PodSettings;
  readonly problems: readonly AnnotationProblem[];
  /** Harmless oddities (unknown keys, exclusions of absent containers). */
  readonly warnings: readonly string[];
}

interface Rule {
  readonly field: AnnotatedSetting;
  readonly accepted: string;
  readonly parse: (text: string) => unknown;
}

/** The rule of each annotation key, from the settings table. */
const RULES: ReadonlyMap<string, Rule> = new Map(
  annotatedSettings().map(([field, s]) => [Annotation[field], { field, accepted: s.accepted ?? s.type.annotationAccepted, parse: (t: string) => s.type.parse(t) }]),
);

/**
 * Read settings from annotations. `containerNames` are the names the pod has
 * (regular and init containers), for checking the container lists.
 */
export function readSettings(
  annotations: Readonly<Record<string, string>> | null | undefined,
  containerNames: readonly string[],
): SettingsResult {
  const settings: Record<string, unknown> = {};
  const problems: AnnotationProblem[] = [];
  const warnings: string[] = [];
  if (!annotations) return { settings, problems, warnings };

  let unknown = 0;
  for (const key of Object.keys(annotations)) {
    if (!key.startsWith(PREFIX)) continue;
    const value = annotations[key] as string;
    const rule = RULES.get(key);
    if (rule === undefined) {
      if (key !== Annotation.injected) warnings.push(unknownKeyWarning(key, unknown++ < MAX_SUGGESTIONS));
      continue;
    }
    const parsed = rule.parse(value);
    if (parsed === undefined) {
      problems.push({ key, value, accepted: rule.accepted });
      continue;
    }
    settings[rule.field] = parsed;
  }

  // Each field holds what its own setting's type parsed.
  const result = settings as PodSettings;
  const names = new Set(containerNames);
  const included = result.containers;
  if (included !== undefined) {
    const missing = included.filter((n) => !names.has(n));
    if (missing.length > 0) {
      problems.push({
        key: Annotation.containers,
        value: annotations[Annotation.containers] as string,
        accepted: `names of this pod's containers (${listNames(containerNames)})`,
      });
      delete settings['containers'];
    }
  }
  const excluded = result.excludeContainers;
  if (excluded !== undefined) {
    const missing = excluded.filter((n) => !names.has(n));
    // Harmless: another webhook may add the container later (the API server
    // then calls again), and excluding an absent container needs no action.
    if (missing.length > 0) warnings.push(`${Annotation.excludeContainers}: no container named ${missing.join(', ')}`);
  }
  return { settings: result, problems, warnings };
}

/** "a, b, c" with at most `max` names, then "…". */
export function listNames(names: readonly string[], max = 5): string {
  const shown = names.slice(0, max).join(', ');
  return names.length > max ? `${shown}, …` : shown;
}

/**
 * Unknown keys that get a "did you mean" (an edit distance against every known
 * key): enough for any real pod, and a bound on the work a hostile pod with
 * thousands of unknown keys can cause.
 */
export const MAX_SUGGESTIONS = 20;

/** Kubernetes asks that each admission warning stay within 120 characters. */
export const MAX_WARNING_LENGTH = 119;

function unknownKeyWarning(key: string, suggest: boolean): string {
  if (!suggest) return `unknown annotation ${key} ignored`;
  const nearest = nearestKnownKey(key.slice(PREFIX.length));
  const text = (k: string) => `unknown annotation ${k} ignored; did you mean ${nearest}?`;
  // Shorten the unknown key, not the suggestion, when the whole would be cut.
  const excess = Array.from(text(key)).length - MAX_WARNING_LENGTH;
  return excess > 0 ? text(`${Array.from(key).slice(0, -(excess + 1)).join('')}…`) : text(key);
}

/** The known annotation whose name after the prefix is closest to `suffix`. */
export function nearestKnownKey(suffix: string): string {
  let best = KNOWN_ANNOTATIONS[0] as string;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const known of KNOWN_ANNOTATIONS) {
    if (known === Annotation.injected) continue;
    const d = editDistance(suffix.toLowerCase(), known.slice(PREFIX.length));
    if (d < bestDistance) {
      bestDistance = d;
      best = known;
    }
  }
  return best;
}

export function editDistance(a: string, b: string): number {
  const s = a.slice(0, 64);
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= s.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = s[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + cost));
    }
    prev = cur;
  }
  return prev[b.length] as number;
}

/** Human message for one problem: names the annotation, the value and the accepted form. */
export function describeProblem(p: AnnotationProblem, maxValueLength = 40): string {
  return `annotation ${p.key}: invalid value ${quote(p.value, maxValueLength)}; expected ${p.accepted}`;
}

/** JSON-quoted and shortened, so odd characters stay visible and bounded. */
export function quote(value: string, max: number): string {
  const shown = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(shown);
}
