/**
 * The decision: pod + defaults + conntrack facts → a plan (the sizing model). Pure.
 * The webhook turns the plan into a JSONPatch, the CLI into a manifest.
 */
import { describeProblem, listNames, readSettings } from './annotations.ts';
import { isSleepHook, sleepHook } from './hook.ts';
import type { PrestopHook, PrestopMode } from './hook.ts';
import type { AnnotationProblem, PodSettings, Protocol } from './annotations.ts';
import type { ConntrackFacts, ConntrackKey, ConntrackValue } from './conntrack.ts';
import { API_DEFAULT_GRACE_SECONDS, supportsNativeSleep } from './model.ts';
import type { KubeVersion, ModelDefaults } from './model.ts';
import { Annotation, INJECT_LABEL, MIRROR_POD_ANNOTATION, POD_OPT_OUT_LABEL_VALUE } from './names.ts';
import { isNativeSidecar } from './pod.ts';
import type { Container, InitContainer, Pod } from './pod.ts';
import { decodeRecord, recordOf } from './record.ts';
import type { DecisionRecord } from './record.ts';
import type { SelectingService } from './services.ts';
import { MAX_DURATION_SECONDS } from './duration.ts';

export interface DecisionContext {
  readonly defaults: ModelDefaults;
  readonly facts: ConntrackFacts;
  /** Undefined when unknown (no cluster, API unreachable): counts as current. */
  readonly kubeVersion: KubeVersion | undefined;
  /** The Services that select the pod (services.ts); their ports' protocols count. Absent: none known. */
  readonly services?: readonly SelectingService[] | undefined;
}

/** Where a protocol of the plan came from (with detection; empty with the protocols annotation). */
export interface ProtocolOrigin {
  /** A port of a serving container has it (or, with no ports and no Service, the TCP default). */
  readonly ports: boolean;
  /** "namespace/name" of every selecting Service with a port of it. */
  readonly services: readonly string[];
}

/** Why a pod gets no patch at all. Stable: these are metric label values. */
export const SKIP_REASONS = [
  'mirror-pod',
  'opted-out-label',
  'opted-out-annotation',
  'job-pod',
  'zero-grace-period',
  'grace-period-out-of-range',
  'windows-exec-mode',
  'no-eligible-containers',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export const ContainerSkip = {
  excluded: 'excluded by annotation',
  notIncluded: 'not in the containers annotation',
  ownHook: 'has its own preStop hook',
} as const;

export type { PrestopHook };

export type InputSource = 'annotation' | 'config';
export interface Input<T> {
  readonly value: T;
  readonly source: InputSource;
}

export interface OriginalGrace {
  readonly seconds: number;
  readonly from: 'pod' | 'api-default' | 'record';
}

/** A container that keeps serving while the sleep holds the pod up: a hooked one, one keeping its own hook, a native sidecar. */
export interface ServingContainer {
  readonly name: string;
  /** The protocols of its ports; none when it has no ports. */
  readonly protocols: readonly Protocol[];
}

export type SleepSizing =
  | { readonly kind: 'annotation'; readonly seconds: number }
  | {
      readonly kind: 'model';
      readonly seconds: number;
      readonly propagationDelay: Input<number>;
      readonly conntrackWait: number;
      /** The timeout that set the wait, if any. */
      readonly waitKey: ConntrackKey | undefined;
      /** propagationDelay + conntrackWait, before max-sleep and the 1s minimum. */
      readonly uncappedSeconds: number;
      readonly maxSleep: Input<number>;
      readonly capped: boolean;
      /** Lifted to the 1s minimum. */
      readonly raised: boolean;
    };

export type GraceSizing =
  | {
      readonly kind: 'added';
      readonly seconds: number;
      /** original + sleep. */
      readonly sumSeconds: number;
      /** Lifted to sleep + 1s, so the app gets at least 1s after SIGTERM. */
      readonly raised: boolean;
    }
  | {
      readonly kind: 'shutdown-budget';
      readonly seconds: number;
      readonly shutdownBudget: Input<number>;
      /** max(original, sleep + shutdownBudget). */
      readonly maxSeconds: number;
      /** Lifted to sleep + 1s, so the app gets at least 1s after SIGTERM. */
      readonly raised: boolean;
    };

export interface ModeChoice {
  readonly mode: PrestopMode;
  readonly setting: Input<'auto' | 'sleep' | 'exec'>;
  readonly why: string;
}

export interface Plan {
  readonly sleepSeconds: number;
  readonly gracePeriodSeconds: number;
  readonly originalGracePeriodSeconds: number;
  /** Where the original grace came from. */
  readonly originalGraceFrom: OriginalGrace['from'];
  readonly mode: ModeChoice;
  readonly hook: PrestopHook;
  /** Containers that get (or keep) our hook, in pod order. */
  readonly containers: readonly string[];
  /** Those of `containers` that already have this hook. */
  readonly alreadyHooked: readonly string[];
  /** Containers whose hook an earlier record says is ours but which are no longer chosen. */
  readonly unhook: readonly string[];
  readonly skipped: Readonly<Record<string, string>>;
  /** In pod order, native sidecars last; their ports' protocols count. */
  readonly serving: readonly ServingContainer[];
  readonly protocols: readonly Protocol[];
  readonly protocolsFrom: 'annotation' | 'ports';
  /** Per protocol, the ports and Services that brought it; empty when from the annotation. */
  readonly protocolOrigins: Readonly<Partial<Record<Protocol, ProtocolOrigin>>>;
  readonly udpStreams: Input<boolean>;
  /** The conntrack values the sleep considered. */
  readonly conntrack: Readonly<Partial<Record<ConntrackKey, ConntrackValue>>>;
  readonly sleep: SleepSizing;
  readonly grace: GraceSizing;
  /** recordOf(this plan). */
  readonly record: DecisionRecord;
}

export type Decision =
  | { readonly kind: 'inject'; readonly plan: Plan; readonly warnings: readonly string[] }
  | { readonly kind: 'skip'; readonly reason: SkipReason; readonly detail: string; readonly warnings: readonly string[] }
  | {
      readonly kind: 'deny';
      readonly problems: readonly AnnotationProblem[];
      readonly message: string;
      readonly warnings: readonly string[];
    };

type SkipDecision = Extract<Decision, { kind: 'skip' }>;
type DenyDecision = Extract<Decision, { kind: 'deny' }>;

const skip = (reason: SkipReason, detail: string, warnings: readonly string[] = []): SkipDecision => ({
  kind: 'skip',
  reason,
  detail,
  warnings,
});

/** Gate, inputs, containers, protocols, sleep, grace: each stage either ends the decision or feeds the next. */
export function decide(pod: Pod, ctx: DecisionContext): Decision {
  const gated = gate(pod, ctx.defaults);
  if (gated !== undefined) return gated;
  const inputs = readInputs(pod, ctx);
  if (inputs.kind !== 'inputs') return inputs;
  const choice = chooseContainers(pod, inputs, ctx.defaults);
  if (choice.kind !== 'containers') return choice;
  const protocols = chooseProtocols(inputs.settings, choice.serving, ctx.services ?? []);
  const udpStreams = input(inputs.settings.udpStreams, ctx.defaults.udpStreams);
  const sleep = sizeSleep(inputs.settings, ctx, protocols.protocols, udpStreams.value);
  const grace = sizeGrace(inputs.originalGrace.seconds, sleep.sizing.seconds, inputs.settings, ctx.defaults);
  const mode = inputs.mode.mode;
  const plan: Omit<Plan, 'record'> = {
    sleepSeconds: sleep.sizing.seconds,
    gracePeriodSeconds: grace.seconds,
    originalGracePeriodSeconds: inputs.originalGrace.seconds,
    originalGraceFrom: inputs.originalGrace.from,
    mode: inputs.mode,
    hook: sleepHook(mode, sleep.sizing.seconds),
    containers: choice.chosen,
    alreadyHooked: alreadyHooked(pod, choice.chosen, mode, sleep.sizing.seconds),
    unhook: choice.unhook,
    skipped: choice.skipped,
    serving: choice.serving,
    protocols: protocols.protocols,
    protocolsFrom: protocols.from,
    protocolOrigins: protocols.origins,
    udpStreams,
    conntrack: sleep.conntrack,
    sleep: sleep.sizing,
    grace,
  };
  return { kind: 'inject', plan: { ...plan, record: recordOf(plan) }, warnings: inputs.warnings };
}

/** Pods this product never touches, whatever they say: mirror pods, opted-out pods, Job pods (unless configured). */
function gate(pod: Pod, defaults: ModelDefaults): SkipDecision | undefined {
  const meta = pod.metadata;
  if (meta?.annotations?.[MIRROR_POD_ANNOTATION] !== undefined) return skip('mirror-pod', 'mirror pod of a static pod');
  if (meta?.labels?.[INJECT_LABEL] === POD_OPT_OUT_LABEL_VALUE) {
    return skip('opted-out-label', `label ${INJECT_LABEL}=${POD_OPT_OUT_LABEL_VALUE}`);
  }
  if (meta?.annotations?.[Annotation.inject] === 'false') {
    return skip('opted-out-annotation', `annotation ${Annotation.inject}: "false"`);
  }
  const jobOwner = meta?.ownerReferences?.find((o) => o.kind === 'Job' && o.apiVersion.startsWith('batch/'));
  if (jobOwner !== undefined && !defaults.injectJobPods) {
    return skip('job-pod', `owned by Job ${jobOwner.name ?? ''}`.trim());
  }
  return undefined;
}

interface DecisionInputs {
  readonly kind: 'inputs';
  readonly settings: PodSettings;
  readonly warnings: readonly string[];
  /** The record of an earlier injection, when readable. */
  readonly previous: DecisionRecord | undefined;
  readonly originalGrace: OriginalGrace;
  readonly mode: ModeChoice;
}

/** The annotations, the earlier record, the original grace and the mode; or why the pod is denied or left alone. */
function readInputs(pod: Pod, ctx: DecisionContext): DecisionInputs | SkipDecision | DenyDecision {
  const read = readAnnotations(pod, ctx.defaults);
  if (read.kind === 'deny') return read;
  const { settings, warnings } = read;

  const reading = decodeRecord(pod.metadata?.annotations?.[Annotation.injected]);
  if (reading.kind === 'unreadable') warnings.push(`${Annotation.injected} ignored: ${reading.reason}`);
  const previous = reading.kind === 'valid' ? reading.record : undefined;

  const originalGrace = originalGraceOf(pod.spec.terminationGracePeriodSeconds, previous);
  if (previous !== undefined && originalGrace.from !== 'record') {
    const now = originalGrace.from === 'api-default' ? 'unset' : `${originalGrace.seconds}s`;
    warnings.push(`terminationGracePeriodSeconds changed since injection (${previous.gracePeriodSeconds}s → ${now}): taken as the original`);
  }
  if (originalGrace.seconds > MAX_DURATION_SECONDS) {
    return skip('grace-period-out-of-range', `terminationGracePeriodSeconds ${originalGrace.seconds} is beyond ${MAX_DURATION_SECONDS}`, warnings);
  }
  if (originalGrace.seconds === 0 && settings.prestopSleep === undefined && settings.shutdownBudget === undefined) {
    return skip('zero-grace-period', 'terminationGracePeriodSeconds is 0: the pod asked to be killed at once', warnings);
  }

  const mode = chooseMode(settings, ctx);
  if (mode.mode === 'exec' && pod.spec.os?.name === 'windows') {
    return skip('windows-exec-mode', 'Windows pod in exec mode: no sleep binary', warnings);
  }
  return { kind: 'inputs', settings, warnings, previous, originalGrace, mode };
}

interface AnnotatedSettings {
  readonly kind: 'settings';
  readonly settings: PodSettings;
  readonly warnings: string[];
}

/** The pod's settings with their warnings; invalid values deny the pod, or (policy ignore) fall back to the defaults. */
function readAnnotations(pod: Pod, defaults: ModelDefaults): AnnotatedSettings | DenyDecision {
  const app = pod.spec.containers.map((c) => c.name);
  const read = readSettings(pod.metadata?.annotations ?? undefined, [...app, ...(pod.spec.initContainers ?? []).map((c) => c.name)]);
  const warnings = [...read.warnings];
  if (read.problems.length > 0) {
    if (defaults.invalidAnnotations === 'deny') {
      const message = read.problems.map((p) => describeProblem(p)).join('; ');
      return { kind: 'deny', problems: read.problems, message, warnings };
    }
    for (const p of read.problems) warnings.push(`${p.key} invalid, default used; expected ${p.accepted}`);
  }
  const listed = read.settings.containers;
  if (listed !== undefined && pod.spec.initContainers != null) {
    // Only app containers get the hook; native sidecars are stopped after them anyway.
    const appSet = new Set(app);
    const init = listed.filter((name) => !appSet.has(name));
    if (init.length > 0) warnings.push(`${Annotation.containers}: init container ${listNames(init, 3)} not hooked; sidecars stop after the app containers`);
  }
  return { kind: 'settings', settings: read.settings, warnings };
}

/**
 * The grace before any injection: the record's while the pod still has the grace
 * the record set; a grace changed since (an edited manifest that was injected
 * before) is the new original.
 */
function originalGraceOf(podGrace: number | null | undefined, previous: DecisionRecord | undefined): OriginalGrace {
  const current = podGrace == null ? undefined : Math.max(podGrace, 0);
  if (previous !== undefined && current === previous.gracePeriodSeconds) return { seconds: previous.originalGracePeriodSeconds, from: 'record' };
  return current === undefined ? { seconds: API_DEFAULT_GRACE_SECONDS, from: 'api-default' } : { seconds: current, from: 'pod' };
}

interface ContainerChoice {
  readonly kind: 'containers';
  readonly chosen: readonly string[];
  readonly skipped: Readonly<Record<string, string>>;
  readonly unhook: readonly string[];
  readonly serving: readonly ServingContainer[];
}

/** Which containers get the hook, which are skipped and why, which lose a hook of ours, and which keep serving. */
function chooseContainers(pod: Pod, inputs: DecisionInputs, defaults: ModelDefaults): ContainerChoice | SkipDecision {
  const s = inputs.settings;
  const ours = hooksOfOurs(pod, inputs.previous);
  const existing = s.existingPrestop ?? defaults.existingPrestop;
  const chosen: string[] = [];
  const skipped: Record<string, string> = {};
  const serving: ServingContainer[] = [];
  // Sets, not Array.includes: hostile pods can list many thousands of containers.
  const included = s.containers !== undefined ? new Set(s.containers) : undefined;
  const excluded = s.excludeContainers !== undefined ? new Set(s.excludeContainers) : undefined;
  for (const c of pod.spec.containers) {
    let reason: string | undefined;
    if (included !== undefined && !included.has(c.name)) reason = ContainerSkip.notIncluded;
    else if (excluded?.has(c.name)) reason = ContainerSkip.excluded;
    else if (c.lifecycle?.preStop != null && !ours.has(c.name) && existing === 'keep') reason = ContainerSkip.ownHook;
    if (reason === undefined) chosen.push(c.name);
    else skipped[c.name] = reason;
    // Excluded containers get SIGTERM at once; one keeping its own hook still serves.
    if (reason === undefined || reason === ContainerSkip.ownHook) serving.push(servingContainer(c));
  }
  for (const c of pod.spec.initContainers ?? []) if (isNativeSidecar(c)) serving.push(servingContainer(c));
  if (chosen.length === 0) {
    const why = pod.spec.containers.length === 0 ? 'the pod has no containers' : 'every container is excluded or keeps its own preStop hook';
    return skip('no-eligible-containers', why, inputs.warnings);
  }
  const chosenSet = new Set(chosen);
  const unhook = [...ours].filter((name) => !chosenSet.has(name));
  return { kind: 'containers', chosen, skipped, unhook, serving };
}

/**
 * A hook is ours to update only if the record lists its container and it is still
 * the hook the record says we wrote; one changed since is the user's.
 */
function hooksOfOurs(pod: Pod, previous: DecisionRecord | undefined): Set<string> {
  const ours = new Set<string>();
  if (previous === undefined) return ours;
  const listed = new Set(previous.containers);
  for (const c of pod.spec.containers) {
    const current = c.lifecycle?.preStop;
    if (listed.has(c.name) && (current == null || isSleepHook(current, previous.mode, previous.sleepSeconds))) ours.add(c.name);
  }
  return ours;
}

function servingContainer(c: Container | InitContainer): ServingContainer {
  return { name: c.name, protocols: sortProtocols((c.ports ?? []).map(portProtocol)) };
}

/** A port's protocol as the sizing counts it: unset is TCP, and so is anything not UDP or SCTP. */
function portProtocol(port: { protocol?: string | null | undefined }): Protocol {
  const p = (port.protocol ?? 'TCP').toLowerCase();
  return p === 'udp' ? 'udp' : p === 'sctp' ? 'sctp' : 'tcp';
}

/** The chosen containers whose preStop already is the planned hook: the patch leaves them as they are. */
function alreadyHooked(pod: Pod, chosen: readonly string[], mode: PrestopMode, sleepSeconds: number): string[] {
  const chosenSet = new Set(chosen);
  return pod.spec.containers.filter((c) => chosenSet.has(c.name) && isSleepHook(c.lifecycle?.preStop, mode, sleepSeconds)).map((c) => c.name);
}

interface ProtocolChoice {
  readonly protocols: readonly Protocol[];
  readonly from: 'annotation' | 'ports';
  readonly origins: Readonly<Partial<Record<Protocol, ProtocolOrigin>>>;
}

function chooseProtocols(s: PodSettings, serving: readonly ServingContainer[], services: readonly SelectingService[]): ProtocolChoice {
  if (s.protocols !== undefined) return { protocols: sortProtocols(s.protocols), from: 'annotation', origins: {} };
  return { ...detectProtocols(serving, services), from: 'ports' };
}

/** The serving containers' ports and the selecting Services' ports; neither: TCP. */
function detectProtocols(
  serving: readonly ServingContainer[],
  services: readonly SelectingService[],
): { protocols: Protocol[]; origins: Partial<Record<Protocol, ProtocolOrigin>> } {
  const fromPorts = new Set<Protocol>(serving.flatMap((c) => c.protocols));
  const fromServices = new Map<Protocol, string[]>();
  for (const svc of services) {
    for (const p of svc.protocols) {
      const list = fromServices.get(p);
      if (list === undefined) fromServices.set(p, [svc.service]);
      else list.push(svc.service);
    }
  }
  if (fromPorts.size === 0 && fromServices.size === 0) fromPorts.add('tcp');
  const protocols = sortProtocols([...fromPorts, ...fromServices.keys()]);
  const origins: Partial<Record<Protocol, ProtocolOrigin>> = {};
  for (const p of protocols) origins[p] = { ports: fromPorts.has(p), services: fromServices.get(p) ?? [] };
  return { protocols, origins };
}

type UsedConntrack = Partial<Record<ConntrackKey, ConntrackValue>>;

/** The annotated sleep, or propagation-delay + the longest conntrack wait of the protocols, within 1s..max-sleep. */
function sizeSleep(
  s: PodSettings,
  ctx: DecisionContext,
  protocols: readonly Protocol[],
  udpStreams: boolean,
): { readonly sizing: SleepSizing; readonly conntrack: UsedConntrack } {
  const used: UsedConntrack = {};
  if (s.prestopSleep !== undefined) return { sizing: { kind: 'annotation', seconds: s.prestopSleep }, conntrack: used };
  const defaults = ctx.defaults;
  let wait = 0;
  let waitKey: ConntrackKey | undefined;
  const consider = (key: ConntrackKey): void => {
    const fact = ctx.facts[key];
    used[key] = fact;
    if (waitKey === undefined || fact.value > wait) {
      wait = fact.value;
      waitKey = key;
    }
  };
  if (protocols.includes('udp')) consider(udpStreams ? 'udp-timeout-stream' : 'udp-timeout');
  if ((protocols.includes('tcp') || protocols.includes('sctp')) && defaults.tcpSizing !== 'none') {
    consider(defaults.tcpSizing === 'time-wait' ? 'tcp-timeout-time-wait' : 'tcp-timeout-close-wait');
  }
  const propagationDelay = input(s.propagationDelay, defaults.propagationDelaySeconds);
  const maxSleep = input(s.maxSleep, defaults.maxSleepSeconds);
  const uncappedSeconds = propagationDelay.value + wait;
  const limited = Math.min(maxSleep.value, uncappedSeconds);
  const seconds = Math.max(1, limited);
  return {
    sizing: { kind: 'model', seconds, propagationDelay, conntrackWait: wait, waitKey, uncappedSeconds, maxSleep, capped: uncappedSeconds > maxSleep.value, raised: seconds > limited },
    conntrack: used,
  };
}

/** original + sleep, or max(original, sleep + shutdown-budget); either way at least sleep + 1s. */
function sizeGrace(originalSeconds: number, sleepSeconds: number, s: PodSettings, defaults: ModelDefaults): GraceSizing {
  // At least one second after the sleep, or SIGTERM would come with the kill.
  const floor = sleepSeconds + 1;
  const budget = s.shutdownBudget ?? defaults.shutdownBudgetSeconds;
  if (budget === undefined) {
    const sumSeconds = originalSeconds + sleepSeconds;
    return { kind: 'added', seconds: Math.max(sumSeconds, floor), sumSeconds, raised: floor > sumSeconds };
  }
  const shutdownBudget: Input<number> = { value: budget, source: s.shutdownBudget !== undefined ? 'annotation' : 'config' };
  const maxSeconds = Math.max(originalSeconds, sleepSeconds + budget);
  return { kind: 'shutdown-budget', seconds: Math.max(maxSeconds, floor), shutdownBudget, maxSeconds, raised: floor > maxSeconds };
}

function input<T>(annotated: T | undefined, configured: T): Input<T> {
  return annotated !== undefined ? { value: annotated, source: 'annotation' } : { value: configured, source: 'config' };
}

function chooseMode(s: PodSettings, ctx: DecisionContext): ModeChoice {
  const setting = input(s.prestopMode, ctx.defaults.prestopMode);
  if (setting.value !== 'auto') return { mode: setting.value, setting, why: `prestop-mode ${setting.value} (${setting.source})` };
  const v = ctx.kubeVersion;
  if (v === undefined) return { mode: 'sleep', setting, why: 'cluster version unknown: assumed current' };
  return supportsNativeSleep(v)
    ? { mode: 'sleep', setting, why: `Kubernetes ${v.major}.${v.minor} has the native sleep action` }
    : { mode: 'exec', setting, why: `Kubernetes ${v.major}.${v.minor} predates the native sleep action (1.30)` };
}

const PROTOCOL_ORDER: readonly Protocol[] = ['sctp', 'tcp', 'udp'];

function sortProtocols(ps: Iterable<Protocol>): Protocol[] {
  const set = new Set(ps);
  return PROTOCOL_ORDER.filter((p) => set.has(p));
}
