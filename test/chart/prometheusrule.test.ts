/**
 * The PrometheusRule evaluated by Prometheus itself: the chart is rendered with helm,
 * its rule groups are checked with `promtool check rules` and unit-tested with
 * `promtool test rules` against series shaped like the agent's (and node_exporter's)
 * in test/chart/promtool/*.test.yaml. promtool comes with Debian's `prometheus`
 * package (.ci/run installs it); without it these tests are skipped, saying so.
 *
 * The unit tests compare every annotation of a firing alert, so the rules they run
 * on leave out the long `description` (monitoring.test.ts checks those); the full
 * render goes through `promtool check rules`, which parses every template.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { one, render } from './render.ts';

const UNIT_TESTS = join(import.meta.dirname, 'promtool');

function promtoolMissing(): string | false {
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    return 'promtool not found: install the Debian package prometheus (apt-get install prometheus; .ci/run does) to evaluate the alert rules';
  }
  return false;
}

interface Rule {
  alert?: string;
  annotations?: Record<string, string>;
}

/** Run promtool in a temp dir holding rules.yaml (from these values) and the unit-test file. */
async function promtool(set: readonly string[], unitTest: string, o: { keepDescriptions?: boolean; values?: string } = {}) {
  const objects = await render({ set: ['monitoring.prometheusRule.enabled=true', ...set], ...(o.values === undefined ? {} : { values: o.values }) });
  const groups = structuredClone(one(objects, 'PrometheusRule').spec.groups) as Array<{ rules: Rule[] }>;
  const dir = mkdtempSync(join(tmpdir(), 'st-promtool-'));
  try {
    writeFileSync(join(dir, 'full.yaml'), stringify({ groups }));
    const check = spawnSync('promtool', ['check', 'rules', 'full.yaml'], { cwd: dir, encoding: 'utf8' });
    if (o.keepDescriptions !== true) for (const g of groups) for (const r of g.rules) delete r.annotations?.['description'];
    writeFileSync(join(dir, 'rules.yaml'), stringify({ groups }));
    copyFileSync(join(UNIT_TESTS, unitTest), join(dir, unitTest));
    const test = spawnSync('promtool', ['test', 'rules', unitTest], { cwd: dir, encoding: 'utf8' });
    return {
      alerts: groups.flatMap((g) => g.rules.map((r) => r.alert)).filter((a): a is string => a !== undefined),
      check: { status: check.status, output: `${check.stdout}${check.stderr}` },
      test: { status: test.status, output: `${test.stdout}${test.stderr}` },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const missing = promtoolMissing();
const AGENT = ['monitoring.serviceMonitor.enabled=true'];
const NODE_EXPORTER = ['agent.enabled=false', 'monitoring.prometheusRule.conntrackMetrics=node-exporter'];

t.test('the agent\'s metrics: ConntrackTableNearFull, HighConntrackInsertFailed, ServiceEndpointChurn fire as the write-up says', { skip: missing }, async (t) => {
  const r = await promtool(AGENT, 'agent.test.yaml');
  t.equal(r.check.status, 0, `promtool check rules: ${r.check.output}`);
  t.match(r.check.output, /SUCCESS: \d+ rules found/);
  t.equal(r.test.status, 0, `promtool test rules agent.test.yaml:\n${r.test.output}`);
  t.match(r.test.output, /SUCCESS/);
  for (const a of ['ConntrackTableNearFull', 'HighConntrackInsertFailed', 'ServiceEndpointChurn']) t.ok(r.alerts.includes(a), `${a} is rendered`);
});

t.test('node_exporter\'s metrics (conntrackMetrics: node-exporter), without the agent', { skip: missing }, async (t) => {
  const r = await promtool(NODE_EXPORTER, 'node-exporter.test.yaml');
  t.equal(r.check.status, 0, `promtool check rules: ${r.check.output}`);
  t.equal(r.test.status, 0, `promtool test rules node-exporter.test.yaml:\n${r.test.output}`);
  t.ok(r.alerts.includes('ConntrackTableNearFull') && r.alerts.includes('HighConntrackInsertFailed'));
  t.notOk(r.alerts.includes('ServiceEndpointChurn'), 'the churn count is the agent\'s');
});

t.test('failing open is alerted: no ready webhook (absent), and the API server\'s fail-open count', { skip: missing }, async (t) => {
  const r = await promtool([], 'webhook.test.yaml');
  t.equal(r.check.status, 0, `promtool check rules: ${r.check.output}`);
  t.equal(r.test.status, 0, `promtool test rules webhook.test.yaml:\n${r.test.output}`);
  for (const a of ['SafeTerminationWebhookAbsent', 'SafeTerminationWebhookFailingOpen']) t.ok(r.alerts.includes(a), `${a} is rendered`);
  const slower = await promtool(['monitoring.prometheusRule.webhookAbsentFor=10m'], 'webhook.test.yaml');
  t.not(slower.test.status, 0, 'webhookAbsentFor=10m: the unit test (5m) fails');
});

t.test('the unit tests catch a drifted rule: other thresholds, durations or severities fail them', { skip: missing }, async (t) => {
  for (const [what, set, file] of [
    ['a churn threshold of 30', [...AGENT, 'monitoring.prometheusRule.endpointChurnThreshold=30'], 'agent.test.yaml'],
    ['insert_failed for 10m', [...AGENT, 'monitoring.prometheusRule.insertFailedFor=10m'], 'agent.test.yaml'],
    ['node_exporter\'s job elsewhere', [...NODE_EXPORTER, 'monitoring.prometheusRule.nodeExporterSelector=job="node"'], 'node-exporter.test.yaml'],
  ] as const) {
    const r = await promtool(set, file);
    t.equal(r.check.status, 0, `${what}: still valid rules`);
    t.not(r.test.status, 0, `${what}: promtool test rules fails`);
    t.match(r.test.output, /FAILED/, what);
  }
  const ratio = await promtool(AGENT, 'agent.test.yaml', { values: 'monitoring:\n  prometheusRule:\n    conntrackFullRatio: 0.9\n' });
  t.not(ratio.test.status, 0, 'a table ratio of 0.9: promtool test rules fails');
  const described = await promtool(AGENT, 'agent.test.yaml', { keepDescriptions: true });
  t.not(described.test.status, 0, 'with the descriptions left in, the unit tests (which list summaries only) fail: they compare every annotation');
});
