/** `safe-termination serve` as a user runs it: help, and errors with exit codes. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../support/webhook.ts';

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
  t.match(missing.stderr, /cannot read --tls-cert-file \/nonexistent\/tls\.crt: ENOENT/);
  const unknown = run(['frobnicate']);
  t.equal(unknown.status, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"/);
  const none = run([]);
  t.equal(none.status, 2);
  t.match(none.stdout, /Usage: safe-termination <command>/);
  t.equal(run(['version']).stdout.trim(), '0.1.0');
});
