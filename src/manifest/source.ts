/**
 * Manifest text → documents. YAML streams (one or more documents) through the
 * `yaml` Document API, which keeps comments, key order and scalar styles; JSON
 * through JSON.parse. Errors carry the file and line.
 */
import { Composer, Document, LineCounter, Parser } from 'yaml';
import type { DocumentOptions, ParseOptions, SchemaOptions } from 'yaml';

export interface ManifestSource {
  /** For messages: the path as given, or `<stdin>`. */
  readonly name: string;
  /** The file to write back with --in-place; undefined for stdin. */
  readonly path: string | undefined;
  readonly text: string;
}

/** Something wrong with the input, located as precisely as we can. */
export interface InputProblem {
  readonly file: string;
  readonly line?: number | undefined;
  /** "Deployment shop/web" */
  readonly object?: string | undefined;
  readonly message: string;
}

export function formatProblem(p: InputProblem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  return `${where}: ${p.object === undefined ? '' : `${p.object}: `}${p.message}`;
}

export type SourceFormat = 'yaml' | 'json';

export interface ManifestDocument {
  /** 0-based position in its file. */
  readonly index: number;
  /** YAML: the parsed document, edited in place. JSON: a Document built from the value. */
  readonly doc: Document;
  /** The document's own text in the file (its `---`, comments, content). */
  readonly text: string;
  /** 1-based line of the document's first content; undefined when unknown. */
  readonly line: number | undefined;
}

export interface ParsedManifest {
  readonly source: ManifestSource;
  readonly format: SourceFormat;
  readonly documents: readonly ManifestDocument[];
  /** False when the text could not be cut into one segment per document. */
  readonly segmented: boolean;
  /** 1-based line of a character offset in the file (YAML only). */
  lineAt(offset: number): number | undefined;
}

export type ParseResult =
  | { readonly ok: true; readonly manifest: ParsedManifest }
  | { readonly ok: false; readonly problems: readonly InputProblem[] };

/** `<<` merge keys as Kubernetes' YAML decoder (go-yaml) reads them. */
export const YAML_OPTIONS: ParseOptions & DocumentOptions & SchemaOptions = { merge: true, uniqueKeys: true, prettyErrors: false };

const BOM = '\uFEFF';

export function parseManifest(source: ManifestSource): ParseResult {
  const text = source.text.startsWith(BOM) ? source.text.slice(1) : source.text;
  const first = /\S/.exec(text)?.[0];
  if (first === '{' || first === '[') {
    let value: unknown;
    let jsonError: string | undefined;
    try {
      value = JSON.parse(text);
    } catch (error) {
      jsonError = (error as Error).message;
    }
    if (jsonError === undefined) {
      const doc = new Document(value, YAML_OPTIONS);
      return {
        ok: true,
        manifest: { source, format: 'json', documents: [{ index: 0, doc, text, line: undefined }], segmented: true, lineAt: () => undefined },
      };
    }
    // A YAML flow mapping also starts with "{": only an error if YAML cannot read it either.
    const yaml = parseYaml(source, text);
    if (yaml.ok) return yaml;
    const m = /\(line (\d+) column (\d+)\)/.exec(jsonError);
    return { ok: false, problems: [{ file: source.name, line: m ? Number(m[1]) : undefined, message: `invalid JSON: ${jsonError.replace(/ \(line \d+ column \d+\)/, '')}` }] };
  }
  return parseYaml(source, text);
}

function parseYaml(source: ManifestSource, text: string): ParseResult {
  const lineCounter = new LineCounter();
  const parser = new Parser(lineCounter.addNewLine);
  const tokens = [...parser.parse(text)];
  const composer = new Composer(YAML_OPTIONS);
  const docs = [...composer.compose(tokens)];
  const lineAt = (offset: number): number => lineCounter.linePos(offset).line;
  const problems: InputProblem[] = [];
  const lines = new Set<number>();
  for (const doc of docs) {
    for (const e of doc.errors) {
      // One error per line: the first says what is wrong, the rest follow from it.
      const line = lineAt(e.pos[0]);
      if (lines.has(line)) continue;
      lines.add(line);
      problems.push({ file: source.name, line, message: `invalid YAML: ${firstLine(e.message)}` });
    }
  }
  if (problems.length > 0) return { ok: false, problems };

  const starts = tokens.filter((t) => t.type === 'document').map((t) => t.offset);
  const segmented = starts.length === docs.length;
  const documents = docs.map((doc, index): ManifestDocument => {
    const from = index === 0 ? 0 : (starts[index] ?? 0);
    const to = starts[index + 1] ?? text.length;
    const contents = doc.contents;
    const line = contents?.range ? lineAt(contents.range[0]) : undefined;
    return { index, doc, text: segmented ? text.slice(from, to) : text, line };
  });
  return { ok: true, manifest: { source, format: 'yaml', documents, segmented, lineAt } };
}

function firstLine(message: string): string {
  const i = message.indexOf('\n');
  return (i === -1 ? message : message.slice(0, i)).replace(/:$/, '');
}
