/**
 * `safe-termination explain`: what inject (and the webhook) would do to each
 * Pod and pod template, and why — every input of the sizing with its source.
 */
import { CONNTRACK_FLAGS, flag, MODEL_FLAGS } from './config.ts';
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import type { ConntrackKey } from '../core/conntrack.ts';
import { isNativeSidecar } from '../core/pod.ts';
import type { Input, Plan } from '../core/plan.ts';
import { Annotation } from '../core/names.ts';
import { howToSet, planTuning } from '../core/tuning.ts';
import type { PlanTuning } from '../core/tuning.ts';
import { UsageError } from '../shared/errors.ts';
import { pointerSegments } from '../manifest/edit.ts';
import type { ManifestFacts } from '../manifest/facts.ts';
import { checkQuietVerbose, INPUT_FLAGS, parseCommandFlags, plainFlagHelp, prepare, processIO } from './command-options.ts';
import type { CliIO } from './command-options.ts';
import { processManifest } from '../manifest/process.ts';
import type { ManifestOutcome, TargetOutcome } from '../manifest/process.ts';
import { SKIP_HINTS, untemplatedLines } from '../manifest/report.ts';
import { formatProblem } from '../manifest/source.ts';
import type { InputProblem } from '../manifest/source.ts';
import { dottedPath } from '../manifest/workloads.ts';
import { flagHelp, wantsHelp } from './help.ts';

export const EXPLAIN_IO_FLAGS = {
  ...INPUT_FLAGS,
  output: flag.choice('output format: a table per object for people, or JSON for programs', ['text', 'json'] as const, 'text'),
} as const;

export const EXPLAIN_FLAGS = { ...EXPLAIN_IO_FLAGS, ...MODEL_FLAGS, ...CONNTRACK_FLAGS } as const;

const HELP = `Usage: safe-termination explain -f FILE|DIR|- [-f …] [-o text|json] [flags]

Shows, for every Pod and pod template of the manifests, what inject (and the
webhook, given the same facts and flags) would do and why: each container and
what it gets or why it is skipped, the sleep and the grace period with the
arithmetic behind them, the preStop mode, where every conntrack value came
from, and (tuning) the incident write-up's lower conntrack timeouts that would
shorten the sleep, with how to set them: advice only. Nothing is written.

Inputs and flags are those of 'safe-termination inject'; see its --help for the
order in which conntrack sources answer.

Examples:
  safe-termination explain -f deploy.yaml
  helm template my-release chart/ | safe-termination explain -f -
  safe-termination explain -f coredns.yaml --from-node-annotations nodes.yaml --kube-version 1.29
  safe-termination explain -f k8s/ -R -o json | jq '.objects[] | {name, sleep: .plan.sleepSeconds}'

Exit status: 0 done; 1 an input is unreadable or invalid (the others are still
explained); 2 wrong usage.

Flags:
  -f, --filename FILE|DIR|-
      a manifest file, a directory of .yaml/.yml/.json files, or - for stdin; repeatable
${plainFlagHelp(EXPLAIN_IO_FLAGS)}
  --kube-version VERSION
      the same as --kubernetes-version

Model and static conntrack flags (as for serve; also read from the environment):
${flagHelp({ ...MODEL_FLAGS, ...CONNTRACK_FLAGS })}
`;

export async function runExplain(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  if (wantsHelp(argv)) {
    io.stdout(HELP);
    return 0;
  }
  try {
    return await explain(argv, io);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr(`safe-termination explain: ${error.message}\nRun 'safe-termination explain --help' for usage.\n`);
    return error.exit;
  }
}

/** Where each model default came from: a flag (or its variable) or the built-in default. */
type ConfigOrigin = (flagName: string) => string;

async function explain(argv: readonly string[], io: CliIO): Promise<number> {
  const parsed = parseCommandFlags(EXPLAIN_FLAGS, argv, io.env);
  const v = parsed.values;
  checkQuietVerbose(v);
  if (v.output !== 'text' && v.output !== 'json') throw new UsageError('INVALID_FLAG', { origin: '--output', value: String(v.output), accepted: 'one of text, json' });
  const prep = await prepare(parsed, io);
  if (v.verbose) for (const note of prep.notes) io.stderr(`note: ${note}\n`);
  const outcomes = prep.sources.map((s) => processManifest(s, prep.config));
  const given = parsed.given as ReadonlySet<string>;
  const configOrigin: ConfigOrigin = (name) => (given.has(name) ? `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : 'default');
  const fileProblems = [...prep.problems, ...outcomes.flatMap((o) => (o.targets.length === 0 ? o.problems : []))];
  const failed = fileProblems.length > 0 || outcomes.some((o) => o.problems.length > 0);

  if (v.output === 'json') {
    io.stdout(`${JSON.stringify(explainJson(outcomes, fileProblems, prep.config.facts, configOrigin), null, 2)}\n`);
  } else {
    const blocks = outcomes.flatMap((o) => o.targets.map((t) => explainText(o, t, configOrigin)));
    if (blocks.length > 0) io.stdout(blocks.join('\n'));
    else if (!v.quiet && fileProblems.length === 0) io.stderr('no Pods or pod templates found\n');
    if (!v.quiet) for (const line of untemplatedLines(outcomes)) io.stderr(`${line}\n`);
  }
  if (fileProblems.length > 0) io.stderr(fileProblems.map((p) => `${formatProblem(p)}\n`).join(''));
  return failed ? 1 : 0;
}

// ---------------------------------------------------------------- analysis

interface ContainerLine {
  readonly name: string;
  readonly role: 'container' | 'init' | 'sidecar';
  readonly result: 'injected' | 'unchanged' | 'skipped' | 'unhooked' | 'nothing';
  readonly why: string;
}

function hookText(plan: Plan): string {
  return plan.mode.mode === 'sleep' ? `preStop sleep ${plan.sleepSeconds}s (native sleep action)` : `preStop exec ["sleep", "${plan.sleepSeconds}"]`;
}

function containerLines(t: TargetOutcome): ContainerLine[] {
  const pod = t.pod;
  const d = t.decision;
  if (pod === undefined || d === undefined) return [];
  const plan = d.kind === 'inject' ? d.plan : undefined;
  const hooked = new Set(plan?.containers);
  const already = new Set(plan?.alreadyHooked);
  const lines: ContainerLine[] = pod.spec.containers.map((c): ContainerLine => {
    if (plan === undefined) return { name: c.name, role: 'container', result: 'nothing', why: d.kind === 'skip' ? 'the pod is skipped' : 'the pod is invalid' };
    const changed = !already.has(c.name);
    if (hooked.has(c.name)) return { name: c.name, role: 'container', result: changed ? 'injected' : 'unchanged', why: `${hookText(plan)}${changed ? '' : ', already there'}` };
    if (plan.unhook.includes(c.name)) return { name: c.name, role: 'container', result: 'unhooked', why: `${plan.skipped[c.name] ?? 'no longer chosen'}: the hook an earlier injection added is removed` };
    return { name: c.name, role: 'container', result: 'skipped', why: `skipped: ${plan.skipped[c.name] ?? 'not chosen'}` };
  });
  for (const c of pod.spec.initContainers ?? []) {
    lines.push(
      isNativeSidecar(c)
        ? { name: c.name, role: 'sidecar', result: 'nothing', why: 'native sidecar: nothing (stops after the main containers; its ports count)' }
        : { name: c.name, role: 'init', result: 'nothing', why: 'init container: nothing (it has finished before the pod serves)' },
    );
  }
  return lines;
}

function inputText<T>(i: Input<T>, flagName: string, configOrigin: ConfigOrigin, annotation: string): string {
  return i.source === 'annotation' ? `annotation ${annotation}` : configOrigin(flagName);
}

function protocolsText(plan: Plan): string {
  const list = plan.protocols.join(', ');
  if (plan.protocolsFrom === 'annotation') return `${list} (annotation ${Annotation.protocols})`;
  const withPorts = plan.serving.filter((c) => c.protocols.length > 0);
  const byService = plan.protocols.some((p) => (plan.protocolOrigins[p]?.services.length ?? 0) > 0);
  if (!byService) {
    if (withPorts.length === 0) return `${list} (no ports on the serving containers: counts as TCP)`;
    return `${list} (ports of ${withPorts.map((c) => c.name).join(', ')})`;
  }
  return plan.protocols
    .map((p) => {
      const o = plan.protocolOrigins[p];
      const containers = withPorts.filter((c) => c.protocols.includes(p)).map((c) => c.name);
      const from = [
        ...(o?.ports === true && containers.length > 0 ? [`ports of ${containers.join(', ')}`] : []),
        ...(o?.services ?? []).map((svc) => `Service ${svc}`),
      ];
      return `${p} (${from.join(', ')})`;
    })
    .join(', ');
}

function sleepText(plan: Plan, configOrigin: ConfigOrigin, facts: TargetOutcome['conntrack']): string {
  const s = plan.sleep;
  if (s.kind === 'annotation') return `${s.seconds}s from annotation ${Annotation.prestopSleep} (exact: max-sleep does not apply)`;
  const pd = `${s.propagationDelay.value}s propagation-delay (${inputText(s.propagationDelay, 'propagationDelay', configOrigin, Annotation.propagationDelay)})`;
  const used = Object.keys(plan.conntrack) as ConntrackKey[];
  const term = (key: ConntrackKey): string => `${plan.conntrack[key]?.value ?? 0}s ${key} (${facts?.origins[key].short ?? plan.conntrack[key]?.source ?? ''})`;
  let wait: string;
  if (used.length === 0) {
    wait = plan.protocols.includes('udp') ? '0s conntrack wait' : '0s conntrack wait (TCP is not sized by conntrack: tcp-sizing none)';
  } else if (used.length === 1) wait = term(used[0] as ConntrackKey);
  else wait = `max(${used.map(term).join(', ')})`;
  const maxSleep = `max-sleep ${s.maxSleep.value}s (${inputText(s.maxSleep, 'maxSleep', configOrigin, Annotation.maxSleep)})`;
  let text = `${pd} + ${wait} = ${s.uncappedSeconds}s`;
  if (s.capped) text += `, capped by ${maxSleep} → ${s.seconds}s`;
  else if (s.raised) text += `, raised to the 1s minimum → ${s.seconds}s`;
  else text += `; under ${maxSleep}`;
  return text;
}

function originalText(plan: Plan, t: TargetOutcome): string {
  switch (plan.originalGraceFrom) {
    case 'record':
      return `${plan.originalGracePeriodSeconds}s original (from the ${Annotation.injected} record)`;
    case 'api-default':
      return `${plan.originalGracePeriodSeconds}s original (API default: terminationGracePeriodSeconds not set)`;
    case 'pod':
      return `${plan.originalGracePeriodSeconds}s original (the ${t.target.template ? 'template' : 'pod'}'s terminationGracePeriodSeconds)`;
  }
}

function graceText(plan: Plan, t: TargetOutcome, configOrigin: ConfigOrigin): string {
  const g = plan.grace;
  const orig = originalText(plan, t);
  let text: string;
  if (g.kind === 'added') text = `${orig} + ${plan.sleepSeconds}s sleep = ${g.sumSeconds}s`;
  else {
    const budget = `${g.shutdownBudget.value}s shutdown-budget (${inputText(g.shutdownBudget, 'shutdownBudget', configOrigin, Annotation.shutdownBudget)})`;
    text = `max(${orig}, ${plan.sleepSeconds}s sleep + ${budget}) = ${g.maxSeconds}s`;
  }
  return g.raised ? `${text}, raised to sleep + 1s → ${g.seconds}s (the app gets at least 1s after SIGTERM)` : text;
}

function modeText(plan: Plan, configOrigin: ConfigOrigin): string {
  const m = plan.mode;
  const action = m.mode === 'sleep' ? 'sleep: the native sleep action, no binary needed in the image' : 'exec: runs `sleep`, which the image must have';
  const origin = inputText(m.setting, 'prestopMode', configOrigin, Annotation.prestopMode);
  if (m.setting.value !== 'auto') return `${action}; prestop-mode ${m.setting.value} (${origin})`;
  return `${action}; ${m.why}; prestop-mode auto (${origin})`;
}

/** The write-up's lower timeouts for the values this sleep used, and what each would take off it (advice). */
function tuningOf(plan: Plan): PlanTuning[] {
  const s = plan.sleep;
  if (s.kind !== 'model') return [];
  return planTuning(plan.conntrack, { seconds: plan.sleepSeconds, propagationDelaySeconds: s.propagationDelay.value, maxSleepSeconds: s.maxSleep.value });
}

function tuningText(tip: PlanTuning, t: TargetOutcome): string {
  const ipvs = /IPVS/.test(t.conntrack?.origins[tip.key].long ?? '');
  const how = ipvs
    ? `kube-proxy's ipvs.udpTimeout and conntrack.udpTimeout: ${tip.recommended}s (IPVS mode keeps both tables)`
    : howToSet(tip.key, tip.recommended);
  return `${tip.key} ${tip.current}s → ${tip.recommended}s (the write-up's value): sleep ${tip.sleepRecommended}s, not ${tip.sleepNow}s (${tip.savedSeconds}s less per termination); ${how} — advice, not applied`;
}

function changeText(op: { op: string; path: string; value?: unknown }): string {
  const segments = pointerSegments(op.path);
  const path = dottedPath(segments.map((s) => (/^\d+$/.test(s) ? Number(s) : s)));
  const shown = op.op !== 'remove' && (typeof op.value === 'number' || typeof op.value === 'string') && segments.at(-1) !== Annotation.injected;
  return `${op.op} ${path}${shown ? ` = ${String(op.value)}` : ''}`;
}

// ---------------------------------------------------------------- text

const LABEL_WIDTH = 13;

function section(label: string, lines: readonly string[]): string {
  return lines.map((l, i) => `  ${(i === 0 ? label : '').padEnd(LABEL_WIDTH)}${l}\n`).join('');
}

function explainText(o: ManifestOutcome, t: TargetOutcome, configOrigin: ConfigOrigin): string {
  const at = `${o.source.name}${t.line === undefined ? '' : `:${t.line}`}`;
  const path = dottedPath(t.target.path);
  let out = `${t.label}  (${at}${path === '' ? '' : `, ${path}`})\n`;
  const d = t.decision;
  if (d === undefined) return out + section('decision', ['invalid input: the API server would reject this object', ...t.problems.map((p) => p.message)]);
  if (d.kind === 'skip') {
    const hint = SKIP_HINTS[d.reason];
    out += section('decision', [`skipped (${d.reason}): ${d.detail}${hint ? `; ${hint}` : ''}`]);
  } else if (d.kind === 'deny') {
    out += section('decision', ['invalid: the webhook would deny this pod', ...t.problems.map((p) => p.message)]);
  } else {
    const plan = d.plan;
    const n = t.ops.length;
    out += section('decision', [n === 0 ? 'inject: no change, already injected' : `inject: ${n} change${n === 1 ? '' : 's'}`]);
    const cl = containerLines(t);
    const width = Math.max(...cl.map((c) => c.name.length));
    out += section('containers', cl.map((c) => `${c.name.padEnd(width)}  ${c.why}`));
    out += section('protocols', [protocolsText(plan)]);
    if (plan.protocols.includes('udp') && plan.sleep.kind === 'model') {
      out += section('udp-streams', [`${plan.udpStreams.value} (${inputText(plan.udpStreams, 'udpStreams', configOrigin, Annotation.udpStreams)}): UDP waits ${plan.udpStreams.value ? 'udp-timeout-stream' : 'udp-timeout'}`]);
    }
    out += section('sleep', [sleepText(plan, configOrigin, t.conntrack)]);
    out += section('grace', [graceText(plan, t, configOrigin)]);
    out += section('mode', [modeText(plan, configOrigin)]);
  }
  if (d.kind === 'inject' && t.conntrack !== undefined) {
    const used = d.plan.conntrack;
    const keyWidth = Math.max(...CONNTRACK_KEYS.map((k) => k.length));
    out += section(
      'conntrack',
      CONNTRACK_KEYS.map((k) => {
        const f = t.conntrack?.facts[k];
        const mark = used[k] !== undefined ? '  ← used' : '';
        return `${k.padEnd(keyWidth)}  ${`${f?.value ?? '?'}s`.padStart(8)}  ${t.conntrack?.origins[k].long ?? ''}${mark}`;
      }),
    );
  }
  if (d.kind === 'inject') {
    const tips = tuningOf(d.plan);
    if (tips.length > 0) out += section('tuning', tips.map((tip) => tuningText(tip, t)));
  }
  if (d.kind === 'inject' && t.ops.length > 0) out += section('changes', t.ops.map(changeText));
  if (d.warnings.length > 0) out += section('warnings', d.warnings);
  return out;
}

// ---------------------------------------------------------------- JSON

function explainJson(outcomes: readonly ManifestOutcome[], fileProblems: readonly InputProblem[], facts: ManifestFacts, configOrigin: ConfigOrigin): unknown {
  const v = facts.kubeVersion;
  return {
    kubernetesVersion: { value: v === undefined ? null : `${v.major}.${v.minor}`, origin: facts.kubeVersionOrigin },
    objects: outcomes.flatMap((o) =>
      o.targets.map((t) => {
        const d = t.decision;
        const plan = d?.kind === 'inject' ? d.plan : undefined;
        const conntrack = t.conntrack
          ? Object.fromEntries(
              CONNTRACK_KEYS.map((k) => [k, { value: t.conntrack?.facts[k].value, source: t.conntrack?.facts[k].source, origin: t.conntrack?.origins[k].long, used: plan?.conntrack[k] !== undefined }]),
            )
          : undefined;
        return {
          file: o.source.name,
          line: t.line ?? null,
          document: t.document + 1,
          kind: t.target.kind,
          apiVersion: t.target.apiVersion,
          namespace: t.target.namespace ?? null,
          name: t.target.name ?? null,
          generateName: t.target.generateName ?? null,
          path: dottedPath(t.target.path),
          decision: d === undefined ? 'invalid' : d.kind,
          ...(d?.kind === 'skip' ? { reason: d.reason, detail: d.detail } : {}),
          ...(plan
            ? {
                plan,
                containers: containerLines(t),
                arithmetic: { sleep: sleepText(plan, configOrigin, t.conntrack), grace: graceText(plan, t, configOrigin), mode: modeText(plan, configOrigin) },
                tuning: tuningOf(plan).map((tip) => ({ ...tip, advice: tuningText(tip, t) })),
              }
            : {}),
          conntrack,
          changes: t.ops,
          warnings: d?.warnings ?? [],
          problems: t.problems.map(formatProblem),
        };
      }),
    ),
    /** Objects of other API groups with no pod template: passed through. */
    untemplated: outcomes.flatMap((o) =>
      o.untemplated.map((u) => ({
        file: o.source.name,
        line: u.line ?? null,
        document: u.document + 1,
        kind: u.object.kind,
        apiVersion: u.object.apiVersion,
        namespace: u.object.namespace ?? null,
        name: u.object.name ?? null,
        reason: u.object.reason,
      })),
    ),
    problems: fileProblems.map(formatProblem),
  };
}
