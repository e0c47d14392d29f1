/**
 * The decision: pod + defaults + conntrack facts → a plan (spec §4). Pure.
 * The webhook turns the plan into a JSONPatch, the CLI into a manifest.
 */
import { describeProblem, listNames, readSettings } from './annotations.ts';
import { isSleepHook, sleepHook } from './hook.ts';
import type { PrestopHook } from './hook.ts';
import type { AnnotationProblem, PodSettings, Protocol } from './annotations.ts';
import type { ConntrackFacts, ConntrackKey, ConntrackValue } from './conntrack.ts';
import { API_DEFAULT_GRACE_SECONDS, supportsNativeSleep } from './model.ts';
import type { KubeVersion, ModelDefaults } from './model.ts';
import { Annotation, INJECT_LABEL, MIRROR_POD_ANNOTATION, POD_OPT_OUT_LABEL_VALUE } from './names.ts';
import { isNativeSidecar } from './pod.ts';
import type { Container, Pod } from './pod.ts';
import { decodeRecord, RECORD_VERSION } from './record.ts';
import type { DecisionRecord } from './record.ts';
import type { SelectingService } from './services.ts';
import { MAX_DURATION_SECONDS } from './duration.ts';
import { RECORD_AUTHOR } from '../shared/version.ts';

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

export type SleepSizing =
  | { readonly kind: 'annotation'; readonly seconds: number }
  | {
      readonly kind: 'model';
      readonly seconds: number;
      readonly propagationDelay: Input<number>;
      readonly conntrackWait: number;
      /** The timeout that set the wait, if any. */
      readonly waitKey: ConntrackKey | undefined;
      readonly maxSleep: Input<number>;
      readonly capped: boolean;
    };

export type GraceSizing =
  | { readonly kind: 'added'; readonly seconds: number }
  | { readonly kind: 'shutdown-budget'; readonly seconds: number; readonly shutdownBudget: Input<number> };

export interface ModeChoice {
  readonly mode: 'sleep' | 'exec';
  readonly setting: Input<'auto' | 'sleep' | 'exec'>;
  readonly why: string;
}

export interface Plan {
  readonly sleepSeconds: number;
  readonly gracePeriodSeconds: number;
  readonly originalGracePeriodSeconds: number;
  /** Where the original grace came from. */
  readonly originalGraceFrom: 'pod' | 'api-default' | 'record';
  readonly mode: ModeChoice;
  readonly hook: PrestopHook;
  /** Containers that get (or keep) our hook, in pod order. */
  readonly containers: readonly string[];
  /** Containers whose hook an earlier record says is ours but which are no longer chosen. */
  readonly unhook: readonly string[];
  readonly skipped: Readonly<Record<string, string>>;
  readonly protocols: readonly Protocol[];
  readonly protocolsFrom: 'annotation' | 'ports';
  /** Per protocol, the ports and Services that brought it; empty when from the annotation. */
  readonly protocolOrigins: Readonly<Partial<Record<Protocol, ProtocolOrigin>>>;
  readonly udpStreams: Input<boolean>;
  readonly conntrack: Readonly<Partial<Record<ConntrackKey, ConntrackValue>>>;
  readonly sleep: SleepSizing;
  readonly grace: GraceSizing;
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

const skip = (reason: SkipReason, detail: string, warnings: readonly string[] = []): Decision => ({
  kind: 'skip',
  reason,
  detail,
  warnings,
});

export function decide(pod: Pod, ctx: DecisionContext): Decision {
  const meta = pod.metadata;
  const annotations = meta?.annotations ?? undefined;
  if (annotations?.[MIRROR_POD_ANNOTATION] !== undefined) return skip('mirror-pod', 'mirror pod of a static pod');
  if (meta?.labels?.[INJECT_LABEL] === POD_OPT_OUT_LABEL_VALUE) {
    return skip('opted-out-label', `label ${INJECT_LABEL}=${POD_OPT_OUT_LABEL_VALUE}`);
  }
  if (annotations?.[Annotation.inject] === 'false') {
    return skip('opted-out-annotation', `annotation ${Annotation.inject}: "false"`);
  }
  const defaults = ctx.defaults;
  const jobOwner = meta?.ownerReferences?.find((o) => o.kind === 'Job' && o.apiVersion.startsWith('batch/'));
  if (jobOwner !== undefined && !defaults.injectJobPods) {
    return skip('job-pod', `owned by Job ${jobOwner.name ?? ''}`.trim());
  }

  const containerNames = [...pod.spec.containers.map((c) => c.name), ...(pod.spec.initContainers ?? []).map((c) => c.name)];
  const read = readSettings(annotations, containerNames);
  const warnings = [...read.warnings];
  if (read.problems.length > 0) {
    if (defaults.invalidAnnotations === 'deny') {
      const message = read.problems.map((p) => describeProblem(p)).join('; ');
      return { kind: 'deny', problems: read.problems, message, warnings };
    }
    for (const p of read.problems) warnings.push(`${p.key} invalid, default used; expected ${p.accepted}`);
  }
  const s = read.settings;
  if (s.containers !== undefined && pod.spec.initContainers != null) {
    // Only app containers get the hook; native sidecars are stopped after them anyway.
    const app = new Set(pod.spec.containers.map((c) => c.name));
    const init = s.containers.filter((name) => !app.has(name));
    if (init.length > 0) warnings.push(`${Annotation.containers}: init container ${listNames(init, 3)} not hooked; sidecars stop after the app containers`);
  }

  const previous = decodeRecord(annotations?.[Annotation.injected]);
  if (previous.kind === 'unreadable') warnings.push(`${Annotation.injected} ignored: ${previous.reason}`);
  const record = previous.kind === 'valid' ? previous.record : undefined;

  const podGrace = pod.spec.terminationGracePeriodSeconds;
  const currentGrace = podGrace == null ? undefined : Math.max(podGrace, 0);
  // The record's original grace holds while the pod's grace is still the one we set;
  // a grace changed since (an edited manifest that was injected before) is the new original.
  const graceFromRecord = record !== undefined && currentGrace === record.gracePeriodSeconds;
  if (record !== undefined && !graceFromRecord) {
    const now = currentGrace === undefined ? 'unset' : `${currentGrace}s`;
    warnings.push(`terminationGracePeriodSeconds changed since injection (${record.gracePeriodSeconds}s → ${now}): taken as the original`);
  }
  const originalGraceFrom = graceFromRecord ? 'record' : currentGrace === undefined ? 'api-default' : 'pod';
  const originalGrace = graceFromRecord ? record.originalGracePeriodSeconds : (currentGrace ?? API_DEFAULT_GRACE_SECONDS);
  if (originalGrace > MAX_DURATION_SECONDS) {
    return skip('grace-period-out-of-range', `terminationGracePeriodSeconds ${originalGrace} is beyond ${MAX_DURATION_SECONDS}`, warnings);
  }
  if (originalGrace === 0 && s.prestopSleep === undefined && s.shutdownBudget === undefined) {
    return skip('zero-grace-period', 'terminationGracePeriodSeconds is 0: the pod asked to be killed at once', warnings);
  }

  const mode = chooseMode(s, ctx);
  if (mode.mode === 'exec' && pod.spec.os?.name === 'windows') {
    return skip('windows-exec-mode', 'Windows pod in exec mode: no sleep binary', warnings);
  }

  // A hook is ours to update only if the record lists its container and it is still
  // the hook the record says we wrote; one changed since is the user's.
  const ours = new Set<string>();
  if (record !== undefined) {
    const listed = new Set(record.containers);
    for (const c of pod.spec.containers) {
      const current = c.lifecycle?.preStop;
      if (listed.has(c.name) && (current == null || isSleepHook(current, record.mode, record.sleepSeconds))) ours.add(c.name);
    }
  }
  const existing = s.existingPrestop ?? defaults.existingPrestop;
  const chosen: string[] = [];
  const skipped: Record<string, string> = {};
  const serving: Container[] = [];
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
    if (reason === undefined || reason === ContainerSkip.ownHook) serving.push(c);
  }
  if (chosen.length === 0) {
    const why = pod.spec.containers.length === 0 ? 'the pod has no containers' : 'every container is excluded or keeps its own preStop hook';
    return skip('no-eligible-containers', why, warnings);
  }
  let unhook: string[] = [];
  if (ours.size > 0) {
    const chosenSet = new Set(chosen);
    unhook = [...ours].filter((name) => !chosenSet.has(name));
  }

  const sidecarPorts = (pod.spec.initContainers ?? []).filter(isNativeSidecar).flatMap((c) => c.ports ?? []);
  const detected = s.protocols !== undefined ? undefined : detectProtocols([...serving.flatMap((c) => c.ports ?? []), ...sidecarPorts], ctx.services ?? []);
  const protocols = detected === undefined ? sortProtocols(s.protocols ?? []) : detected.protocols;
  const udpStreams = input(s.udpStreams, defaults.udpStreams);

  const used: Partial<Record<ConntrackKey, ConntrackValue>> = {};
  let sleep: SleepSizing;
  if (s.prestopSleep !== undefined) {
    sleep = { kind: 'annotation', seconds: s.prestopSleep };
  } else {
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
    if (protocols.includes('udp')) consider(udpStreams.value ? 'udp-timeout-stream' : 'udp-timeout');
    if ((protocols.includes('tcp') || protocols.includes('sctp')) && defaults.tcpSizing !== 'none') {
      consider(defaults.tcpSizing === 'time-wait' ? 'tcp-timeout-time-wait' : 'tcp-timeout-close-wait');
    }
    const propagationDelay = input(s.propagationDelay, defaults.propagationDelaySeconds);
    const maxSleep = input(s.maxSleep, defaults.maxSleepSeconds);
    const uncapped = propagationDelay.value + wait;
    const seconds = Math.max(1, Math.min(maxSleep.value, uncapped));
    sleep = { kind: 'model', seconds, propagationDelay, conntrackWait: wait, waitKey, maxSleep, capped: uncapped > maxSleep.value };
  }
  const sleepSeconds = sleep.seconds;

  const budgetSetting = s.shutdownBudget ?? defaults.shutdownBudgetSeconds;
  let grace: GraceSizing;
  if (budgetSetting !== undefined) {
    const shutdownBudget: Input<number> = { value: budgetSetting, source: s.shutdownBudget !== undefined ? 'annotation' : 'config' };
    // At least one second after the sleep, or SIGTERM would come with the kill.
    const seconds = Math.max(originalGrace, sleepSeconds + budgetSetting, sleepSeconds + 1);
    grace = { kind: 'shutdown-budget', seconds, shutdownBudget };
  } else {
    grace = { kind: 'added', seconds: Math.max(originalGrace + sleepSeconds, sleepSeconds + 1) };
  }

  const hook = sleepHook(mode.mode, sleepSeconds);

  const decisionRecord: DecisionRecord = {
    v: RECORD_VERSION,
    sleepSeconds,
    gracePeriodSeconds: grace.seconds,
    originalGracePeriodSeconds: originalGrace,
    mode: mode.mode,
    containers: chosen,
    skipped,
    protocols,
    conntrack: used,
    by: RECORD_AUTHOR,
  };
  const plan: Plan = {
    sleepSeconds,
    gracePeriodSeconds: grace.seconds,
    originalGracePeriodSeconds: originalGrace,
    originalGraceFrom,
    mode,
    hook,
    containers: chosen,
    unhook,
    skipped,
    protocols,
    protocolsFrom: s.protocols !== undefined ? 'annotation' : 'ports',
    protocolOrigins: detected?.origins ?? {},
    udpStreams,
    conntrack: used,
    sleep,
    grace,
    record: decisionRecord,
  };
  return { kind: 'inject', plan, warnings };
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

/** The serving containers' ports and the selecting Services' ports; neither: TCP. */
function detectProtocols(
  ports: ReadonlyArray<{ protocol?: string | null | undefined }>,
  services: readonly SelectingService[],
): { protocols: Protocol[]; origins: Partial<Record<Protocol, ProtocolOrigin>> } {
  const fromPorts = new Set<Protocol>();
  for (const port of ports) {
    const p = (port.protocol ?? 'TCP').toLowerCase();
    fromPorts.add(p === 'udp' ? 'udp' : p === 'sctp' ? 'sctp' : 'tcp');
  }
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
