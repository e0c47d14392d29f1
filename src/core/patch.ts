/**
 * Plan → RFC 6902 operations that bring the pod to the plan's state (a fixed
 * point: the patched pod reviewed again gets no patch). Touches only the record annotation, the chosen containers'
 * `lifecycle.preStop` and `spec.terminationGracePeriodSeconds`; emits nothing for
 * what is already in that state, so a second run yields an empty patch.
 */
import { escapePathComponent } from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { isSleepHook } from './hook.ts';
import { Annotation } from './names.ts';
import type { Plan } from './plan.ts';
import { encodeRecord } from './record.ts';
import type { Pod } from './pod.ts';

export type { Operation };

const RECORD_KEY = escapePathComponent(Annotation.injected);

export function planPatch(pod: Pod, plan: Plan): Operation[] {
  const ops: Operation[] = [];
  const containers = pod.spec.containers;
  // Sets, not Array.includes: hostile pods can have many thousands of containers.
  const hooked = new Set(plan.containers);
  const unhook = plan.unhook.length > 0 ? new Set(plan.unhook) : undefined;
  for (let i = 0; i < containers.length; i++) {
    const c = containers[i] as (typeof containers)[number];
    const base = `/spec/containers/${i}`;
    if (hooked.has(c.name)) {
      const current = c.lifecycle?.preStop;
      if (c.lifecycle == null) ops.push({ op: 'add', path: `${base}/lifecycle`, value: { preStop: plan.hook } });
      else if (current == null) ops.push({ op: 'add', path: `${base}/lifecycle/preStop`, value: plan.hook });
      else if (!isSleepHook(current, plan.mode.mode, plan.sleepSeconds)) ops.push({ op: 'replace', path: `${base}/lifecycle/preStop`, value: plan.hook });
    } else if (unhook?.has(c.name) && c.lifecycle?.preStop !== undefined) {
      ops.push({ op: 'remove', path: `${base}/lifecycle/preStop` });
    }
  }

  const grace = pod.spec.terminationGracePeriodSeconds;
  if (grace !== plan.gracePeriodSeconds) {
    ops.push({ op: grace === undefined ? 'add' : 'replace', path: '/spec/terminationGracePeriodSeconds', value: plan.gracePeriodSeconds });
  }

  // The record changes whenever anything above does, so an empty list here
  // means the pod is at the plan's state.
  const record = encodeRecord(plan.record);
  const annotations = pod.metadata?.annotations;
  if (annotations?.[Annotation.injected] !== record) {
    if (pod.metadata == null) ops.push({ op: 'add', path: '/metadata', value: { annotations: { [Annotation.injected]: record } } });
    else if (annotations == null) ops.push({ op: 'add', path: '/metadata/annotations', value: { [Annotation.injected]: record } });
    else ops.push({ op: 'add', path: `/metadata/annotations/${RECORD_KEY}`, value: record });
  }
  return ops;
}
