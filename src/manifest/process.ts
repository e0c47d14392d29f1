/**
 * The CLI door to the decision core, as the webhook is the HTTP one: for each
 * Pod or pod template in a manifest, the pod-shaped object (its metadata and
 * spec) goes through the same `podSchema` → `decide` → `planPatch` as an
 * admission request, and the resulting RFC 6902 operations are applied to the
 * document at the template's path.
 */
import { isDeepStrictEqual } from 'node:util';
import fjp from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import type { Document } from 'yaml';
import type { z } from 'zod';
import type { ModelDefaults } from '../core/model.ts';
import { Annotation, PREFIX } from '../core/names.ts';
import { planPatch } from '../core/patch.ts';
import { decide } from '../core/plan.ts';
import type { Decision } from '../core/plan.ts';
import { placementOf, podSchema } from '../core/pod.ts';
import type { Pod } from '../core/pod.ts';
import type { ServiceIndex } from '../core/services.ts';
import { applyOperation, EditError, fullPath, toPointer } from './edit.ts';
import type { ConntrackView, ManifestFacts } from './facts.ts';
import { renderManifest } from './render.ts';
import { MANIFEST_DEFAULT_NAMESPACE } from './services.ts';
import type { EditedDocument } from './render.ts';
import { formatProblem, parseManifest } from './source.ts';
import type { InputProblem, ManifestSource, ParsedManifest, SourceFormat } from './source.ts';
import { dottedPath, findTargets, targetLabel, valueAt } from './workloads.ts';
import type { Path, PodTarget, UntemplatedObject } from './workloads.ts';

export interface DoorConfig {
  readonly defaults: ModelDefaults;
  readonly facts: ManifestFacts;
  /** The Services of the inputs and --services (services.ts); absent: none. */
  readonly services?: ServiceIndex | undefined;
}

export interface TargetOutcome {
  readonly target: PodTarget;
  /** 0-based document of the file. */
  readonly document: number;
  readonly line: number | undefined;
  /** "Deployment shop/web" */
  readonly label: string;
  /** The decision, unless the object could not be read (then see `problems`). */
  readonly decision: Decision | undefined;
  readonly conntrack: ConntrackView | undefined;
  /** The pod as the core read it. */
  readonly pod: Pod | undefined;
  /** Operations with paths in the document (template prefix included). */
  readonly ops: readonly Operation[];
  readonly problems: readonly InputProblem[];
}

/** An object of another API group than Kubernetes' own that holds no pod template (workloads.ts): passed through. */
export interface UntemplatedOutcome {
  readonly object: UntemplatedObject;
  /** 0-based document of the file. */
  readonly document: number;
  readonly line: number | undefined;
  /** "DeploymentConfig shop/web" */
  readonly label: string;
}

export interface ManifestOutcome {
  readonly source: ManifestSource;
  readonly format: SourceFormat | undefined;
  readonly targets: readonly TargetOutcome[];
  /** Everything wrong with this file; none means `output` is the result. */
  readonly problems: readonly InputProblem[];
  /** The injected text (the input itself when nothing changed or on problems). */
  readonly output: string;
  readonly changed: boolean;
  /** Documents printed anew because their formatting could not be kept. */
  readonly reprinted: readonly number[];
  /** Objects of other API groups without a pod template, passed through (a note for the user). */
  readonly untemplated: readonly UntemplatedOutcome[];
}

export function processManifest(source: ManifestSource, config: DoorConfig): ManifestOutcome {
  const parsed = parseManifest(source);
  if (!parsed.ok) return { source, format: undefined, targets: [], problems: parsed.problems, output: source.text, changed: false, reprinted: [], untemplated: [] };
  const m = parsed.manifest;
  const targets: TargetOutcome[] = [];
  const problems: InputProblem[] = [];
  const edits: EditedDocument[] = [];
  const untemplated: UntemplatedOutcome[] = [];
  for (const d of m.documents) {
    const value: unknown = d.doc.toJS();
    const none: UntemplatedObject[] = [];
    const found = findTargets(value, [], undefined, none);
    for (const object of none) untemplated.push({ object, document: d.index, line: lineIn(m, d.index, d.doc, object.path), label: targetLabel(object) });
    if (found.length === 0) continue;
    const outcomes = found.map((t) => decideTarget(m, d.index, d.doc, value, t, config));
    targets.push(...outcomes);
    const docProblems = outcomes.flatMap((o) => o.problems);
    problems.push(...docProblems);
    const ops = outcomes.flatMap((o) => o.ops);
    if (docProblems.length > 0 || ops.length === 0) continue;
    const edit = editDocument(m, d.index, d.doc, value, ops);
    if ('problem' in edit) problems.push(edit.problem);
    else edits.push(edit);
  }
  if (problems.length > 0) return { source, format: m.format, targets, problems, output: source.text, changed: false, reprinted: [], untemplated };
  const rendered = renderManifest(m, edits);
  return { source, format: m.format, targets, problems, output: rendered.text, changed: edits.length > 0, reprinted: rendered.reprinted, untemplated };
}

/** The line of the node at `path` in a document (or of its nearest parent that has one). */
function lineIn(m: ParsedManifest, index: number, doc: Document, path: Path): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range) return m.lineAt(node.range[0]);
  }
  return m.documents[index]?.line;
}

function editDocument(m: ParsedManifest, index: number, doc: Document, value: unknown, ops: readonly Operation[]): EditedDocument | { problem: InputProblem } {
  const expected = fjp.applyPatch(structuredClone(value), ops as Operation[], true, false).newDocument;
  const before = doc.clone();
  // Directives.clone() keeps the `---` but not the `...` of the document.
  if (before.directives !== undefined && doc.directives !== undefined) before.directives.docEnd = doc.directives.docEnd;
  try {
    if (m.format === 'yaml') {
      for (const op of ops) applyOperation(doc, [], op, value);
      if (!isDeepStrictEqual(doc.toJS(), expected)) {
        throw new EditError('the edit would also change other parts of the document (a YAML anchor shared with them?); write the pod template out without anchors to inject');
      }
    }
  } catch (error) {
    if (!(error instanceof EditError)) throw error;
    return { problem: { file: m.source.name, line: m.documents[index]?.line, message: `cannot inject: ${error.message}` } };
  }
  return { index, before, after: doc, value: expected };
}

function decideTarget(m: ParsedManifest, index: number, doc: Document, value: unknown, t: PodTarget, config: DoorConfig): TargetOutcome {
  const file = m.source.name;
  const label = targetLabel(t);
  const lineOf = (path: Path): number | undefined => lineIn(m, index, doc, path);
  const line = lineOf(t.path);
  const base = { target: t, document: index, line, label };
  const fail = (problems: InputProblem[]): TargetOutcome => ({ ...base, decision: undefined, conntrack: undefined, pod: undefined, ops: [], problems });

  const shape = valueAt(value, t.path);
  if (shape === undefined || shape === null || typeof shape !== 'object' || Array.isArray(shape)) {
    return fail([{ file, line, object: label, message: `${dottedPath(t.path) || 'the object'} is missing or not a mapping; a ${t.kind} needs a pod ${t.template ? 'template' : 'spec'}` }]);
  }
  const { metadata, spec } = shape as { metadata?: unknown; spec?: unknown };
  const podShaped = { metadata, spec };

  const stringProblems = nonStringValues(metadata, [...t.path, 'metadata']).map((p) => ({ file, line: lineOf(p.path), object: label, message: p.message }));
  if (stringProblems.length > 0) return fail(stringProblems);
  const parsed = podSchema.safeParse(podShaped);
  if (!parsed.success) return fail(zodProblems(parsed.error, t.path).map((p) => ({ file, line: lineOf(p.path), object: label, message: p.message })));
  const pod = parsed.data;

  const conntrack = config.facts.conntrackFor(placementOf(pod));
  const decision = decide(t.jobPods ? asJobPod(pod, t) : pod, {
    defaults: config.defaults,
    facts: conntrack.facts,
    kubeVersion: config.facts.kubeVersion,
    // A template's pods live in the workload's namespace; objects without one share the default.
    services: config.services?.match(t.namespace || MANIFEST_DEFAULT_NAMESPACE, pod.metadata?.labels),
  });
  if (decision.kind === 'deny') {
    const problems = decision.problems.map((p) => ({
      file,
      line: lineOf([...t.path, 'metadata', 'annotations', p.key]),
      object: label,
      message: `annotation ${p.key}: invalid value ${JSON.stringify(p.value)}; expected ${p.accepted}`,
    }));
    return { ...base, decision, conntrack, pod, ops: [], problems };
  }
  const ops =
    decision.kind === 'inject'
      ? planPatch(pod, decision.plan).map((op) => ({ ...op, path: toPointer(fullPath(t.path, op.path, value)) }) as Operation)
      : [];
  return { ...base, decision, conntrack, pod, ops, problems: [] };
}

/**
 * A template's pods are created by a Job (CronJob: by its Jobs); the webhook
 * sees that owner, so the decision does too. Only the decision's copy gets it.
 */
function asJobPod(pod: Pod, t: PodTarget): Pod {
  const owner = { apiVersion: 'batch/v1', kind: 'Job', name: t.name ?? t.generateName ?? '', controller: true };
  return { ...pod, metadata: { ...pod.metadata, ownerReferences: [...(pod.metadata?.ownerReferences ?? []), owner] } };
}

interface LocatedMessage {
  readonly path: Path;
  readonly message: string;
}

function describeValue(v: unknown): string {
  if (v === null) return 'empty (null)';
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return `the boolean ${v}`;
  return Array.isArray(v) ? 'a list' : 'a mapping';
}

/** Labels and annotations YAML read as numbers, booleans or nulls: kubectl rejects them. */
function nonStringValues(metadata: unknown, path: Path): LocatedMessage[] {
  if (metadata === null || typeof metadata !== 'object') return [];
  const out: LocatedMessage[] = [];
  for (const field of ['labels', 'annotations'] as const) {
    const map = (metadata as Record<string, unknown>)[field];
    if (map === null || map === undefined || typeof map !== 'object' || Array.isArray(map)) continue;
    for (const [key, v] of Object.entries(map)) {
      if (typeof v === 'string') continue;
      const what = field === 'labels' ? 'label' : 'annotation';
      const ours = key.startsWith(PREFIX) && key !== Annotation.injected;
      const fix =
        v === null || typeof v === 'object'
          ? `${what} values must be strings`
          : `${what} values must be strings; quote it: ${key}: "${String(v)}"`;
      out.push({ path: [...path, field, key], message: `${what} ${key} is ${describeValue(v)}, which kubectl rejects${ours ? ' (and safe-termination cannot read)' : ''}: ${fix}` });
    }
  }
  return out;
}

function zodProblems(error: z.ZodError, prefix: Path): LocatedMessage[] {
  return error.issues.slice(0, 5).map((issue) => {
    const path = [...prefix, ...issue.path.filter((p): p is string | number => typeof p !== 'symbol')];
    const message = issue.code === 'invalid_type' && issue.message.endsWith('received undefined') ? 'required, but missing' : issue.message;
    return { path, message: `${dottedPath(path)}: ${message}` };
  });
}

/** All problems of a run, formatted one per line. */
export function problemLines(outcomes: readonly ManifestOutcome[]): string[] {
  return outcomes.flatMap((o) => o.problems.map(formatProblem));
}
