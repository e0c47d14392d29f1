/**
 * The chart README's values table is generated from values.yaml (scripts/chart-readme.ts):
 * it is up to date, every key is commented, and a stale table or a missing comment
 * is caught.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { checkChart, END, renderTable, START, valuesTable, withTable } from '../../scripts/chart-readme.ts';
import { REPO_ROOT } from '../../scripts/helm.ts';
import { CHART } from './render.ts';

const run = promisify(execFile);
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));

t.test('the README values table is up to date and values.yaml is fully commented', async (t) => {
  const { problems, current, expected } = checkChart();
  t.same(problems, []);
  t.equal(current, expected, 'README.md matches values.yaml (run node scripts/chart-readme.ts)');
  const { rows } = valuesTable(readFileSync(join(CHART, 'values.yaml'), 'utf8'), schema);
  t.ok(rows.length > 100, `${rows.length} rows`);
  const row = (key: string) => rows.find((r) => r.key === key);
  t.same(row('sizing.propagationDelay'), { key: 'sizing.propagationDelay', type: 'duration', default: '"5s"', description: 'Endpoint-propagation budget added to every computed sleep (`--propagation-delay`).', section: false });
  t.equal(row('webhook.failurePolicy')?.type, 'Ignore | Fail', 'enum types from the schema');
  t.equal(row('webhook.resources')?.section, false, 'Kubernetes objects are one row');
  t.equal(row('webhook.podDisruptionBudget')?.section, true, 'sections of values are expanded');
  t.match(renderTable(rows), /\| `webhook\.failurePolicy` \| Ignore \\\| Fail \| `"Ignore"` \|/, 'pipes escaped in the Markdown table');
});

t.test('the check fails a stale table, and the CLI says how to fix it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-readme-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['values.yaml', 'values.schema.json', 'README.md']) cpSync(join(CHART, f), join(dir, f));
  const values = readFileSync(join(dir, 'values.yaml'), 'utf8').replace('propagationDelay: 5s', 'propagationDelay: 7s');
  writeFileSync(join(dir, 'values.yaml'), values);
  const stale = checkChart(dir);
  t.same(stale.problems, []);
  t.not(stale.current, stale.expected, 'a changed default makes the table stale');
  t.match(stale.expected, /`sizing\.propagationDelay` \| duration \| `"7s"`/);

  const ok = await run(join(REPO_ROOT, 'node_modules/.bin/node'), [join(REPO_ROOT, 'scripts/chart-readme.ts'), '--check'], { cwd: REPO_ROOT });
  t.match(ok.stdout, /up to date/);
});

t.test('missing comments, unknown keys and missing keys are reported', async (t) => {
  const values = '# Name override.\nnameOverride: ""\nfullnameOverride: ""\n# A key the schema does not know.\nbogus: 1\n';
  const { problems } = valuesTable(values, schema);
  t.ok(problems.includes('values.yaml: fullnameOverride has no comment'));
  t.ok(problems.includes('values.yaml: bogus is not in values.schema.json'));
  t.ok(problems.includes('values.schema.json: webhook is missing from values.yaml'));
  t.notOk(problems.some((p) => /global|enabled is missing/.test(p)), 'keys Helm adds for subcharts are not required');
  t.throws(() => withTable('no markers', ''), new RegExp(START));
  t.equal(withTable(`a\n${START}\nold\n${END}\nb`, 'new'), `a\n${START}\nnew\n${END}\nb`);
});
