/**
 * No Docker engine runs here, so the image is checked for what can go wrong
 * silently: the Node major matches the pinned one, the entrypoint is the file
 * the build emits, the user is not root, only production dependencies ship,
 * and no certificate or test enters the build context.
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { REPO_ROOT } from './support/webhook.ts';
import { join } from 'node:path';

const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n');
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string>; bin: Record<string, string> };

t.test('the image builds on the Node the tests ran and runs its major', async (t) => {
  const version = pkg.devDependencies['node']!.replace(/^[^\d]*/, '');
  const pinned = version.split('.')[0];
  t.match(dockerfile, new RegExp(`^ARG NODE_MAJOR=${pinned}$`, 'm'));
  t.match(dockerfile, new RegExp(`^ARG NODE_VERSION=${version.replaceAll('.', '\\.')}$`, 'm'), 'the exact version of package.json\'s node');
  t.match(dockerfile, /^FROM node:\$\{NODE_VERSION\}-[a-z]+-slim AS build$/m);
  t.match(dockerfile, /^FROM gcr\.io\/distroless\/nodejs\$\{NODE_MAJOR\}-debian\d+:nonroot$/m);
});

t.test('entrypoint is the built CLI, serve by default', async (t) => {
  const entry = /^ENTRYPOINT \["\/nodejs\/bin\/node", "\/app\/(.+)"\]$/m.exec(dockerfile);
  t.ok(entry, 'exec-form entrypoint');
  t.equal(entry?.[1], pkg.bin['safe-termination'], 'the same file as the npm bin');
  t.ok(existsSync(join(REPO_ROOT, 'src/cli/main.ts')), 'whose source exists');
  t.match(dockerfile, /^CMD \["serve"\]$/m);
  t.match(dockerfile, /RUN npx tsc -p tsconfig\.build\.json/);
});

t.test('non-root, production dependencies only, clean context', async (t) => {
  t.match(dockerfile, /^USER 65532:65532$/m);
  t.match(dockerfile, /npm prune --omit=dev/);
  t.notMatch(dockerfile, /COPY (\. |certs|test)/, 'no whole-tree, certificate or test copy');
  for (const path of ['node_modules', 'certs', 'test', '.git', 'dist']) t.ok(dockerignore.includes(path), `${path} is ignored`);
});

t.test('the conntrack tool for the agent\'s reaper: Debian\'s binary and its libraries, nothing else of that stage', async (t) => {
  t.match(dockerfile, /^FROM debian:trixie-slim AS conntrack$/m, 'the Debian release of the distroless base (debian13)');
  t.match(dockerfile, /apt-get install -y --no-install-recommends conntrack/);
  t.match(dockerfile, /cp \/usr\/sbin\/conntrack \/out\/usr\/sbin\//);
  t.match(dockerfile, /ldd \/usr\/sbin\/conntrack \| awk '\/libnetfilter_conntrack\|libmnl\|libnfnetlink\//);
  t.match(dockerfile, /^COPY --from=conntrack \/out\/ \/$/m);
});
