/**
 * RFC 6902 operations (the core's patch, addressed to a pod) applied to a YAML
 * Document at the pod's path in it, node by node: untouched nodes keep their
 * comments and styles, a replaced scalar keeps its comment, a new key is
 * appended to its mapping (`metadata` before `spec`), and an empty flow
 * mapping `{}` that gains one becomes a block mapping.
 */
import { isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, Node, YAMLMap } from 'yaml';
import type { Operation } from 'fast-json-patch';
import { dottedPath } from './workloads.ts';
import type { Path } from './workloads.ts';
import { CodedError } from '../shared/errors.ts';

/** An operation the document's shape does not allow (an alias on the way, a missing parent). */
export class EditError extends CodedError<'MANIFEST_NOT_EDITABLE'> {
  constructor(problem: string) {
    super('MANIFEST_NOT_EDITABLE', problem);
    this.name = 'EditError';
  }
}

/** "/metadata/annotations/safe-termination.io~1injected" → ["metadata", "annotations", "safe-termination.io/injected"]. */
export function pointerSegments(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new EditError(`not a JSON pointer: ${pointer}`);
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** The operation's path under `prefix`, with array indices as numbers (for messages and JSON patching). */
export function fullPath(prefix: Path, pointer: string, root: unknown): Array<string | number> {
  const out: Array<string | number> = [...prefix];
  let v: unknown = root;
  for (const key of prefix) v = step(v, key);
  for (const seg of pointerSegments(pointer)) {
    const key = Array.isArray(v) && /^\d+$/.test(seg) ? Number(seg) : seg;
    out.push(key);
    v = step(v, key);
  }
  return out;
}

function step(v: unknown, key: string | number): unknown {
  if (v === null || typeof v !== 'object') return undefined;
  return (v as Record<string | number, unknown>)[key];
}

/** A JSON pointer for a full path. */
export function toPointer(path: Path): string {
  return path.map((k) => `/${String(k).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

function nodeAt(doc: Document, path: Path): Node | null | undefined {
  let node: unknown = doc.contents;
  for (let i = 0; i < path.length; i++) {
    const key = path[i] as string | number;
    if (isAlias(node)) throw new EditError(`${dottedPath(path.slice(0, i)) || 'the document'} is a YAML alias (*${node.source}); write it out to inject`);
    if (isMap(node)) node = node.get(key, true);
    else if (isSeq(node)) node = node.get(key, true);
    else return undefined;
  }
  if (isAlias(node)) throw new EditError(`${dottedPath(path) || 'the document'} is a YAML alias (*${node.source}); write it out to inject`);
  return node as Node | null | undefined;
}

function isPrimitive(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/** Apply one operation, whose path is relative to `prefix`, to `doc`. */
export function applyOperation(doc: Document, prefix: Path, op: Operation, root: unknown): void {
  const path = fullPath(prefix, op.path, root);
  const key = path[path.length - 1];
  if (key === undefined) throw new EditError('cannot replace a whole document');
  const parent = nodeAt(doc, path.slice(0, -1));
  const where = dottedPath(path);
  if (isSeq(parent)) {
    if (typeof key !== 'number' && key !== '-') throw new EditError(`${where}: not an index of a list`);
    const index = key === '-' ? parent.items.length : key;
    if (op.op === 'remove') parent.delete(index);
    else if (op.op === 'add') parent.items.splice(index, 0, doc.createNode(op.value));
    else if (op.op === 'replace') parent.set(index, doc.createNode(op.value));
    else throw new EditError(`${where}: unsupported operation ${op.op}`);
    return;
  }
  if (!isMap(parent)) throw new EditError(`${where}: the parent is not a mapping`);
  if (op.op === 'remove') {
    if (!parent.delete(key)) throw new EditError(`${where}: nothing to remove`);
    return;
  }
  if (op.op !== 'add' && op.op !== 'replace') throw new EditError(`${where}: unsupported operation ${op.op}`);
  const value: unknown = op.value;
  if (parent.has(key)) {
    const existing = parent.get(key, true);
    if (isScalar(existing) && isPrimitive(value) && typeof existing.value !== 'object') {
      existing.value = value;
      // A plain or quoted style that cannot hold the new value is re-chosen by the printer.
      if (typeof value !== 'string') existing.type = undefined;
    } else parent.set(key, doc.createNode(value));
    return;
  }
  if (op.op === 'replace') throw new EditError(`${where}: nothing to replace`);
  // An empty flow mapping (`{}`) that gains a key becomes a block mapping; a non-empty one stays flow.
  if (parent.flow === true && parent.items.length === 0) parent.flow = false;
  insertPair(doc, parent, String(key), value);
}

function insertPair(doc: Document, map: YAMLMap, key: string, value: unknown): void {
  const pair = doc.createPair(key, value);
  if (key === 'metadata') {
    const spec = map.items.findIndex((p) => isScalar(p.key) && p.key.value === 'spec');
    if (spec !== -1) {
      map.items.splice(spec, 0, pair);
      return;
    }
  }
  map.items.push(pair);
}
