/** The decision record written as the `safe-termination.io/injected` annotation: what a plan injected, and from what. */
import { z } from 'zod';
import { CONNTRACK_KEYS, CONNTRACK_SOURCES } from './conntrack.ts';
import type { ConntrackKey, ConntrackValue } from './conntrack.ts';
import { PROTOCOLS } from './annotations.ts';
import type { Protocol } from './annotations.ts';
import { RECORD_AUTHOR } from '../shared/version.ts';

export const RECORD_VERSION = 1;

const seconds = z.number().int().nonnegative();

const recordSchema = z.object({
  v: z.literal(RECORD_VERSION),
  sleepSeconds: seconds,
  gracePeriodSeconds: seconds,
  originalGracePeriodSeconds: seconds,
  mode: z.enum(['sleep', 'exec']),
  containers: z.array(z.string()),
  skipped: z.record(z.string(), z.string()),
  protocols: z.array(z.enum(PROTOCOLS)),
  conntrack: z.partialRecord(
    z.enum(CONNTRACK_KEYS),
    z.object({ value: seconds, source: z.enum(CONNTRACK_SOURCES) }),
  ),
  by: z.string(),
});

export interface DecisionRecord {
  readonly v: typeof RECORD_VERSION;
  readonly sleepSeconds: number;
  readonly gracePeriodSeconds: number;
  readonly originalGracePeriodSeconds: number;
  readonly mode: 'sleep' | 'exec';
  readonly containers: readonly string[];
  readonly skipped: Readonly<Record<string, string>>;
  readonly protocols: readonly Protocol[];
  readonly conntrack: Readonly<Partial<Record<ConntrackKey, ConntrackValue>>>;
  readonly by: string;
}

/** What a record keeps of its plan. */
export type RecordedPlan = Omit<DecisionRecord, 'v' | 'by' | 'mode'> & { readonly mode: { readonly mode: DecisionRecord['mode'] } };

export function recordOf(plan: RecordedPlan): DecisionRecord {
  return {
    v: RECORD_VERSION,
    sleepSeconds: plan.sleepSeconds,
    gracePeriodSeconds: plan.gracePeriodSeconds,
    originalGracePeriodSeconds: plan.originalGracePeriodSeconds,
    mode: plan.mode.mode,
    containers: plan.containers,
    skipped: plan.skipped,
    protocols: plan.protocols,
    conntrack: plan.conntrack,
    by: RECORD_AUTHOR,
  };
}

/** Compact JSON with a fixed key order, so equal records are equal strings. */
export function encodeRecord(r: DecisionRecord): string {
  return JSON.stringify({
    v: r.v,
    sleepSeconds: r.sleepSeconds,
    gracePeriodSeconds: r.gracePeriodSeconds,
    originalGracePeriodSeconds: r.originalGracePeriodSeconds,
    mode: r.mode,
    containers: r.containers,
    skipped: r.skipped,
    protocols: r.protocols,
    conntrack: r.conntrack,
    by: r.by,
  });
}

export type RecordReading =
  | { readonly kind: 'absent' }
  | { readonly kind: 'valid'; readonly record: DecisionRecord }
  | { readonly kind: 'unreadable'; readonly reason: string };

export function decodeRecord(text: string | undefined): RecordReading {
  if (text === undefined) return { kind: 'absent' };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { kind: 'unreadable', reason: 'not JSON' };
  }
  const version = typeof json === 'object' && json !== null ? (json as { v?: unknown }).v : undefined;
  if (version !== RECORD_VERSION) {
    return { kind: 'unreadable', reason: `schema version ${JSON.stringify(version ?? null)} is not ${RECORD_VERSION}` };
  }
  const parsed = recordSchema.safeParse(json);
  if (!parsed.success) return { kind: 'unreadable', reason: 'does not match schema version 1' };
  return { kind: 'valid', record: parsed.data };
}
