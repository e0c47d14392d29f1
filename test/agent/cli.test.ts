/** `safe-termination agent` as a user runs it: help, flags, errors with exit codes, SIGTERM. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runAgent } from '../../src/cli/agent.ts';
import { resolveClusterAccess } from '../../src/cluster/kubeconfig.ts';
import { AGENT_FLAGS, camelToKebab, parseAgentConfig } from '../../src/cli/config.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { REPO_ROOT } from '../support/webhook.ts';

// Spawns node processes that load the Kubernetes client: slow on a loaded 2-core machine.
t.setTimeout(60_000);

const MAIN = join(REPO_ROOT, 'src/cli/main.ts');
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env['PATH'] ?? '', ...env } });

t.test('--help lists every flag with its environment variable', async (t) => {
  const r = run(['agent', '--help']);
  t.equal(r.status, 0);
  t.match(r.stdout, /^Usage: safe-termination agent/);
  for (const name of Object.keys(AGENT_FLAGS)) t.match(r.stdout, `--${camelToKebab(name)}`);
  t.match(r.stdout, /--interval {2}\(SAFE_TERMINATION_INTERVAL, default/);
  t.match(run(['--help']).stdout, /^ {2}agent {5}/m, 'listed in the main usage');
});

t.test('parseAgentConfig: flags, environment, NODE_NAME, errors naming the flag', async (t) => {
  const c = parseAgentConfig(['--interval', '2m', '--metrics-port', '9999'], { NODE_NAME: 'ip-10-0-1-23.ec2.internal' });
  t.equal(c.intervalSeconds, 120);
  t.equal(c.metricsPort, 9999);
  t.equal(c.nodeName, 'ip-10-0-1-23.ec2.internal');
  t.equal(parseAgentConfig(['--node-name', 'a'], { NODE_NAME: 'b' }).nodeName, 'a', 'the flag wins');
  t.equal(parseAgentConfig([], { SAFE_TERMINATION_NODE_NAME: 'c', NODE_NAME: 'b' }).nodeName, 'c');
  t.equal(parseAgentConfig([], {}).nodeName, undefined);
  t.throws(() => parseAgentConfig(['--interval', '0'], {}), /--interval: invalid value "0"; expected at least 1s/);
  t.throws(() => parseAgentConfig([], { NODE_NAME: 'Bad_Name' }), /NODE_NAME: invalid value "Bad_Name"/);
  t.throws(() => parseAgentConfig(['extra'], {}), /agent takes no arguments/);
});

t.test('usage errors exit 2', async (t) => {
  const bad = run(['agent', '--interval', 'soon']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /safe-termination agent: --interval: invalid value "soon"/);
  t.throws(() => resolveClusterAccess({ kubeconfig: '/nonexistent/kubeconfig', env: {} }), /--kubeconfig: cannot load "\/nonexistent\/kubeconfig": ENOENT/);
  const dir = mkdtempSync(join(tmpdir(), 'st-agent-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kc = join(dir, 'kubeconfig');
  writeFileSync(kc, 'apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: "https://127.0.0.1:1"}\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n');
  const saved = process.env['NODE_NAME'];
  delete process.env['NODE_NAME'];
  t.teardown(() => {
    if (saved !== undefined) process.env['NODE_NAME'] = saved;
  });
  await t.rejects(runAgent(['--kubeconfig', kc]), { name: 'UsageError', message: /--node-name \(or NODE_NAME\) is required/ });
});

t.test('the command publishes, then stops cleanly on SIGTERM', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('n1')]);
  const dir = mkdtempSync(join(tmpdir(), 'st-agent-proc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nf_conntrack_udp_timeout'), '31\n');
  const child = spawn(
    process.execPath,
    [MAIN, 'agent', '--kubeconfig', api.writeKubeconfig(), '--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', dir, '--proc-net-dir', dir],
    { env: { PATH: process.env['PATH'] ?? '', NODE_NAME: 'n1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await waitUntil(() => api.node('n1')!['metadata']['annotations']['conntrack.safe-termination.io/udp-timeout'] === '31', 'published', 20_000);
  await waitUntil(() => out.includes('"msg":"agent serving /healthz and /metrics"'), 'the start-up log line');
  t.match(out, /"msg":"some conntrack sysctls are missing; publishing the others"/);
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit 0 on SIGTERM');
  t.match(out, /"msg":"agent stopped"/);
});
