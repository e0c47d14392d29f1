/**
 * The Kubernetes client costs a second of start-up: `serve` outside a cluster and
 * the offline CLI without --kubeconfig never load it; the facts wiring loads it
 * only once a cluster is chosen.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { startFakeApiServer } from '../support/fake-apiserver.ts';

const SRC = new URL('../../src/', import.meta.url);

/** Run `body` in a fresh process; returns the modules that imported client-node. */
function importersOfClient(body: string): string[] {
  const script = `
    import { registerHooks } from 'node:module';
    const seen = new Set();
    registerHooks({ resolve(spec, ctx, next) { if (spec.startsWith('@kubernetes/client-node')) seen.add(ctx.parentURL.replace(${JSON.stringify(SRC.href)}, '')); return next(spec, ctx); } });
    ${body}
    process.stdout.write(JSON.stringify([...seen]));
    process.exit(0);
  `;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '' } })) as string[];
}

const src = (file: string) => JSON.stringify(pathToFileURL(join(SRC.pathname, file)).href);
const WIRE = (kubeconfig: string | undefined) => `
  const { selectFactsWiring } = await import(${src('cluster/facts.ts')});
  const { createLogger } = await import(${src('shared/logger.ts')});
  const { LINUX_DEFAULTS } = await import(${src('core/conntrack.ts')});
  const w = await selectFactsWiring({})({ kubeconfig: ${JSON.stringify(kubeconfig)}, conntrackProcDir: '/nonexistent', staticConntrack: LINUX_DEFAULTS,
    kubernetesVersion: { major: 1, minor: 31 }, kubeProxyConfigMap: undefined, kubeProxyIntervalSeconds: 60, informerSyncTimeoutSeconds: 1 }, createLogger('silent'));
  await w.stop();
`;

t.test('loading serve, inject, explain and the facts wiring loads no client', async (t) => {
  const files = ['cli/serve.ts', 'cli/inject.ts', 'cli/explain.ts', 'cluster/facts.ts', 'manifest/facts.ts', 'server/serve.ts'];
  t.same(importersOfClient(files.map((f) => `await import(${src(f)});`).join('\n')), []);
});

t.test('facts outside a cluster load no client; a cluster loads it', async (t) => {
  t.same(importersOfClient(WIRE(undefined)), [], 'neither --kubeconfig nor a pod');
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  const dir = mkdtempSync(join(tmpdir(), 'st-lazy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.ok(importersOfClient(WIRE(api.writeKubeconfig())).includes('cluster/kubeconfig.ts'), '--kubeconfig');
});
