/** The README matches the code: generated flag tables are fresh, every public name is documented, the sample answer is real. */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { render } from '../scripts/docs.ts';
import { Annotation } from '../src/core/names.ts';
import { CONNTRACK_KEYS } from '../src/core/conntrack.ts';
import { SKIP_REASONS } from '../src/core/plan.ts';
import { ERRORS } from '../src/shared/errors.ts';
import { startTestWebhook } from './support/webhook.ts';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('flag tables are generated from the flag definitions (npm run docs)', async (t) => {
  t.equal(render(readme), readme, 'README generated tables are stale: run `npm run docs`');
});

t.test('the README lists every error code with its statuses, and no other', async (t) => {
  const list = /<!-- error-codes:start -->([\s\S]*?)<!-- error-codes:end -->/.exec(readme)?.[1] ?? '';
  const rows = [...list.matchAll(/^\| `([A-Z_]+)` \| (\d*) \| (\d*) \|/gm)].map((m) => [m[1], m[2], m[3]]);
  t.same(
    rows,
    Object.entries(ERRORS).map(([code, spec]) => [code, 'status' in spec ? String(spec.status) : '', 'exit' in spec ? String(spec.exit) : '']),
  );
  for (const [code, spec] of Object.entries(ERRORS)) t.ok('status' in spec || 'exit' in spec, `${code} is an HTTP or a command error`);
});

t.test('every annotation, conntrack key and skip reason is documented', async (t) => {
  for (const key of Object.values(Annotation)) t.match(readme, `\`${key}\``);
  for (const key of CONNTRACK_KEYS) t.match(readme, `\`${key}\``);
  for (const reason of SKIP_REASONS) t.match(readme, `\`${reason}\``);
});

t.test('the quick start names the commands that exist', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  t.match(readme, /npm ci && npm start/);
  t.match(readme, /npm test/);
  t.ok(pkg.scripts['start'] && pkg.scripts['test']);
  t.match(readme, /examples\/review-coredns\.json/);
});

t.test('the README\'s sample answer is what the webhook answers for examples/review-coredns.json', async (t) => {
  // This machine's /proc as the README's: nf_conntrack_udp_timeout 30, nothing else.
  const proc = mkdtempSync(join(tmpdir(), 'st-docs-proc-'));
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  writeFileSync(join(proc, 'nf_conntrack_udp_timeout'), '30\n');
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', proc] });
  t.teardown(() => w.close());
  const answer = (await w.post(readFileSync(new URL('../examples/review-coredns.json', import.meta.url)))).json<{ response: { allowed: boolean; patch: string } }>();
  t.equal(answer.response.allowed, true);
  const shown = /The answer is allowed, with a base64 JSONPatch that decodes to:\n\n```json\n([\s\S]*?)\n```/.exec(readme)?.[1];
  t.ok(shown, 'the README shows the decoded patch');
  t.same(JSON.parse(Buffer.from(answer.response.patch, 'base64').toString('utf8')), JSON.parse(shown ?? 'null'));
});
