/**
 * The settings of the sizing model, each declared once: its pod annotation and
 * the rule for its value, its flag with the default, and the chart value that
 * sets the flag. Pod settings, the model defaults, the annotation keys and the
 * flags are derived from this table, so the compiler checks them together.
 */
import { z } from 'zod';
import { DURATION_FORM, formatDuration, parseDuration } from './duration.ts';

export const PROTOCOLS = ['sctp', 'tcp', 'udp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];
export const PRESTOP_MODES = ['auto', 'sleep', 'exec'] as const;
export type PrestopModeSetting = (typeof PRESTOP_MODES)[number];
export const EXISTING_PRESTOP = ['keep', 'replace'] as const;
export type ExistingPrestop = (typeof EXISTING_PRESTOP)[number];
export const TCP_SIZINGS = ['none', 'time-wait', 'close-wait'] as const;
export type TcpSizing = (typeof TCP_SIZINGS)[number];
export const INVALID_ANNOTATION_POLICIES = ['deny', 'ignore'] as const;
export type InvalidAnnotationPolicy = (typeof INVALID_ANNOTATION_POLICIES)[number];

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

/** How a value is written as text (a flag, a variable, an annotation, a chart value) and read back. */
export interface ValueType<T> {
  /** The value, or undefined when the text breaks the rule. */
  parse(text: string): T | undefined;
  /** The accepted form, in flag errors and help. */
  readonly accepted: string;
  /** The accepted form in annotation problems. */
  readonly annotationAccepted: string;
  /** A bare `--flag` means "true". */
  readonly boolean?: true;
  /** How a value is shown in help and docs; absent: as a string. */
  show?(value: T): string;
}

function fromZod<T>(schema: z.ZodType<T, string>): (text: string) => T | undefined {
  return (text) => {
    const r = schema.safeParse(text);
    return r.success ? r.data : undefined;
  };
}

/** "a, b or c". */
function orList(items: readonly string[]): string {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

export const valueType = {
  /** Whole seconds, as a number or with h/m/s units; at least `min`. */
  duration: (min = 0): ValueType<number> => {
    const accepted = min > 0 ? `at least ${min}s, as ${DURATION_FORM}` : DURATION_FORM;
    return {
      parse: fromZod(
        z.string().transform((text, ctx) => {
          const seconds = parseDuration(text);
          if (seconds === undefined || seconds < min) {
            ctx.addIssue({ code: 'custom', message: 'invalid' });
            return z.NEVER;
          }
          return seconds;
        }),
      ),
      accepted,
      annotationAccepted: accepted,
      show: formatDuration,
    };
  },
  bool: {
    parse: fromZod(z.enum(['true', 'false']).transform((v) => v === 'true')),
    accepted: 'true or false',
    annotationAccepted: '"true" or "false"',
    boolean: true,
  } satisfies ValueType<boolean> as ValueType<boolean>,
  choice: <const C extends readonly string[]>(choices: C): ValueType<C[number]> => ({
    parse: fromZod(z.enum(choices)),
    accepted: `one of ${choices.join(', ')}`,
    annotationAccepted: orList(choices),
  }),
  /** A comma list of items, de-duplicated in first-seen order. */
  list: <T extends string>(item: z.ZodType<T, string>, accepted: string): ValueType<readonly T[]> => ({
    parse: fromZod(
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
      }),
    ),
    accepted,
    annotationAccepted: accepted,
  }),
  kubeVersion: {
    parse: parseKubeVersion,
    accepted: 'a Kubernetes version such as 1.29 or v1.31.2',
    annotationAccepted: 'a Kubernetes version such as 1.29 or v1.31.2',
    show: (v: KubeVersion) => `${v.major}.${v.minor}`,
  } satisfies ValueType<KubeVersion> as ValueType<KubeVersion>,
};

const protocolItem = z
  .string()
  .transform((v) => v.toLowerCase())
  .pipe(z.enum(PROTOCOLS));

/** DNS-1123 label, as the API server requires for container names. */
const containerName = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);

/** A setting's flag: `--kebab-case` of the setting's name. */
interface FlagPart<T> {
  readonly description: string;
  /** Undefined: unset. */
  readonly default: T | undefined;
  /** The chart value that sets the flag: a dotted path in values.yaml. */
  readonly chart: string;
  /** The field of ModelDefaults the flag fills; none: read elsewhere. */
  readonly model?: string;
}

export interface Setting<T = unknown> {
  readonly type: ValueType<T>;
  /** The pod annotation, after the prefix `safe-termination.io/`. */
  readonly annotation?: string;
  /** The annotation's accepted form, when it says more than the type's. */
  readonly accepted?: string;
  readonly flag?: FlagPart<T>;
}

/** Each entry's flag default must be a value of its type. */
type Checked<R> = {
  readonly [K in keyof R]: R[K] extends { readonly type: ValueType<infer T> } ? Setting<T> : Setting;
};

function registry<const R extends Readonly<Record<string, Setting>>>(settings: R & Checked<R>): R {
  return Object.freeze(settings);
}

/**
 * The order is the order of the annotation keys (did-you-mean ties go to the
 * first) and of the flags in help and docs.
 */
export const SETTINGS = registry({
  inject: { type: valueType.bool, annotation: 'inject', accepted: '"true" or "false" ("false" opts the pod out)' },
  prestopSleep: { type: valueType.duration(1), annotation: 'prestop-sleep' },
  propagationDelay: {
    type: valueType.duration(),
    annotation: 'propagation-delay',
    flag: { description: 'endpoint-propagation budget added to every computed sleep', default: 5, chart: 'sizing.propagationDelay', model: 'propagationDelaySeconds' },
  },
  shutdownBudget: {
    type: valueType.duration(),
    annotation: 'shutdown-budget',
    flag: {
      description: 'default time apps need after SIGTERM; set: grace = max(original, sleep + budget); unset: grace = original + sleep',
      default: undefined,
      chart: 'sizing.shutdownBudget',
      model: 'shutdownBudgetSeconds',
    },
  },
  maxSleep: {
    type: valueType.duration(),
    annotation: 'max-sleep',
    flag: { description: 'cap on the computed sleep', default: 300, chart: 'sizing.maxSleep', model: 'maxSleepSeconds' },
  },
  tcpSizing: {
    type: valueType.choice(TCP_SIZINGS),
    flag: { description: 'which TCP conntrack timeout sizes the sleep of TCP pods', default: 'none', chart: 'sizing.tcp', model: 'tcpSizing' },
  },
  protocols: { type: valueType.list(protocolItem, 'a comma list of tcp, udp, sctp'), annotation: 'protocols' },
  udpStreams: {
    type: valueType.bool,
    annotation: 'udp-streams',
    flag: { description: 'size UDP pods by udp-timeout-stream instead of udp-timeout', default: false, chart: 'sizing.udpStreams', model: 'udpStreams' },
  },
  containers: { type: valueType.list(containerName, 'a comma list of container names of this pod'), annotation: 'containers' },
  excludeContainers: { type: valueType.list(containerName, 'a comma list of container names'), annotation: 'exclude-containers' },
  prestopMode: {
    type: valueType.choice(PRESTOP_MODES),
    annotation: 'prestop-mode',
    flag: { description: 'preStop action: auto (native sleep from Kubernetes 1.30, else exec), sleep or exec', default: 'auto', chart: 'prestopMode', model: 'prestopMode' },
  },
  existingPrestop: {
    type: valueType.choice(EXISTING_PRESTOP),
    annotation: 'existing-prestop',
    flag: { description: 'what to do with a container that already has a preStop hook', default: 'keep', chart: 'existingPrestop', model: 'existingPrestop' },
  },
  invalidAnnotations: {
    type: valueType.choice(INVALID_ANNOTATION_POLICIES),
    flag: { description: 'deny pods with invalid annotations, or ignore them with a warning', default: 'deny', chart: 'invalidAnnotations', model: 'invalidAnnotations' },
  },
  injectJobPods: {
    type: valueType.bool,
    flag: { description: 'also inject pods owned by Jobs', default: false, chart: 'injectJobPods', model: 'injectJobPods' },
  },
  kubernetesVersion: {
    type: valueType.kubeVersion,
    flag: { description: 'assume this Kubernetes version for prestop-mode auto instead of asking the API server', default: undefined, chart: 'kubernetesVersion' },
  },
});

type Registry = typeof SETTINGS;
export type SettingName = keyof Registry;
type TypeOf<K extends SettingName> = Registry[K]['type'] extends ValueType<infer T> ? T : never;
type FlagOf<K extends SettingName> = Registry[K] extends { readonly flag: infer F } ? F : never;

export type AnnotatedSetting = { [K in SettingName]: Registry[K] extends { readonly annotation: string } ? K : never }[SettingName];
export type AnnotationSuffix<K extends AnnotatedSetting> = Registry[K] extends { readonly annotation: infer A extends string } ? A : never;
export type FlaggedSetting = { [K in SettingName]: Registry[K] extends { readonly flag: object } ? K : never }[SettingName];
/** A flag's value: its type's, or undefined when it is unset by default. */
export type FlagValue<K extends FlaggedSetting> = TypeOf<K> | (FlagOf<K> extends { readonly default: undefined } ? undefined : never);
type ModelSetting = { [K in FlaggedSetting]: FlagOf<K> extends { readonly model: string } ? K : never }[FlaggedSetting];
type ModelField<K extends ModelSetting> = FlagOf<K> extends { readonly model: infer M extends string } ? M : never;

/** What a pod's annotations set; absent: not set. */
export type PodSettings = { -readonly [K in AnnotatedSetting]?: TypeOf<K> };

/**
 * The defaults of the sizing model; every one is a flag and a chart value.
 * shutdownBudgetSeconds unset: grace = original + sleep; set: grace = max(original, sleep + budget).
 */
export type ModelDefaults = { readonly [K in ModelSetting as ModelField<K>]: FlagValue<K> };

/** The entries of the table with a flag, in order. */
export function flaggedSettings(): ReadonlyArray<readonly [FlaggedSetting, Setting & { readonly flag: FlagPart<unknown> }]> {
  return Object.entries(SETTINGS as Readonly<Record<string, Setting>>).flatMap(([name, s]) =>
    s.flag === undefined ? [] : [[name as FlaggedSetting, s as Setting & { readonly flag: FlagPart<unknown> }] as const],
  );
}

/** The entries of the table with an annotation, in order. */
export function annotatedSettings(): ReadonlyArray<readonly [AnnotatedSetting, Setting & { readonly annotation: string }]> {
  return Object.entries(SETTINGS as Readonly<Record<string, Setting>>).flatMap(([name, s]) =>
    s.annotation === undefined ? [] : [[name as AnnotatedSetting, s as Setting & { readonly annotation: string }] as const],
  );
}

/** Model defaults from a value per flagged setting (the flags' own defaults, or the parsed flags). */
export function modelDefaultsOf(values: { readonly [K in FlaggedSetting]: FlagValue<K> }): ModelDefaults {
  const out: Record<string, unknown> = {};
  for (const [name, s] of flaggedSettings()) if (s.flag.model !== undefined) out[s.flag.model] = values[name];
  return Object.freeze(out) as ModelDefaults;
}

/** The defaults of every flagged setting. */
export const FLAG_DEFAULTS = Object.freeze(
  Object.fromEntries(flaggedSettings().map(([name, s]) => [name, s.flag.default])),
) as { readonly [K in FlaggedSetting]: FlagValue<K> };

export const MODEL_DEFAULTS: ModelDefaults = modelDefaultsOf(FLAG_DEFAULTS);
