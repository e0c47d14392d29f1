/**
 * Flags and environment → frozen, validated configuration. Every flag `--foo-bar`
 * is also read from `SAFE_TERMINATION_FOO_BAR`; a flag beats the environment.
 * Errors name the flag (or variable), the bad value and the accepted form.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { CONNTRACK_KEYS, LINUX_DEFAULTS, sysctlName } from '../core/conntrack.ts';
import type { ConntrackKey, ConntrackValues } from '../core/conntrack.ts';
import { editDistance } from '../core/annotations.ts';
import { flaggedSettings, modelDefaultsOf, valueType } from '../core/settings.ts';
import type { FlaggedSetting, FlagValue, ModelDefaults, ValueType } from '../core/settings.ts';
import type { ConfigMapRef } from '../cluster/kube-proxy-config.ts';
import type { AgentConfig } from '../agent/agent.ts';
import type { ServeConfig } from '../server/serve.ts';
import { DEFAULT_READ_DEADLINE_MS } from '../host/conntrack-table.ts';
import { LOG_LEVELS } from '../shared/logger.ts';
import { UsageError } from '../shared/errors.ts';

export const ENV_PREFIX = 'SAFE_TERMINATION_';

export interface FlagSpec<T> {
  readonly description: string;
  /** The accepted form, for errors and help. */
  readonly accepted: string;
  readonly default: T;
  readonly parse: (text: string) => T | undefined;
  /** A bare `--flag` means "true". */
  readonly boolean?: boolean;
  /** How the default is shown in help and docs. */
  show?(value: T): string;
  /** The chart value that sets this flag: a dotted path in values.yaml. */
  readonly chart?: string;
}

type Specs = Readonly<Record<string, FlagSpec<unknown>>>;
export type FlagValues<S extends Specs> = { readonly [K in keyof S]: S[K] extends FlagSpec<infer T> ? T : never };

function fromZod<T>(schema: z.ZodType<T, string>): (text: string) => T | undefined {
  return (text) => {
    const r = schema.safeParse(text);
    return r.success ? r.data : undefined;
  };
}

const intText = (min: number, max: number) =>
  z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(min).max(max));

export const flag = {
  port: (description: string, dflt: number): FlagSpec<number> => ({
    description,
    accepted: 'a port number from 0 to 65535 (0: any free port)',
    default: dflt,
    parse: fromZod(intText(0, 65535)),
  }),
  int: (description: string, dflt: number, min = 0, max = 2_147_483_647): FlagSpec<number> => ({
    description,
    accepted: `a whole number from ${min} to ${max}`,
    default: dflt,
    parse: fromZod(intText(min, max)),
  }),
  seconds: <D extends number | undefined>(description: string, dflt: D, min = 0): FlagSpec<number | D> => fromType(valueType.duration(min), description, dflt),
  choice: <const C extends readonly string[]>(description: string, choices: C, dflt: C[number]): FlagSpec<C[number]> =>
    fromType(valueType.choice(choices), description, dflt),
  bool: (description: string, dflt: boolean): FlagSpec<boolean> => fromType(valueType.bool, description, dflt),
  path: <D extends string | undefined>(description: string, dflt: D): FlagSpec<string | D> => flag.text(description, dflt, 'a file path'),
  text: <D extends string | undefined>(description: string, dflt: D, accepted: string): FlagSpec<string | D> => ({
    description,
    accepted,
    default: dflt,
    parse: (t) => (t.length > 0 ? t : undefined),
  }),
  ip: (description: string, dflt: string): FlagSpec<string> => ({
    description,
    accepted: 'an IP address',
    default: dflt,
    parse: (t) => (isIP(t) !== 0 ? t : undefined),
  }),
};

/** A flag reading values of a setting's type; a default of undefined shows as "unset". */
function fromType<T, D extends T | undefined>(type: ValueType<T>, description: string, dflt: D, chart?: string): FlagSpec<T | D> {
  const show = type.show?.bind(type);
  return {
    description,
    accepted: type.accepted,
    default: dflt,
    parse: (text) => type.parse(text),
    ...(type.boolean ? { boolean: true } : {}),
    ...(show === undefined ? {} : { show: (v: T | D) => (v === undefined ? 'unset' : show(v)) }),
    ...(chart === undefined ? {} : { chart }),
  };
}

/** The flags of the sizing model, one per flagged entry of the settings table. */
export const MODEL_FLAGS = Object.freeze(
  Object.fromEntries(flaggedSettings().map(([name, s]) => [name, fromType(s.type, s.flag.description, s.flag.default, s.flag.chart)])),
) as { readonly [K in FlaggedSetting]: FlagSpec<FlagValue<K>> };

type Camel<S extends string> = S extends `${infer H}-${infer R}` ? `${H}${Capitalize<Camel<R>>}` : S;
/** The flag of a static conntrack value: udp-timeout → staticUdpTimeout (--static-udp-timeout). */
export type StaticFlagName<K extends ConntrackKey> = `static${Capitalize<Camel<K>>}`;

function camel(key: string): string {
  return key.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

export function staticFlagName<K extends ConntrackKey>(key: K): StaticFlagName<K> {
  const c = camel(key);
  return `static${c.charAt(0).toUpperCase()}${c.slice(1)}` as StaticFlagName<K>;
}

/** Static conntrack fallback values, the last source of the facts; one flag and chart value per key. */
export const CONNTRACK_FLAGS = Object.freeze({
  ...(Object.fromEntries(
    CONNTRACK_KEYS.map((key) => [
      staticFlagName(key),
      { ...flag.int(`static fallback for ${sysctlName(key)} (seconds)`, LINUX_DEFAULTS[key]), chart: `conntrack.static.${camel(key)}` },
    ]),
  ) as { readonly [K in ConntrackKey as StaticFlagName<K>]: FlagSpec<number> }),
  conntrackProcDir: flag.path('where this machine\'s nf_conntrack_* sysctls are read outside a cluster', '/proc/sys/net/netfilter'),
});

export const SERVER_FLAGS = {
  port: flag.port('HTTPS port of the admission webhook', 8443),
  bindAddress: flag.ip('address to listen on (:: for all IPv6 and IPv4 addresses)', '0.0.0.0'),
  metricsPort: flag.port('plain-HTTP port of the Prometheus metrics', 9090),
  tlsCertFile: flag.path('serving certificate (PEM); reloaded when it changes', undefined),
  tlsPrivateKeyFile: flag.path('private key of the serving certificate (PEM)', undefined),
  logLevel: flag.choice('log level', LOG_LEVELS, 'info'),
  shutdownDelay: flag.seconds('on SIGTERM, stay up not-ready this long before closing, so endpoints drop the pod', 5),
  shutdownTimeout: flag.seconds('on shutdown, wait this long at most for in-flight requests', 25),
  tlsReloadInterval: flag.seconds('how often the certificate files are checked for changes', 10, 1),
  maxConnections: flag.int('most connections open at once on the webhook port (an idle TLS connection holds about 60 KiB); more are refused', 500, 1),
  maxBodyBytesInFlight: flag.int(
    'most bytes of request bodies read and handled at once (a parsed review takes several times its size); a review beyond waits up to 2 s for room, then gets 503',
    16 * 1024 * 1024,
    8 * 1024 * 1024,
  ),
} as const;

export function camelToKebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export function flagEnvName(name: string): string {
  return ENV_PREFIX + camelToKebab(name).replaceAll('-', '_').toUpperCase();
}

export interface ParsedFlags<S extends Specs> {
  readonly values: FlagValues<S>;
  readonly positionals: readonly string[];
  /** Flags given on the command line or in the environment. */
  readonly given: ReadonlySet<keyof S & string>;
}

/**
 * Parse `--flag value`, `--flag=value` and bare boolean flags; fill the rest
 * from the environment, then from defaults. Throws UsageError naming the flag.
 */
export function parseFlags<S extends Specs>(specs: S, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedFlags<S> {
  const byFlag = new Map<string, string>();
  for (const name of Object.keys(specs)) byFlag.set(camelToKebab(name), name);
  const raw = new Map<string, { text: string; origin: string }>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const flagName = arg.slice(2, eq === -1 ? undefined : eq);
    const name = byFlag.get(flagName);
    if (name === undefined) {
      throw new UsageError('UNKNOWN_FLAG', { flag: `--${flagName}`, suggestion: suggest(flagName, [...byFlag.keys()]) });
    }
    const spec = specs[name] as FlagSpec<unknown>;
    let text: string;
    if (eq !== -1) text = arg.slice(eq + 1);
    else if (spec.boolean && (argv[i + 1] === undefined || !['true', 'false'].includes(argv[i + 1] as string))) text = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError('FLAG_NEEDS_VALUE', { flag: `--${flagName}`, accepted: spec.accepted });
      text = next;
      i++;
    }
    raw.set(name, { text, origin: `--${flagName}` });
  }
  const values: Record<string, unknown> = {};
  const given = new Set<keyof S & string>();
  for (const [name, spec] of Object.entries(specs)) {
    let source = raw.get(name);
    if (source === undefined) {
      const envName = flagEnvName(name);
      const envText = env[envName];
      if (envText !== undefined && envText !== '') source = { text: envText, origin: envName };
    }
    if (source === undefined) {
      values[name] = spec.default;
      continue;
    }
    const value = spec.parse(source.text);
    if (value === undefined) {
      throw new UsageError('INVALID_FLAG', { origin: source.origin, value: source.text, accepted: spec.accepted });
    }
    values[name] = value;
    given.add(name);
  }
  return { values: values as FlagValues<S>, positionals, given };
}

/** The known flag nearest by edit distance, when it is near enough to be a typo. */
function suggest(name: string, known: readonly string[]): string | undefined {
  let close: string | undefined;
  let best = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const k of known) {
    const d = editDistance(name, k);
    if (d < best) {
      best = d;
      close = k;
    }
  }
  return close === undefined ? undefined : `--${close}`;
}

export function modelDefaultsFrom(v: FlagValues<typeof MODEL_FLAGS>): ModelDefaults {
  return modelDefaultsOf(v);
}

export function staticConntrackFrom(v: FlagValues<typeof CONNTRACK_FLAGS>): ConntrackValues {
  return Object.freeze(Object.fromEntries(CONNTRACK_KEYS.map((key) => [key, v[staticFlagName(key)]])) as Record<ConntrackKey, number>);
}

/** How the webhook reaches the Kubernetes API. */
export const CLUSTER_FLAGS = {
  kubeconfig: flag.path(
    'reach the Kubernetes API through this kubeconfig ("default": $KUBECONFIG or ~/.kube/config); unset: the in-cluster service account in a pod, no API elsewhere',
    undefined,
  ),
  informerSyncTimeout: flag.seconds('report ready after this long even if the node (and service) informers have not synced', 10),
  kubeProxyConfigmap: {
    description: 'kube-proxy\'s ConfigMap, whose KubeProxyConfiguration conntrack.* values are the second conntrack source ("none": not read)',
    accepted: 'namespace/name, or none',
    default: 'kube-system/kube-proxy',
    parse: (t: string) => (t === 'none' || parseConfigMapRef(t) !== undefined ? t : undefined),
  } satisfies FlagSpec<string>,
  kubeProxyInterval: flag.seconds('how often kube-proxy\'s ConfigMap is read again', 60, 1),
  servicesInformer: flag.bool(
    'in a cluster, keep the Services in memory (list and watch, all namespaces) so that the protocols of the Services selecting a pod count, not only its container ports (needs list/watch on services)',
    true,
  ),
} as const;

/** "kube-system/kube-proxy" → {namespace, name}; undefined when not of that form. */
export function parseConfigMapRef(text: string): ConfigMapRef | undefined {
  const m = /^([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)\/([a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)$/.exec(text);
  return m === null ? undefined : { namespace: m[1]!, name: m[2]! };
}

export const SERVE_FLAGS = { ...SERVER_FLAGS, ...MODEL_FLAGS, ...CONNTRACK_FLAGS, ...CLUSTER_FLAGS } as const;

/** `safe-termination agent` (DaemonSet mode). */
export const AGENT_FLAGS = {
  nodeName: flag.text('the Node this agent annotates; unset: $NODE_NAME (the chart sets it from the downward API)', undefined, 'a node name'),
  interval: flag.seconds('how often the sysctls are read and published', 60, 1),
  metricsPort: flag.port('plain-HTTP port of /healthz and Prometheus metrics (host network: pick a free one)', 9812),
  bindAddress: SERVER_FLAGS.bindAddress,
  conntrackProcDir: CONNTRACK_FLAGS.conntrackProcDir,
  procNetDir: flag.path('where /proc/net/stat/nf_conntrack (and, for the stale count, /proc/net/nf_conntrack) is read', '/proc/net'),
  staleConntrackInterval: flag.seconds(
    'how often the whole conntrack table is read to count stale entries per Service (safe_termination_conntrack_stale_entries; needs list/watch of Services and EndpointSlices and read access to /proc/net/nf_conntrack); 0: off. Large tables cost CPU: 60s or more',
    0,
  ),
  endpointChanges: flag.bool(
    'count the changes of this node\'s endpoints per Service from a watch of EndpointSlices (safe_termination_endpoint_changes_total, the ServiceEndpointChurn alert; needs list/watch of EndpointSlices)',
    false,
  ),
  reap: flag.bool(
    'delete the conntrack entries that still send flows to an endpoint that has left every EndpointSlice (the conntrack reaper; needs list/watch of EndpointSlices, CAP_NET_ADMIN and the conntrack tool)',
    true,
  ),
  reapHold: flag.seconds('how long after an endpoint left every EndpointSlice its conntrack entries are reaped', 5),
  reapMaxPerSecond: flag.int('the most conntrack entries the reaper deletes per second, on average', 2000, 1, 1_000_000),
  reapDryRun: flag.bool('find and count the entries the reaper would delete (safe_termination_conntrack_reap_dry_run_total, logs) without deleting them', false),
  conntrackReadTimeout: flag.seconds(
    'a read of the whole conntrack table (a reaper sweep, a stale count) that takes longer is abandoned and tried again later. A 1,000,000-entry table takes 10 to 20 s to read',
    DEFAULT_READ_DEADLINE_MS / 1000,
    1,
  ),
  kubeconfig: CLUSTER_FLAGS.kubeconfig,
  logLevel: SERVER_FLAGS.logLevel,
} as const;

/** Node names are DNS subdomains (RFC 1123), as the API server validates them. */
const NODE_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function parseAgentConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): AgentConfig {
  const { values: v, positionals } = parseFlags(AGENT_FLAGS, argv, env);
  if (positionals.length > 0) throw new UsageError('UNEXPECTED_ARGUMENT', { command: 'agent', argument: positionals[0]! });
  const fromEnv = env['NODE_NAME'] === '' ? undefined : env['NODE_NAME'];
  const nodeName = v.nodeName ?? fromEnv;
  if (nodeName !== undefined && !NODE_NAME.test(nodeName)) {
    const origin = v.nodeName !== undefined ? '--node-name' : 'NODE_NAME';
    throw new UsageError('INVALID_FLAG', { origin, value: nodeName, accepted: 'a node name (lower-case DNS subdomain)' });
  }
  return Object.freeze({
    nodeName,
    intervalSeconds: v.interval,
    metricsPort: v.metricsPort,
    bindAddress: v.bindAddress,
    conntrackProcDir: v.conntrackProcDir,
    procNetDir: v.procNetDir,
    staleConntrackIntervalSeconds: v.staleConntrackInterval,
    endpointChanges: v.endpointChanges,
    reap: v.reap,
    reapHoldSeconds: v.reapHold,
    reapMaxPerSecond: v.reapMaxPerSecond,
    reapDryRun: v.reapDryRun,
    conntrackReadTimeoutSeconds: v.conntrackReadTimeout,
    kubeconfig: v.kubeconfig,
    logLevel: v.logLevel,
  });
}

export function parseServeConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ServeConfig {
  const { values: v, positionals } = parseFlags(SERVE_FLAGS, argv, env);
  if (positionals.length > 0) throw new UsageError('UNEXPECTED_ARGUMENT', { command: 'serve', argument: positionals[0]! });
  if (v.tlsCertFile === undefined || v.tlsPrivateKeyFile === undefined) {
    const missing = v.tlsCertFile === undefined ? 'tls-cert-file' : 'tls-private-key-file';
    throw new UsageError('MISSING_FLAG', { flag: `--${missing}`, why: ` (or ${flagEnvName(missing)}): the webhook serves only TLS` });
  }
  if (v.port !== 0 && v.port === v.metricsPort) throw new UsageError('SAME_PORT', v.port);
  return Object.freeze({
    port: v.port,
    bindAddress: v.bindAddress,
    metricsPort: v.metricsPort,
    tlsCertFile: v.tlsCertFile,
    tlsPrivateKeyFile: v.tlsPrivateKeyFile,
    logLevel: v.logLevel,
    shutdownDelaySeconds: v.shutdownDelay,
    shutdownTimeoutSeconds: v.shutdownTimeout,
    tlsReloadIntervalSeconds: v.tlsReloadInterval,
    maxConnections: v.maxConnections,
    maxBodyBytesInFlight: v.maxBodyBytesInFlight,
    model: modelDefaultsFrom(v),
    kubernetesVersion: v.kubernetesVersion,
    staticConntrack: staticConntrackFrom(v),
    conntrackProcDir: v.conntrackProcDir,
    kubeconfig: v.kubeconfig,
    informerSyncTimeoutSeconds: v.informerSyncTimeout,
    kubeProxyConfigMap: v.kubeProxyConfigmap === 'none' ? undefined : parseConfigMapRef(v.kubeProxyConfigmap),
    kubeProxyIntervalSeconds: v.kubeProxyInterval,
    servicesInformer: v.servicesInformer,
  });
}
