/**
 * `helm template` of every mode (ci/*-values.yaml): every object is a valid
 * Kubernetes object (schema + no unknown fields), the expected objects are there,
 * and the objects point at each other correctly (selectors, ports, names).
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import type { Test } from 'tap';
import { ciModes, countByKind, mapLimit, NAMESPACE, ofKind, one, podSpecOf, render, selects, template } from './render.ts';
import { objectProblems } from './validate.ts';
import type { K8sObject } from './render.ts';

/** What each mode renders, by kind. */
const EXPECTED: Readonly<Record<string, Record<string, number>>> = {
  default: { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'agent-off': { ClusterRole: 1, ClusterRoleBinding: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 1, ServiceAccount: 1 },
  'cert-manager': { Certificate: 2, ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, Issuer: 2, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'cert-manager-issuer': { Certificate: 1, ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'existing-secret': { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  monitoring: { ClusterRole: 2, ClusterRoleBinding: 2, ConfigMap: 1, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, PrometheusRule: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 2, ServiceAccount: 2, ServiceMonitor: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'network-policy': { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'stale-conntrack': { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, PrometheusRule: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 2, ServiceAccount: 2, ServiceMonitor: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  'single-replica': { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, Role: 1, RoleBinding: 1, Secret: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
  tuned: { ClusterRole: 2, ClusterRoleBinding: 2, DaemonSet: 1, Deployment: 1, MutatingWebhookConfiguration: 1, NetworkPolicy: 1, PodDisruptionBudget: 1, Secret: 1, Service: 1, ServiceAccount: 2, ValidatingAdmissionPolicy: 1, ValidatingAdmissionPolicyBinding: 1 },
};

const modes = ciModes();

t.test('there is a ci values file for every mode the chart offers', async (t) => {
  t.same([...modes.keys()].sort(), Object.keys(EXPECTED).sort());
});

for (const [mode, file] of modes) {
  t.test(`mode ${mode}`, async (t) => {
    const objects = await render({ valuesFiles: [file] });
    const counts = countByKind(objects);
    t.comment(`${mode}: ${objects.length} objects ${JSON.stringify(counts)}`);
    t.same(counts, EXPECTED[mode], 'objects rendered, by kind');

    for (const o of objects) t.same(objectProblems(o), [], `${o.kind}/${o.metadata.name} is a valid object`);

    const names = objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
    t.equal(new Set(names).size, names.length, 'no two objects share kind, namespace and name');
    for (const o of objects) {
      const clusterScoped = ['ClusterRole', 'ClusterRoleBinding', 'MutatingWebhookConfiguration', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].includes(o.kind);
      if (clusterScoped) t.notOk(o.metadata.namespace, `${o.kind} has no namespace`);
      else if (!(o.kind.startsWith('Role') && o.metadata.namespace === 'kube-system')) t.equal(o.metadata.namespace, NAMESPACE, `${o.kind}/${o.metadata.name} is in the release namespace`);
      t.equal(o.metadata.labels?.['app.kubernetes.io/managed-by'], 'Helm');
      t.equal(o.metadata.labels?.['app.kubernetes.io/instance'], 'safe-termination');
    }
    checkWiring(t, objects);
  });
}

/** Workload selectors, Services, ServiceAccounts and probes point at what exists. */
function checkWiring(t: Test, objects: K8sObject[]): void {
  const services = ofKind(objects, 'Service');
  const accounts = new Set(ofKind(objects, 'ServiceAccount').map((o) => o.metadata.name));
  for (const w of [...ofKind(objects, 'Deployment'), ...ofKind(objects, 'DaemonSet')]) {
    const podLabels = w.spec.template.metadata.labels;
    t.ok(selects(w.spec.selector, podLabels), `${w.kind} selector selects its own pods`);
    t.equal(podLabels['safe-termination.io/inject'], 'disabled', `${w.kind} pods opt out of the webhook`);
    const pod = podSpecOf(w);
    t.ok(accounts.has(pod.serviceAccountName), `${w.kind} runs as a ServiceAccount the chart creates`);
    const container = pod.containers[0];
    const portNames = new Set((container.ports ?? []).map((p: { name: string }) => p.name));
    for (const probe of ['readinessProbe', 'livenessProbe']) {
      const port = container[probe]?.httpGet?.port;
      if (port !== undefined) t.ok(portNames.has(port), `${w.kind} ${probe} uses a declared port (${port})`);
    }
    for (const m of container.volumeMounts ?? []) {
      t.ok(pod.volumes.some((v: { name: string }) => v.name === m.name), `${w.kind} mounts a declared volume (${m.name})`);
    }
    const spread = pod.topologySpreadConstraints ?? [];
    for (const c of spread) t.same(c.labelSelector.matchLabels, w.spec.selector.matchLabels, `topology spread over ${c.topologyKey} counts these pods`);
    for (const svc of services) {
      if (!selects({ matchLabels: svc.spec.selector }, podLabels)) continue;
      for (const p of svc.spec.ports) t.ok(portNames.has(p.targetPort), `Service ${svc.metadata.name} port ${p.name} targets a declared port`);
    }
  }
  for (const svc of services) {
    const backed = [...ofKind(objects, 'Deployment'), ...ofKind(objects, 'DaemonSet')].some((w) => selects({ matchLabels: svc.spec.selector }, w.spec.template.metadata.labels));
    t.ok(backed, `Service ${svc.metadata.name} selects pods of the chart`);
  }
  const pdbs = ofKind(objects, 'PodDisruptionBudget');
  if (pdbs.length > 0) {
    const deployment = one(objects, 'Deployment');
    t.ok(selects(pdbs[0]!.spec.selector, deployment.spec.template.metadata.labels), 'the PodDisruptionBudget covers the webhook pods');
  }
}

t.test('the validator is not vacuous: it catches wrong types and unknown fields', async (t) => {
  const objects = await render();
  const deployment = structuredClone(one(objects, 'Deployment'));
  t.same(objectProblems(deployment), []);
  deployment.spec.replicas = 'two';
  deployment.spec.template.spec.containers[0].securityContext.readOnlyRootFS = true;
  const problems = objectProblems(deployment).join('\n');
  t.match(problems, /replicas must be integer/);
  t.match(problems, /securityContext\/readOnlyRootFS: unknown field/);
  t.match(objectProblems({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } }).join(), /unexpected kind/);
});

t.test('the validator checks name and label lengths: Service names are DNS-1035 labels, label values at most 63', async (t) => {
  const objects = await render();
  const svc = one(objects, 'Service');
  const named = (name: string): K8sObject => ({ ...structuredClone(svc), metadata: { ...structuredClone(svc.metadata), name } });
  t.same(objectProblems(named('a'.repeat(63))), [], '63 characters');
  t.match(objectProblems(named('a'.repeat(64))).join(), /not a DNS-1035 label/, '64 characters');
  t.match(objectProblems(named('a.b')).join(), /not a DNS-1035 label/, 'a dot');
  t.match(objectProblems(named('1abc')).join(), /not a DNS-1035 label/, 'a digit first');
  const deployment = structuredClone(one(objects, 'Deployment'));
  deployment.metadata.name = 'a.b';
  t.same(objectProblems(deployment), [], 'other names are DNS subdomains');
  deployment.metadata.name = 'a..b';
  t.match(objectProblems(deployment).join(), /metadata\.name is not a valid name/);
  const labelled = structuredClone(svc);
  labelled.metadata.labels!['team'] = 'x'.repeat(64);
  labelled.spec.selector['app.kubernetes.io/instance'] = 'y'.repeat(64);
  labelled.metadata.labels!['k'.repeat(64)] = 'v';
  const problems = objectProblems(labelled).join('\n');
  t.match(problems, /metadata\.labels: team=x+ is not a valid label value/);
  t.match(problems, /spec\.selector: app\.kubernetes\.io\/instance=y+ is not a valid label value/);
  t.match(problems, /metadata\.labels: k+ is not a valid label key/);
  const cert = { apiVersion: 'cert-manager.io/v1', kind: 'Certificate', metadata: { name: 'x' }, spec: { secretName: 'x', commonName: 'c'.repeat(65), dnsNames: [`${'d'.repeat(64)}.ns.svc`] } };
  const certProblems = objectProblems(cert).join('\n');
  t.match(certProblems, /commonName c+ is longer than 64 characters/, 'cert-manager refuses a commonName over 64');
  t.match(certProblems, /dnsNames: d+\.ns\.svc is not a DNS name/);
});

/** The longest release name Helm accepts (53 characters): the fullname is cut to 63. */
const LONG_RELEASE = 'production-eu-west-1-platform-webhooks-cluster-abcdef';
/** The longest namespace name (63 characters). */
const LONG_NAMESPACE = `ns-${'n'.repeat(60)}`;

t.test('a 53-character release in a 63-character namespace: every object of every mode is valid, with monitoring on', async (t) => {
  t.equal(LONG_RELEASE.length, 53);
  t.equal(LONG_NAMESPACE.length, 63);
  const set = ['monitoring.serviceMonitor.enabled=true', 'monitoring.prometheusRule.enabled=true'];
  const entries = [...modes];
  const renders = await mapLimit(entries, 2, ([, file]) => render({ valuesFiles: [file], set, release: LONG_RELEASE, namespace: LONG_NAMESPACE }));
  entries.forEach(([mode], i) => {
    const objects = renders[i]!;
    for (const o of objects) t.same(objectProblems(o), [], `${mode}: ${o.kind}/${o.metadata.name} is a valid object`);
    const services = new Set(ofKind(objects, 'Service').map((s) => s.metadata.name));
    const w = one(objects, 'MutatingWebhookConfiguration').webhooks[0];
    t.ok(services.has(w.clientConfig.service.name), `${mode}: the webhook configuration calls the chart Service`);
    for (const rule of ofKind(objects, 'PrometheusRule')) {
      for (const r of rule.spec.groups.flatMap((g: { rules: Array<{ expr: string }> }) => g.rules)) {
        for (const [, job] of r.expr.matchAll(/job="([^"]+)"/g)) t.ok(services.has(job), `${mode}: job="${job}" is a Service of the chart (prometheus-operator's job label)`);
      }
    }
    if (ofKind(objects, 'DaemonSet').length > 0) {
      const agentSvc = ofKind(objects, 'Service').find((s) => s.spec.clusterIP === 'None');
      t.ok(agentSvc, `${mode}: the agent metrics Service is there`);
      t.match(agentSvc?.metadata.name, /-agent-metrics$/, `${mode}: still named …-agent-metrics`);
    }
  });
  const stale = renders[entries.findIndex(([mode]) => mode === 'stale-conntrack')]!;
  const staleRule = one(stale, 'PrometheusRule').spec.groups.flatMap((g: { rules: Array<{ alert?: string; expr: string }> }) => g.rules).find((r: { alert?: string }) => r.alert === 'ConntrackStaleEntries');
  t.match(staleRule?.expr, /job="production-eu-west-1-platform-webhooks-cluster-ab-agent-metrics"/, 'the stale-entry alert selects the renamed Service');
  const cm = renders[entries.findIndex(([mode]) => mode === 'cert-manager')]!;
  const ca = ofKind(cm, 'Certificate').find((c) => c.spec.isCA === true)!;
  t.ok(ca.spec.commonName.length <= 64, `the CA commonName has ${ca.spec.commonName.length} characters`);
  t.equal(ca.spec.secretName, ca.metadata.name);
  t.ok(ofKind(cm, 'Issuer').some((i) => i.spec.ca?.secretName === ca.spec.secretName), 'the CA Issuer uses the CA Secret');
  t.ok(ofKind(cm, 'Certificate').some((c) => c.spec.issuerRef.name === ofKind(cm, 'Issuer').find((i) => i.spec.ca)!.metadata.name), 'the serving Certificate is signed by the CA Issuer');
  const secret = one(renders[entries.findIndex(([mode]) => mode === 'default')]!, 'Secret');
  for (const key of ['ca.crt', 'tls.crt']) {
    const cert = new X509Certificate(Buffer.from(secret.data[key], 'base64'));
    const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1] ?? '';
    t.ok(cn.length > 0 && cn.length <= 64, `generate mode: the ${key} commonName (${cn}) is within X.509's 64 characters`);
  }
});

t.test('Service names from unusual release names: dots become dashes, a leading digit fails the render clearly', async (t) => {
  const dotted = await render({ release: 'web.v2', set: ['monitoring.serviceMonitor.enabled=true', 'monitoring.prometheusRule.enabled=true', 'agent.staleConntrack.enabled=true'] });
  for (const o of dotted) t.same(objectProblems(o), [], `${o.kind}/${o.metadata.name} is a valid object`);
  t.same(ofKind(dotted, 'Service').map((s) => s.metadata.name).sort(), ['web-v2-safe-termination', 'web-v2-safe-termination-agent-metrics']);
  t.equal(one(dotted, 'Deployment').metadata.name, 'web.v2-safe-termination', 'other names keep the release name');
  t.equal(one(dotted, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.service.name, 'web-v2-safe-termination');
  const r = await template({ release: '1st' });
  t.not(r.status, 0, 'a release name starting with a digit');
  t.match(r.stderr, /Service name "1st-safe-termination" .*not a DNS-1035 label.*set fullnameOverride/);
  const fixed = await render({ release: '1st', set: ['fullnameOverride=first-safe-termination'] });
  t.equal(one(fixed, 'Service').metadata.name, 'first-safe-termination');
});

t.test('the PodDisruptionBudget exists only with more than one replica', async (t) => {
  for (const [replicas, pdb] of [[0, false], [1, false], [2, true], [3, true]] as const) {
    const objects = await render({ set: [`webhook.replicas=${replicas}`] });
    t.equal(ofKind(objects, 'PodDisruptionBudget').length, pdb ? 1 : 0, `replicas ${replicas}`);
  }
  const disabled = await render({ set: ['webhook.podDisruptionBudget.enabled=false'] });
  t.equal(ofKind(disabled, 'PodDisruptionBudget').length, 0, 'podDisruptionBudget.enabled=false');
  const byDefault = one(await render(), 'PodDisruptionBudget');
  t.equal(byDefault.spec.minAvailable, 1);
  t.notOk('maxUnavailable' in byDefault.spec);
  const tuned = one(await render({ valuesFiles: [modes.get('tuned')!] }), 'PodDisruptionBudget');
  t.equal(tuned.spec.maxUnavailable, '50%');
  t.notOk('minAvailable' in tuned.spec, 'maxUnavailable replaces minAvailable');
});

t.test('the webhook Deployment: replicas, spread, probes, TLS volume, resources', async (t) => {
  const objects = await render();
  const d = one(objects, 'Deployment');
  t.equal(d.spec.replicas, 2);
  t.same(d.spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 }, 'a rollout never takes a replica down first');
  const pod = podSpecOf(d);
  t.same(
    pod.topologySpreadConstraints.map((c: { topologyKey: string }) => c.topologyKey),
    ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'],
    'spread over nodes and zones',
  );
  const c = pod.containers[0];
  t.same(c.readinessProbe.httpGet, { path: '/readyz', port: 'https', scheme: 'HTTPS' });
  t.same(c.livenessProbe.httpGet, { path: '/healthz', port: 'https', scheme: 'HTTPS' });
  t.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory, 'requests and a memory limit are set');
  const tls = pod.volumes.find((v: { name: string }) => v.name === 'tls');
  t.equal(tls.secret.secretName, 'safe-termination-tls');
  const mount = c.volumeMounts.find((m: { name: string }) => m.name === 'tls');
  t.equal(mount.mountPath, '/etc/safe-termination/tls');
  t.ok(c.args.includes('--tls-cert-file=/etc/safe-termination/tls/tls.crt') && c.args.includes('--tls-private-key-file=/etc/safe-termination/tls/tls.key'), 'the flags name the mounted files');
  t.ok(pod.terminationGracePeriodSeconds >= 5 + 25, 'the grace period covers shutdown-delay + shutdown-timeout');
  const svc = one(objects, 'Service');
  t.same(
    svc.spec.ports.map((p: { name: string; port: number; targetPort: string }) => [p.name, p.port, p.targetPort]),
    [['https', 443, 'https'], ['metrics', 9090, 'metrics']],
    'Service 443 → the TLS port, and the metrics port',
  );
  t.same(
    c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
    [['https', 8443], ['metrics', 9090]],
  );
});

t.test('the agent DaemonSet: host network, downward API node name, every node', async (t) => {
  const objects = await render();
  const ds = one(objects, 'DaemonSet');
  const pod = podSpecOf(ds);
  t.equal(pod.hostNetwork, true);
  t.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  const c = pod.containers[0];
  t.same(c.env.find((e: { name: string }) => e.name === 'SAFE_TERMINATION_NODE_NAME'), {
    name: 'SAFE_TERMINATION_NODE_NAME',
    valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } },
  });
  t.same(c.livenessProbe.httpGet, { path: '/healthz', port: 'metrics', scheme: 'HTTP' });
  t.equal(c.ports[0].containerPort, 9812);
  t.notOk(pod.volumes.some((v: Record<string, unknown>) => 'hostPath' in v), 'no hostPath volume');
});

t.test('names follow the release; fullnameOverride and another namespace', async (t) => {
  const objects = await render({ release: 'edge', namespace: 'ops' });
  t.equal(one(objects, 'Deployment').metadata.name, 'edge-safe-termination');
  t.equal(one(objects, 'DaemonSet').metadata.name, 'edge-safe-termination-agent');
  t.equal(one(objects, 'MutatingWebhookConfiguration').metadata.name, 'zz-edge-safe-termination');
  t.ok(objects.filter((o) => o.metadata.namespace !== undefined && o.metadata.namespace !== 'kube-system').every((o) => o.metadata.namespace === 'ops'));
  const over = await render({ set: ['fullnameOverride=st'] });
  t.equal(one(over, 'Deployment').metadata.name, 'st');
  t.equal(one(over, 'Secret').metadata.name, 'st-tls');
});

t.test('commonLabels reach every object; image by digest', async (t) => {
  const objects = await render({ valuesFiles: [modes.get('tuned')!] });
  for (const o of objects) t.equal(o.metadata.labels?.['team'], 'platform', `${o.kind}/${o.metadata.name}`);
  for (const w of [one(objects, 'Deployment'), one(objects, 'DaemonSet')]) {
    const pod = podSpecOf(w);
    t.equal(pod.containers[0].image, 'registry.example.com/mirror/safe-termination@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef');
    t.same(pod.imagePullSecrets, [{ name: 'regcred' }]);
  }
  t.equal(podSpecOf(one(objects, 'Deployment')).priorityClassName, 'system-cluster-critical');
  t.equal(podSpecOf(one(objects, 'Deployment')).hostNetwork, true);
});

t.test('commonLabels and podLabels cannot displace the chart\'s own labels', async (t) => {
  const objects = await render({
    values: 'commonLabels:\n  app.kubernetes.io/name: other\n  team: a\nwebhook:\n  podLabels:\n    safe-termination.io/inject: enabled\n    tier: web\n',
  });
  const d = one(objects, 'Deployment');
  t.equal(d.metadata.labels?.['app.kubernetes.io/name'], 'safe-termination');
  t.equal(d.metadata.labels?.['team'], 'a');
  const pod = d.spec.template.metadata.labels;
  t.equal(pod['safe-termination.io/inject'], 'disabled', 'the webhook pods still opt out of their own webhook');
  t.equal(pod['tier'], 'web');
  t.ok(selects(d.spec.selector, pod));
});

t.test('high availability by default: replicas on separate nodes, a NetworkPolicy around the webhook', async (t) => {
  const objects = await render();
  const spread = podSpecOf(one(objects, 'Deployment')).topologySpreadConstraints as Array<{ topologyKey: string; whenUnsatisfiable: string }>;
  t.equal(spread.find((c) => c.topologyKey === 'kubernetes.io/hostname')?.whenUnsatisfiable, 'DoNotSchedule', 'one node lost or drained never takes every replica');
  t.equal(spread.find((c) => c.topologyKey === 'topology.kubernetes.io/zone')?.whenUnsatisfiable, 'ScheduleAnyway', 'zones: preferred');
  const np = one(objects, 'NetworkPolicy');
  t.same(np.spec.policyTypes, ['Ingress', 'Egress']);
  const softened = await render({ set: ['webhook.topologySpreadConstraints[0].maxSkew=1', 'webhook.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname', 'webhook.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway'] });
  t.equal((podSpecOf(one(softened, 'Deployment')).topologySpreadConstraints as Array<{ whenUnsatisfiable: string }>)[0]?.whenUnsatisfiable, 'ScheduleAnyway', 'a value softens it');
  t.equal(ofKind(await render({ set: ['networkPolicy.enabled=false'] }), 'NetworkPolicy').length, 0, 'and one turns the policy off');
});

t.test('agent.namespace: the agent\'s objects there, the webhook\'s in the release namespace, RBAC and policy follow', async (t) => {
  const objects = await render({ set: ['agent.namespace=st-agent', 'monitoring.serviceMonitor.enabled=true', 'monitoring.prometheusRule.enabled=true'] });
  const agentSide = objects.filter((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'agent' && o.metadata.namespace !== undefined);
  t.same([...new Set(agentSide.map((o) => o.kind))].sort(), ['DaemonSet', 'Service', 'ServiceAccount', 'ServiceMonitor']);
  for (const o of agentSide) t.equal(o.metadata.namespace, 'st-agent', `${o.kind}/${o.metadata.name} in st-agent`);
  t.equal(one(objects, 'Deployment').metadata.namespace, NAMESPACE, 'the webhook stays in the release namespace');
  const agentBinding = ofKind(objects, 'ClusterRoleBinding').find((b) => b.metadata.name.endsWith('-agent'));
  t.equal(agentBinding?.subjects[0].namespace, 'st-agent');
  t.match(one(objects, 'ValidatingAdmissionPolicy').spec.matchConditions[0].expression, /system:serviceaccount:st-agent:/);
  t.match(JSON.stringify(one(objects, 'PrometheusRule').spec), /safe_termination_conntrack_entries\{namespace=\\"st-agent\\"\}/, 'the conntrack alerts read the agent\'s namespace');
});
