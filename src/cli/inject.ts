/**
 * `safe-termination inject`: the webhook's decision applied to manifests
 * (like `istioctl kube-inject`). Wiring only; the door is
 * src/manifest/process.ts.
 */
import { chmod, rename, stat, writeFile } from 'node:fs/promises';
import { CONNTRACK_FLAGS, flag, MODEL_FLAGS } from './config.ts';
import { UsageError } from '../shared/errors.ts';
import { checkQuietVerbose, INPUT_FLAGS, parseCommandFlags, plainFlagHelp, prepare, processIO } from './command-options.ts';
import type { CliIO } from './command-options.ts';
import { problemLines, processManifest } from '../manifest/process.ts';
import type { ManifestOutcome } from '../manifest/process.ts';
import { STDIN } from '../manifest/read.ts';
import { decisionLines, untemplatedLines, warningLines } from '../manifest/report.ts';
import { formatProblem } from '../manifest/source.ts';
import { flagHelp, wantsHelp } from './help.ts';

export const INJECT_IO_FLAGS = {
  ...INPUT_FLAGS,
  output: flag.path('write the result to this file instead of stdout (- is stdout)', undefined),
  inPlace: flag.bool('rewrite the input files that change instead of printing; nothing is written if any input fails', false),
} as const;

export const INJECT_FLAGS = { ...INJECT_IO_FLAGS, ...MODEL_FLAGS, ...CONNTRACK_FLAGS } as const;

const HELP = `Usage: safe-termination inject -f FILE|DIR|- [-f …] [flags]

Applies the webhook's decision to manifests: adds the preStop sleep, raises
terminationGracePeriodSeconds and writes the safe-termination.io/injected record
into every Pod and pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob, also inside List objects) of YAML or JSON
manifests. A kind of another API group (OpenShift DeploymentConfig, Argo Rollout,
a custom resource) counts when it holds a pod template at spec.template or
spec.jobTemplate.spec.template; one that holds none is named on stderr (except
Knative Services, whose API refuses the hook: their pods get it from the webhook).
Other objects pass through untouched; comments, key order and formatting are
kept, so a diff shows only the injection. Running it again on its output changes
nothing.

Job and CronJob templates (and spec.jobTemplate ones) are skipped unless
--inject-job-pods, as the webhook skips pods owned by a Job. A template without terminationGracePeriodSeconds
counts from the API default of 30s.

Conntrack timeouts (per value, the first source that has it wins):
  --conntrack key=seconds,…      given on the command line (recorded as source "static")
  --kubeconfig FILE              the live cluster, read as the webhook reads it: the node
                                 agent's annotations, the maximum over the nodes each pod
                                 may land on (source "nodes"), then kube-proxy's ConfigMap
                                 (source "kube-proxy"); and the cluster's version
  --from-node-annotations FILE   the same node annotations, from a \`kubectl get nodes -o yaml\` dump
  (neither of these two)         this machine's /proc/sys/net/netfilter (source "local")
  --static-*                     the static values, Linux defaults (source "static")
The preStop action is the native sleep unless --kube-version is below 1.30
(or --prestop-mode exec); an unknown version counts as a current cluster.

Protocols come from the serving containers' ports and from the Services that
select the pod: every Service in the manifests (and in --services FILE, a
\`kubectl get services -A -o yaml\` dump) whose selector matches a template's
labels, in the workload's namespace (objects without a namespace count as
"default"), adds the protocols of its ports. Headless Services (clusterIP: None)
and Services without a selector do not count.

Examples:
  safe-termination inject -f deploy.yaml > deploy.injected.yaml
  kustomize build overlays/prod | safe-termination inject -f - | kubectl apply -f -
  safe-termination inject -f k8s/ -R --in-place && git diff
  safe-termination inject -f coredns.yaml --from-node-annotations nodes.yaml --kube-version 1.29
  safe-termination inject -f app.json --conntrack udp-timeout=60 -o app.injected.json
  safe-termination inject -f dns.yaml --services <(kubectl get services -A -o yaml)

Exit status: 0 done; 1 an input is unreadable or invalid (nothing is written);
2 wrong usage.

Flags:
  -f, --filename FILE|DIR|-
      a manifest file, a directory of .yaml/.yml/.json files, or - for stdin; repeatable
${plainFlagHelp(INJECT_IO_FLAGS)}
  --kube-version VERSION
      the same as --kubernetes-version

Model and static conntrack flags (as for serve; also read from the environment):
${flagHelp({ ...MODEL_FLAGS, ...CONNTRACK_FLAGS })}
`;

export async function runInject(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  if (wantsHelp(argv)) {
    io.stdout(HELP);
    return 0;
  }
  try {
    return await inject(argv, io);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`safe-termination inject: ${error.message}\nRun 'safe-termination inject --help' for usage.\n`);
    return error.exit;
  }
}

async function inject(argv: readonly string[], io: CliIO): Promise<number> {
  const parsed = parseCommandFlags(INJECT_FLAGS, argv, io.env);
  const v = parsed.values;
  checkQuietVerbose(v);
  if (v.inPlace && v.output !== undefined) throw new UsageError('CONFLICTING_FLAGS', { flags: ['--in-place', '--output'] });
  if (v.inPlace && parsed.filenames.includes(STDIN)) throw new UsageError('IN_PLACE_STDIN', undefined);
  const prep = await prepare(parsed, io);
  if (v.verbose) for (const note of prep.notes) io.stderr(`note: ${note}\n`);
  if (prep.problems.length > 0) {
    io.stderr(prep.problems.map((p) => `${formatProblem(p)}\n`).join(''));
    return 1;
  }

  const outcomes = prep.sources.map((s) => processManifest(s, prep.config));
  if (!v.quiet) for (const line of warningLines(outcomes)) io.stderr(`${line}\n`);
  if (!v.quiet) for (const line of untemplatedLines(outcomes)) io.stderr(`${line}\n`);
  if (v.verbose) for (const line of decisionLines(outcomes)) io.stderr(`${line}\n`);
  const problems = problemLines(outcomes);
  if (problems.length > 0) {
    const n = problems.length;
    io.stderr(`${problems.join('\n')}\n${n} problem${n === 1 ? '' : 's'}; nothing written\n`);
    return 1;
  }

  if (v.inPlace) {
    const changed = outcomes.filter((o) => o.changed && o.source.path !== undefined);
    for (const o of changed) await writeAtomically(o.source.path as string, o.output);
    if (v.verbose) io.stderr(`rewrote ${changed.length} of ${outcomes.length} file${outcomes.length === 1 ? '' : 's'}\n`);
    return 0;
  }
  const text = joinOutputs(outcomes);
  if (v.output !== undefined && v.output !== '-') await writeFile(v.output, text);
  else io.stdout(text);
  return 0;
}

/** The outputs of several files as one YAML stream (JSON is YAML, so a JSON file fits too). */
export function joinOutputs(outcomes: readonly ManifestOutcome[]): string {
  let out = '';
  for (const o of outcomes) {
    const text = o.output;
    if (text.trim() === '') continue;
    if (out !== '') {
      if (!out.endsWith('\n')) out += '\n';
      if (!/^(?:[ \t]*(?:#.*)?\r?\n)*(?:---|%)/.test(text)) out += '---\n';
    }
    out += text;
  }
  return out;
}

/** Write beside the file, then rename over it: a reader never sees half a manifest. */
async function writeAtomically(path: string, text: string): Promise<void> {
  const mode = (await stat(path)).mode & 0o7777;
  const tmp = `${path}.safe-termination-${process.pid}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}
