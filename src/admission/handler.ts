/**
 * AdmissionReview in → AdmissionReview out. No HTTP here: the server reads the
 * body and writes what this returns; metrics and logs read the `outcome`.
 */
import type { z } from 'zod';
import type { FactsSource } from '../core/facts.ts';
import type { ModelDefaults } from '../core/model.ts';
import { planPatch } from '../core/patch.ts';
import { decide } from '../core/plan.ts';
import type { Decision, Plan, SkipReason } from '../core/plan.ts';
import { placementOf, podDisplayName, podSchema } from '../core/pod.ts';
import type { ConntrackKey, ConntrackValue } from '../core/conntrack.ts';
import { admissionReviewSchema } from './review.ts';
import type { AdmissionReviewResponse } from './review.ts';
import { allowed, denied, patched } from './responses.ts';

export type AdmissionOutcome = 'patched' | 'allowed' | 'denied';
export type DecisionKind = 'injected' | 'unchanged' | 'skipped' | 'denied' | 'ignored';
export type IgnoreReason = 'not-a-pod' | 'not-create' | 'subresource';

export interface HandledReview {
  readonly kind: 'handled';
  readonly body: AdmissionReviewResponse;
  readonly outcome: AdmissionOutcome;
  readonly decision: DecisionKind;
  readonly reason: SkipReason | IgnoreReason | undefined;
  readonly uid: string;
  readonly pod: string | undefined;
  /** Short human summary for the log line. */
  readonly summary: string;
  readonly conntrack: Readonly<Partial<Record<ConntrackKey, ConntrackValue>>>;
  /** The preStop sleep and grace period handed out, when the decision is `injected` (for the metrics). */
  readonly injected?: { readonly sleepSeconds: number; readonly gracePeriodSeconds: number };
}

export interface MalformedReview {
  readonly kind: 'malformed';
  readonly message: string;
}

export interface HandlerDeps {
  readonly defaults: ModelDefaults;
  readonly facts: FactsSource;
}

export type ReviewHandler = (body: unknown) => HandledReview | MalformedReview;

export function createReviewHandler(deps: HandlerDeps): ReviewHandler {
  return (body) => {
    const parsed = admissionReviewSchema.safeParse(body);
    if (!parsed.success) return { kind: 'malformed', message: describeZodError('', parsed.error) };
    const req = parsed.data.request;
    const uid = req.uid;
    const ignore = (reason: IgnoreReason): HandledReview => ({
      kind: 'handled',
      body: allowed(uid),
      outcome: 'allowed',
      decision: 'ignored',
      reason,
      uid,
      pod: undefined,
      summary: reason,
      conntrack: {},
    });
    if (req.kind.group !== '' || req.kind.kind !== 'Pod') return ignore('not-a-pod');
    if (req.subResource) return ignore('subresource');
    if (req.operation !== 'CREATE') return ignore('not-create');

    const pod = podSchema.safeParse(req.object);
    if (!pod.success) return { kind: 'malformed', message: describeZodError('request.object', pod.error) };
    const podName = podDisplayName(pod.data, req.namespace);
    const namespace = req.namespace ?? pod.data.metadata?.namespace ?? '';
    const decision = decide(pod.data, {
      defaults: deps.defaults,
      facts: deps.facts.conntrackFor(placementOf(pod.data)),
      kubeVersion: deps.facts.kubeVersion(),
      services: deps.facts.servicesFor?.(namespace, pod.data.metadata?.labels),
    });
    return respond(uid, podName, pod.data, decision);
  };
}

function respond(uid: string, pod: string, podData: z.infer<typeof podSchema>, d: Decision): HandledReview {
  const base = { kind: 'handled', uid, pod } as const;
  switch (d.kind) {
    case 'skip':
      return { ...base, body: allowed(uid, d.warnings), outcome: 'allowed', decision: 'skipped', reason: d.reason, summary: d.detail, conntrack: {} };
    case 'deny':
      return {
        ...base,
        body: denied(uid, `safe-termination: ${d.message}`, d.warnings),
        outcome: 'denied',
        decision: 'denied',
        reason: undefined,
        summary: d.message,
        conntrack: {},
      };
    case 'inject': {
      const ops = planPatch(podData, d.plan);
      const p = d.plan;
      const summary = `sleep ${p.sleepSeconds}s (${p.mode.mode}) in ${p.containers.join(',')}; grace ${p.gracePeriodSeconds}s${servicesText(p)}`;
      if (ops.length === 0) {
        return { ...base, body: allowed(uid, d.warnings), outcome: 'allowed', decision: 'unchanged', reason: undefined, summary, conntrack: p.conntrack };
      }
      const injected = { sleepSeconds: p.sleepSeconds, gracePeriodSeconds: p.gracePeriodSeconds };
      return { ...base, body: patched(uid, ops, d.warnings), outcome: 'patched', decision: 'injected', reason: undefined, summary, conntrack: p.conntrack, injected };
    }
  }
}

/** "; udp from Service ns/dns" for the log line: which Service added a protocol the ports did not have. */
function servicesText(p: Plan): string {
  const parts: string[] = [];
  for (const protocol of p.protocols) {
    const o = p.protocolOrigins[protocol];
    if (o !== undefined && !o.ports && o.services.length > 0) parts.push(`${protocol} from Service ${o.services.join(', ')}`);
  }
  return parts.length === 0 ? '' : `; ${parts.join('; ')}`;
}

/** First issue of a zod error as "path: problem", bounded in length. */
export function describeZodError(prefix: string, error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return `${prefix || 'body'}: invalid`;
  const path = [prefix, ...issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p)))]
    .filter((p) => p !== '')
    .join('.')
    .replaceAll('.[', '[');
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problems)` : '';
  const msg = `${path || 'body'}: ${issue.message}${more}`;
  return msg.length > 300 ? `${msg.slice(0, 299)}…` : msg;
}
