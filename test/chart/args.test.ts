/**
 * The chart and the code agree: the flags the chart renders are parsed by the
 * server's own parsers (parseServeConfig, parseAgentConfig) into the configuration
 * the values ask for; the chart's defaults are the code's defaults; the schema's
 * choices are the code's choices; the image tag is the package version.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { LOG_LEVELS } from '../../src/shared/logger.ts';
import type { FlagSpec } from '../../src/cli/config.ts';
import { CONNTRACK_FLAGS, MODEL_FLAGS, parseAgentConfig, parseFlags, parseServeConfig, SERVE_FLAGS } from '../../src/cli/config.ts';
import { EXISTING_PRESTOP, PRESTOP_MODES } from '../../src/core/annotations.ts';
import { LINUX_DEFAULTS } from '../../src/core/conntrack.ts';
import { parseDuration } from '../../src/core/duration.ts';
import { INVALID_ANNOTATION_POLICIES, MODEL_DEFAULTS, TCP_SIZINGS } from '../../src/core/model.ts';
import { VERSION } from '../../src/shared/version.ts';
import { REPO_ROOT } from '../../scripts/helm.ts';
import { CHART, ciModes, one, podSpecOf, render, template } from './render.ts';
import type { K8sObject } from './render.ts';

const modes = ciModes();
const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));

/** The container's environment as the kubelet would give it (downward API filled in). */
function envOf(container: any, nodeName = 'node-a.example'): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (typeof e.value === 'string') env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') env[e.name] = nodeName;
  }
  return env;
}

function webhookContainer(objects: K8sObject[]): any {
  return podSpecOf(one(objects, 'Deployment')).containers[0];
}

for (const [mode, file] of modes) {
  t.test(`${mode}: the rendered flags parse with the server's own parsers`, async (t) => {
    const objects = await render({ valuesFiles: [file] });
    const c = webhookContainer(objects);
    t.equal(c.args[0], 'serve', 'the webhook runs `safe-termination serve`');
    t.equal(c.command, undefined, 'the image entrypoint is the safe-termination command');
    const config = parseServeConfig(c.args.slice(1), envOf(c));
    const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
    t.equal(config.port, ports['https'], 'serves TLS on the declared https port');
    t.equal(config.metricsPort, ports['metrics'], 'serves metrics on the declared metrics port');
    const mount = c.volumeMounts.find((m: { name: string }) => m.name === 'tls').mountPath;
    t.equal(config.tlsCertFile, `${mount}/tls.crt`);
    t.equal(config.tlsPrivateKeyFile, `${mount}/tls.key`);

    // Every default of the sizing model and every static conntrack value is a chart value.
    const { given } = parseFlags(SERVE_FLAGS, c.args.slice(1), {});
    const optional = new Set(['shutdownBudget', 'kubernetesVersion', 'conntrackProcDir']);
    for (const name of [...Object.keys(MODEL_FLAGS), ...Object.keys(CONNTRACK_FLAGS)]) {
      if (!optional.has(name)) t.ok(given.has(name as keyof typeof SERVE_FLAGS), `the chart passes --${name.replace(/[A-Z]/g, (x) => `-${x.toLowerCase()}`)}`);
    }

    for (const ds of objects.filter((o) => o.kind === 'DaemonSet')) {
      const a = podSpecOf(ds).containers[0];
      t.equal(a.args[0], 'agent', 'the agent runs `safe-termination agent`');
      const agent = parseAgentConfig(a.args.slice(1), envOf(a));
      t.equal(agent.nodeName, 'node-a.example', 'the node name comes from the downward API');
      t.equal(agent.metricsPort, a.ports.find((p: { name: string }) => p.name === 'metrics').containerPort, 'metrics on the declared port');
      t.equal(agent.staleConntrackIntervalSeconds, mode === 'stale-conntrack' ? 120 : 0, 'the stale-entry count only where the values turn it on');
    }
  });
}

t.test('defaults: the chart runs the code with the code\'s own defaults', async (t) => {
  const c = webhookContainer(await render());
  const config = parseServeConfig(c.args.slice(1), {});
  t.same(config.model, MODEL_DEFAULTS, 'the sizing model defaults');
  t.same(config.staticConntrack, LINUX_DEFAULTS, 'the static conntrack values');
  t.equal(config.kubernetesVersion, undefined, 'the server version is asked, not assumed');
  t.same(config.kubeProxyConfigMap, { namespace: 'kube-system', name: 'kube-proxy' });
  t.equal(config.logLevel, 'info');
  t.equal(config.bindAddress, '0.0.0.0');
  t.equal(config.shutdownDelaySeconds, 5);
  t.equal(config.shutdownTimeoutSeconds, 25);
  t.equal(config.informerSyncTimeoutSeconds, 10);
  t.equal(config.kubeconfig, undefined, 'in a pod: the in-cluster service account');
  const agent = parseAgentConfig(podSpecOf(one(await render(), 'DaemonSet')).containers[0].args.slice(1), { SAFE_TERMINATION_NODE_NAME: 'n1' });
  t.equal(agent.intervalSeconds, 60);
  t.equal(agent.metricsPort, 9812);
  t.equal(agent.conntrackProcDir, '/proc/sys/net/netfilter', 'the node\'s sysctls, through the host network namespace');
  t.equal(agent.staleConntrackIntervalSeconds, 0, 'the stale-entry count is off');
  t.equal(agent.procNetDir, '/proc/net', 'the node\'s /proc/net (its nf_conntrack table when the count is on)');
});

t.test('agent.reap: on by default with its hold, rate and dry run; off says --reap=false (the binary defaults to on)', async (t) => {
  const args = async (set: string[] = []) => podSpecOf(one(await render({ set }), 'DaemonSet')).containers[0].args as string[];
  const dflt = await args();
  t.same(dflt.filter((x) => x.startsWith('--reap')), ['--reap=true', '--reap-hold=5s', '--reap-max-per-second=2000'], 'the default values');
  const on = parseAgentConfig(dflt.slice(1), { SAFE_TERMINATION_NODE_NAME: 'n1' });
  t.same([on.reap, on.reapHoldSeconds, on.reapMaxPerSecond, on.reapDryRun], [true, 5, 2000, false]);
  const tuned = parseAgentConfig((await args(['agent.reap.hold=1m30s', 'agent.reap.maxPerSecond=500', 'agent.reap.dryRun=true'])).slice(1), {});
  t.same([tuned.reap, tuned.reapHoldSeconds, tuned.reapMaxPerSecond, tuned.reapDryRun], [true, 90, 500, true], 'every value reaches the agent');
  const offArgs = await args(['agent.reap.enabled=false', 'agent.reap.dryRun=true']);
  t.same(offArgs.filter((x) => x.startsWith('--reap')), ['--reap=false'], 'off: the flag says so, nothing else');
  t.equal(parseAgentConfig(offArgs.slice(1), {}).reap, false);
  for (const bad of ['agent.reap.maxPerSecond=0', 'agent.reap.hold=1.5s', 'agent.reap.enabled=yes']) {
    t.not((await template({ set: [bad] })).status, 0, `the schema refuses ${bad}`);
  }
});

t.test('agent.conntrackReadTimeout reaches the agent when a whole-table reader is on; the schema refuses a zero duration', async (t) => {
  const args = async (set: string[] = []) => podSpecOf(one(await render({ set }), 'DaemonSet')).containers[0].args as string[];
  const timeoutOf = async (set: string[]) => parseAgentConfig((await args(set)).slice(1), {}).conntrackReadTimeoutSeconds;
  t.same((await args()).filter((x) => x.startsWith('--conntrack-read-timeout')), ['--conntrack-read-timeout=60s'], 'the reaper is on by default');
  t.equal(await timeoutOf(['agent.conntrackReadTimeout=3m']), 180);
  t.equal(await timeoutOf(['agent.reap.enabled=false', 'agent.staleConntrack.enabled=true', 'agent.conntrackReadTimeout=90']), 90, 'the stale count alone');
  t.same((await args(['agent.reap.enabled=false'])).filter((x) => x.startsWith('--conntrack-read-timeout')), [], 'no table reader: no flag');
  for (const bad of ['agent.conntrackReadTimeout=0', 'agent.conntrackReadTimeout=0s', 'agent.conntrackReadTimeout=0m0s', 'agent.interval=0', 'webhook.tlsReloadInterval=0s', 'agent.conntrackReadTimeout=1.5m']) {
    t.not((await template({ set: [bad] })).status, 0, `the schema refuses ${bad}, which the binary would refuse at start`);
  }
  for (const good of ['agent.conntrackReadTimeout=10s', 'agent.conntrackReadTimeout=1m0s', 'agent.interval=1']) {
    t.equal((await template({ set: [good] })).status, 0, `the schema takes ${good}`);
  }
});

t.test('agent.staleConntrack: the interval reaches the agent in both duration forms', async (t) => {
  for (const [interval, seconds] of [['90s', 90], ['5m', 300], [120, 120]] as const) {
    const set = ['agent.staleConntrack.enabled=true', `agent.staleConntrack.interval=${interval}`];
    const a = podSpecOf(one(await render({ set }), 'DaemonSet')).containers[0];
    t.equal(parseAgentConfig(a.args.slice(1), envOf(a)).staleConntrackIntervalSeconds, seconds, String(interval));
  }
  const off = podSpecOf(one(await render({ set: ['agent.staleConntrack.interval=5m'] }), 'DaemonSet')).containers[0];
  t.notOk(off.args.some((x: string) => x.startsWith('--stale-conntrack-interval')), 'an interval alone does not turn it on');
  const bad = await template({ set: ['agent.staleConntrack.interval=1.5m', 'agent.staleConntrack.enabled=true'] });
  t.not(bad.status, 0, 'the schema refuses a duration the agent would refuse');
});

t.test('tuned: every value reaches the server', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('tuned')!] });
  const c = webhookContainer(objects);
  const config = parseServeConfig(c.args.slice(1), envOf(c));
  t.same(config.model, {
    propagationDelaySeconds: 10,
    shutdownBudgetSeconds: 90,
    maxSleepSeconds: 120,
    tcpSizing: 'time-wait',
    udpStreams: true,
    prestopMode: 'exec',
    existingPrestop: 'replace',
    invalidAnnotations: 'ignore',
    injectJobPods: true,
  });
  t.same(config.staticConntrack, { 'udp-timeout': 45, 'udp-timeout-stream': 180, 'tcp-timeout-time-wait': 60, 'tcp-timeout-close-wait': 30, 'tcp-timeout-established': 86400000 });
  t.same(config.kubernetesVersion, { major: 1, minor: 29 });
  t.equal(config.kubeProxyConfigMap, undefined, 'kubeProxyConfigMap: none');
  t.equal(config.kubeProxyIntervalSeconds, 120);
  t.equal(config.port, 10260);
  t.equal(config.metricsPort, 10261);
  t.equal(config.bindAddress, '::');
  t.equal(config.logLevel, 'debug');
  t.equal(config.shutdownDelaySeconds, 0);
  t.equal(config.informerSyncTimeoutSeconds, 30);
  t.equal(config.tlsReloadIntervalSeconds, 30, 'extraArgs come last and win');
  const a = podSpecOf(one(objects, 'DaemonSet')).containers[0];
  const agent = parseAgentConfig(a.args.slice(1), envOf(a));
  t.equal(agent.intervalSeconds, 90, 'extraArgs come last and win');
  t.equal(agent.metricsPort, 19812);
  t.equal(agent.bindAddress, '::');
  t.equal(agent.logLevel, 'warn');
});

t.test('a flag the server does not know fails the parse (the check above can fail)', async (t) => {
  const c = webhookContainer(await render({ set: ['webhook.extraArgs={--no-such-flag=1}'] }));
  t.throws(() => parseServeConfig(c.args.slice(1), {}), /unknown flag --no-such-flag/);
});

t.test('the schema offers exactly the code\'s choices', async (t) => {
  const p = schema.properties;
  t.same(p.sizing.properties.tcp.enum, [...TCP_SIZINGS]);
  t.same(p.prestopMode.enum, [...PRESTOP_MODES]);
  t.same(p.existingPrestop.enum, [...EXISTING_PRESTOP]);
  t.same(p.invalidAnnotations.enum, [...INVALID_ANNOTATION_POLICIES]);
  t.same(schema.definitions.logLevel.enum, [...LOG_LEVELS]);
});

t.test('the schema\'s duration form is the server\'s duration form', async (t) => {
  const pattern = new RegExp(schema.definitions.duration.oneOf[1].pattern);
  const samples = ['0', '35', '35s', '2m', '1m30s', '1h', '1h30s', '1h2m3s', '', '1.5s', '-1s', '1s1m', '5x', '1d', 's', 'm30s', '1hh', '300s', '1h60m'];
  for (const s of samples) t.equal(pattern.test(s), parseDuration(s) !== undefined, JSON.stringify(s));
  fc.assert(
    fc.property(fc.stringMatching(/^[0-9hms]{0,8}$/), (s) => pattern.test(s) === (parseDuration(s) !== undefined)),
    { numRuns: 2000 },
  );
});

t.test('versions: appVersion and the image tag are the package version', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const chart = parse(readFileSync(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string; version: string };
  t.equal(chart.appVersion, pkg.version, 'Chart.yaml appVersion = package.json version');
  t.equal(VERSION, pkg.version, 'src/shared/version.ts = package.json version');
  const objects = await render();
  for (const kind of ['Deployment', 'DaemonSet']) {
    t.equal(podSpecOf(one(objects, kind)).containers[0].image, `ghcr.io/safe-termination/safe-termination:${pkg.version}`, `${kind} image tag defaults to the package version`);
  }
  const pinned = await render({ set: ['image.tag=0.2.0-rc.1'] });
  t.equal(podSpecOf(one(pinned, 'Deployment')).containers[0].image, 'ghcr.io/safe-termination/safe-termination:0.2.0-rc.1');
});

/** The value at a dotted path of values.yaml, and the schema node for it. */
function at(root: any, path: string): any {
  return path.split('.').reduce((node, key) => node?.[key], root);
}
function schemaAt(path: string): any {
  return path.split('.').reduce((node, key) => node?.properties?.[key], schema);
}

/** A chart value (as YAML would type it) that its flag reads as something other than the default. */
function sampleFor(spec: FlagSpec<unknown>): { value: unknown; parsed: unknown } {
  const candidates = ['4242', '77s', '1.27', 'true', 'false', ...TCP_SIZINGS, ...PRESTOP_MODES, ...EXISTING_PRESTOP, ...INVALID_ANNOTATION_POLICIES];
  for (const text of candidates) {
    const parsed = spec.parse(text);
    if (parsed === undefined || JSON.stringify(parsed) === JSON.stringify(spec.default)) continue;
    const value = text === 'true' || text === 'false' ? text === 'true' : /^\d+$/.test(text) ? Number(text) : text;
    return { value, parsed };
  }
  throw new Error(`no sample for ${spec.description}`);
}

t.test('every flag with a chart value: values.yaml and the schema have it, with the flag\'s default, and the chart passes it to that flag', async (t) => {
  const values = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8'));
  const charted = Object.entries(SERVE_FLAGS as Readonly<Record<string, FlagSpec<unknown>>>).filter(([, spec]) => spec.chart !== undefined);
  t.same(
    [...Object.keys(MODEL_FLAGS), ...Object.keys(CONNTRACK_FLAGS)].filter((name) => !charted.some(([n]) => n === name)),
    ['conntrackProcDir'],
    'every model flag and static conntrack value has a chart value',
  );
  const tuned: Record<string, unknown> = {};
  const expected: Record<string, unknown> = {};
  for (const [name, spec] of charted) {
    const path = spec.chart!;
    t.ok(schemaAt(path), `values.schema.json has ${path}`);
    const dflt = at(values, path);
    t.not(dflt, undefined, `values.yaml has ${path}`);
    t.same(dflt === '' ? undefined : spec.parse(String(dflt)), spec.default, `${path} defaults to the default of --${name.replace(/[A-Z]/g, (x) => `-${x.toLowerCase()}`)}`);
    const sample = sampleFor(spec);
    const keys = path.split('.');
    let node = tuned;
    for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
    node[keys[keys.length - 1]!] = sample.value;
    expected[name] = sample.parsed;
  }
  const c = webhookContainer(await render({ values: stringify(tuned) }));
  const { values: flags } = parseFlags(SERVE_FLAGS, c.args.slice(1), {});
  for (const [name, value] of Object.entries(expected)) t.same((flags as Record<string, unknown>)[name], value, `a changed ${charted.find(([n]) => n === name)![1].chart} reaches --${name.replace(/[A-Z]/g, (x) => `-${x.toLowerCase()}`)}`);
});
