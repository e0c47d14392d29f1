/**
 * Pod Security on a real API server: the webhook's pods meet "restricted", the agent
 * needs "privileged" (host network), and `agent.namespace` puts the agent in a
 * namespace of its own so the release namespace can enforce "restricted". The real
 * ReplicaSet and DaemonSet controllers create the pods; the PodSecurity admission
 * plugin judges them.
 */
import t from 'tap';
import { controlPlaneSkipReason, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { installChart, waitFor } from './on-host.ts';

const skip = controlPlaneSkipReason();
let plane: ControlPlane;

interface Listed {
  items: Array<{ metadata: { name: string }; reason?: string; message?: string; involvedObject?: { kind: string } }>;
}

async function namespace(name: string, level: string): Promise<void> {
  await plane.call('POST', '/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name, labels: { 'pod-security.kubernetes.io/enforce': level } },
  });
}

const podsOf = async (ns: string, component: string): Promise<number> =>
  (await plane.call<Listed>('GET', `/api/v1/namespaces/${ns}/pods?labelSelector=${encodeURIComponent(`app.kubernetes.io/component=${component}`)}`)).items.length;

t.before(async () => {
  if (skip !== false) return;
  plane = await startControlPlane();
  await plane.createNode('node-1');
});

t.teardown(async () => {
  await plane?.stop();
});

t.test('agent.namespace: the webhook in a "restricted" namespace, the agent in a "privileged" one; both get their pods', { skip }, async (t) => {
  await namespace('st-system', 'restricted');
  await namespace('st-agent', 'privileged');
  await installChart(plane, 'split', 'st-system', ['--wait=false', '--set', 'agent.namespace=st-agent']);
  await waitFor('the webhook pods', 60_000, async () => (await podsOf('st-system', 'webhook')) === 2);
  t.pass('the ReplicaSet created both webhook pods under "restricted"');
  await waitFor('the agent pod', 60_000, async () => (await podsOf('st-agent', 'agent')) === 1);
  t.pass('the DaemonSet created the agent pod under "privileged"');
  t.equal(await podsOf('st-system', 'agent'), 0, 'no agent pod in the release namespace');
  const binding = await plane.call<{ subjects: Array<{ namespace: string }> }>('GET', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/split-safe-termination-agent');
  t.equal(binding.subjects[0]?.namespace, 'st-agent', 'the agent\'s ClusterRoleBinding names its ServiceAccount there');
});

t.test('the default layout in a "restricted" namespace: the agent\'s pods are refused, as NOTES and the README say', { skip }, async (t) => {
  await namespace('st-strict', 'restricted');
  await installChart(plane, 'strict', 'st-strict', ['--wait=false']);
  let message = '';
  await waitFor('a FailedCreate event on the DaemonSet', 60_000, async () => {
    const events = await plane.call<Listed>('GET', '/api/v1/namespaces/st-strict/events');
    const e = events.items.find((x) => x.involvedObject?.kind === 'DaemonSet' && x.reason === 'FailedCreate');
    message = e?.message ?? '';
    return e !== undefined;
  });
  t.match(message, /violates PodSecurity "restricted/, 'refused by Pod Security');
  t.match(message, /host namespaces|hostNetwork/, 'for the host network');
  t.equal(await podsOf('st-strict', 'agent'), 0, 'no agent pod');
  await waitFor('the webhook pods', 60_000, async () => (await podsOf('st-strict', 'webhook')) === 2);
  t.pass('while the webhook\'s pods are admitted');
});
