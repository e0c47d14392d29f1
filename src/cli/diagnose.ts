/** `safe-termination diagnose`: stale conntrack entries per Service and protocol. */
import { open, readFile } from 'node:fs/promises';
import { CLUSTER_FLAGS, CONNTRACK_FLAGS, flag, parseFlags } from './config.ts';
import { MODEL_DEFAULTS } from '../core/model.ts';
import { timeoutAdvice } from '../core/tuning.ts';
import { UsageError } from '../shared/errors.ts';
import { buildServiceIndex, parseKubernetesObjects } from '../diagnose/endpoints.ts';
import type { IndexProblem } from '../diagnose/endpoints.ts';
import { formatReport, formatTimeouts } from '../diagnose/format.ts';
import { DiagnoseTally } from '../diagnose/tally.ts';
import { readConntrackText } from '../host/conntrack-table.ts';
import { listConntrack } from '../host/conntrack-tool.ts';
import { readConntrackSysctls } from '../host/sysctl.ts';
import { flagHelp, wantsHelp } from './help.ts';

export const DIAGNOSE_FLAGS = {
  endpointslices: flag.path(
    "Services and EndpointSlices to compare against: the output of 'kubectl get services,endpointslices -A -o yaml' (or json; - reads stdin)",
    undefined,
  ),
  services: flag.path('Services, if they are not in the --endpointslices file (YAML or JSON)', undefined),
  kubeconfig: flag.path('read Services and EndpointSlices from the cluster of this kubeconfig (in a pod: its service account)', CLUSTER_FLAGS.kubeconfig.default),
  conntrackFile: flag.path("read the output of 'conntrack -L -o extended' from this file instead of running conntrack", undefined),
  conntrackBin: flag.text('the conntrack tool to run', 'conntrack', 'a command name or path'),
  json: flag.bool('print the report as JSON', false),
  all: flag.bool('also list Services without stale entries', false),
  conntrackProcDir: flag.path("where this node's nf_conntrack_* timeouts are read, for the tuning advice", CONNTRACK_FLAGS.conntrackProcDir.default),
} as const;

/**
 * Exit status of `diagnose`, for scripts: whether stale entries were found. 1
 * (an error: conntrack or the endpoints could not be read) and 2 (usage) are every
 * command's; a report is printed only with 0 or 3.
 */
export const DiagnoseExit = {
  /** Read everything; no stale entry (draining, closed and unattributed entries do not count). */
  clean: 0,
  /** Read everything; at least one stale entry. */
  staleFound: 3,
} as const;

const HELP = `Usage: safe-termination diagnose (--endpointslices FILE | --kubeconfig FILE) [flags]

Lists this node's conntrack entries that a Service's DNAT sent to an endpoint
that is gone or no longer serving ("stale": their packets still go to the old pod),
grouped by Service and protocol. Entries to terminating endpoints that still serve
(a preStop sleep at work) are "draining". Runs 'conntrack -L -o extended' (root or
CAP_NET_ADMIN, in the node's network namespace: on the node, or a hostNetwork pod).
The table is read as it streams: a node's 500k entries need no more memory than 100.
After the report: this node's conntrack timeouts (--conntrack-proc-dir) next to
the incident write-up's values and what each costs in preStop sleep (advice).

Exit status: 0 no stale entries, 3 stale entries found (the report is printed
either way), 1 error (conntrack or the endpoints could not be read), 2 usage.

Examples:
  kubectl get services,endpointslices -A -o yaml > endpoints.yaml
  sudo safe-termination diagnose --endpointslices endpoints.yaml
  sudo safe-termination diagnose --kubeconfig ~/.kube/config --json
  sudo safe-termination diagnose --endpointslices endpoints.yaml --json > report.json
  case $? in 0) echo clean;; 3) echo 'stale entries: see report.json';; *) echo failed;; esac

Flags:
${flagHelp(DIAGNOSE_FLAGS)}
`;

export async function runDiagnose(argv: readonly string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(HELP);
    return 0;
  }
  const { values: v, positionals } = parseFlags(DIAGNOSE_FLAGS, argv, process.env);
  if (positionals.length > 0) throw new UsageError('UNEXPECTED_ARGUMENT', { command: 'diagnose', argument: positionals[0]! });
  const inCluster = process.env['KUBERNETES_SERVICE_HOST'] !== undefined;
  if (v.endpointslices === undefined && v.kubeconfig === undefined && !inCluster) {
    throw new UsageError('NO_ENDPOINTS_SOURCE', undefined);
  }

  const objects: unknown[] = [];
  let endpointsFrom: string;
  if (v.endpointslices !== undefined) {
    objects.push(...(await readObjects(v.endpointslices, '--endpointslices')));
    endpointsFrom = v.endpointslices === '-' ? 'stdin' : v.endpointslices;
    if (v.services !== undefined) {
      objects.push(...(await readObjects(v.services, '--services')));
      endpointsFrom += ` + ${v.services}`;
    }
  } else {
    // Loaded only here: client-node takes a while to import.
    const { listServicesAndSlices } = await import('../cluster/service-lists.ts');
    objects.push(...(await listServicesAndSlices({ kubeconfig: v.kubeconfig })));
    endpointsFrom = v.kubeconfig !== undefined ? `cluster of ${v.kubeconfig}` : 'cluster (in-cluster service account)';
  }
  const problems: IndexProblem[] = [];
  const index = buildServiceIndex(objects, problems);
  for (const p of problems.slice(0, 5)) process.stderr.write(`warning: ${p.kind} ${p.name} skipped: ${p.problem}\n`);
  if (index.sliceCount === 0) {
    process.stderr.write('warning: no EndpointSlice in the input: every Service entry will count as stale\n');
  }
  if ((index.ignoredKinds['Endpoints'] ?? 0) > 0) {
    process.stderr.write('warning: v1 Endpoints objects are ignored; dump EndpointSlices (kubectl get endpointslices)\n');
  }

  // Entry by entry into the tally: no entry (nor the listing's text) is kept.
  const tally = new DiagnoseTally(index);
  const add = tally.add.bind(tally);
  let skipped: { count: number; lineNumber: number; reason: string } | undefined;
  if (v.conntrackFile !== undefined) {
    const read = await streamFile(v.conntrackFile, '--conntrack-file', (input) => readConntrackText(input, add));
    if (read.firstSkipped !== undefined) skipped = { count: read.skipped, ...read.firstSkipped };
  } else {
    const listing = await listConntrack({ bin: v.conntrackBin, onEntry: add });
    const first = listing.skipped[0];
    if (first !== undefined) skipped = { count: listing.skipped.length, lineNumber: first.lineNumber, reason: first.reason };
  }
  if (skipped !== undefined) {
    process.stderr.write(`warning: ${skipped.count} lines are not conntrack entries (line ${skipped.lineNumber}: ${skipped.reason})\n`);
  }

  const report = tally.report();
  // The node's timeouts next to the write-up's, with what they cost in sleep under the default model (advice).
  const sysctls = await readConntrackSysctls(v.conntrackProcDir);
  const model = { propagationDelaySeconds: MODEL_DEFAULTS.propagationDelaySeconds, maxSleepSeconds: MODEL_DEFAULTS.maxSleepSeconds, tcpSizing: MODEL_DEFAULTS.tcpSizing };
  const advice = timeoutAdvice(sysctls.values, model);
  if (v.json) {
    const out = {
      endpoints: { from: endpointsFrom, services: index.serviceCount, endpointSlices: index.sliceCount },
      ...report,
      timeouts: { from: v.conntrackProcDir, propagationDelaySeconds: model.propagationDelaySeconds, maxSleepSeconds: model.maxSleepSeconds, values: advice },
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } else {
    process.stdout.write(formatReport(report, { all: v.all, endpointsFrom, serviceCount: index.serviceCount, sliceCount: index.sliceCount }));
    process.stdout.write(formatTimeouts(advice, { from: v.conntrackProcDir, ...model }));
  }
  return report.stale > 0 ? DiagnoseExit.staleFound : DiagnoseExit.clean;
}

/** A file (or stdin for `-`) as a stream of chunks to `read`; a file that cannot be read is a usage error, as with readText. */
async function streamFile<T>(path: string, flagName: string, read: (input: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
  const cannot = (error: unknown): UsageError =>
    new UsageError('UNREADABLE_FILE', { flag: flagName, path, reason: (error as NodeJS.ErrnoException).code ?? String(error) });
  if (path === '-') return read(process.stdin);
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (error) {
    throw cannot(error);
  }
  try {
    return await read(fh.createReadStream({ highWaterMark: 64 * 1024, autoClose: false }));
  } catch (error) {
    // EISDIR and other read errors come from the first read, not from open.
    if (typeof (error as NodeJS.ErrnoException).code === 'string') throw cannot(error);
    throw error;
  } finally {
    await fh.close();
  }
}

async function readText(path: string, flagName: string): Promise<string> {
  try {
    return path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError('UNREADABLE_FILE', { flag: flagName, path, reason: (error as NodeJS.ErrnoException).code ?? String(error) });
  }
}

async function readObjects(path: string, flagName: string): Promise<unknown[]> {
  const text = await readText(path, flagName);
  try {
    return parseKubernetesObjects(text);
  } catch (error) {
    throw new UsageError('UNPARSABLE_FILE', { flag: flagName, path, reason: error instanceof Error ? error.message : String(error) });
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
