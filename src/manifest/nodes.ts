/**
 * A `kubectl get nodes -o yaml` (or -o json) dump → the conntrack values the
 * node agent published on each node (`conntrack.safe-termination.io/<key>`).
 */
import { conntrackFromAnnotations, nodeAnnotationKey, parseSecondsAnnotation } from '../cluster/node-annotations.ts';
import type { NodeRecord } from '../cluster/candidate-nodes.ts';
import { CONNTRACK_KEYS } from '../core/conntrack.ts';
import { parseManifest } from './source.ts';
import type { InputProblem, ManifestSource } from './source.ts';

export interface NodeDump {
  /** What sizing reads of each Node, as the webhook's node informer keeps it. */
  readonly nodes: readonly NodeRecord[];
  /** Annotations that are there but not a whole number of seconds. */
  readonly warnings: readonly string[];
}

export type NodeDumpResult = { readonly ok: true; readonly dump: NodeDump } | { readonly ok: false; readonly problems: readonly InputProblem[] };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function collectNodes(value: unknown, out: Array<Record<string, unknown>>): void {
  if (!isRecord(value)) return;
  const kind = value['kind'];
  if (kind === 'Node') out.push(value);
  else if (typeof kind === 'string' && (kind === 'List' || kind === 'NodeList') && Array.isArray(value['items'])) {
    for (const item of value['items']) {
      if (kind === 'NodeList' && isRecord(item) && item['kind'] === undefined) out.push(item);
      else collectNodes(item, out);
    }
  }
}

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isRecord(v)) for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  return out;
}

export function readNodeDump(source: ManifestSource): NodeDumpResult {
  const parsed = parseManifest(source);
  if (!parsed.ok) return parsed;
  const raw: Array<Record<string, unknown>> = [];
  for (const d of parsed.manifest.documents) collectNodes(d.doc.toJS(), raw);
  if (raw.length === 0) {
    return { ok: false, problems: [{ file: source.name, message: 'no Node objects found; expected the output of `kubectl get nodes -o yaml`' }] };
  }
  const warnings: string[] = [];
  const nodes = raw.map((n): NodeRecord => {
    const meta = isRecord(n['metadata']) ? n['metadata'] : {};
    const name = typeof meta['name'] === 'string' ? meta['name'] : '<unnamed>';
    const annotations = isRecord(meta['annotations']) ? meta['annotations'] : {};
    for (const key of CONNTRACK_KEYS) {
      const text = annotations[nodeAnnotationKey(key)];
      if (text !== undefined && (typeof text !== 'string' || parseSecondsAnnotation(text) === undefined)) {
        warnings.push(`node ${name}: annotation ${nodeAnnotationKey(key)} ${JSON.stringify(text)} is not whole seconds; ignored`);
      }
    }
    return { name, labels: stringMap(meta['labels']), values: conntrackFromAnnotations(stringMap(annotations)) };
  });
  return { ok: true, dump: { nodes, warnings } };
}
