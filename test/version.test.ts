import t from 'tap';
import { readFileSync } from 'node:fs';
import { MIN_NODE_VERSION, olderThan, RECORD_AUTHOR, VERSION } from '../src/shared/version.ts';

t.test('the version in code is the package version', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  t.equal(VERSION, pkg.version);
  t.equal(RECORD_AUTHOR, `safe-termination/${pkg.version}`);
});

t.test('the oldest Node the CLI accepts is the one package.json promises', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };
  t.equal(pkg.engines.node, `>=${MIN_NODE_VERSION}`);
  t.ok(olderThan('20.19.5', MIN_NODE_VERSION));
  t.ok(olderThan('22.18.9', MIN_NODE_VERSION));
  t.notOk(olderThan('22.19.0', MIN_NODE_VERSION));
  t.notOk(olderThan('22.20.0', MIN_NODE_VERSION));
  t.notOk(olderThan('26.10.0', MIN_NODE_VERSION));
  t.notOk(olderThan(process.versions.node, MIN_NODE_VERSION), 'the pinned Node is new enough');
});
