/**
 * values.schema.json: every bad values file in bad-values/ is rejected by `helm
 * template` and `helm lint --strict`, with an error naming the key and what is
 * wrong (the `# expect:` line of the file); good values in every form pass.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runHelmAsync } from '../../scripts/helm.ts';
import { CHART, ciModes, render, template } from './render.ts';

const BAD = join(import.meta.dirname, 'bad-values');
const files = readdirSync(BAD).filter((f) => f.endsWith('.yaml')).sort();

t.test('bad values files exist', async (t) => {
  t.ok(files.length >= 15, `${files.length} bad values files`);
});

for (const f of files) {
  t.test(`rejected: ${f}`, async (t) => {
    const path = join(BAD, f);
    const expect = /^# expect: (.+)$/m.exec(readFileSync(path, 'utf8'))?.[1];
    if (expect === undefined) throw new Error(`${f} has no "# expect:" line`);
    const [r, lint] = await Promise.all([template({ valuesFiles: [path] }), runHelmAsync(['lint', '--strict', CHART, '--values', path])]);
    t.not(r.status, 0, 'helm template fails');
    t.equal(r.stdout, '', 'and renders nothing');
    t.match(r.stderr, /values don't meet the specifications of the schema/, 'because of the schema');
    t.match(r.stderr, new RegExp(expect), 'naming the key and the problem');
    t.not(lint.status, 0, 'helm lint --strict fails too');
  });
}

t.test('accepted: every ci values file, and values in their other forms', async (t) => {
  for (const [mode, file] of ciModes()) {
    const r = await template({ valuesFiles: [file] });
    t.equal(r.status, 0, `${mode}: ${r.stderr.trim()}`);
  }
  const forms = [
    'sizing:\n  propagationDelay: 0\n  maxSleep: 1h\n  shutdownBudget: 45\n',
    'webhook:\n  podDisruptionBudget:\n    minAvailable: 50%\n',
    'webhook:\n  podDisruptionBudget:\n    maxUnavailable: 1\n',
    'kubernetesVersion: v1.31.2\n',
    'kubernetesVersion: 1.30.4-eks-a737599\n',
    '# Values a parent chart adds when this chart is its dependency.\nglobal:\n  imageRegistry: mirror.example.com\nenabled: true\n',
  ];
  for (const values of forms) {
    const r = await template({ values });
    t.equal(r.status, 0, `${values.trim()}: ${r.stderr.trim()}`);
  }
  t.ok((await render({ values: 'kubernetesVersion: "1.29"\n' })).length > 0);
});
