/** One-line summaries of decisions and warnings, for stderr. */
import { formatDuration } from '../core/duration.ts';
import type { ManifestOutcome, TargetOutcome } from './process.ts';

export function where(o: ManifestOutcome, t: TargetOutcome): string {
  return `${o.source.name}${t.line === undefined ? '' : `:${t.line}`}: ${t.label}`;
}

export const SKIP_HINTS: Readonly<Record<string, string>> = {
  'job-pod': '--inject-job-pods injects Job pods',
  'opted-out-label': 'remove the label to inject',
  'opted-out-annotation': 'remove the annotation to inject',
};

export function summary(t: TargetOutcome): string {
  const d = t.decision;
  if (d === undefined) return 'not readable';
  switch (d.kind) {
    case 'skip':
      return `skipped (${d.reason}): ${d.detail}`;
    case 'deny':
      return `invalid: ${d.message}`;
    case 'inject': {
      const p = d.plan;
      const what = `preStop ${p.mode.mode === 'sleep' ? 'sleep' : 'exec sleep'} ${formatDuration(p.sleepSeconds)} in ${p.containers.join(', ')}; grace ${p.gracePeriodSeconds}s`;
      return t.ops.length === 0 ? `unchanged, already injected (${what})` : `injected ${what}`;
    }
  }
}

export function decisionLines(outcomes: readonly ManifestOutcome[]): string[] {
  return outcomes.flatMap((o) => o.targets.map((t) => `${where(o, t)}: ${summary(t)}`));
}

export function warningLines(outcomes: readonly ManifestOutcome[]): string[] {
  const out: string[] = [];
  for (const o of outcomes) {
    for (const t of o.targets) for (const w of t.decision?.warnings ?? []) out.push(`${where(o, t)}: warning: ${w}`);
    for (const i of o.reprinted) out.push(`${o.source.name}: warning: document ${i + 1} was printed anew: its original formatting could not be kept around the change`);
  }
  return out;
}

/** A note per object of another API group that holds no pod template: it passes through unchanged. */
export function untemplatedLines(outcomes: readonly ManifestOutcome[]): string[] {
  return outcomes.flatMap((o) =>
    o.untemplated.map(
      (u) =>
        `${o.source.name}${u.line === undefined ? '' : `:${u.line}`}: ${u.label} (${u.object.apiVersion || 'no apiVersion'}): note: ${u.object.reason}; passed through unchanged${u.object.refused ? '' : ' (the webhook still sees its pods, if it makes any, when they are created)'}`,
    ),
  );
}
