/**
 * Spec §8 security: every pod of the chart meets Pod Security "restricted" (the agent
 * all of it but hostNetwork), and RBAC is exactly: webhook get/list/watch nodes and
 * get the kube-proxy ConfigMap; agent get/patch nodes, plus list/watch EndpointSlices
 * with agent.endpointChanges.enabled or agent.reap.enabled (both on by default) and
 * list/watch Services too only with agent.staleConntrack.enabled. Nothing else, in
 * any mode. With agent.reap.enabled (the default) the agent container alone runs as
 * root with NET_ADMIN as its only capability; off, it meets "restricted" but for
 * hostNetwork.
 */
import t from 'tap';
import type { Test } from 'tap';
import { ciModes, ofKind, one, podSpecOf, render, restrictedProblems } from './render.ts';
import type { K8sObject } from './render.ts';

const modes = ciModes();

const WEBHOOK_NODES = [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] }];
/** webhook.services.enabled (default true): the Service informer. */
const WEBHOOK_NODES_SERVICES = [...WEBHOOK_NODES, { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch'] }];
const KUBE_PROXY_CONFIGMAP = [{ apiGroups: [''], resources: ['configmaps'], resourceNames: ['kube-proxy'], verbs: ['get'] }];
const AGENT_NODES = [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] }];
const AGENT_ENDPOINT_CHANGES = [...AGENT_NODES, { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] }];
/** agent.reap.enabled: the exceptions to "restricted" beyond hostNetwork, exactly. */
const AGENT_REAP_EXCEPTIONS = ['hostNetwork', 'container agent: runAsNonRoot is not true', 'container agent: runAsUser 0', 'container agent: adds capability NET_ADMIN'];
const AGENT_STALE_CONNTRACK = [
  ...AGENT_NODES,
  { apiGroups: [''], resources: ['services'], verbs: ['list', 'watch'] },
  { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
];

for (const [mode, file] of modes) {
  t.test(`${mode}: Pod Security "restricted"`, async (t) => {
    const objects = await render({ valuesFiles: [file] });
    const deployment = one(objects, 'Deployment');
    const webhookPod = podSpecOf(deployment);
    const hostNetworkAllowed = mode === 'tuned'; // webhook.hostNetwork=true there
    t.same(
      restrictedProblems(webhookPod).filter((p) => !(hostNetworkAllowed && p === 'hostNetwork')),
      [],
      'the webhook pod',
    );
    for (const ds of ofKind(objects, 'DaemonSet')) {
      // Every CI mode keeps the default agent.reap.enabled=true.
      t.ok(podSpecOf(ds).containers[0].args.includes('--reap=true'), 'the reaper is on');
      t.same(restrictedProblems(podSpecOf(ds)), AGENT_REAP_EXCEPTIONS, 'the agent pod: everything but hostNetwork, and root with NET_ADMIN for the reaper');
    }
  });

  t.test(`${mode}: RBAC exactly as listed`, async (t) => {
    const objects = await render({ valuesFiles: [file] });
    const agent = ofKind(objects, 'DaemonSet').length > 0;
    const kubeProxy = mode !== 'tuned'; // kubeProxyConfigMap: none there
    const roles = [...ofKind(objects, 'ClusterRole'), ...ofKind(objects, 'Role')];
    const rules = Object.fromEntries(roles.map((r) => [`${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`, r.rules]));
    const expected: Record<string, unknown> = { 'ClusterRole//safe-termination-webhook': WEBHOOK_NODES_SERVICES };
    if (kubeProxy) expected['Role/kube-system/safe-termination-kube-proxy-config'] = KUBE_PROXY_CONFIGMAP;
    if (agent) expected['ClusterRole//safe-termination-agent'] = mode === 'stale-conntrack' ? AGENT_STALE_CONNTRACK : AGENT_ENDPOINT_CHANGES;
    t.same(rules, expected, 'roles and their rules');
    for (const r of roles) {
      t.notOk(r.aggregationRule, `${r.metadata.name} aggregates nothing`);
      for (const rule of r.rules) for (const v of Object.values(rule).flat()) t.not(v, '*', `${r.metadata.name} has no wildcard`);
    }
    checkBindings(t, objects);
  });
}

/** Every binding binds one role of the chart to the ServiceAccount of the pods that need it. */
function checkBindings(t: Test, objects: K8sObject[]): void {
  const saOf = (kind: string): string | undefined => {
    const w = ofKind(objects, kind)[0];
    return w === undefined ? undefined : podSpecOf(w).serviceAccountName;
  };
  const expected = new Map<string, string | undefined>([
    ['safe-termination-webhook', saOf('Deployment')],
    ['safe-termination-kube-proxy-config', saOf('Deployment')],
    ['safe-termination-agent', saOf('DaemonSet')],
  ]);
  const bindings = [...ofKind(objects, 'ClusterRoleBinding'), ...ofKind(objects, 'RoleBinding')];
  const roleNames = new Set([...ofKind(objects, 'ClusterRole'), ...ofKind(objects, 'Role')].map((r) => `${r.kind}/${r.metadata.name}`));
  t.equal(bindings.length, roleNames.size, 'one binding per role');
  for (const b of bindings) {
    t.ok(roleNames.has(`${b.roleRef.kind}/${b.roleRef.name}`), `${b.metadata.name} binds a role of the chart`);
    if (b.kind === 'RoleBinding') t.equal(b.metadata.namespace, one(objects, 'Role').metadata.namespace, 'in the Role\'s namespace');
    t.same(b.subjects, [{ kind: 'ServiceAccount', name: expected.get(b.roleRef.name), namespace: 'safe-termination' }], `${b.metadata.name} subject`);
  }
}

t.test('ServiceAccounts do not mount tokens by default; the pods that call the API do', async (t) => {
  const objects = await render();
  for (const sa of ofKind(objects, 'ServiceAccount')) t.equal(sa.automountServiceAccountToken, false, sa.metadata.name);
  for (const kind of ['Deployment', 'DaemonSet']) t.equal(podSpecOf(one(objects, kind)).automountServiceAccountToken, true, kind);
});

t.test('the kube-proxy ConfigMap grant follows webhook.kubeProxyConfigMap', async (t) => {
  const objects = await render({ set: ['webhook.kubeProxyConfigMap=kube-proxy-system/proxy-config'] });
  const role = one(objects, 'Role');
  t.equal(role.metadata.namespace, 'kube-proxy-system');
  t.same(role.rules, [{ apiGroups: [''], resources: ['configmaps'], resourceNames: ['proxy-config'], verbs: ['get'] }]);
  t.equal(one(objects, 'RoleBinding').metadata.namespace, 'kube-proxy-system');
  t.ok(podSpecOf(one(objects, 'Deployment')).containers[0].args.includes('--kube-proxy-configmap=kube-proxy-system/proxy-config'));
});

t.test('agent.staleConntrack: read-only Services/EndpointSlices and group 0 for the agent only, and only when on', async (t) => {
  // The reaper off: this test is about the stale count's own grants (the reaper's: below).
  const off = await render({ set: ['agent.reap.enabled=false'] });
  const on = await render({ set: ['agent.staleConntrack.enabled=true', 'agent.reap.enabled=false'] });
  const rules = (objects: K8sObject[]) => Object.fromEntries(ofKind(objects, 'ClusterRole').map((r) => [r.metadata.name, r.rules]));
  t.same(rules(off)['safe-termination-agent'], AGENT_ENDPOINT_CHANGES, 'off (the default): nodes, and EndpointSlices for the endpoint-change count');
  const neither = await render({ set: ['agent.endpointChanges.enabled=false', 'agent.reap.enabled=false'] });
  t.same(rules(neither)['safe-termination-agent'], AGENT_NODES, 'neither count nor reaper: nodes only');
  t.notOk(podSpecOf(one(neither, 'DaemonSet')).containers[0].args.includes('--endpoint-changes'), 'and the agent does not count');
  t.same(rules(on)['safe-termination-agent'], AGENT_STALE_CONNTRACK, 'on: plus list/watch, never get/create/update/patch/delete');
  t.same(rules(on)['safe-termination-webhook'], WEBHOOK_NODES_SERVICES, 'the webhook gets nothing more (its own Service informer: webhook.services.enabled)');
  const agentPod = (objects: K8sObject[]) => podSpecOf(one(objects, 'DaemonSet'));
  t.equal(agentPod(off).securityContext.supplementalGroups, undefined, 'off: no extra group');
  t.same(agentPod(on).securityContext.supplementalGroups, [0], 'on: group 0, to read /proc/net/nf_conntrack');
  t.equal(podSpecOf(one(on, 'Deployment')).securityContext.supplementalGroups, undefined, 'not the webhook');
  t.same(restrictedProblems(agentPod(on)), ['hostNetwork'], 'the agent keeps its one documented exception');
  t.same(agentPod(on).containers[0].securityContext.capabilities, { drop: ['ALL'] }, 'still no capability');
  t.equal(agentPod(on).securityContext.runAsUser, 65532);
  const nodeOptions = (objects: K8sObject[]) => agentPod(objects).containers[0].env.find((e: { name: string }) => e.name === 'NODE_OPTIONS')?.value;
  t.equal(nodeOptions(on), '--max-semi-space-size=1', 'on: a small young generation for the table scans');
  t.equal(nodeOptions(off), undefined, 'off: the runtime\'s defaults');
  const merged = await render({ set: ['agent.staleConntrack.enabled=true', 'agent.reap.enabled=false', 'agent.podSecurityContext.supplementalGroups={1000,0}'] });
  t.same(agentPod(merged).securityContext.supplementalGroups, [1000, 0], 'merged with the user\'s groups, no duplicate');
});

t.test('rbac.create=false renders no RBAC objects', async (t) => {
  const objects = await render({ set: ['rbac.create=false'] });
  t.same(objects.filter((o) => o.apiVersion.startsWith('rbac.authorization.k8s.io/')), []);
});

t.test('the restricted check catches each kind of violation', async (t) => {
  const pod = structuredClone(podSpecOf(one(await render(), 'Deployment')));
  t.same(restrictedProblems(pod), []);
  const c = pod.containers[0];
  c.securityContext.allowPrivilegeEscalation = true;
  c.securityContext.capabilities = { add: ['NET_ADMIN'] };
  c.securityContext.readOnlyRootFilesystem = false;
  pod.securityContext.seccompProfile = { type: 'Unconfined' };
  pod.securityContext.runAsNonRoot = false;
  delete c.securityContext.runAsNonRoot; // the container's own setting would win
  pod.volumes.push({ name: 'proc', hostPath: { path: '/proc' } });
  t.same(restrictedProblems(pod), [
    'volume proc: hostPath volumes are not allowed',
    'container webhook: allowPrivilegeEscalation is not false',
    'container webhook: runAsNonRoot is not true',
    'container webhook: seccompProfile is Unconfined',
    'container webhook: capabilities do not drop ALL',
    'container webhook: adds capability NET_ADMIN',
    'container webhook: root filesystem is not read-only',
  ]);
});

t.test('agent.reap: EndpointSlices read-only, and root with NET_ADMIN only, for the agent container only, and only when on', async (t) => {
  const rules = (objects: K8sObject[]) => Object.fromEntries(ofKind(objects, 'ClusterRole').map((r) => [r.metadata.name, r.rules]));
  const on = await render();
  const off = await render({ set: ['agent.reap.enabled=false'] });
  const onlyReap = await render({ set: ['agent.endpointChanges.enabled=false'] });
  t.same(rules(onlyReap)['safe-termination-agent'], AGENT_ENDPOINT_CHANGES, 'the reaper alone: nodes, and list/watch EndpointSlices (no Services)');
  const container = (objects: K8sObject[]) => podSpecOf(one(objects, 'DaemonSet')).containers[0];
  t.same(container(on).securityContext, {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    runAsNonRoot: false,
    runAsUser: 0,
    runAsGroup: 0,
    capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
  }, 'on (the default): uid 0, every capability dropped but NET_ADMIN, no escalation, read-only root');
  t.same(podSpecOf(one(on, 'DaemonSet')).securityContext, { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } }, 'the pod-level context is unchanged (the container overrides it)');
  t.same(restrictedProblems(podSpecOf(one(on, 'DaemonSet'))), AGENT_REAP_EXCEPTIONS);
  t.same(container(off).securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } }, 'off: as tight as before');
  t.same(restrictedProblems(podSpecOf(one(off, 'DaemonSet'))), ['hostNetwork']);
  const extra = await render({ set: ['agent.securityContext.capabilities.add={NET_ADMIN}'] });
  t.same(container(extra).securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] }, 'no duplicate when the values already add it');
  t.same(restrictedProblems(podSpecOf(one(on, 'Deployment'))), [], 'the webhook pod is untouched');
  const nodeOptions = (objects: K8sObject[]) => container(objects).env.find((e: { name: string }) => e.name === 'NODE_OPTIONS')?.value;
  t.equal(nodeOptions(on), '--max-semi-space-size=1', 'on: a small young generation for the sweeps, as for the stale count');
});
