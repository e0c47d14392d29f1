/** `safe-termination serve` as a user runs it: help, errors with exit codes, SIGTERM. */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { makeCerts, REPO_ROOT } from '../support/webhook.ts';

const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [join(REPO_ROOT, 'src/cli/main.ts'), ...args], { encoding: 'utf8', timeout: 15_000, env: { PATH: process.env['PATH'] ?? '', ...env } });

t.test('--help lists every flag with its environment variable and default', async (t) => {
  const r = run(['serve', '--help']);
  t.equal(r.status, 0);
  for (const flag of ['--port', '--metrics-port', '--tls-cert-file', '--tls-private-key-file', '--log-level', '--propagation-delay', '--max-sleep', '--shutdown-budget', '--tcp-sizing', '--prestop-mode', '--invalid-annotations', '--static-udp-timeout']) {
    t.match(r.stdout, flag);
  }
  t.match(r.stdout, /--port {2}\(SAFE_TERMINATION_PORT, default 8443\)/);
  t.match(r.stdout, /--propagation-delay {2}\(SAFE_TERMINATION_PROPAGATION_DELAY, default 5s\)/);
});

t.test('usage errors exit 2 naming the flag; runtime errors exit 1', async (t) => {
  const bad = run(['serve', '--port', 'x', '--tls-cert-file', 'a', '--tls-private-key-file', 'b']);
  t.equal(bad.status, 2);
  t.match(bad.stderr, /safe-termination serve: --port: invalid value "x"; expected a port number/);
  const env = run(['serve'], { SAFE_TERMINATION_TLS_CERT_FILE: 'a', SAFE_TERMINATION_TLS_PRIVATE_KEY_FILE: 'b', SAFE_TERMINATION_LOG_LEVEL: 'loud' });
  t.equal(env.status, 2);
  t.match(env.stderr, /SAFE_TERMINATION_LOG_LEVEL: invalid value "loud"; expected one of trace, debug, info/);
  const missing = run(['serve', '--tls-cert-file', '/nonexistent/tls.crt', '--tls-private-key-file', '/nonexistent/tls.key', '--port', '0', '--metrics-port', '0']);
  t.equal(missing.status, 1);
  t.match(missing.stderr, /cannot read --tls-cert-file \/nonexistent\/tls\.crt: ENOENT.*; cannot read --tls-private-key-file \/nonexistent\/tls\.key: ENOENT/, 'both unreadable files are named, the certificate first');
  const unknown = run(['frobnicate']);
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"/);
  const none = run([]);
  t.equal(none.status, 2);
  t.match(none.stdout, /Usage: safe-termination <command>/);
  t.equal(run(['version']).stdout.trim(), '0.1.0');
  t.equal(run(['version', 'extra']).status, 2);
});

t.test('every command answers --help with its usage, exit 0', async (t) => {
  for (const command of ['serve', 'agent', 'inject', 'explain', 'diagnose', 'version']) {
    const r = run([command, '--help']);
    t.equal(r.status, 0, `${command} --help exits 0`);
    t.match(r.stdout, new RegExp(`^Usage: safe-termination ${command}\\b`), `${command} --help shows its usage`);
  }
});

t.test('SIGTERM with the API server hanging on the node watch: exit 0 within seconds', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('n1')]);
  // The list answers; every watch is held before its response headers, which client-node cannot abort.
  const hang = api.fault({ kind: 'hang' }, { watch: true });
  t.teardown(() => hang.remove());
  const certs = makeCerts();
  t.teardown(() => certs.remove());
  const args = ['serve', '--kubeconfig', api.writeKubeconfig(), '--tls-cert-file', certs.certFile, '--tls-private-key-file', certs.keyFile];
  const child = spawn(process.execPath, [join(REPO_ROOT, 'src/cli/main.ts'), ...args, '--port', '0', '--metrics-port', '0', '--shutdown-delay', '0'], {
    env: { PATH: process.env['PATH'] ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await waitUntil(() => out.includes('"msg":"node informer synced"'), 'the informer synced', 30_000);
  await waitUntil(() => api.requests.some((r) => r.query['watch'] === 'true'), 'a watch is held', 10_000);
  const sent = Date.now();
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 15_000))]);
  t.equal(code, 0, `exit 0 (after ${Date.now() - sent} ms)`);
  t.ok(Date.now() - sent < 15_000, 'the held watch does not keep the process alive');
  t.match(out, /"msg":"webhook stopped"/, 'the last log line is flushed');
});
