/**
 * Edited documents → text that differs from the input only where the edit is.
 * Unedited documents are copied byte for byte; an edited one is printed before
 * and after the edit with the input's indentation, and the difference is
 * merged into its original text (merge.ts). Every result is parsed back and
 * compared with the edited data; where the merge cannot be trusted the
 * printer's output stands in for that document.
 */
import { isDeepStrictEqual } from 'node:util';
import { parseAllDocuments } from 'yaml';
import type { Document, ToStringOptions } from 'yaml';
import { mergeText } from './merge.ts';
import type { ParsedManifest } from './source.ts';
import { YAML_OPTIONS } from './source.ts';

export interface EditedDocument {
  readonly index: number;
  /** The document as it was read (a clone taken before editing). */
  readonly before: Document;
  /** The edited document (YAML) — for JSON only its value counts. */
  readonly after: Document;
  /** The data the output must parse to. */
  readonly value: unknown;
}

export interface Rendered {
  readonly text: string;
  /** Documents printed anew because their formatting could not be kept. */
  readonly reprinted: readonly number[];
}

export interface YamlStyle {
  readonly indent: number;
  /** `key:\n  - item` (true) or `key:\n- item` (false, kubectl's style). */
  readonly indentSeq: boolean;
}

/** The indentation habits of a YAML text, for printing its edits alike. */
export function detectYamlStyle(text: string): YamlStyle {
  const steps = new Map<number, number>();
  let flat = 0;
  let indented = 0;
  let prev: { keyColumn: number; opens: boolean } | undefined;
  for (const line of text.split('\n')) {
    const content = line.trimStart();
    if (content === '' || content.startsWith('#')) continue;
    const indent = line.length - content.length;
    if (prev?.opens) {
      if (content.startsWith('- ') || content === '-') {
        if (indent === prev.keyColumn) flat++;
        else if (indent > prev.keyColumn) indented++;
      } else if (indent > prev.keyColumn) {
        const d = indent - prev.keyColumn;
        steps.set(d, (steps.get(d) ?? 0) + 1);
      }
    }
    let keyColumn = indent;
    let rest = content;
    while (rest.startsWith('- ')) {
      rest = rest.slice(2).trimStart();
      keyColumn = line.length - rest.length;
    }
    prev = { keyColumn, opens: /^[^#'"{[|>][^#]*:\s*(#.*)?$/.test(rest) || /^["'].*["']:\s*(#.*)?$/.test(rest) };
  }
  let indent = 2;
  let best = 0;
  for (const [d, count] of steps) {
    if (d >= 1 && d <= 8 && (count > best || (count === best && d < indent))) {
      indent = d;
      best = count;
    }
  }
  return { indent, indentSeq: indented >= flat };
}

function printOptions(style: YamlStyle): ToStringOptions {
  return { indent: style.indent, indentSeq: style.indentSeq, lineWidth: 0, minContentWidth: 0 };
}

function parsesTo(text: string, values: readonly unknown[]): boolean {
  const docs = parseAllDocuments(text, YAML_OPTIONS);
  if (!Array.isArray(docs) || docs.length !== values.length) return values.length === 0 && (!Array.isArray(docs) || docs.length === 0);
  return docs.every((d, i) => d.errors.length === 0 && isDeepStrictEqual(d.toJS(), values[i]));
}

function jsonIndent(text: string): string | number {
  const m = /\n([ \t]+)["}\]]/.exec(text);
  if (m === null) return 0;
  const ws = m[1] as string;
  return ws.includes('\t') ? '\t' : ws.length;
}

export function renderManifest(m: ParsedManifest, edits: readonly EditedDocument[]): Rendered {
  if (edits.length === 0) return { text: m.source.text, reprinted: [] };
  if (m.format === 'json') return renderJson(m, edits[0] as EditedDocument);
  const byIndex = new Map(edits.map((e) => [e.index, e]));
  const reprinted: number[] = [];

  if (m.segmented) {
    const parts = m.documents.map((d) => {
      const e = byIndex.get(d.index);
      if (e === undefined) return d.text;
      const opts = printOptions(detectYamlStyle(d.text));
      const edited = e.after.toString(opts);
      const merged = mergeText(e.before.toString(opts), d.text, edited);
      if (merged !== undefined && parsesTo(merged, [e.value])) return merged;
      reprinted.push(d.index);
      return separated(d.index, edited);
    });
    // Each edited segment was verified on its own; segments meet at document boundaries.
    return { text: joinParts(parts), reprinted };
  }
  // Fallback: the whole stream through the printer (comments and order kept, spacing normalised).
  const opts = printOptions(detectYamlStyle(m.source.text));
  const text = m.documents.map((d) => separated(d.index, (byIndex.get(d.index)?.after ?? d.doc).toString(opts))).join('');
  const expected = m.documents.map((d): unknown => byIndex.get(d.index)?.value ?? d.doc.toJS());
  if (!parsesTo(text, expected)) throw new Error(`${m.source.name}: the edited manifest does not read back as edited (please report this)`);
  return { text, reprinted: m.documents.map((d) => d.index) };
}

/** A reprinted document after the first needs its `---`. */
function separated(index: number, text: string): string {
  return index > 0 && !text.startsWith('---') ? `---\n${text}` : text;
}

/** Segments end where the next begins; a segment without a final newline gets one before a next. */
function joinParts(parts: readonly string[]): string {
  const out: string[] = [];
  for (const p of parts) {
    const last = out.at(-1);
    if (last !== undefined && last !== '' && !last.endsWith('\n')) out.push('\n');
    out.push(p);
  }
  return out.join('');
}

function renderJson(m: ParsedManifest, e: EditedDocument): Rendered {
  const text = m.source.text.startsWith('\uFEFF') ? m.source.text.slice(1) : m.source.text;
  const indent = jsonIndent(text);
  const newline = /\r?\n\s*$/.test(text) ? '\n' : '';
  const base = JSON.stringify(e.before.toJS(), null, indent) + newline;
  const edited = JSON.stringify(e.value, null, indent) + newline;
  const merged = mergeText(base, text, edited);
  if (merged !== undefined) {
    try {
      if (isDeepStrictEqual(JSON.parse(merged), e.value)) return { text: merged, reprinted: [] };
    } catch {
      // fall through to the printed form
    }
  }
  return { text: edited, reprinted: [0] };
}
