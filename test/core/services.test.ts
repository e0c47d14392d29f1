/** The Services that select a pod: what counts, the index, and the plan's protocols. */
import t from 'tap';
import { LINUX_DEFAULTS, staticFacts } from '../../src/core/conntrack.ts';
import { MODEL_DEFAULTS } from '../../src/core/model.ts';
import { decide } from '../../src/core/plan.ts';
import type { Plan } from '../../src/core/plan.ts';
import { podSchema } from '../../src/core/pod.ts';
import { readService, ServiceIndex } from '../../src/core/services.ts';
import type { SelectingService } from '../../src/core/services.ts';

const svc = (name: string, spec: Record<string, unknown>, namespace: string | null = 'shop') => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, ...(namespace === null ? {} : { namespace }) },
  spec,
});

t.test('readService: what counts', async (t) => {
  t.same(readService(svc('dns', { selector: { app: 'dns' }, ports: [{ port: 53, protocol: 'UDP' }, { port: 53 }] })), {
    kind: 'counts',
    fact: { namespace: 'shop', name: 'dns', selector: { app: 'dns' }, protocols: ['tcp', 'udp'] },
  });
  t.match(readService(svc('x', { selector: { app: 'x' }, ports: [{ port: 1, protocol: 'SCTP' }] })), { fact: { protocols: ['sctp'] } });
  t.match(readService(svc('y', { selector: { app: 'y' }, ports: [{ port: 1, protocol: 'QUIC' }] })), { fact: { protocols: ['tcp'] } }, 'an unknown protocol counts as TCP');
  t.match(readService(svc('h', { clusterIP: 'None', selector: { app: 'h' }, ports: [{ port: 53, protocol: 'UDP' }] })), { kind: 'excluded', why: 'headless' });
  t.match(readService(svc('m', { ports: [{ port: 53, protocol: 'UDP' }] })), { kind: 'excluded', why: 'no-selector' });
  t.match(readService(svc('e', { selector: {}, ports: [{ port: 53, protocol: 'UDP' }] })), { kind: 'excluded', why: 'no-selector' }, 'an empty selector is none');
  t.match(readService(svc('n', { type: 'ExternalName', externalName: 'x.example.com', selector: { app: 'n' } })), { kind: 'excluded', why: 'external-name' });
  t.match(readService(svc('lb', { type: 'LoadBalancer', clusterIP: '10.0.0.1', selector: { app: 'lb' }, ports: [{ port: 53, protocol: 'UDP' }] })), { kind: 'counts' }, 'NodePort/LoadBalancer have a cluster IP: they count');
  t.match(readService(svc('d', { selector: { app: 'd' }, ports: [] }, null), 'default'), { kind: 'counts', fact: { namespace: 'default' } }, 'no namespace: the given default');
  t.equal(readService({ kind: 'Service', metadata: {} }), undefined, 'no name');
  t.equal(readService('garbage'), undefined);
});

t.test('ServiceIndex: namespace, every pair of the selector, updates and removals', async (t) => {
  const index = new ServiceIndex();
  const add = (name: string, selector: Record<string, string>, protocols: SelectingService['protocols'], namespace = 'shop') =>
    index.upsert({ namespace, name, selector, protocols });
  add('dns', { app: 'dns' }, ['udp']);
  add('dns-canary', { app: 'dns', track: 'canary' }, ['tcp']);
  add('all', { tier: 'infra' }, ['sctp']);
  add('dns', { app: 'dns' }, ['udp'], 'other');
  const match = (labels: Record<string, string> | undefined, ns = 'shop') => index.match(ns, labels).map((s) => s.service);
  t.same(match({ app: 'dns' }), ['shop/dns']);
  t.same(match({ app: 'dns', track: 'canary', tier: 'infra' }), ['shop/all', 'shop/dns', 'shop/dns-canary'], 'sorted by name');
  t.same(match({ app: 'dns' }, 'other'), ['other/dns']);
  t.same(match({ app: 'dns' }, 'nowhere'), []);
  t.same(match(undefined), []);
  t.same(match({ track: 'canary' }), [], 'a partial match is none');
  t.same(match(Object.assign(Object.create({ app: 'dns' }) as Record<string, string>, {})), [], 'inherited keys are not labels');
  t.equal(index.size, 4);
  add('dns', { app: 'coredns' }, ['udp']);
  t.same(match({ app: 'dns' }), [], 'a changed selector re-files the Service');
  t.same(match({ app: 'coredns' }), ['shop/dns']);
  index.apply({ kind: 'excluded', namespace: 'shop', name: 'dns', why: 'headless' });
  t.same(match({ app: 'coredns' }), [], 'a Service that stops counting is dropped');
  index.remove('shop', 'all');
  index.remove('shop', 'never-there');
  t.equal(index.size, 2);
});

const podWith = (ports: Array<{ containerPort: number; protocol?: string }> | undefined, annotations: Record<string, string> = {}) =>
  podSchema.parse({
    metadata: { namespace: 'shop', labels: { app: 'dns' }, annotations },
    spec: { containers: [{ name: 'dns', ...(ports === undefined ? {} : { ports }) }], terminationGracePeriodSeconds: 30 },
  });

const plan = (pod: ReturnType<typeof podWith>, services?: SelectingService[]): Plan => {
  const d = decide(pod, { defaults: MODEL_DEFAULTS, facts: staticFacts(LINUX_DEFAULTS), kubeVersion: undefined, services });
  if (d.kind !== 'inject') throw new Error(d.kind);
  return d.plan;
};

t.test('plan: the Services selecting the pod add their protocols', async (t) => {
  const udp: SelectingService = { service: 'shop/dns', protocols: ['udp'] };
  const tcp: SelectingService = { service: 'shop/web', protocols: ['tcp'] };
  const none = plan(podWith(undefined));
  t.same([none.protocols, none.sleepSeconds, none.protocolOrigins], [['tcp'], 5, { tcp: { ports: true, services: [] } }], 'neither ports nor Services: TCP');
  const viaService = plan(podWith(undefined), [udp]);
  t.same([viaService.protocols, viaService.sleepSeconds, viaService.gracePeriodSeconds], [['udp'], 35, 65], 'no ports, a UDP Service: UDP sizing');
  t.same(viaService.protocolOrigins, { udp: { ports: false, services: ['shop/dns'] } });
  t.same(viaService.record.protocols, ['udp'], 'the record lists the protocols');
  const both = plan(podWith([{ containerPort: 8080 }]), [udp, tcp]);
  t.same(both.protocols, ['tcp', 'udp']);
  t.same(both.protocolOrigins, { tcp: { ports: true, services: ['shop/web'] }, udp: { ports: false, services: ['shop/dns'] } });
  t.equal(both.sleepSeconds, 35);
  const annotated = plan(podWith(undefined, { 'safe-termination.io/protocols': 'tcp' }), [udp]);
  t.same([annotated.protocols, annotated.sleepSeconds, annotated.protocolsFrom, annotated.protocolOrigins], [['tcp'], 5, 'annotation', {}], 'the annotation overrides the Services');
  t.same(plan(podWith(undefined), []).protocols, ['tcp'], 'an empty list is no Service');
});
