/**
 * The Grafana dashboard (charts/safe-termination/dashboards/safe-termination.json):
 * it imports cleanly (schema version, unique panel ids, the `datasource` variable on
 * every panel and query), every query parses as PromQL (`promtool check rules` on the
 * queries wrapped as recording rules, Grafana's variables substituted) and reads only
 * metrics that a running webhook and a running agent export on /metrics, and the chart
 * ships it as a ConfigMap for Grafana's sidecar.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { KubeConfig } from '@kubernetes/client-node';
import { startAgent } from '../../src/agent/agent.ts';
import { parseAgentConfig } from '../../src/cli/config.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeNode, startFakeApiServer } from '../support/fake-apiserver.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';
import { CHART, ciModes, NAMESPACE, ofKind, one, render } from './render.ts';

const DASHBOARD_FILE = join(CHART, 'dashboards/safe-termination.json');

interface Target {
  expr: string;
  refId: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query: unknown;
  datasource?: { uid?: string };
}
interface Dashboard {
  schemaVersion: number;
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
const allPanels = (panels: readonly Panel[]): Panel[] => panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
const queryPanels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');
const queries = queryPanels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p, target })));

/** Grafana's variables as a query sees them once substituted (multi-value `$node` is a regex). */
export function substituteVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '5m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '1h')
    .replaceAll('${node}', '.*')
    .replaceAll('$node', '.*');
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression reads (not functions, labels, keywords or numbers). */
export function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings (label values)
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // grouping labels
    .replace(/\[[^\]]*\]/g, ' '); // ranges
  const names = new Set<string>();
  for (const m of bare.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?/g)) {
    if (m[2] !== undefined) continue; // a function call
    if (PROMQL_WORDS.has(m[1]!.toLowerCase())) continue;
    names.add(m[1]!);
  }
  return [...names];
}

/** Every series name a /metrics text declares (histograms: _bucket, _sum, _count). */
export function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [name, type] = [m[1]!, m[2]!];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${name}${s}`);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(`${name}${s}`);
  }
  return names;
}

function promtoolMissing(): string | false {
  const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) return 'promtool not found: install the Debian package prometheus to parse the dashboard\'s queries';
  return false;
}

t.test('the JSON imports cleanly: schema version, unique ids, layout, the datasource variable everywhere', async (t) => {
  t.ok(Number.isInteger(dashboard.schemaVersion) && dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion} (Grafana 9+)`);
  t.equal(dashboard.uid, 'safe-termination');
  t.ok(dashboard.title);
  const ids = allPanels(dashboard.panels).map((p) => p.id);
  t.ok(ids.every((id) => Number.isInteger(id) && id > 0), 'every panel has a numeric id');
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of allPanels(dashboard.panels)) {
    t.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: inside the 24-column grid`);
  }
  const ds = dashboard.templating.list.find((v) => v.name === 'datasource');
  t.ok(ds, 'a datasource variable');
  t.equal(ds?.type, 'datasource');
  t.equal(ds?.query, 'prometheus', 'it lists Prometheus data sources');
  t.ok(queryPanels.length >= 12, `${queryPanels.length} panels`);
  for (const p of queryPanels) {
    t.equal(p.datasource?.uid, '${datasource}', `${p.title}: the panel uses the datasource variable`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has a query`);
    const refIds = (p.targets ?? []).map((q) => q.refId);
    t.equal(new Set(refIds).size, refIds.length, `${p.title}: unique refIds`);
    for (const q of p.targets ?? []) t.equal(q.datasource?.uid, '${datasource}', `${p.title} ${q.refId}: the query uses the datasource variable`);
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) t.equal(v.datasource?.uid, '${datasource}', `variable ${v.name} queries the chosen data source`);
  const text = readFileSync(DASHBOARD_FILE, 'utf8');
  t.notMatch(text, /\$\{DS_[A-Z_]+\}|"__inputs"/, 'no import-time inputs: the sidecar loads it as is');
});

t.test('every query parses as PromQL (promtool check rules)', { skip: promtoolMissing() }, async (t) => {
  const rules = queries.map(({ panel, target }) => ({ record: `dashboard:panel_${panel.id}_${target.refId}`, expr: substituteVariables(target.expr) }));
  for (const r of rules) t.notMatch(r.expr, /\$/, `${r.record}: every Grafana variable substituted`);
  const dir = mkdtempSync(join(tmpdir(), 'st-dashboard-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: [{ name: 'dashboard', rules }] }));
  const check = spawnSync('promtool', ['check', 'rules', 'rules.yaml'], { cwd: dir, encoding: 'utf8' });
  t.equal(check.status, 0, `promtool check rules:\n${check.stdout}${check.stderr}`);
  t.match(check.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

t.test('every query reads only metrics the running webhook and agent export', async (t) => {
  const hook = await startTestWebhook();
  t.teardown(() => hook.close());
  const answer = await hook.post(reviewOf(defaultedPod()));
  t.equal(answer.status, 200);
  t.equal(answer.json<{ response: { patchType?: string } }>().response.patchType, 'JSONPatch', 'the review was injected');
  const webhookText = await (await fetch(hook.metricsUrl)).text();
  t.match(webhookText, /^safe_termination_injected_sleep_seconds_count 1$/m, 'the sleep handed out is observed');
  t.match(webhookText, /^safe_termination_injected_grace_seconds_count 1$/m, 'the grace handed out is observed');

  const proc = mkdtempSync(join(tmpdir(), 'st-dashboard-proc-'));
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  const config = parseAgentConfig(
    ['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', proc, '--proc-net-dir', proc, '--stale-conntrack-interval', '60s', '--endpoint-changes'],
    {},
  );
  // A cluster (the fake API server) so that the reaper, on by default, runs and exports its series.
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('worker-1')]);
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(api.kubeconfig());
  const access = { kind: 'kubeconfig', kubeConfig, server: api.url, path: 'fake' } as const;
  const agent = await startAgent({ ...config, nodeName: 'worker-1' }, createLogger('silent'), access, { intervalMs: 60_000 });
  t.teardown(() => agent.stop());
  t.ok(agent.reaper !== undefined, 'the reaper runs');
  const agentText = await (await fetch(`http://127.0.0.1:${agent.port}/metrics`)).text();

  const exported = new Set([...exportedNames(webhookText), ...exportedNames(agentText)]);
  t.ok(exported.has('safe_termination_admissions_total') && exported.has('safe_termination_conntrack_entries_limit'), 'both scrapes parsed');
  const used = new Set<string>();
  for (const { panel, target } of queries) {
    const names = metricNames(substituteVariables(target.expr));
    t.ok(names.length > 0, `${panel.title} ${target.refId}: reads a metric`);
    for (const n of names) {
      used.add(n);
      t.ok(exported.has(n), `${panel.title} ${target.refId}: ${n} is exported`);
    }
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) {
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    const m = /^label_values\(([A-Za-z_:][A-Za-z0-9_:]*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$/.exec(q);
    t.ok(m, `variable ${v.name}: label_values(metric, label)`);
    if (m) t.ok(exported.has(m[1]!), `variable ${v.name}: ${m[1]} is exported`);
  }
  t.comment(`${used.size} metrics used by ${queries.length} queries`);
});

t.test('metricNames sees metrics, not functions, labels or keywords', async (t) => {
  t.same(metricNames('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y",node=~".*"}[5m])))'), ['a_bucket']);
  t.same(metricNames('max by (node) (a{n="1"}) / on (node) group_left max by (node) (b) > bool 0'), ['a', 'b']);
  t.same(metricNames('time() - max(c_seconds)'), ['c_seconds']);
});

t.test('the chart ships it as a ConfigMap for Grafana\'s sidecar', async (t) => {
  const modes = ciModes();
  t.equal(ofKind(await render(), 'ConfigMap').length, 0, 'off by default, like the other monitoring objects');
  const objects = await render({ valuesFiles: [modes.get('monitoring')!] });
  const cm = one(objects, 'ConfigMap', 'safe-termination-dashboard');
  t.equal(cm.metadata.namespace, NAMESPACE);
  t.equal(cm.metadata.labels?.['grafana_dashboard'], '1', 'the sidecar\'s default label');
  t.equal(cm.metadata.annotations?.['grafana_folder'], 'Kubernetes', 'the folder annotation');
  t.same(JSON.parse(cm['data']['safe-termination.json'] as string), dashboard, 'the dashboard file, unchanged');

  const custom = await render({
    set: ['monitoring.dashboard.enabled=true', 'monitoring.dashboard.namespace=monitoring', 'monitoring.dashboard.label=dashboards', 'monitoring.dashboard.labelValue=safe', 'monitoring.dashboard.folderAnnotation=k8s-sidecar-target-directory'],
  });
  const c = one(custom, 'ConfigMap');
  t.equal(c.metadata.namespace, 'monitoring', 'in Grafana\'s namespace');
  t.equal(c.metadata.labels?.['dashboards'], 'safe');
  t.notOk(c.metadata.labels?.['grafana_dashboard'], 'the label changed, not added');
  t.notOk(c.metadata.annotations, 'no folder: no annotation');
});
