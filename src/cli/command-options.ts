/**
 * What `inject` and `explain` share: their flags (the model's and the static
 * conntrack values are `serve`'s own tables), the inputs and the facts.
 */
import { readFile } from 'node:fs/promises';
import { formatDefault } from './help.ts';
import { CLUSTER_FLAGS, CONNTRACK_FLAGS, flag, flagEnvName, MODEL_FLAGS, modelDefaultsFrom, parseConfigMapRef, parseFlags, staticConntrackFrom, staticFlagName } from './config.ts';
import type { FlagSpec, FlagValues, ParsedFlags } from './config.ts';
import { CONNTRACK_KEYS, sysctlName } from '../core/conntrack.ts';
import type { ConntrackKey, PartialConntrackValues } from '../core/conntrack.ts';
import { parseDuration } from '../core/duration.ts';
import { UsageError } from '../shared/errors.ts';
import type { DoorConfig } from '../manifest/process.ts';
import { ClusterReadError, resolveFacts } from '../manifest/facts.ts';
import type { ClusterInput, ManifestFacts } from '../manifest/facts.ts';
import { readNodeDump } from '../manifest/nodes.ts';
import { readInputs, STDIN } from '../manifest/read.ts';
import { indexServices, servicesOf } from '../manifest/services.ts';
import type { ServiceReadings } from '../manifest/services.ts';
import type { InputProblem, ManifestSource } from '../manifest/source.ts';

/** Where a command reads and writes; the process's own streams outside tests. */
export interface CliIO {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly readStdin: () => Promise<string>;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export const processIO: CliIO = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  },
  env: process.env,
};

const CONNTRACK_FORM = `comma-separated key=seconds with keys ${CONNTRACK_KEYS.join(', ')} (e.g. udp-timeout=30,udp-timeout-stream=120)`;

function parseConntrackList(text: string): PartialConntrackValues | undefined {
  const out: Partial<Record<ConntrackKey, number>> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) return undefined;
    const name = part.slice(0, eq).trim();
    const key = CONNTRACK_KEYS.find((k) => k === name || sysctlName(k) === name);
    const seconds = parseDuration(part.slice(eq + 1).trim());
    if (key === undefined || seconds === undefined) return undefined;
    out[key] = seconds;
  }
  return out;
}

/** Flags about inputs and facts, shared by inject and explain; not read from the environment. */
export const INPUT_FLAGS = {
  recursive: flag.bool('read the directories given with -f recursively', false),
  quiet: flag.bool('print nothing but errors', false),
  verbose: flag.bool('also print each decision and where the facts came from, on stderr', false),
  conntrack: {
    description: 'conntrack timeouts to size with, over every other source; recorded as source "static"',
    accepted: CONNTRACK_FORM,
    default: undefined,
    parse: parseConntrackList,
  } as FlagSpec<PartialConntrackValues | undefined>,
  fromNodeAnnotations: flag.path(
    'size from the conntrack values the node agent published, in a `kubectl get nodes -o yaml` (or -o json) dump: source "nodes", the maximum over the nodes each pod may land on; instead of this machine\'s /proc',
    undefined,
  ),
  kubeconfig: {
    ...CLUSTER_FLAGS.kubeconfig,
    description:
      'size from the live cluster of this kubeconfig ("default": $KUBECONFIG or ~/.kube/config), as the webhook would: node annotations over the candidate nodes, then kube-proxy\'s ConfigMap, and the server version',
  },
  kubeProxyConfigmap: { ...CLUSTER_FLAGS.kubeProxyConfigmap, description: 'with --kubeconfig: kube-proxy\'s ConfigMap, whose conntrack.* values come after the node annotations ("none": not read)' },
  informerSyncTimeout: { ...CLUSTER_FLAGS.informerSyncTimeout, description: 'with --kubeconfig: give up listing the nodes after this long' },
  services: flag.path(
    'more Services to match against the pod templates\' labels, from a `kubectl get services -A -o yaml` (or -o json) dump, besides the Services in the manifests themselves: a Service selecting a template in its namespace adds the protocols of its ports',
    undefined,
  ),
} as const;

/** Flags read from SAFE_TERMINATION_* like serve's: the model and static conntrack values. */
const ENV_FLAGS = { ...MODEL_FLAGS, ...CONNTRACK_FLAGS } as const;

const SHORT: Readonly<Record<string, string>> = { '-o': '--output', '-q': '--quiet', '-v': '--verbose', '-R': '--recursive', '-i': '--in-place' };

export interface CommonValues {
  readonly filenames: readonly string[];
}

type Specs = Readonly<Record<string, FlagSpec<unknown>>>;

/**
 * Parse a subcommand's argv: `-f/--filename` may repeat; short forms are
 * expanded; `--kube-version` is `--kubernetes-version`. Throws UsageError.
 */
export function parseCommandFlags<S extends Specs>(specs: S, argv: readonly string[], env: Readonly<Record<string, string | undefined>>): ParsedFlags<S> & CommonValues {
  const filenames: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (arg === '-f' || arg === '--filename') {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError('FLAG_NEEDS_VALUE', { flag: arg, accepted: 'a file, a directory, or - for stdin' });
      filenames.push(next);
      i++;
    } else if (arg.startsWith('--filename=') || arg.startsWith('-f=')) filenames.push(arg.slice(arg.indexOf('=') + 1));
    else if (arg === '--kube-version' || arg.startsWith('--kube-version=')) rest.push(arg.replace('--kube-version', '--kubernetes-version'));
    else if (SHORT[arg] !== undefined) rest.push(SHORT[arg]);
    else if (/^-[A-Za-z]/.test(arg)) throw new UsageError('UNKNOWN_FLAG', { flag: arg });
    else rest.push(arg);
  }
  const envNames = new Set(Object.keys(ENV_FLAGS).map(flagEnvName));
  const env2 = Object.fromEntries(Object.entries(env).filter(([k]) => envNames.has(k)));
  const parsed = parseFlags(specs, rest, env2);
  if (parsed.positionals.length > 0) {
    throw new UsageError('MANIFEST_ARGUMENT', parsed.positionals[0]!);
  }
  if (filenames.length === 0) throw new UsageError('MISSING_FLAG', { flag: '-f', why: ': a file, a directory, or - for stdin (repeatable)' });
  if (filenames.filter((f) => f === STDIN).length > 1) throw new UsageError('STDIN_TWICE', undefined);
  return { ...parsed, filenames };
}

type CommonFlagValues = FlagValues<typeof INPUT_FLAGS & typeof ENV_FLAGS>;

export interface Prepared {
  readonly config: DoorConfig;
  readonly sources: readonly ManifestSource[];
  readonly problems: readonly InputProblem[];
  readonly notes: readonly string[];
}

/** Read the inputs and the facts; problems are the user's (exit 1), UsageError is a usage error (exit 2). */
export async function prepare(
  parsed: { values: CommonFlagValues; given: ReadonlySet<string>; filenames: readonly string[] },
  io: CliIO,
): Promise<Prepared> {
  const v = parsed.values;
  if (v.kubeconfig !== undefined && v.fromNodeAnnotations !== undefined) {
    throw new UsageError('CONFLICTING_FLAGS', { flags: ['--kubeconfig', '--from-node-annotations'], why: 'the facts come from the live cluster or from a dump' });
  }
  const problems: InputProblem[] = [];
  let cluster: ClusterInput | undefined;
  if (v.fromNodeAnnotations !== undefined) {
    const file = v.fromNodeAnnotations;
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      const code = (error as { code?: string }).code;
      problems.push({ file, message: code === 'ENOENT' ? 'no such file (--from-node-annotations)' : `cannot read (--from-node-annotations): ${String(error)}` });
    }
    if (text !== undefined) {
      const read = readNodeDump({ name: file, path: file, text });
      if (read.ok) cluster = { kind: 'dump', file, dump: read.dump };
      else problems.push(...read.problems);
    }
  } else if (v.kubeconfig !== undefined) {
    // Loaded only when asked for: the Kubernetes client is the heaviest import of the CLI.
    const { resolveClusterAccess } = await import('../cluster/kubeconfig.ts');
    const access = resolveClusterAccess({ kubeconfig: v.kubeconfig, env: io.env });
    if (access.kind === 'none') throw new UsageError('KUBECONFIG_NO_CLUSTER', undefined);
    cluster = {
      kind: 'api',
      access,
      kubeProxyConfigMap: v.kubeProxyConfigmap === 'none' ? undefined : parseConfigMapRef(v.kubeProxyConfigmap),
      syncTimeoutSeconds: v.informerSyncTimeout,
      log: v.verbose ? (line) => io.stderr(line) : undefined,
    };
  }
  const staticFlags: Partial<Record<ConntrackKey, string>> = {};
  for (const key of CONNTRACK_KEYS) {
    if (parsed.given.has(staticFlagName(key))) staticFlags[key] = `--static-${key}`;
  }
  const defaults = modelDefaultsFrom(v);
  let facts: ManifestFacts;
  try {
    facts = await resolveFacts({
      explicit: v.conntrack ?? {},
      staticValues: staticConntrackFrom(v),
      staticFlags,
      procDir: v.conntrackProcDir,
      cluster: problems.length > 0 ? undefined : cluster,
      kubeVersion: v.kubernetesVersion,
      defaults,
    });
  } catch (error) {
    if (!(error instanceof ClusterReadError)) throw error;
    return { config: { defaults, facts: unusable }, sources: [], problems: [{ file: '--kubeconfig', message: error.message }], notes: [] };
  }
  const inputs = await readInputs(parsed.filenames, { recursive: v.recursive, readStdin: io.readStdin });
  problems.push(...inputs.problems);
  let dump: ServiceReadings | undefined;
  if (v.services !== undefined) {
    const file = v.services;
    try {
      dump = servicesOf({ name: file, path: file, text: await readFile(file, 'utf8') });
      problems.push(...dump.problems);
    } catch (error) {
      const code = (error as { code?: string }).code;
      problems.push({ file, message: code === 'ENOENT' ? 'no such file (--services)' : `cannot read (--services): ${String(error)}` });
    }
  }
  // An input that does not parse is reported when it is processed; here it just brings no Service.
  const services = indexServices(dump, v.services, inputs.sources.map(servicesOf));
  return { config: { defaults, facts, services: services.index }, sources: inputs.sources, problems, notes: [...facts.notes, ...services.notes] };
}

/** Facts for a run that stops before deciding anything. */
const unusable: ManifestFacts = {
  conntrackFor: () => {
    throw new Error('no facts: the cluster could not be read');
  },
  kubeVersion: undefined,
  kubeVersionOrigin: 'unknown',
  notes: [],
};

export function checkQuietVerbose(v: { quiet: boolean; verbose: boolean }): void {
  if (v.quiet && v.verbose) throw new UsageError('CONFLICTING_FLAGS', { flags: ['--quiet', '--verbose'] });
}

/** Help lines for flags that have no environment variable. */
export function plainFlagHelp(specs: Specs, extra: Readonly<Record<string, string>> = {}): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(specs)) {
    const kebab = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
    const short = Object.keys(SHORT).find((k) => SHORT[k] === `--${kebab}`);
    const dflt = spec.default === undefined || spec.default === false ? '' : `, default ${formatDefault(spec)}`;
    lines.push(`  ${short === undefined ? '' : `${short}, `}--${kebab}${extra[name] ?? ''}${dflt}`);
    lines.push(`      ${spec.description}${spec.boolean ? '' : `; ${spec.accepted}`}`);
  }
  return lines.join('\n');
}
