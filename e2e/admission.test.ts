/**
 * The webhook called by a real API server. The chart is installed with the real
 * helm; `safe-termination serve` runs on this host as the chart's webhook
 * ServiceAccount, registered by the chart's own MutatingWebhookConfiguration
 * (only clientConfig changed); the real `safe-termination agent`, as the chart's
 * agent ServiceAccount, publishes the conntrack sysctls of two network namespaces
 * (odd values, so nothing hard-coded passes) on two Nodes. Pods come from
 * Deployments through the real kube-controller-manager.
 */
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { controlPlaneSkipReason, freePort, sleep, startControlPlane } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';
import { apiServerSocket, installChart, metricValue, pointWebhookAt, startHostAgent, startHostWebhook, waitFor } from './on-host.ts';
import type { HostProcess, HostWebhook } from './on-host.ts';
import { bridgeToSocket, createNetns, netnsSkipReason } from '../test/support/netns.ts';
import type { Netns } from '../test/support/netns.ts';
import { recordOf } from './pods.ts';
import type { StoredPod as Pod } from './pods.ts';

const skip = controlPlaneSkipReason() || netnsSkipReason();
const RELEASE = 'st';
const SYSTEM = 'safe-termination';
const P = 'conntrack.safe-termination.io/';
// Odd values: node-a's namespace 37 s, node-b's 41 s; the Linux default is 30.
const NODE_UDP = { 'node-a': 37, 'node-b': 41 } as const;

let plane: ControlPlane;
let webhook: HostWebhook;
const agents: HostProcess[] = [];
let apiSocket: Server | undefined;

function container(name: string, ports: Array<{ containerPort: number; protocol: string }> = []): Record<string, unknown> {
  return { name, image: 'registry.k8s.io/pause:3.10', ports };
}

function podBody(name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, ...metadata }, spec: { containers: [container('app')], ...spec } };
}

async function createNamespace(name: string, labels: Record<string, string> = {}): Promise<void> {
  await plane.createNamespace(name, labels, 30_000);
}

async function createPod(namespace: string, body: Record<string, unknown>, query = ''): Promise<Pod> {
  return plane.call<Pod>('POST', `/api/v1/namespaces/${namespace}/pods${query}`, body);
}

async function deploymentPods(namespace: string, app: string, replicas: number): Promise<Pod[]> {
  let pods: Pod[] = [];
  await waitFor(`${replicas} pods of ${namespace}/${app}`, 60_000, async () => {
    const list = await plane.call<{ items: Pod[] }>('GET', `/api/v1/namespaces/${namespace}/pods?labelSelector=app%3D${app}`);
    pods = list.items;
    return pods.length === replicas;
  });
  return pods;
}

async function createDeployment(namespace: string, app: string, template: { spec: Record<string, unknown>; annotations?: Record<string, string> }, replicas = 2): Promise<void> {
  await plane.call('POST', `/apis/apps/v1/namespaces/${namespace}/deployments`, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app },
    spec: {
      replicas,
      selector: { matchLabels: { app } },
      template: { metadata: { labels: { app }, annotations: template.annotations ?? {} }, spec: template.spec },
    },
  });
}

t.before(async () => {
  if (skip !== false) return;
  plane = await startControlPlane();
  await plane.createNode('node-a', { labels: { pool: 'a' } });
  await plane.createNode('node-b', { labels: { pool: 'b' } });
  await installChart(plane, RELEASE, SYSTEM, ['--wait=false']);

  // Each "node" is a network namespace with its own conntrack sysctls; its agent
  // reaches the API server through a Unix socket bridged onto its loopback.
  apiSocket = await apiServerSocket(plane, join(plane.dir, 'api.sock'));
  for (const [node, udp] of Object.entries(NODE_UDP)) {
    const ns: Netns = createNetns(t);
    ns.sysctl('net.netfilter.nf_conntrack_udp_timeout', udp);
    ns.sysctl('net.netfilter.nf_conntrack_udp_timeout_stream', udp + 100);
    ns.sysctl('net.netfilter.nf_conntrack_tcp_timeout_time_wait', udp + 3);
    const bridgePort = await bridgeToSocket(ns, join(plane.dir, 'api.sock'));
    agents.push(await startHostAgent(plane, SYSTEM, { nodeName: node, netns: { name: ns.name, bridgePort }, extraArgs: ['--interval=1s'] }));
  }
  await waitFor('both agents\' annotations', 60_000, async () => {
    for (const [node, udp] of Object.entries(NODE_UDP)) {
      const n = await plane.call<{ metadata: { annotations?: Record<string, string> } }>('GET', `/api/v1/nodes/${node}`);
      if (n.metadata.annotations?.[`${P}udp-timeout`] !== String(udp)) return false;
    }
    return true;
  }, () => agents.map((a) => a.output()).join('\n'));

  webhook = await startHostWebhook(plane, RELEASE, SYSTEM, { extraArgs: ['--log-level=debug'] });
  await createNamespace('shop', { 'safe-termination.io/inject': 'enabled' });
  await createNamespace('plain');
});

t.teardown(async () => {
  if (plane === undefined) return;
  if (!t.passing()) {
    t.comment(`webhook output (tail):\n${webhook?.output().slice(-4000) ?? ''}`);
    t.comment(`kube-apiserver log (tail):\n${plane.tail('kube-apiserver', 40)}`);
  }
  await webhook?.stop();
  for (const agent of agents) await agent.stop();
  apiSocket?.close();
  await plane.stop();
});

t.test('the agents published their namespaces\' sysctls on their own Nodes', { skip }, async (t) => {
  for (const [node, udp] of Object.entries(NODE_UDP)) {
    const n = await plane.call<{ metadata: { annotations: Record<string, string> } }>('GET', `/api/v1/nodes/${node}`);
    t.equal(n.metadata.annotations[`${P}udp-timeout`], String(udp), `${node}: udp-timeout`);
    t.equal(n.metadata.annotations[`${P}udp-timeout-stream`], String(udp + 100), `${node}: udp-timeout-stream`);
    t.equal(n.metadata.annotations[`${P}tcp-timeout-time-wait`], String(udp + 3), `${node}: tcp-timeout-time-wait`);
    t.match(n.metadata.annotations[`${P}observed-at`], /^\d{4}-\d\d-\d\dT/, `${node}: observed-at`);
  }
});

t.test('a Deployment in a labelled namespace: its pods are stored with the sleep, the grace and the record', { skip }, async (t) => {
  await createDeployment('shop', 'dns', { spec: { containers: [container('coredns', [{ containerPort: 53, protocol: 'UDP' }, { containerPort: 53, protocol: 'TCP' }])] } });
  const pods = await deploymentPods('shop', 'dns', 2);
  // No nodeName yet at admission: the maximum over both nodes, 41 s (node-b).
  for (const pod of pods) {
    t.same(pod.spec.containers[0]?.lifecycle?.preStop, { sleep: { seconds: 46 } }, `${pod.metadata.name}: native sleep of 5 + 41 s (the API server reports v1.37)`);
    t.equal(pod.spec.terminationGracePeriodSeconds, 76, 'grace 30 + 46');
    const record = recordOf(pod);
    t.same(record?.conntrack['udp-timeout'], { value: 41, source: 'nodes' }, 'the record names the nodes as the source');
    t.same(record?.protocols, ['tcp', 'udp']);
    t.equal(record?.mode, 'sleep');
  }

  // Pinned to node-a by a nodeSelector: node-a's 37 s only.
  await createDeployment('shop', 'dns-a', { spec: { nodeSelector: { pool: 'a' }, containers: [container('coredns', [{ containerPort: 53, protocol: 'UDP' }])] } }, 1);
  const [pinned] = await deploymentPods('shop', 'dns-a', 1);
  t.same(pinned?.spec.containers[0]?.lifecycle?.preStop, { sleep: { seconds: 42 } }, 'nodeSelector pool=a: 5 + 37 s');
  t.same(recordOf(pinned!)?.conntrack['udp-timeout'], { value: 37, source: 'nodes' });

  // A TCP pod: propagation only.
  await createDeployment('shop', 'web', { spec: { containers: [container('web', [{ containerPort: 8080, protocol: 'TCP' }])] } }, 1);
  const [web] = await deploymentPods('shop', 'web', 1);
  t.same(web?.spec.containers[0]?.lifecycle?.preStop, { sleep: { seconds: 5 } });
  t.equal(web?.spec.terminationGracePeriodSeconds, 35);
});

t.test('pods the product must leave alone are stored untouched', { skip }, async (t) => {
  const cases: Array<[string, string, Record<string, unknown>]> = [
    ['an unlabelled namespace', 'plain', podBody('untouched-ns', {})],
    ['the opt-out label (objectSelector)', 'shop', podBody('opt-out-label', {}, { labels: { 'safe-termination.io/inject': 'disabled' } })],
    ['the opt-out annotation', 'shop', podBody('opt-out-annotation', {}, { annotations: { 'safe-termination.io/inject': 'false' } })],
    ['grace 0', 'shop', podBody('grace-zero', { terminationGracePeriodSeconds: 0 })],
  ];
  for (const [what, namespace, body] of cases) {
    const pod = await createPod(namespace, body);
    t.equal(recordOf(pod), undefined, `${what}: no record`);
    t.equal(pod.spec.containers[0]?.lifecycle, undefined, `${what}: no hook`);
    t.equal(pod.spec.terminationGracePeriodSeconds, (body['spec'] as { terminationGracePeriodSeconds?: number }).terminationGracePeriodSeconds ?? 30, `${what}: grace unchanged`);
  }

  await plane.call('POST', '/apis/batch/v1/namespaces/shop/jobs', {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: 'migrate' },
    spec: { template: { metadata: { labels: { app: 'migrate' } }, spec: { restartPolicy: 'Never', containers: [container('migrate')] } } },
  });
  const [jobPod] = await deploymentPods('shop', 'migrate', 1);
  t.equal(jobPod?.metadata.ownerReferences?.[0]?.kind, 'Job', 'the job controller created the pod');
  t.equal(recordOf(jobPod!), undefined, 'a Job pod: no record');
  t.equal(jobPod?.spec.containers[0]?.lifecycle, undefined, 'a Job pod: no hook');

  // The chart's matchConditions: the API server did not even call the webhook for these.
  await waitFor('the grace-0 decision in the log', 5000, () => webhook.logLines().some((l) => l['pod'] === 'shop/grace-zero'));
  const called = new Set(webhook.logLines().map((l) => l['pod']));
  t.ok(called.has('shop/grace-zero'), 'grace 0: the webhook was called (it skips by itself)');
  t.notOk(called.has('shop/opt-out-annotation'), 'the opt-out annotation: not called (matchConditions)');
  t.notOk(called.has('shop/opt-out-label'), 'the opt-out label: not called (objectSelector)');
  t.notOk(called.has('shop/migrate-*'), 'a Job pod: not called (matchConditions)');
});

t.test('an invalid annotation: the pod is refused and the ReplicaSet\'s events carry the product\'s message', { skip }, async (t) => {
  const direct = await plane.api('POST', '/api/v1/namespaces/shop/pods', podBody('bad', {}, { annotations: { 'safe-termination.io/propagation-delay': '5 seconds' } }));
  t.equal(direct.status, 400, 'a direct create is refused');
  t.match(direct.text, /safe-termination\.io\/propagation-delay/, 'naming the annotation');
  t.match(direct.text, /5 seconds/, 'and the value');

  await createDeployment('shop', 'bad', { annotations: { 'safe-termination.io/propagation-delay': '5 seconds' }, spec: { containers: [container('app')] } }, 1);
  let message = '';
  await waitFor('a FailedCreate event on the ReplicaSet', 60_000, async () => {
    const events = await plane.call<{ items: Array<{ reason: string; message: string; involvedObject: { kind: string } }> }>('GET', '/api/v1/namespaces/shop/events');
    const event = events.items.find((e) => e.involvedObject.kind === 'ReplicaSet' && e.reason === 'FailedCreate');
    message = event?.message ?? '';
    return event !== undefined;
  });
  t.match(message, /admission webhook "pods\.safe-termination\.io" denied the request/, 'the API server names our webhook');
  t.match(message, /propagation-delay/, 'and the message names the annotation');
  const pods = await plane.call<{ items: Pod[] }>('GET', '/api/v1/namespaces/shop/pods?labelSelector=app%3Dbad');
  t.equal(pods.items.length, 0, 'no pod was stored');
});

t.test('what only a real API server checks', { skip }, async (t) => {
  // The API server rejects a preStop sleep longer than the grace period…
  const hook = { lifecycle: { preStop: { sleep: { seconds: 50 } } } };
  const tooLong = await plane.api('POST', '/api/v1/namespaces/plain/pods', podBody('too-long', { terminationGracePeriodSeconds: 10, containers: [{ ...container('app'), ...hook }] }));
  t.equal(tooLong.status, 422, 'without the webhook, sleep 50 > grace 10 is invalid');
  t.match(tooLong.text, /sleep/i);
  // …so the plan raises the grace whenever it injects a long sleep.
  const sized = await createPod('shop', podBody('long-sleep', { terminationGracePeriodSeconds: 10 }, { annotations: { 'safe-termination.io/prestop-sleep': '50' } }));
  t.same(sized.spec.containers[0]?.lifecycle?.preStop, { sleep: { seconds: 50 } });
  t.equal(sized.spec.terminationGracePeriodSeconds, 60, 'grace 10 + 50: accepted by validation');

  // dryRun=All: the answer shows the injection, nothing is stored.
  const dry = await createPod('shop', podBody('dry', {}), '?dryRun=All');
  t.same(dry.spec.containers[0]?.lifecycle?.preStop, { sleep: { seconds: 5 } }, 'the dry run is injected');
  t.equal((await plane.api('GET', '/api/v1/namespaces/shop/pods/dry')).status, 404, 'and not stored');
});

/** A second webhook of the test's own, called after ours, that adds a StatsD sidecar (UDP). */
async function startSidecarInjector(): Promise<{ server: HttpsServer; url: string }> {
  const pair = plane.issue('sidecar', '/CN=sidecar-injector', 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1');
  const port = await freePort();
  const server = createHttpsServer({ cert: readFileSync(pair.cert), key: readFileSync(pair.key) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { request: { uid: string; object: Pod } };
      const pod = review.request.object;
      const patch = pod.spec.containers.some((c) => c.name === 'statsd')
        ? []
        : [{ op: 'add', path: '/spec/containers/-', value: container('statsd', [{ containerPort: 8125, protocol: 'UDP' }]) }];
      res.setHeader('Content-Type', 'application/json');
      res.end(
        JSON.stringify({
          apiVersion: 'admission.k8s.io/v1',
          kind: 'AdmissionReview',
          response: { uid: review.request.uid, allowed: true, ...(patch.length > 0 ? { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') } : {}) },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return { server, url: `https://127.0.0.1:${port}/inject` };
}

t.test('a sidecar added after ours: the API server calls ours again (IfNeeded), the sidecar is hooked, grace is not raised twice', { skip }, async (t) => {
  const injector = await startSidecarInjector();
  t.teardown(() => injector.server.close());
  await createNamespace('mesh', { 'safe-termination.io/inject': 'enabled', mesh: 'on' });
  // Named to sort after the chart's `zz-st`: the API server calls it second.
  await plane.call('POST', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations', {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: 'zzz-statsd-injector' },
    webhooks: [
      {
        name: 'statsd.e2e.test',
        admissionReviewVersions: ['v1'],
        clientConfig: { url: injector.url, caBundle: Buffer.from(readFileSync(plane.caFile)).toString('base64') },
        rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
        namespaceSelector: { matchLabels: { mesh: 'on' } },
        sideEffects: 'None',
        failurePolicy: 'Fail',
        reinvocationPolicy: 'Never',
      },
    ],
  });
  t.teardown(() => plane.api('DELETE', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/zzz-statsd-injector'));
  // A new configuration reaches the API server's admission chain within a second or so.
  let pod: Pod | undefined;
  let name = '';
  await waitFor('the sidecar injector to be called', 30_000, async () => {
    name = `meshed-${Date.now()}`;
    pod = await createPod('mesh', podBody(name, { containers: [container('web', [{ containerPort: 8080, protocol: 'TCP' }])] }));
    return pod.spec.containers.length === 2;
  });
  const [web, statsd] = pod!.spec.containers;
  t.equal(statsd?.name, 'statsd', 'the sidecar was added after our first call');
  t.same(statsd?.lifecycle?.preStop, { sleep: { seconds: 46 } }, 'reinvoked: the sidecar got the hook');
  t.same(web?.lifecycle?.preStop, { sleep: { seconds: 46 } }, 'and the web container was re-sized for UDP (5 + 41)');
  t.equal(pod!.spec.terminationGracePeriodSeconds, 76, 'grace 30 + 46, not 30 + 5 + 46');
  t.same(recordOf(pod!)?.containers, ['web', 'statsd']);
  t.equal(recordOf(pod!)?.originalGracePeriodSeconds, 30);
  await waitFor('both decisions in the log', 5000, () => webhook.logLines().filter((l) => l['pod'] === `mesh/${name}`).length === 2);
  const decisions = webhook.logLines().filter((l) => l['pod'] === `mesh/${name}`).map((l) => String(l['msg']));
  t.match(decisions[0], /^sleep 5s .* in web; grace 35s/, 'first call: the web container alone, TCP');
  t.match(decisions[1], /^sleep 46s/, 'second call (reinvocation): re-sized with the sidecar');
});

t.test('failing open: with the webhook away or too slow, pods are still created, un-injected, and the API server counts it', { skip }, async (t) => {
  const failOpen = async (): Promise<number> => {
    const text = (await plane.api('GET', '/metrics')).text;
    return metricValue(text, 'apiserver_admission_webhook_fail_open_count', { name: 'pods.safe-termination.io' }) ?? 0;
  };
  const before = await failOpen();

  await webhook.stop();
  let started = Date.now();
  const stopped = await createPod('shop', podBody('webhook-away', {}));
  t.equal(recordOf(stopped), undefined, 'webhook stopped: the pod is stored un-injected');
  t.ok(Date.now() - started < 5000, `at once (${Date.now() - started} ms): a refused connection fails fast`);
  const afterStopped = await failOpen();
  t.ok(afterStopped > before, `fail-open count ${before} → ${afterStopped}`);

  // A listener that accepts connections and never answers: slower than timeoutSeconds (5).
  const { createServer } = await import('node:net');
  const hung = createServer(() => undefined);
  const port = await freePort();
  await new Promise<void>((r) => hung.listen(port, '127.0.0.1', r));
  t.teardown(() => hung.close());
  await pointWebhookAt(plane, webhook.configurationName, `https://127.0.0.1:${port}/mutate`, webhook.caPem);
  await sleep(1500);
  started = Date.now();
  const slow = await createPod('shop', podBody('webhook-slow', {}));
  const elapsed = Date.now() - started;
  t.equal(recordOf(slow), undefined, 'webhook hung: the pod is stored un-injected');
  t.ok(elapsed >= 4000 && elapsed < 9000, `after the chart's timeoutSeconds of 5 s (${elapsed} ms)`);
  t.ok((await failOpen()) > afterStopped, 'the fail-open count rose again');
});
