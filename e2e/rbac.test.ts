/**
 * The chart's RBAC, judged by the real authorizer (§8): the chart installed with
 * the real helm, then a SubjectAccessReview per (ServiceAccount, verb, resource,
 * namespace, name) as the API server sees a ServiceAccount token
 * (`system:serviceaccount:NS:SA` in `system:serviceaccounts`,
 * `system:serviceaccounts:NS`, `system:authenticated`), for what each component
 * needs and for a broad set of what it must not be able to do. The reads are also
 * made for real with a token from the TokenRequest API, so the review is checked
 * against what a request gets.
 *
 * Releases: the defaults; `agent.staleConntrack.enabled=true` (which adds the
 * agent's list/watch of Services and EndpointSlices); `webhook.kubeProxyConfigMap`
 * naming another ConfigMap; and `webhook.kubeProxyConfigMap=none`.
 */
import t from 'tap';
import type { Test } from 'tap';
import { controlPlaneSkipReason, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { installChart } from './on-host.ts';

const NODE = 'e2e-node-1';
const OTHER_NODE = 'e2e-node-2';
const CUSTOM_PROXY_CONFIG = 'kube-system/e2e-proxy-config';

type Component = 'webhook' | 'agent';

interface Subject {
  readonly release: string;
  readonly namespace: string;
  readonly component: Component;
  readonly serviceAccount: string;
}

interface Row {
  readonly subject: Subject;
  readonly verb: string;
  /** `nodes`, `nodes/status`, `endpointslices.discovery.k8s.io`, or a non-resource path such as `/version`. */
  readonly resource: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly allowed: boolean;
}

interface Attributes {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
  readonly subresource: string;
}

function attributes(resource: string): Attributes {
  const [main, subresource = ''] = resource.split('/');
  const dot = main!.indexOf('.');
  const group = dot === -1 ? '' : main!.slice(dot + 1);
  const versions: Record<string, string> = { '': 'v1', 'discovery.k8s.io': 'v1', 'rbac.authorization.k8s.io': 'v1', 'admissionregistration.k8s.io': 'v1', 'coordination.k8s.io': 'v1', apps: 'v1' };
  return { group, version: versions[group] ?? 'v1', resource: dot === -1 ? main! : main!.slice(0, dot), subresource };
}

const user = (s: Subject): string => `system:serviceaccount:${s.namespace}:${s.serviceAccount}`;

/** The authorizer's answer for one row. */
async function review(plane: ControlPlane, row: Row): Promise<{ allowed: boolean; reason: string }> {
  const spec: Record<string, unknown> = {
    user: user(row.subject),
    groups: ['system:serviceaccounts', `system:serviceaccounts:${row.subject.namespace}`, 'system:authenticated'],
  };
  if (row.resource.startsWith('/')) {
    spec['nonResourceAttributes'] = { path: row.resource, verb: row.verb };
  } else {
    const a = attributes(row.resource);
    spec['resourceAttributes'] = {
      verb: row.verb,
      group: a.group,
      version: a.version,
      resource: a.resource,
      ...(a.subresource === '' ? {} : { subresource: a.subresource }),
      ...(row.namespace === undefined ? {} : { namespace: row.namespace }),
      ...(row.name === undefined ? {} : { name: row.name }),
    };
  }
  const r = await plane.call<{ status?: { allowed?: boolean; reason?: string } }>('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SubjectAccessReview',
    spec,
  });
  return { allowed: r.status?.allowed === true, reason: r.status?.reason ?? '' };
}

/** The URL of a read row (get or list), to make the request for real; undefined for other verbs. */
function readUrl(row: Row): string | undefined {
  if (row.resource.startsWith('/')) return row.verb === 'get' ? row.resource : undefined;
  if (row.verb !== 'get' && row.verb !== 'list') return undefined;
  const a = attributes(row.resource);
  if (a.subresource !== '') return undefined;
  const base = a.group === '' ? `/api/${a.version}` : `/apis/${a.group}/${a.version}`;
  const ns = row.namespace === undefined ? '' : `/namespaces/${row.namespace}`;
  const name = row.name === undefined ? '' : `/${row.name}`;
  return `${base}${ns}/${a.resource}${name}`;
}

const where = (row: Row): string => (row.namespace === undefined ? (row.name ?? (row.resource.startsWith('/') ? '' : '(cluster-wide)')) : `${row.namespace}/${row.name ?? '*'}`);

function table(rows: ReadonlyArray<Row & { got: boolean }>): string {
  const cells = rows.map((r) => [`${r.subject.release}/${r.subject.component} (${r.subject.serviceAccount})`, r.verb, r.resource, where(r), r.allowed ? 'allowed' : 'refused', r.got === r.allowed ? 'ok' : `MISMATCH: ${r.got ? 'allowed' : 'refused'}`]);
  const header = ['subject', 'verb', 'resource', 'namespace/name', 'expected', 'authorizer'];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => c.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

/** The ServiceAccount the release's Deployment (webhook) or DaemonSet (agent) runs as. */
async function subjectOf(plane: ControlPlane, release: string, namespace: string, component: Component): Promise<Subject> {
  const kind = component === 'webhook' ? 'deployments' : 'daemonsets';
  const selector = encodeURIComponent(`app.kubernetes.io/instance=${release},app.kubernetes.io/component=${component}`);
  const list = await plane.call<{ items: Array<{ spec: { template: { spec: { serviceAccountName?: string } } } }> }>('GET', `/apis/apps/v1/namespaces/${namespace}/${kind}?labelSelector=${selector}`);
  const serviceAccount = list.items[0]?.spec.template.spec.serviceAccountName;
  if (list.items.length !== 1 || serviceAccount === undefined) throw new Error(`release ${release}: expected one ${component} ${kind} with a serviceAccountName, found ${list.items.length}`);
  return { release, namespace, component, serviceAccount };
}

/** What neither component may do: the broad refusals, the same for both. */
function refusedToBoth(s: Subject, ownSecret: string): Row[] {
  const no = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ subject: s, verb, resource, ...(namespace === undefined ? {} : { namespace }), ...(name === undefined ? {} : { name }), allowed: false });
  return [
    no('create', 'nodes'),
    no('update', 'nodes', undefined, NODE),
    no('delete', 'nodes', undefined, NODE),
    no('deletecollection', 'nodes'),
    no('patch', 'nodes/status', undefined, NODE),
    no('update', 'nodes/status', undefined, NODE),
    no('get', 'nodes/proxy', undefined, NODE),
    no('create', 'nodes/proxy', undefined, NODE),
    no('get', 'secrets', s.namespace, ownSecret),
    no('list', 'secrets', s.namespace),
    no('get', 'secrets', 'kube-system', 'bootstrap-token-abcdef'),
    no('list', 'secrets'),
    no('list', 'configmaps', 'kube-system'),
    no('watch', 'configmaps', 'kube-system'),
    no('get', 'configmaps', 'kube-system', 'coredns'),
    no('get', 'configmaps', 'kube-system', 'extension-apiserver-authentication'),
    no('update', 'configmaps', 'kube-system', 'kube-proxy'),
    no('patch', 'configmaps', 'kube-system', 'kube-proxy'),
    no('delete', 'configmaps', 'kube-system', 'kube-proxy'),
    no('get', 'configmaps', 'default', 'kube-proxy'),
    no('list', 'configmaps', s.namespace),
    no('get', 'pods', 'default', 'app'),
    no('list', 'pods'),
    no('create', 'pods', 'default'),
    no('patch', 'pods', 'default', 'app'),
    no('delete', 'pods', 'default', 'app'),
    no('create', 'pods/eviction', 'default', 'app'),
    no('create', 'pods/exec', 'default', 'app'),
    no('create', 'serviceaccounts/token', s.namespace, s.serviceAccount),
    no('create', 'serviceaccounts/token', 'kube-system', 'default'),
    no('update', 'services', s.namespace, s.release),
    no('delete', 'services', s.namespace, s.release),
    no('patch', 'mutatingwebhookconfigurations.admissionregistration.k8s.io', undefined, `zz-${s.release}-safe-termination`),
    no('delete', 'mutatingwebhookconfigurations.admissionregistration.k8s.io', undefined, `zz-${s.release}-safe-termination`),
    no('create', 'validatingadmissionpolicies.admissionregistration.k8s.io'),
    no('patch', 'clusterroles.rbac.authorization.k8s.io', undefined, `${s.release}-safe-termination-${s.component === 'agent' ? 'agent' : 'webhook'}`),
    no('escalate', 'clusterroles.rbac.authorization.k8s.io'),
    no('bind', 'clusterroles.rbac.authorization.k8s.io', undefined, 'cluster-admin'),
    no('create', 'clusterrolebindings.rbac.authorization.k8s.io'),
    no('create', 'rolebindings.rbac.authorization.k8s.io', 'kube-system'),
    no('impersonate', 'users', undefined, 'admin'),
    no('impersonate', 'serviceaccounts', 'kube-system', 'default'),
    no('create', 'leases.coordination.k8s.io', 'kube-node-lease'),
    no('update', 'leases.coordination.k8s.io', 'kube-node-lease', NODE),
    no('create', 'deployments.apps', s.namespace),
    no('patch', 'daemonsets.apps', s.namespace, `${s.release}-safe-termination-agent`),
  ];
}

function run(): void {
  let plane: ControlPlane | undefined;
  const cp = (): ControlPlane => {
    if (plane === undefined) throw new Error('no control plane');
    return plane;
  };
  const subjects = new Map<string, Subject>();
  const subject = (release: string, component: Component): Subject => {
    const s = subjects.get(`${release}/${component}`);
    if (s === undefined) throw new Error(`no ${component} in release ${release}`);
    return s;
  };

  const RELEASES: ReadonlyArray<{ release: string; set: string[] }> = [
    { release: 'plain', set: [] },
    { release: 'stale', set: ['agent.staleConntrack.enabled=true'] },
    { release: 'custom', set: [`webhook.kubeProxyConfigMap=${CUSTOM_PROXY_CONFIG}`] },
    { release: 'noproxy', set: ['webhook.kubeProxyConfigMap=none'] },
  ];

  t.before(async () => {
    plane = await startControlPlane();
    await plane.createNode(NODE);
    await plane.createNode(OTHER_NODE);
    // The ConfigMaps the webhook reads, so that the real reads find something.
    for (const name of ['kube-proxy', CUSTOM_PROXY_CONFIG.split('/')[1]!]) {
      await plane.call('POST', '/api/v1/namespaces/kube-system/configmaps', { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: { 'config.conf': 'kind: KubeProxyConfiguration\n' } });
    }
    for (const { release, set } of RELEASES) {
      const namespace = `st-${release}`;
      await installChart(plane, release, namespace, ['--wait=hookOnly', ...set.flatMap((s) => ['--set', s])]);
      for (const component of ['webhook', 'agent'] as const) subjects.set(`${release}/${component}`, await subjectOf(plane, release, namespace, component));
    }
  });
  t.teardown(async () => {
    await plane?.stop();
  });

  const check = async (t: Test, rows: Row[]): Promise<void> => {
    const plane = cp();
    const answers = await Promise.all(rows.map((row) => review(plane, row)));
    const results = rows.map((row, i) => ({ ...row, got: answers[i]!.allowed }));
    t.comment(`\n${table(results)}`);
    for (const [i, r] of results.entries()) {
      const reason = answers[i]!.reason === '' ? '' : ` (authorizer: ${answers[i]!.reason})`;
      t.equal(r.got, r.allowed, `${user(r.subject)} ${r.verb} ${r.resource} ${where(r)}: ${r.allowed ? 'allowed' : 'refused'}${reason}`);
    }
    // The same reads for real, with a token of the ServiceAccount: 403 exactly when refused.
    const tokens = new Map<Subject, string>();
    for (const r of results) {
      const url = readUrl(r);
      if (url === undefined) continue;
      let token = tokens.get(r.subject);
      if (token === undefined) {
        token = await plane.serviceAccountToken(r.subject.namespace, r.subject.serviceAccount, { expirationSeconds: 600 });
        tokens.set(r.subject, token);
      }
      const res = await plane.api('GET', url, undefined, { token });
      t.equal(res.status === 403, !r.allowed, `for real: GET ${url} as ${r.subject.release}/${r.subject.component} → ${res.status}`);
    }
  };

  t.test('webhook (defaults): reads Nodes, Services and the kube-proxy ConfigMap, nothing else', async (t) => {
    const s = subject('plain', 'webhook');
    const yes = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ subject: s, verb, resource, ...(namespace === undefined ? {} : { namespace }), ...(name === undefined ? {} : { name }), allowed: true });
    const no = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ ...yes(verb, resource, namespace, name), allowed: false });
    await check(t, [
      yes('get', 'nodes', undefined, NODE),
      yes('list', 'nodes'),
      yes('watch', 'nodes'),
      yes('get', 'configmaps', 'kube-system', 'kube-proxy'),
      yes('get', '/version'),
      no('patch', 'nodes', undefined, NODE),
      no('watch', 'configmaps', 'kube-system', 'kube-proxy'),
      no('list', 'configmaps'),
      // webhook.services.enabled (default true): the Service informer, read only.
      yes('get', 'services', s.namespace, 'plain-safe-termination'),
      yes('list', 'services'),
      yes('watch', 'services'),
      yes('list', 'services', 'default'),
      no('create', 'services', 'default'),
      no('patch', 'services', 'default', 'kubernetes'),
      no('list', 'endpointslices.discovery.k8s.io'),
      no('list', 'endpoints'),
      ...refusedToBoth(s, 'plain-safe-termination-tls'),
    ]);
  });

  t.test('agent (defaults): gets and patches Nodes, lists and watches EndpointSlices (the churn count), nothing else', async (t) => {
    const s = subject('plain', 'agent');
    const yes = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ subject: s, verb, resource, ...(namespace === undefined ? {} : { namespace }), ...(name === undefined ? {} : { name }), allowed: true });
    const no = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ ...yes(verb, resource, namespace, name), allowed: false });
    await check(t, [
      yes('get', 'nodes', undefined, NODE),
      yes('patch', 'nodes', undefined, NODE),
      // RBAC cannot name "the node this pod runs on": the grant covers every Node.
      yes('patch', 'nodes', undefined, OTHER_NODE),
      yes('get', '/version'),
      no('list', 'nodes'),
      no('watch', 'nodes'),
      no('get', 'configmaps', 'kube-system', 'kube-proxy'),
      no('list', 'services'),
      no('watch', 'services'),
      // agent.endpointChanges (default on): ServiceEndpointChurn's count, read only.
      yes('list', 'endpointslices.discovery.k8s.io'),
      yes('watch', 'endpointslices.discovery.k8s.io'),
      yes('list', 'endpointslices.discovery.k8s.io', 'default'),
      no('get', 'endpointslices.discovery.k8s.io', 'default', 'kubernetes'),
      no('create', 'endpointslices.discovery.k8s.io', 'default'),
      no('delete', 'endpointslices.discovery.k8s.io', 'default', 'kubernetes'),
      no('list', 'endpoints'),
      ...refusedToBoth(s, 'plain-safe-termination-tls'),
    ]);
  });

  t.test('agent with staleConntrack: adds list/watch of Services and EndpointSlices, read only', async (t) => {
    const s = subject('stale', 'agent');
    const yes = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ subject: s, verb, resource, ...(namespace === undefined ? {} : { namespace }), ...(name === undefined ? {} : { name }), allowed: true });
    const no = (verb: string, resource: string, namespace?: string, name?: string): Row => ({ ...yes(verb, resource, namespace, name), allowed: false });
    await check(t, [
      yes('get', 'nodes', undefined, NODE),
      yes('patch', 'nodes', undefined, NODE),
      yes('list', 'services'),
      yes('watch', 'services'),
      yes('list', 'services', 'default'),
      yes('list', 'endpointslices.discovery.k8s.io'),
      yes('watch', 'endpointslices.discovery.k8s.io'),
      yes('list', 'endpointslices.discovery.k8s.io', 'kube-system'),
      no('get', 'services', 'default', 'kubernetes'),
      no('create', 'services', 'default'),
      no('patch', 'services', 'default', 'kubernetes'),
      no('create', 'endpointslices.discovery.k8s.io', 'default'),
      no('update', 'endpointslices.discovery.k8s.io', 'default', 'kubernetes'),
      no('delete', 'endpointslices.discovery.k8s.io', 'default', 'kubernetes'),
      no('list', 'endpoints'),
      no('list', 'nodes'),
      ...refusedToBoth(s, 'stale-safe-termination-tls'),
    ]);
  });

  t.test('staleConntrack widens nothing else: the same release\'s webhook, and the default release\'s agent', async (t) => {
    const webhook = subject('stale', 'webhook');
    const agent = subject('plain', 'agent');
    await check(t, [
      { subject: webhook, verb: 'list', resource: 'nodes', allowed: true },
      { subject: webhook, verb: 'get', resource: 'configmaps', namespace: 'kube-system', name: 'kube-proxy', allowed: true },
      { subject: webhook, verb: 'list', resource: 'services', allowed: true },
      { subject: webhook, verb: 'list', resource: 'endpointslices.discovery.k8s.io', allowed: false },
      { subject: webhook, verb: 'patch', resource: 'nodes', name: NODE, allowed: false },
      { subject: agent, verb: 'list', resource: 'services', allowed: false },
      { subject: agent, verb: 'list', resource: 'endpointslices.discovery.k8s.io', allowed: true },
    ]);
  });

  t.test('webhook.kubeProxyConfigMap: the grant follows the ConfigMap it names; none drops it', async (t) => {
    const custom = subject('custom', 'webhook');
    const none = subject('noproxy', 'webhook');
    const [ns, name] = CUSTOM_PROXY_CONFIG.split('/') as [string, string];
    await check(t, [
      { subject: custom, verb: 'get', resource: 'configmaps', namespace: ns, name, allowed: true },
      { subject: custom, verb: 'get', resource: 'configmaps', namespace: 'kube-system', name: 'kube-proxy', allowed: false },
      { subject: custom, verb: 'list', resource: 'configmaps', namespace: ns, allowed: false },
      { subject: custom, verb: 'list', resource: 'nodes', allowed: true },
      { subject: none, verb: 'get', resource: 'configmaps', namespace: 'kube-system', name: 'kube-proxy', allowed: false },
      { subject: none, verb: 'get', resource: 'configmaps', namespace: ns, name, allowed: false },
      { subject: none, verb: 'list', resource: 'nodes', allowed: true },
      { subject: none, verb: 'watch', resource: 'nodes', allowed: true },
    ]);
  });

  // Spec §7: RBAC cannot name "the node this pod runs on", so a ValidatingAdmissionPolicy
  // on the agent's ServiceAccount must keep it to its own Node (the node name a pod-bound
  // token carries) and to the conntrack.safe-termination.io/* annotations.
  t.test(
    'the agent changes only its own Node, and only its conntrack annotations',
    async (t) => {
      const plane = cp();
      const s = subject('plain', 'agent');
      // An agent pod on NODE (not run: there is no kubelet) and a token bound to it, as the kubelet would mount.
      const pod = await plane.call<{ metadata: { uid: string } }>('POST', `/api/v1/namespaces/${s.namespace}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'agent-e2e', labels: { 'safe-termination.io/inject': 'disabled' } },
        spec: { nodeName: NODE, serviceAccountName: s.serviceAccount, containers: [{ name: 'agent', image: 'registry.invalid/safe-termination:e2e' }] },
      });
      const token = await plane.serviceAccountToken(s.namespace, s.serviceAccount, { boundPod: { name: 'agent-e2e', uid: pod.metadata.uid } });
      const patch = (node: string, body: unknown): Promise<number> =>
        plane.api('PATCH', `/api/v1/nodes/${node}`, body, { token, contentType: 'application/merge-patch+json' }).then((r) => r.status);
      const own = await patch(NODE, { metadata: { annotations: { 'conntrack.safe-termination.io/udp-timeout': '30' } } });
      t.equal(own, 200, 'its own Node\'s conntrack annotation: allowed');
      const refused: Array<[string, string, unknown]> = [
        ['another Node\'s conntrack annotation', OTHER_NODE, { metadata: { annotations: { 'conntrack.safe-termination.io/udp-timeout': '1' } } }],
        ['another annotation on its own Node', NODE, { metadata: { annotations: { 'example.com/owner': 'agent' } } }],
        ['a label on its own Node', NODE, { metadata: { labels: { 'node-role.kubernetes.io/control-plane': '' } } }],
        ['cordoning its own Node', NODE, { spec: { unschedulable: true } }],
        ['a taint on another Node', OTHER_NODE, { spec: { taints: [{ key: 'e2e', effect: 'NoSchedule' }] } }],
      ];
      for (const [what, node, body] of refused) {
        const status = await patch(node, body);
        t.equal(status, 403, `${what}: refused by the policy`);
      }
      const unbound = await plane.serviceAccountToken(s.namespace, s.serviceAccount);
      const r = await plane.api('PATCH', `/api/v1/nodes/${NODE}`, { metadata: { annotations: { 'conntrack.safe-termination.io/udp-timeout': '31' } } }, { token: unbound, contentType: 'application/merge-patch+json' });
      t.equal(r.status, 403, 'a token bound to no pod names no Node: refused even on NODE');
      t.match(r.text, /may change only the Node its pod runs on/, 'with the policy\'s message');
    },
  );
}

const skip = controlPlaneSkipReason();
if (skip !== false) {
  t.plan(0, skip);
} else {
  run();
}
