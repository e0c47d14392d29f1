/**
 * Reading the pod annotations of spec §3 into settings, with a problem for
 * every value that breaks the rules. Pure: no defaults are applied here.
 */
import { z } from 'zod';
import { DURATION_FORM, parseDuration } from './duration.ts';
import { Annotation, KNOWN_ANNOTATIONS, PREFIX } from './names.ts';

export const PROTOCOLS = ['sctp', 'tcp', 'udp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const PRESTOP_MODES = ['auto', 'sleep', 'exec'] as const;
export type PrestopModeSetting = (typeof PRESTOP_MODES)[number];
export const EXISTING_PRESTOP = ['keep', 'replace'] as const;
export type ExistingPrestop = (typeof EXISTING_PRESTOP)[number];

export interface PodSettings {
  inject?: boolean;
  prestopSleep?: number;
  propagationDelay?: number;
  shutdownBudget?: number;
  maxSleep?: number;
  protocols?: readonly Protocol[];
  udpStreams?: boolean;
  containers?: readonly string[];
  excludeContainers?: readonly string[];
  prestopMode?: PrestopModeSetting;
  existingPrestop?: ExistingPrestop;
}

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

type Field = keyof PodSettings;

interface Rule {
  readonly field: Field;
  readonly accepted: string;
  readonly schema: z.ZodType<unknown, string>;
}

const duration = (min: number) =>
  z.string().transform((text, ctx) => {
    const seconds = parseDuration(text);
    if (seconds === undefined || seconds < min) {
      ctx.addIssue({ code: 'custom', message: 'invalid' });
      return z.NEVER;
    }
    return seconds;
  });

const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

const commaList = <T extends string>(item: z.ZodType<T, string>) =>
  z.string().transform((text, ctx) => {
    // A Set keeps first-seen order and makes de-duplication linear (hostile lists can be long).
    const out = new Set<T>();
    for (const raw of text.split(',')) {
      const r = item.safeParse(raw.trim());
      if (!r.success) {
        ctx.addIssue({ code: 'custom', message: 'invalid' });
        return z.NEVER;
      }
      out.add(r.data);
    }
    return [...out];
  });

const protocolItem = z
  .string()
  .transform((v) => v.toLowerCase())
  .pipe(z.enum(PROTOCOLS));

/** DNS-1123 label, as the API server requires for container names. */
const containerName = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);

const BOOL_FORM = '"true" or "false"';

const RULES: Readonly<Record<string, Rule>> = {
  [Annotation.inject]: { field: 'inject', accepted: `${BOOL_FORM} ("false" opts the pod out)`, schema: bool },
  [Annotation.prestopSleep]: { field: 'prestopSleep', accepted: `at least 1s, as ${DURATION_FORM}`, schema: duration(1) },
  [Annotation.propagationDelay]: { field: 'propagationDelay', accepted: DURATION_FORM, schema: duration(0) },
  [Annotation.shutdownBudget]: { field: 'shutdownBudget', accepted: DURATION_FORM, schema: duration(0) },
  [Annotation.maxSleep]: { field: 'maxSleep', accepted: DURATION_FORM, schema: duration(0) },
  [Annotation.protocols]: { field: 'protocols', accepted: 'a comma list of tcp, udp, sctp', schema: commaList(protocolItem) },
  [Annotation.udpStreams]: { field: 'udpStreams', accepted: BOOL_FORM, schema: bool },
  [Annotation.containers]: { field: 'containers', accepted: 'a comma list of container names of this pod', schema: commaList(containerName) },
  [Annotation.excludeContainers]: { field: 'excludeContainers', accepted: 'a comma list of container names', schema: commaList(containerName) },
  [Annotation.prestopMode]: { field: 'prestopMode', accepted: 'auto, sleep or exec', schema: z.enum(PRESTOP_MODES) },
  [Annotation.existingPrestop]: { field: 'existingPrestop', accepted: 'keep or replace', schema: z.enum(EXISTING_PRESTOP) },
};

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
    const rule = RULES[key];
    if (rule === undefined) {
      if (key !== Annotation.injected) warnings.push(unknownKeyWarning(key, unknown++ < MAX_SUGGESTIONS));
      continue;
    }
    const parsed = rule.schema.safeParse(value);
    if (!parsed.success) {
      problems.push({ key, value, accepted: rule.accepted });
      continue;
    }
    settings[rule.field] = parsed.data;
  }

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
