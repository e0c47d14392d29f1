/**
 * The Services rule on a real API server: container ports are
 * optional, so the Services that select a pod add their protocols. The chart is
 * installed with the real helm (webhook.services.enabled defaults to true: the
 * ClusterRole grants services get/list/watch and the Deployment runs
 * `--services-informer=true`); `safe-termination serve` runs on this host with
 * those flags, as the chart's ServiceAccount, registered by the chart's
 * MutatingWebhookConfiguration. A Node carries the agent's annotation with an odd
 * udp-timeout (43 s), so nothing hard-coded passes.
 *
 * A Deployment whose containers declare no ports, behind a UDP Service, gets
 * udp-timeout + propagation (48 s, grace 78 s) on the pods kube-controller-manager
 * creates; one behind a headless UDP Service, or selected by no Service, gets the
 * TCP sleep (5 s); a Service created later is seen by the informer's watch.
 */
import t from 'tap';
import { controlPlaneSkipReason, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { installChart, startHostWebhook, waitFor } from './on-host.ts';
import type { HostWebhook } from './on-host.ts';
import { recordOf } from './pods.ts';
import type { StoredPod as Pod } from './pods.ts';

const skip = controlPlaneSkipReason();
const RELEASE = 'svc';
const SYSTEM = 'safe-termination';
const NS = 'dns';
const UDP_TIMEOUT = 43;


let plane: ControlPlane;
let webhook: HostWebhook | undefined;

/** A container without ports, as many charts write them. */
const portless = (name: string) => ({ name, image: 'registry.k8s.io/pause:3.10' });

async function createService(name: string, selector: Record<string, string>, spec: Record<string, unknown> = {}): Promise<void> {
  await plane.call('POST', `/api/v1/namespaces/${NS}/services`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { selector, ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53, protocol: 'TCP' }], ...spec },
  });
}

async function createDeployment(app: string, replicas = 2): Promise<Pod[]> {
  await plane.call('POST', `/apis/apps/v1/namespaces/${NS}/deployments`, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app },
    spec: { replicas, selector: { matchLabels: { app } }, template: { metadata: { labels: { app } }, spec: { containers: [portless(app)] } } },
  });
  let pods: Pod[] = [];
  await waitFor(`${replicas} pods of ${NS}/${app}`, 60_000, async () => {
    pods = (await plane.call<{ items: Pod[] }>('GET', `/api/v1/namespaces/${NS}/pods?labelSelector=app%3D${app}`)).items;
    return pods.length === replicas;
  });
  return pods;
}

/** The sleep a pod with these labels would get now (dryRun: nothing stored). */
async function dryRunSleep(labels: Record<string, string>): Promise<number | undefined> {
  const pod = await plane.call<Pod>('POST', `/api/v1/namespaces/${NS}/pods?dryRun=All`, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { generateName: 'probe-', labels },
    spec: { containers: [portless('probe')] },
  });
  return pod.spec.containers[0]?.lifecycle?.preStop?.sleep?.seconds;
}

t.before(async () => {
  if (skip !== false) return;
  plane = await startControlPlane();
  await plane.createNode('node-a', { annotations: { 'conntrack.safe-termination.io/udp-timeout': String(UDP_TIMEOUT) } });
  await installChart(plane, RELEASE, SYSTEM, ['--wait=false']);
  await plane.createNamespace(NS, { 'safe-termination.io/inject': 'enabled' }, 30_000);
  // Before the webhook starts: the first list must find it.
  await createService('resolver', { app: 'resolver' });
  await createService('resolver-headless', { app: 'peer' }, { clusterIP: 'None' });
  webhook = await startHostWebhook(plane, RELEASE, SYSTEM, { extraArgs: ['--log-level=debug'] });
});

t.teardown(async () => {
  if (plane === undefined) return;
  if (!t.passing()) {
    t.comment(`webhook output (tail):\n${webhook?.output().slice(-4000) ?? ''}`);
    t.comment(`kube-apiserver log (tail):\n${plane.tail('kube-apiserver', 40)}`);
  }
  await webhook?.stop();
  await plane.stop();
});

t.test('the chart grants services get/list/watch and turns the informer on', { skip }, async (t) => {
  const role = await plane.call<{ rules: Array<{ resources: string[]; verbs: string[] }> }>('GET', `/apis/rbac.authorization.k8s.io/v1/clusterroles/${RELEASE}-safe-termination-webhook`);
  t.same(role.rules.find((r) => r.resources.includes('services'))?.verbs, ['get', 'list', 'watch']);
  const deployments = await plane.call<{ items: Array<{ spec: { template: { spec: { containers: Array<{ args: string[] }> } } } }> }>(
    'GET',
    `/apis/apps/v1/namespaces/${SYSTEM}/deployments?labelSelector=${encodeURIComponent(`app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=webhook`)}`,
  );
  t.ok(deployments.items[0]?.spec.template.spec.containers[0]?.args.includes('--services-informer=true'), 'the Deployment runs --services-informer=true');
  await waitFor('the service informer to sync', 10_000, () => webhook?.output().includes('service informer synced') === true, () => webhook?.output() ?? '');
});

t.test('a Deployment without ports behind a UDP Service gets udp-timeout + propagation', { skip }, async (t) => {
  const pods = await createDeployment('resolver');
  for (const pod of pods) {
    const rec = recordOf(pod);
    t.equal(pod.spec.containers[0]?.ports, undefined, `${pod.metadata.name}: no container ports`);
    t.equal(pod.spec.containers[0]?.lifecycle?.preStop?.sleep?.seconds, UDP_TIMEOUT + 5, `${pod.metadata.name}: sleep = 5s propagation + ${UDP_TIMEOUT}s udp-timeout`);
    t.equal(pod.spec.terminationGracePeriodSeconds, 30 + UDP_TIMEOUT + 5, `${pod.metadata.name}: grace = 30 + sleep`);
    t.same(rec?.protocols, ['tcp', 'udp'], 'the record lists the Service\'s protocols');
    t.same(rec?.conntrack, { 'udp-timeout': { value: UDP_TIMEOUT, source: 'nodes' } });
  }
  // The log reaches us through the child's stdout pipe, a moment after the answer.
  await waitFor('the debug line', 5000, () => /udp from Service dns\/resolver/.test(webhook?.output() ?? ''), () => webhook?.output() ?? '');
  t.pass('the debug line names the Service that added UDP');
});

t.test('no Service, or a headless one: sized as TCP', { skip }, async (t) => {
  for (const app of ['peer', 'lonely']) {
    for (const pod of await createDeployment(app, 1)) {
      t.equal(pod.spec.containers[0]?.lifecycle?.preStop?.sleep?.seconds, 5, `${app}: the TCP sleep`);
      t.same(recordOf(pod)?.protocols, ['tcp'], `${app}: tcp only`);
    }
  }
});

t.test('a Service created later is seen through the watch; deleted, it no longer counts', { skip }, async (t) => {
  t.equal(await dryRunSleep({ app: 'late' }), 5, 'before: TCP');
  const created = Date.now();
  await createService('late', { app: 'late' });
  await waitFor('the new Service to count', 10_000, async () => (await dryRunSleep({ app: 'late' })) === UDP_TIMEOUT + 5);
  t.comment(`seen after ${Date.now() - created} ms`);
  await plane.call('DELETE', `/api/v1/namespaces/${NS}/services/late`);
  await waitFor('the deleted Service to stop counting', 10_000, async () => (await dryRunSleep({ app: 'late' })) === 5);
  t.pass('followed both ways');
});
