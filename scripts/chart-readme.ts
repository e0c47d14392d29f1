/**
 * Generates the values table of charts/safe-termination/README.md from the comments
 * of values.yaml and the types of values.schema.json, between the markers
 * `<!-- values-table:start -->` and `<!-- values-table:end -->`.
 *
 *   node scripts/chart-readme.ts           rewrite the README's table
 *   node scripts/chart-readme.ts --check   exit 1 if the table is stale (CI)
 *
 * Either way it fails when a key of values.yaml has no comment, is unknown to the
 * schema, or a schema property is missing from values.yaml.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isScalar, parseDocument, stringify } from 'yaml';
import type { YAMLMap } from 'yaml';

export const CHART_DIR = resolve(import.meta.dirname, '../charts/safe-termination');
export const START = '<!-- values-table:start -->';
export const END = '<!-- values-table:end -->';
/** Schema properties Helm itself may add (subchart use); not values of this chart. */
const HELM_ADDED = new Set(['global', 'enabled']);

type Schema = Record<string, unknown>;

export interface ValueRow {
  readonly key: string;
  readonly type: string;
  readonly default: string;
  readonly description: string;
  readonly section: boolean;
}

export interface TableResult {
  readonly rows: readonly ValueRow[];
  readonly problems: readonly string[];
}

function resolveRef(schema: Schema | undefined, root: Schema): Schema | undefined {
  let s = schema;
  for (let i = 0; s !== undefined && typeof s['$ref'] === 'string' && i < 10; i++) {
    const path = (s['$ref']).replace(/^#\//, '').split('/');
    let target: unknown = root;
    for (const part of path) target = (target as Record<string, unknown> | undefined)?.[part];
    s = target as Schema | undefined;
  }
  return s;
}

/**
 * A section of values: a closed object written inline in the schema. Its keys get rows
 * of their own. Objects defined by `$ref` (resources, probe timings, issuerRef) and open
 * objects (labels, Kubernetes objects) are values: one row with their default.
 */
function isSection(schema: Schema | undefined): boolean {
  return (
    schema !== undefined &&
    schema['$ref'] === undefined &&
    schema['type'] === 'object' &&
    schema['additionalProperties'] === false &&
    typeof schema['properties'] === 'object'
  );
}

function typeOf(schema: Schema | undefined, root: Schema): string {
  const s = resolveRef(schema, root);
  if (s === undefined) return '';
  if (typeof s['title'] === 'string') return s['title'];
  if (Array.isArray(s['enum'])) return (s['enum'] as unknown[]).map((v) => String(v)).join(' | ');
  if (Array.isArray(s['oneOf'])) {
    const parts = (s['oneOf'] as Schema[]).map((o) => {
      const r = resolveRef(o, root);
      if (r?.['type'] === 'string' && r['maxLength'] === 0) return 'empty';
      return typeOf(o, root);
    });
    return [...new Set(parts.flatMap((p) => p.split(' or ')))].join(' or ');
  }
  const t = s['type'];
  if (Array.isArray(t)) return t.join(' or ');
  if (t === 'array') {
    const items = resolveRef(s['items'] as Schema | undefined, root);
    return typeof items?.['type'] === 'string' ? `${items['type']}[]` : 'list';
  }
  return typeof t === 'string' ? t : '';
}

function commentText(raw: string | null | undefined): string {
  if (raw === undefined || raw === null) return '';
  // The paragraph right above the key: a blank line separates it from a file header.
  const paragraphs = raw.split(/\n\s*\n/);
  const last = paragraphs[paragraphs.length - 1] ?? '';
  return last
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .join(' ');
}

function showDefault(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || value === undefined) return 'null';
  if (typeof value !== 'object') return JSON.stringify(value);
  return stringify(value, { collectionStyle: 'flow', lineWidth: 0 }).trim();
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

/** Rows of the values table, and what is wrong with values.yaml against the schema. */
export function valuesTable(valuesText: string, schema: Schema): TableResult {
  const doc = parseDocument(valuesText);
  const problems: string[] = [];
  if (doc.errors.length > 0) return { rows: [], problems: doc.errors.map((e) => `values.yaml: ${e.message}`) };
  const rows: ValueRow[] = [];
  const walk = (map: YAMLMap, schemaNode: Schema | undefined, prefix: string, js: Record<string, unknown>): void => {
    const props = (schemaNode?.['properties'] ?? {}) as Record<string, Schema>;
    const seen = new Set<string>();
    map.items.forEach((item, index) => {
      const pair = item;
      const keyNode = pair.key;
      const name = isScalar(keyNode) && typeof keyNode.value === 'string' ? keyNode.value : JSON.stringify(pair.toJSON());
      const key = prefix + name;
      seen.add(name);
      const raw = (isScalar(keyNode) ? keyNode.commentBefore : undefined) ?? (index === 0 ? map.commentBefore : undefined);
      const description = commentText(raw);
      if (description === '') problems.push(`values.yaml: ${key} has no comment`);
      const propSchema = props[name];
      if (propSchema === undefined) {
        problems.push(`values.yaml: ${key} is not in values.schema.json`);
        return;
      }
      const structured = isSection(propSchema) && isMap(pair.value);
      const value = js[name];
      rows.push({
        key,
        type: typeOf(propSchema, schema),
        default: structured ? '' : showDefault(value),
        description,
        section: structured,
      });
      if (structured) walk(pair.value as YAMLMap, propSchema, `${key}.`, value as Record<string, unknown>);
    });
    for (const name of Object.keys(props)) {
      if (!seen.has(name) && !(prefix === '' && HELM_ADDED.has(name))) problems.push(`values.schema.json: ${prefix}${name} is missing from values.yaml`);
    }
  };
  if (!isMap(doc.contents)) return { rows: [], problems: ['values.yaml: not a mapping'] };
  walk(doc.contents, schema, '', doc.toJS() as Record<string, unknown>);
  return { rows, problems };
}

export function renderTable(rows: readonly ValueRow[]): string {
  const lines = ['| Key | Type | Default | Description |', '| --- | --- | --- | --- |'];
  for (const r of rows) {
    const key = r.section ? `**\`${r.key}\`**` : `\`${r.key}\``;
    const dflt = r.default === '' ? '' : `\`${cell(r.default)}\``;
    lines.push(`| ${key} | ${cell(r.type)} | ${dflt} | ${cell(r.description)} |`);
  }
  return lines.join('\n');
}

/** The README with its values table replaced; throws when the markers are missing. */
export function withTable(readme: string, table: string): string {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start === -1 || end === -1 || end < start) throw new Error(`README.md must contain ${START} and ${END}`);
  return `${readme.slice(0, start + START.length)}\n${table}\n${readme.slice(end)}`;
}

export interface ReadmeCheck {
  readonly problems: readonly string[];
  readonly current: string;
  readonly expected: string;
}

export function checkChart(dir = CHART_DIR): ReadmeCheck {
  const values = readFileSync(join(dir, 'values.yaml'), 'utf8');
  const schema = JSON.parse(readFileSync(join(dir, 'values.schema.json'), 'utf8')) as Schema;
  const current = readFileSync(join(dir, 'README.md'), 'utf8');
  const { rows, problems } = valuesTable(values, schema);
  return { problems, current, expected: withTable(current, renderTable(rows)) };
}

function main(argv: readonly string[]): number {
  const check = argv.includes('--check');
  const { problems, current, expected } = checkChart();
  for (const p of problems) process.stderr.write(`chart-readme: ${p}\n`);
  if (problems.length > 0) return 1;
  if (check) {
    if (current !== expected) {
      process.stderr.write('chart-readme: charts/safe-termination/README.md is stale: its values table does not match values.yaml; run `node scripts/chart-readme.ts`\n');
      return 1;
    }
    process.stdout.write('chart-readme: README.md values table is up to date\n');
    return 0;
  }
  if (current !== expected) {
    writeFileSync(join(CHART_DIR, 'README.md'), expected);
    process.stdout.write('chart-readme: README.md values table updated\n');
  } else process.stdout.write('chart-readme: README.md values table already up to date\n');
  return 0;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`chart-readme: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
