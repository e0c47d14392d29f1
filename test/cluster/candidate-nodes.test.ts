import t from 'tap';
import { CandidateIndex, candidateNodes, maxFacts, nodeMatches, requirementMatches } from '../../src/cluster/candidate-nodes.ts';
import type { NodeRecord } from '../../src/cluster/candidate-nodes.ts';
import { layerFacts, LINUX_DEFAULTS, staticFacts } from '../../src/core/conntrack.ts';
import type { ConntrackFacts, PartialConntrackValues } from '../../src/core/conntrack.ts';
import type { PodPlacement } from '../../src/core/pod.ts';

const STATIC = staticFacts(LINUX_DEFAULTS);
/** kube-proxy's values over the static ones: what a node without annotations has. */
const fallbackFacts = (kubeProxy: PartialConntrackValues, below: ConntrackFacts): ConntrackFacts =>
  layerFacts([{ source: 'kube-proxy', values: kubeProxy }], below);

function node(name: string, labels: Record<string, string> = {}, values: NodeRecord['values'] = {}): NodeRecord {
  return { name, labels, values };
}

const zoneA = node('a1', { zone: 'a', pool: 'dns', cores: '8' }, { 'udp-timeout': 17 });
const zoneA2 = node('a2', { zone: 'a', pool: 'web', cores: '64' }, { 'udp-timeout': 45, 'udp-timeout-stream': 90 });
const zoneB = node('b1', { zone: 'b', pool: 'web', cores: '16' }, {});
const ALL = [zoneA, zoneA2, zoneB];
const byName = (n: string) => ALL.find((x) => x.name === n);
const names = (p: PodPlacement) => candidateNodes(p, ALL, byName).map((n) => n.name).sort();

t.test('requirement operators follow the NodeSelectorRequirement semantics', async (t) => {
  const req = (operator: string, values?: string[]) => ({ key: 'k', operator, values });
  t.equal(requirementMatches('x', req('In', ['x', 'y'])), true);
  t.equal(requirementMatches(undefined, req('In', ['x'])), false);
  t.equal(requirementMatches('z', req('NotIn', ['x'])), true);
  t.equal(requirementMatches(undefined, req('NotIn', ['x'])), true, 'NotIn matches a node without the label');
  t.equal(requirementMatches('x', req('NotIn', ['x'])), false);
  t.equal(requirementMatches('', req('Exists')), true, 'an empty value still exists');
  t.equal(requirementMatches(undefined, req('Exists')), false);
  t.equal(requirementMatches(undefined, req('DoesNotExist')), true);
  t.equal(requirementMatches('x', req('DoesNotExist')), false);
  t.equal(requirementMatches('10', req('Gt', ['9'])), true);
  t.equal(requirementMatches('9', req('Gt', ['9'])), false);
  t.equal(requirementMatches('007', req('Lt', ['8'])), true, 'integers are compared as numbers');
  t.equal(requirementMatches('9223372036854775807', req('Gt', ['9223372036854775806'])), true, 'int64 exact');
  t.equal(requirementMatches('abc', req('Gt', ['1'])), false, 'a label that is no integer matches nothing');
  t.equal(requirementMatches('5', req('Gt', ['1', '2'])), false, 'Gt needs exactly one value');
  t.equal(requirementMatches(undefined, req('Lt', ['5'])), false);
  t.equal(requirementMatches('x', req('Bogus', ['x'])), false);
});

t.test('candidate nodes: nodeName, nodeSelector, affinity terms (ORed) and expressions (ANDed)', async (t) => {
  t.same(names({}), ['a1', 'a2', 'b1']);
  t.same(names({ nodeName: 'b1' }), ['b1']);
  t.same(names({ nodeName: 'nope' }), []);
  t.same(names({ nodeSelector: { zone: 'a' } }), ['a1', 'a2']);
  t.same(names({ nodeSelector: { zone: 'a', pool: 'web' } }), ['a2']);
  const expr = (key: string, operator: string, values?: string[]) => ({ key, operator, values });
  t.same(names({ requiredTerms: [{ matchExpressions: [expr('pool', 'In', ['web']), expr('cores', 'Gt', ['20'])] }] }), ['a2']);
  t.same(
    names({ requiredTerms: [{ matchExpressions: [expr('zone', 'In', ['b'])] }, { matchExpressions: [expr('pool', 'In', ['dns'])] }] }),
    ['a1', 'b1'],
    'terms are ORed',
  );
  t.same(names({ nodeSelector: { zone: 'a' }, requiredTerms: [{ matchExpressions: [expr('pool', 'NotIn', ['dns'])] }] }), ['a2'], 'nodeSelector AND affinity');
  t.same(names({ requiredTerms: [{}] }), [], 'an empty term matches nothing');
  t.same(names({ requiredTerms: [{ matchFields: [expr('metadata.name', 'In', ['a1', 'b1', 'gone'])] }] }), ['a1', 'b1']);
  t.same(names({ requiredTerms: [{ matchFields: [expr('metadata.name', 'NotIn', ['a1'])] }] }), ['a2', 'b1']);
  t.same(
    names({ requiredTerms: [{ matchFields: [expr('metadata.name', 'In', ['a1', 'a2'])], matchExpressions: [expr('pool', 'In', ['web'])] }] }),
    ['a2'],
    'matchFields and matchExpressions of one term are ANDed',
  );
  t.same(names({ requiredTerms: [{ matchFields: [expr('spec.unschedulable', 'In', ['true'])] }] }), [], 'only metadata.name is a field');
  t.equal(nodeMatches(zoneB, { nodeName: 'b1', nodeSelector: { zone: 'a' } }), true, 'nodeName decides alone');
});

t.test('a DaemonSet pod (matchFields metadata.name) looks its node up instead of scanning', async (t) => {
  let scanned = 0;
  const counting = {
    *[Symbol.iterator]() {
      for (const n of ALL) {
        scanned++;
        yield n;
      }
    },
  };
  const dsPod: PodPlacement = {
    requiredTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['a2'] }] }],
  };
  t.same(candidateNodes(dsPod, counting, byName).map((n) => n.name), ['a2']);
  t.equal(scanned, 0);
});

t.test('maxFacts takes the largest value per key and prefers a node value on a tie', async (t) => {
  const fb = fallbackFacts({ 'udp-timeout': 45 }, STATIC);
  const a = fallbackFacts({}, STATIC);
  const n = { ...a, 'udp-timeout': { value: 45, source: 'nodes' as const } };
  t.same(maxFacts([fb, n], STATIC)['udp-timeout'], { value: 45, source: 'nodes' });
  t.same(maxFacts([], STATIC), STATIC, 'no candidates: the fallback');
});

t.test('the index answers per placement, and keeps answers fresh', async (t) => {
  const index = new CandidateIndex(STATIC);
  t.same(index.conntrackFor({})['udp-timeout'], { value: 30, source: 'static' }, 'no nodes known: static');
  index.upsert(zoneA);
  t.same(index.conntrackFor({})['udp-timeout'], { value: 17, source: 'nodes' }, 'one annotated node');
  index.upsert(zoneB);
  t.same(index.conntrackFor({})['udp-timeout'], { value: 30, source: 'static' }, 'an unannotated node may get the pod: its fallback counts');
  t.same(index.conntrackFor({ nodeName: 'a1' })['udp-timeout'], { value: 17, source: 'nodes' });
  t.same(index.conntrackFor({ nodeSelector: { zone: 'a' } })['udp-timeout'], { value: 17, source: 'nodes' });
  index.upsert(zoneA2);
  t.same(index.conntrackFor({ nodeSelector: { zone: 'a' } })['udp-timeout'], { value: 45, source: 'nodes' }, 'cached answers are dropped on change');
  t.same(index.conntrackFor({ nodeSelector: { zone: 'a' } })['udp-timeout-stream'], { value: 120, source: 'static' }, 'per value: a1 has no stream value');
  t.same(index.conntrackFor({ nodeSelector: { zone: 'nowhere' } })['udp-timeout'], { value: 45, source: 'nodes' }, 'no match: as if unconstrained');
  t.same(index.conntrackFor({ nodeName: 'unknown' })['udp-timeout'], { value: 45, source: 'nodes' }, 'unknown node: as if unconstrained');

  index.setFallback(fallbackFacts({ 'udp-timeout': 60 }, STATIC));
  t.same(index.conntrackFor({ nodeName: 'b1' })['udp-timeout'], { value: 60, source: 'kube-proxy' }, 'kube-proxy below the nodes');
  t.same(index.conntrackFor({ nodeName: 'a1' })['udp-timeout'], { value: 17, source: 'nodes' }, 'the node value above kube-proxy');
  t.same(index.conntrackFor({})['udp-timeout'], { value: 60, source: 'kube-proxy' });

  t.equal(index.upsert(node('b1', { zone: 'b', pool: 'web', cores: '16' }, {})), false, 'an identical record changes nothing');
  index.remove('b1');
  index.remove('a1');
  t.same(index.conntrackFor({})['udp-timeout'], { value: 45, source: 'nodes' });
  t.equal(index.size, 1);
});

t.test('a relist of thousands of nodes is absorbed in one recompute, and reads stay cheap', async (t) => {
  const index = new CandidateIndex(STATIC);
  const started = performance.now();
  for (let i = 0; i < 5000; i++) index.upsert(node(`n${i}`, { zone: `z${i % 3}` }, { 'udp-timeout': i === 4321 ? 99 : 30 }));
  t.same(index.conntrackFor({})['udp-timeout'], { value: 99, source: 'nodes' });
  const load = performance.now() - started;
  t.ok(load < 1000, `5000 upserts + first read in ${load.toFixed(1)} ms`);
  const t0 = performance.now();
  for (let i = 0; i < 100_000; i++) index.conntrackFor({});
  const perRead = ((performance.now() - t0) / 100_000) * 1000;
  t.ok(perRead < 5, `unconstrained read: ${perRead.toFixed(3)} µs`);
  const t1 = performance.now();
  for (let i = 0; i < 1000; i++) index.conntrackFor({ requiredTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [`n${i}`] }] }] });
  const perDs = ((performance.now() - t1) / 1000) * 1000;
  t.ok(perDs < 200, `DaemonSet-pod read: ${perDs.toFixed(1)} µs`);
});
