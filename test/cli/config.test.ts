import t from 'tap';
import { flagEnvName, parseFlags, parseServeConfig, SERVE_FLAGS } from '../../src/cli/config.ts';
import { UsageError } from '../../src/shared/errors.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';

const TLS = ['--tls-cert-file', '/c.crt', '--tls-private-key-file', '/c.key'];

t.test('defaults', async (t) => {
  const c = parseServeConfig(TLS, {});
  t.equal(c.port, 8443);
  t.equal(c.metricsPort, 9090);
  t.equal(c.logLevel, 'info');
  t.same(c.model, MODEL_DEFAULTS);
  t.equal(c.kubernetesVersion, undefined);
  t.same(c.staticConntrack, { 'udp-timeout': 30, 'udp-timeout-stream': 120, 'tcp-timeout-time-wait': 120, 'tcp-timeout-close-wait': 60, 'tcp-timeout-established': 432000 });
  t.ok(Object.isFrozen(c));
});

t.test('flags, --flag=value, and environment variables; flags win', async (t) => {
  const c = parseServeConfig(
    [...TLS, '--port=9443', '--propagation-delay', '10s', '--max-sleep', '2m', '--tcp-sizing', 'time-wait', '--udp-streams', '--kubernetes-version', 'v1.29.3', '--static-udp-timeout', '45'],
    { SAFE_TERMINATION_PORT: '7443', SAFE_TERMINATION_SHUTDOWN_BUDGET: '20', SAFE_TERMINATION_INVALID_ANNOTATIONS: 'ignore', SAFE_TERMINATION_INJECT_JOB_PODS: 'true' },
  );
  t.equal(c.port, 9443);
  t.equal(c.model.propagationDelaySeconds, 10);
  t.equal(c.model.maxSleepSeconds, 120);
  t.equal(c.model.tcpSizing, 'time-wait');
  t.equal(c.model.udpStreams, true);
  t.equal(c.model.shutdownBudgetSeconds, 20);
  t.equal(c.model.invalidAnnotations, 'ignore');
  t.equal(c.model.injectJobPods, true);
  t.same(c.kubernetesVersion, { major: 1, minor: 29 });
  t.equal(c.staticConntrack['udp-timeout'], 45);
  const fromEnv = parseServeConfig([], { SAFE_TERMINATION_TLS_CERT_FILE: '/a', SAFE_TERMINATION_TLS_PRIVATE_KEY_FILE: '/b' });
  t.equal(fromEnv.tlsCertFile, '/a');
});

t.test('errors name the flag or variable, the value and the accepted form', async (t) => {
  const fails = (argv: string[], env: Record<string, string>, pattern: RegExp) => {
    t.throws(() => parseServeConfig(argv, env), pattern, argv.join(' ') + JSON.stringify(env));
    try {
      parseServeConfig(argv, env);
    } catch (e) {
      t.type(e, UsageError);
    }
  };
  fails([...TLS, '--port', '99999'], {}, /--port: invalid value "99999"; expected a port number from 0 to 65535/);
  fails([...TLS, '--port', 'https'], {}, /--port: invalid value "https"/);
  fails(TLS, { SAFE_TERMINATION_MAX_SLEEP: '5 minutes' }, /SAFE_TERMINATION_MAX_SLEEP: invalid value "5 minutes"; expected whole seconds/);
  fails([...TLS, '--tcp-sizing', 'fin-wait'], {}, /--tcp-sizing: invalid value "fin-wait"; expected one of none, time-wait, close-wait/);
  fails([...TLS, '--kubernetes-version', 'latest'], {}, /--kubernetes-version: .*1\.29/);
  fails([...TLS, '--udp-streams=yes'], {}, /--udp-streams: invalid value "yes"; expected true or false/);
  fails(TLS, { SAFE_TERMINATION_UDP_STREAMS: '1' }, /SAFE_TERMINATION_UDP_STREAMS: invalid value "1"/);
  fails([...TLS, '--max-slep', '5'], {}, /unknown flag --max-slep; did you mean --max-sleep\?/);
  fails(['--tls-cert-file', '/a'], {}, /--tls-private-key-file is required \(or SAFE_TERMINATION_TLS_PRIVATE_KEY_FILE\)/);
  fails([...TLS, '--metrics-port', '8443'], {}, /--port and --metrics-port are both 8443/);
  fails([...TLS, '--log-level'], {}, /--log-level needs a value/);
  fails([...TLS, 'extra'], {}, /serve takes no arguments/);
  fails([...TLS, '--bind-address', 'localhost:8443'], {}, /--bind-address: invalid value "localhost:8443"; expected an IP address/);
  t.equal(parseServeConfig([...TLS, '--bind-address', '::'], {}).bindAddress, '::');
});

t.test('every flag has a matching environment variable', async (t) => {
  for (const name of Object.keys(SERVE_FLAGS)) t.match(flagEnvName(name), /^SAFE_TERMINATION_[A-Z0-9_]+$/);
  t.equal(flagEnvName('tlsPrivateKeyFile'), 'SAFE_TERMINATION_TLS_PRIVATE_KEY_FILE');
  const p = parseFlags(SERVE_FLAGS, ['--udp-streams', 'false'], {});
  t.equal(p.values.udpStreams, false);
  t.ok(p.given.has('udpStreams'));
});
