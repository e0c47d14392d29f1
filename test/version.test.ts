import t from 'tap';
import { readFileSync } from 'node:fs';
import { VERSION, RECORD_AUTHOR } from '../src/shared/version.ts';

t.test('the version in code is the package version', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  t.equal(VERSION, pkg.version);
  t.equal(RECORD_AUTHOR, `safe-termination/${pkg.version}`);
});
