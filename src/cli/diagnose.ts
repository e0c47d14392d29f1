/** `safe-termination diagnose`: stale conntrack entries per Service and protocol. */
import { readFile } from 'node:fs/promises';
import { CLUSTER_FLAGS, flag, parseFlags } from '../config.ts';
import { ErrorCode, UsageError } from '../errors.ts';
import { diagnose } from '../diagnose/classify.ts';
import { parseConntrack } from '../diagnose/conntrack.ts';
import type { ParsedConntrack } from '../diagnose/conntrack.ts';
import { buildServiceIndex, parseKubernetesObjects } from '../diagnose/endpoints.ts';
import type { IndexProblem } from '../diagnose/endpoints.ts';
import { formatReport } from '../diagnose/format.ts';
import { listConntrack } from '../host/conntrack-tool.ts';
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
} as const;

const HELP = `Usage: safe-termination diagnose (--endpointslices FILE | --kubeconfig FILE) [flags]

Lists this node's conntrack entries that a Service's DNAT sent to an endpoint
that is gone or no longer serving ("stale": their packets still go to the old pod),
grouped by Service and protocol. Entries to terminating endpoints that still serve
(a preStop sleep at work) are "draining". Runs 'conntrack -L -o extended' (root or
CAP_NET_ADMIN, in the node's network namespace: on the node, or a hostNetwork pod).

Examples:
  kubectl get services,endpointslices -A -o yaml > endpoints.yaml
  sudo safe-termination diagnose --endpointslices endpoints.yaml
  sudo safe-termination diagnose --kubeconfig ~/.kube/config --json

Flags:
${flagHelp(DIAGNOSE_FLAGS)}
`;

export async function runDiagnose(argv: readonly string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(HELP);
    return 0;
  }
  const { values: v, positionals } = parseFlags(DIAGNOSE_FLAGS, argv, process.env);
  if (positionals.length > 0) throw new UsageError(ErrorCode.invalidFlag, `diagnose takes no arguments, got ${JSON.stringify(positionals[0])}`);
  const inCluster = process.env['KUBERNETES_SERVICE_HOST'] !== undefined;
  if (v.endpointslices === undefined && v.kubeconfig === undefined && !inCluster) {
    throw new UsageError(ErrorCode.invalidFlag, 'diagnose needs the current endpoints: --endpointslices FILE (kubectl get services,endpointslices -A -o yaml) or --kubeconfig FILE');
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
    const { listServicesAndSlices } = await import('../diagnose/cluster.ts');
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

  let listing: ParsedConntrack;
  if (v.conntrackFile !== undefined) {
    listing = parseConntrack(await readText(v.conntrackFile, '--conntrack-file'));
  } else {
    listing = await listConntrack({ bin: v.conntrackBin });
  }
  if (listing.skipped.length > 0) {
    const first = listing.skipped[0]!;
    process.stderr.write(`warning: ${listing.skipped.length} lines are not conntrack entries (line ${first.lineNumber}: ${first.reason})\n`);
  }

  const report = diagnose(listing.entries, index);
  if (v.json) {
    const out = { endpoints: { from: endpointsFrom, services: index.serviceCount, endpointSlices: index.sliceCount }, ...report };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } else {
    process.stdout.write(formatReport(report, { all: v.all, endpointsFrom, serviceCount: index.serviceCount, sliceCount: index.sliceCount }));
  }
  return 0;
}

async function readText(path: string, flagName: string): Promise<string> {
  try {
    return path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(ErrorCode.invalidFlag, `${flagName}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

async function readObjects(path: string, flagName: string): Promise<unknown[]> {
  const text = await readText(path, flagName);
  try {
    return parseKubernetesObjects(text);
  } catch (error) {
    throw new UsageError(ErrorCode.invalidFlag, `${flagName}: ${path} is not YAML or JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
