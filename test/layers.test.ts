/**
 * The source tree's layering: a folder imports only folders below it, no module
 * imports itself back through others, and the decision core does no I/O.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';

const SRC = new URL('../src/', import.meta.url).pathname;

/** Lowest first. A folder may import its own modules and those of lower rank. */
const LAYERS: readonly (readonly string[])[] = [
  ['shared'],
  ['core'],
  ['diagnose'],
  ['host'],
  ['cluster'],
  ['admission', 'manifest', 'agent'],
  ['server'],
  ['cli'],
];
const rank = new Map(LAYERS.flatMap((folders, i) => folders.map((f) => [f, i] as const)));

/** Modules the core may import: pure libraries only. */
const CORE_PACKAGES = new Set(['zod', 'fast-json-patch']);
const CORE_SHARED = new Set(['shared/version.ts']);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function specifiers(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s*'([^']+)'|import\(\s*'([^']+)'\s*\)/g)) found.push((m[1] ?? m[2])!);
  return found;
}

const files = sources(SRC).map((f) => relative(SRC, f));
const imports = new Map(
  files.map((file) => {
    const specs = specifiers(readFileSync(join(SRC, file), 'utf8'));
    const local = specs.filter((s) => s.startsWith('.')).map((s) => normalize(join(dirname(file), s)));
    return [file, { local, packages: specs.filter((s) => !s.startsWith('.')) }] as const;
  }),
);
const folderOf = (file: string): string => (file.includes('/') ? file.slice(0, file.indexOf('/')) : '');

t.test('every source folder has a layer and every module lives in one', async (t) => {
  const folders = new Set(files.map(folderOf));
  t.same([...folders].filter((f) => !rank.has(f)), [], 'folders without a layer (files directly in src/ have none)');
  t.same([...rank.keys()].filter((f) => !folders.has(f)), [], 'layers naming a folder that does not exist');
});

t.test('no folder imports a folder above it or beside it', async (t) => {
  const wrong: string[] = [];
  for (const [file, { local }] of imports) {
    for (const target of local) {
      const from = folderOf(file);
      const to = folderOf(target);
      if (from !== to && !(rank.get(to)! < rank.get(from)!)) wrong.push(`${file} → ${target}`);
    }
  }
  t.same(wrong, []);
});

t.test('no import cycles between modules', async (t) => {
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'open') {
      cycles.push([...path.slice(path.indexOf(file)), file].join(' → '));
      return;
    }
    state.set(file, 'open');
    for (const next of imports.get(file)?.local ?? []) visit(next, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of imports.keys()) visit(file, []);
  t.same(cycles, []);
});

t.test('the decision core does no I/O: pure packages only, no node: modules', async (t) => {
  const wrong: string[] = [];
  for (const [file, { local, packages }] of imports) {
    if (folderOf(file) !== 'core') continue;
    for (const p of packages) if (!CORE_PACKAGES.has(p)) wrong.push(`${file} → ${p}`);
    for (const target of local) if (folderOf(target) !== 'core' && !CORE_SHARED.has(target)) wrong.push(`${file} → ${target}`);
  }
  t.same(wrong, []);
});

t.test('the checks see the imports they judge', async (t) => {
  // A reader that found no imports would pass every test above.
  t.ok(imports.get('cli/main.ts')!.local.length > 3);
  t.ok(imports.get('core/record.ts')!.local.includes('shared/version.ts'));
  t.ok(imports.get('core/settings.ts')!.packages.includes('zod'));
});
