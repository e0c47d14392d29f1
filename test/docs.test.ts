/** The README matches the code: generated flag tables are fresh, every public name is documented. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { render } from '../scripts/docs.ts';
import { Annotation } from '../src/core/names.ts';
import { CONNTRACK_KEYS } from '../src/core/conntrack.ts';
import { SKIP_REASONS } from '../src/core/plan.ts';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('flag tables are generated from the flag definitions (npm run docs)', async (t) => {
  t.equal(render(readme), readme, 'README flag tables are stale: run `npm run docs`');
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
