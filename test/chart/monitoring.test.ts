/**
 * Monitoring and network objects: the ServiceMonitors scrape what the chart
 * serves, the PrometheusRule's alerts are complete and use metrics the code
 * really exports, and the NetworkPolicy opens exactly the ports the pods use.
 */
import t from 'tap';
import { createWebhookMetrics } from '../../src/server/metrics.ts';
import { createAgentMetrics } from '../../src/agent/metrics.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHART, ciModes, NAMESPACE, ofKind, one, podSpecOf, render, selects, template } from './render.ts';

const modes = ciModes();

/** Metric names the webhook and the agent export (their real registries). */
async function exportedMetrics(): Promise<Set<string>> {
  const names = new Set<string>();
  const webhook = createWebhookMetrics();
  const agent = createAgentMetrics({ conntrackProcDir: '/nonexistent', procNetDir: '/nonexistent', staleConntrackIntervalSeconds: 60, endpointChanges: true });
  for (const registry of [webhook.registry, agent.registry]) {
    for (const m of registry.getMetricsAsArray()) names.add(m.name);
  }
  return names;
}

t.test('ServiceMonitors scrape the metrics ports of the webhook and the agent', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('monitoring')!] });
  const monitors = ofKind(objects, 'ServiceMonitor');
  t.equal(monitors.length, 2);
  for (const sm of monitors) {
    t.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
    t.equal(sm.metadata.labels?.['release'], 'kube-prometheus-stack', 'labels for the Prometheus selector');
    t.same(sm.spec.namespaceSelector, { matchNames: [NAMESPACE] });
    const services = ofKind(objects, 'Service').filter((s) => selects(sm.spec.selector, s.metadata.labels ?? {}));
    t.equal(services.length, 1, `${sm.metadata.name} selects one Service`);
    const svc = services[0]!;
    t.equal(sm.spec.endpoints.length, 1);
    const ep = sm.spec.endpoints[0];
    t.ok(svc.spec.ports.some((p: { name: string }) => p.name === ep.port), `the endpoint port ${ep.port} is a port of Service ${svc.metadata.name}`);
    t.equal(ep.scheme, 'http', 'metrics are plain HTTP');
    t.equal(ep.path, '/metrics');
    t.equal(ep.interval, '30s');
  }
  const agentSvc = one(objects, 'Service', 'safe-termination-agent-metrics');
  t.equal(agentSvc.spec.clusterIP, 'None', 'the agent Service is headless (host-network pods)');
  t.ok(selects({ matchLabels: agentSvc.spec.selector }, one(objects, 'DaemonSet').spec.template.metadata.labels));
  const agentSm = one(objects, 'ServiceMonitor', 'safe-termination-agent');
  t.same(agentSm.spec.endpoints[0].relabelings[0], { sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }, 'agent series are labelled by node');

  const withoutAgent = await render({ valuesFiles: [modes.get('monitoring')!], set: ['agent.enabled=false'] });
  t.equal(ofKind(withoutAgent, 'ServiceMonitor').length, 1, 'no agent ServiceMonitor without the agent');
  t.equal(ofKind(withoutAgent, 'Service').length, 1);
  const rule = one(withoutAgent, 'PrometheusRule');
  const alerts = rule.spec.groups.flatMap((g: { rules: Array<{ alert?: string }> }) => g.rules.map((r) => r.alert));
  t.notOk(alerts.includes('ConntrackTableNearFull'), 'no agent alerts without the agent');
  t.notOk(alerts.includes('ServiceEndpointChurn'), 'no churn alert without the agent (it counts the changes)');
});

t.test('the PrometheusRule: the product\'s alerts, complete, on metrics that exist', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('monitoring')!] });
  const rule = one(objects, 'PrometheusRule');
  t.equal(rule.apiVersion, 'monitoring.coreos.com/v1');
  t.equal(rule.metadata.labels?.['release'], 'kube-prometheus-stack');
  const rules: Array<{ alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> }> = rule.spec.groups.flatMap((g: { rules: unknown[] }) => g.rules);
  const byName = new Map(rules.map((r) => [r.alert, r]));
  t.same(
    [...byName.keys()].sort(),
    ['ConntrackTableNearFull', 'HighConntrackInsertFailed', 'SafeTerminationCertificateExpiring', 'SafeTerminationDenials', 'SafeTerminationWebhookAbsent', 'SafeTerminationWebhookErrors', 'SafeTerminationWebhookFailingOpen', 'SafeTerminationWebhookNotReady', 'ServiceEndpointChurn'],
    'the write-up\'s three alert names, and the webhook\'s',
  );
  for (const r of rules) {
    t.ok(r.annotations.summary && r.annotations.summary.length > 10, `${r.alert} has a summary`);
    t.ok(r.annotations.description && r.annotations.description.length > 20, `${r.alert} has a description`);
    t.ok(r.labels.severity, `${r.alert} has a severity`);
    t.notMatch(r.expr, /\{\{|\}\}/, `${r.alert} expression has no unrendered template`);
  }
  const full = byName.get('ConntrackTableNearFull')!;
  t.match(full.expr, /safe_termination_conntrack_entries\{namespace="safe-termination"\}/);
  t.match(full.expr, /safe_termination_conntrack_entries_limit\{namespace="safe-termination"\}/);
  t.match(full.expr, /> 0\.75\s*$/, 'the ratio from values (80 % by default)');
  t.equal(full.for, '5m', 'for 5 minutes');
  t.match(full.annotations.summary, /\{\{ or \$labels\.node \$labels\.instance \}\}/, 'Prometheus templates reach Prometheus unrendered');
  const insertFailed = byName.get('HighConntrackInsertFailed')!;
  t.match(insertFailed.expr, /increase\(safe_termination_conntrack_stat_insert_failed_total\{namespace="safe-termination"\}\[5m\]\)\) > 0\s*$/);
  t.equal(insertFailed.for, '1m', 'insert_failed rising over 5m, for 1m');
  t.equal(insertFailed.labels.severity, 'critical', 'critical, as the write-up has it');
  const churn = byName.get('ServiceEndpointChurn')!;
  t.match(churn.expr, /^sum by \(namespace, service\) \(increase\(safe_termination_endpoint_changes_total\{job="safe-termination-agent-metrics"\}\[5m\]\)\) > 10\s*$/, 'more than 10 changes in 5m per Service, summed over the nodes');
  t.equal(churn.for, '5m');
  t.equal(churn.labels.severity, 'warning');
  t.match(byName.get('SafeTerminationCertificateExpiring')!.expr, / < 604800\s*$/, '168h in seconds');

  const exported = await exportedMetrics();
  const ours = new Set(rules.flatMap((r) => r.expr.match(/safe_termination_[a-z_]+/g) ?? []));
  t.ok(ours.size >= 6, `${ours.size} metrics used`);
  for (const name of ours) t.ok(exported.has(name), `${name} is exported by the webhook or the agent`);
  const byDefault = await render({ set: ['monitoring.prometheusRule.enabled=true'] });
  t.match(one(byDefault, 'PrometheusRule').spec.groups[0].rules[0].expr, /> 0\.8\s*$/, 'default ratio 0.8');
});

t.test('the NetworkPolicy opens the pods\' own ports and the API server only', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('network-policy')!] });
  const np = one(objects, 'NetworkPolicy');
  const deployment = one(objects, 'Deployment');
  t.ok(selects(np.spec.podSelector, deployment.spec.template.metadata.labels), 'applies to the webhook pods');
  t.notOk(selects(np.spec.podSelector, one(objects, 'DaemonSet').spec.template.metadata.labels), 'not to the agent');
  t.same(np.spec.policyTypes, ['Ingress', 'Egress']);
  const portNames = new Set(podSpecOf(deployment).containers[0].ports.map((p: { name: string }) => p.name));
  for (const rule of np.spec.ingress) for (const p of rule.ports) t.ok(portNames.has(p.port), `ingress port ${p.port} is a container port`);
  t.same(np.spec.ingress[0], { ports: [{ port: 'https', protocol: 'TCP' }] }, 'the webhook port from anywhere (the API server)');
  t.same(np.spec.ingress[1].from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], 'metrics from the monitoring namespace');
  t.same(np.spec.egress, [{ ports: [{ port: 443, protocol: 'TCP' }, { port: 6443, protocol: 'TCP' }], to: [{ ipBlock: { cidr: '10.0.0.1/32' } }, { ipBlock: { cidr: '172.18.0.0/16' } }] }], 'egress to the API server only, no DNS');
});

t.test('agent.staleConntrack with monitoring: the stale-entry alert, on the exported gauge, with the Service labels kept', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('stale-conntrack')!] });
  const rules: Array<{ alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> }> = one(objects, 'PrometheusRule').spec.groups.flatMap((g: { rules: unknown[] }) => g.rules);
  const alert = rules.find((r) => r.alert === 'ConntrackStaleEntries')!;
  t.ok(alert, 'the alert is there');
  t.equal(alert.for, '10m', 'for staleConntrackFor');
  t.equal(alert.labels.severity, 'warning');
  t.match(alert.annotations.summary, /\{\{ \$labels\.node \}\}.*\{\{ \$labels\.namespace \}\}\/\{\{ \$labels\.service \}\}/, 'names the node and the Service');
  t.match(alert.annotations.description, /conntrack -D/, 'says what to do');
  t.ok((alert.annotations.description ?? '').length > 100);
  const metric = 'safe_termination_conntrack_stale_entries';
  t.ok((await exportedMetrics()).has(metric), `${metric} is exported by the agent`);
  const job = /job="([^"]+)"/.exec(alert.expr)?.[1];
  const agentSvc = one(objects, 'Service', 'safe-termination-agent-metrics');
  t.equal(job, agentSvc.metadata.name, 'the job label is the agent metrics Service (prometheus-operator\'s default job name)');
  t.match(alert.expr, new RegExp(`^max by \\(node, namespace, service, protocol\\) \\(${metric}\\{job="[^"]+"\\}\\) > 0\\s*$`));
  const agentSm = one(objects, 'ServiceMonitor', 'safe-termination-agent');
  t.equal(agentSm.spec.endpoints[0].honorLabels, true, 'the series keep namespace/service (not exported_namespace/exported_service)');
  t.notOk(one(objects, 'ServiceMonitor', 'safe-termination').spec.endpoints[0].honorLabels, 'the webhook\'s ServiceMonitor unchanged');

  const plain = await render({ valuesFiles: [modes.get('monitoring')!] });
  t.notOk(one(plain, 'PrometheusRule').spec.groups.flatMap((g: { rules: Array<{ alert?: string }> }) => g.rules).some((r: { alert?: string }) => r.alert === 'ConntrackStaleEntries'), 'no alert while the count is off');
  const neither = await render({ valuesFiles: [modes.get('monitoring')!], set: ['agent.endpointChanges.enabled=false'] });
  t.notOk(one(neither, 'ServiceMonitor', 'safe-termination-agent').spec.endpoints[0].honorLabels, 'and no honorLabels without either per-Service count');
  const byDefault = await render({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.serviceMonitor.enabled=true', 'agent.staleConntrack.enabled=true'] });
  t.equal(one(byDefault, 'PrometheusRule').spec.groups[0].rules.find((r: { alert?: string }) => r.alert === 'ConntrackStaleEntries').for, '5m', 'default for: 5m');
  const noMonitor = await render({ set: ['monitoring.prometheusRule.enabled=true', 'agent.staleConntrack.enabled=true'] });
  t.notOk(alertsOf(noMonitor).some((r) => r.alert === 'ConntrackStaleEntries'), 'not without the agent ServiceMonitor: its job, node and Service labels would not be there');
});

type Rule = { alert: string; expr: string; for?: string; labels: Record<string, string>; annotations: Record<string, string> };

function alertsOf(objects: Awaited<ReturnType<typeof render>>): Rule[] {
  return one(objects, 'PrometheusRule').spec.groups.flatMap((g: { rules: Rule[] }) => g.rules);
}

/** The label lists of the aggregations (`by (…)`) of a PromQL expression. */
function groupings(expr: string): string[][] {
  return [...expr.matchAll(/\bby \(([^)]*)\)/g)].map((m) => m[1]!.split(',').map((l) => l.trim()));
}

t.test('the agent alerts keep one series per node whatever scrapes the agents: by instance too, and name the node by node or instance', async (t) => {
  const agentMetric = /safe_termination_conntrack_/;
  for (const [what, set] of [
    ['the agent ServiceMonitor off', ['monitoring.prometheusRule.enabled=true']],
    ['the agent ServiceMonitor on', ['monitoring.prometheusRule.enabled=true', 'monitoring.serviceMonitor.enabled=true']],
  ] as const) {
    const rules = alertsOf(await render({ set: [...set] })).filter((r) => agentMetric.test(r.expr));
    t.same(rules.map((r) => r.alert).sort(), ['ConntrackTableNearFull', 'HighConntrackInsertFailed'], `${what}: the agent alerts`);
    for (const r of rules) {
      const bys = groupings(r.expr);
      t.ok(bys.length > 0, `${what}: ${r.alert} aggregates by labels`);
      // Without the ServiceMonitor's relabeling there is no node label: grouping by node
      // alone would collapse every node into one series. instance exists on every target.
      for (const by of bys) t.ok(by.includes('instance'), `${what}: ${r.alert} groups by (${by.join(', ')}), which keeps instance`);
      // The annotations only use labels the expression keeps, and node only with a fallback.
      const kept = new Set(bys.flat());
      for (const [key, text] of Object.entries(r.annotations)) {
        for (const [, label] of text.matchAll(/\$labels\.([a-z_]+)/g)) t.ok(kept.has(label!), `${what}: ${r.alert} ${key} uses $labels.${label}, a label the expression keeps`);
        t.notMatch(text, /\{\{ \$labels\.node \}\}/, `${what}: ${r.alert} ${key} does not print a node label that may be missing`);
        if (/\$labels\.node/.test(text)) t.match(text, /\{\{ or \$labels\.node \$labels\.instance \}\}/, `${what}: ${r.alert} ${key} names the node by node, else instance`);
      }
    }
  }
  const stale = alertsOf(await render({ valuesFiles: [modes.get('stale-conntrack')!] })).find((r) => r.alert === 'ConntrackStaleEntries')!;
  for (const [, label] of Object.values(stale.annotations).join(' ').matchAll(/\$labels\.([a-z_]+)/g)) t.ok(groupings(stale.expr).flat().includes(label!), `ConntrackStaleEntries uses $labels.${label}, a label the expression keeps`);
});

t.test('ServiceEndpointChurn: on the agent\'s own count, which a default install has; only with the agent ServiceMonitor', async (t) => {
  const on = await render({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.serviceMonitor.enabled=true'] });
  const rule = alertsOf(on).find((r) => r.alert === 'ServiceEndpointChurn')!;
  t.ok(rule, 'rendered with the defaults plus monitoring');
  const metrics = rule.expr.match(/[a-z_]+_total/g) ?? [];
  t.same(metrics, ['safe_termination_endpoint_changes_total']);
  t.ok((await exportedMetrics()).has(metrics[0]!), 'exported by the agent');
  t.same(groupings(rule.expr), [['namespace', 'service']], 'per Service, summed over the nodes');
  for (const [, label] of Object.values(rule.annotations).join(' ').matchAll(/\$labels\.([a-z_]+)/g)) t.ok(['namespace', 'service'].includes(label!), `uses $labels.${label}, a label the expression keeps`);
  const daemonSet = one(on, 'DaemonSet');
  t.ok(daemonSet.spec.template.spec.containers[0].args.includes('--endpoint-changes'), 'the agent counts by default');
  t.equal(one(on, 'ServiceMonitor', 'safe-termination-agent').spec.endpoints[0].honorLabels, true, 'the series keep the Service\'s namespace and service');
  const tuned = alertsOf(await render({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.serviceMonitor.enabled=true', 'monitoring.prometheusRule.endpointChurnThreshold=25', 'monitoring.prometheusRule.endpointChurnFor=15m'] })).find((r) => r.alert === 'ServiceEndpointChurn')!;
  t.match(tuned.expr, /> 25\s*$/);
  t.equal(tuned.for, '15m');
  t.notOk(alertsOf(await render({ set: ['monitoring.prometheusRule.enabled=true'] })).some((r) => r.alert === 'ServiceEndpointChurn'), 'not without the agent ServiceMonitor');
  t.notOk(alertsOf(await render({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.serviceMonitor.enabled=true', 'agent.endpointChanges.enabled=false'] })).some((r) => r.alert === 'ServiceEndpointChurn'), 'not when the count is off');
  const values = readFileSync(join(CHART, 'values.yaml'), 'utf8');
  t.notMatch(values, /kubeproxy_sync_proxy_rules_endpoint_changes_total|kube_endpoint_address_available/, 'no metric a default install lacks');
});

t.test('conntrackMetrics: node-exporter: the conntrack alerts on node_nf_conntrack_*, with or without the agent', async (t) => {
  for (const agent of [true, false]) {
    const rules = alertsOf(await render({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.prometheusRule.conntrackMetrics=node-exporter', `agent.enabled=${agent}`] }));
    const byName = new Map(rules.map((r) => [r.alert, r]));
    t.match(byName.get('ConntrackTableNearFull')?.expr, /max by \(node, instance\) \(node_nf_conntrack_entries\{job="node-exporter"\}\)\s*\/ max by \(node, instance\) \(node_nf_conntrack_entries_limit\{job="node-exporter"\}\)\s*> 0\.8/, `agent ${agent}: table`);
    t.match(byName.get('HighConntrackInsertFailed')?.expr, /rate\(node_nf_conntrack_stat_insert_failed\{job="node-exporter"\}\[5m\]\)/, `agent ${agent}: insert_failed`);
    t.notMatch(rules.map((r) => r.expr).join('\n'), /safe_termination_conntrack_/, `agent ${agent}: none of the agent's conntrack metrics`);
  }
  const bad = await template({ set: ['monitoring.prometheusRule.enabled=true', 'monitoring.prometheusRule.conntrackMetrics=prometheus'] });
  t.not(bad.status, 0, 'an unknown source is refused by the schema');
  const badSelector = await template({ values: 'monitoring:\n  prometheusRule:\n    enabled: true\n    nodeExporterSelector: \'{job="x"}\'\n' });
  t.not(badSelector.status, 0, 'a selector with braces is refused by the schema');
  t.match(badSelector.stderr, /nodeExporterSelector/);
  const twoMatchers = await render({ values: 'monitoring:\n  prometheusRule:\n    enabled: true\n    conntrackMetrics: node-exporter\n    nodeExporterSelector: \'job="node-exporter", cluster=~"prod-.*"\'\n' });
  t.match(alertsOf(twoMatchers).find((r) => r.alert === 'ConntrackTableNearFull')?.expr, /node_nf_conntrack_entries\{job="node-exporter", cluster=~"prod-\.\*"\}/, 'several matchers');
});
