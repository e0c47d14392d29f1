/**
 * The conntrack sources' one order (CONNTRACK_LAYERS): every stack is ordered by
 * it whatever order its sources are handed in, the higher of any two sources
 * that answer the same key wins, and the value records that source's name.
 */
import t from 'tap';
import { CONNTRACK_KEYS, CONNTRACK_LAYERS, fixedLayer, LINUX_DEFAULTS, sourceOf, stackLayers, staticLayer } from '../../src/core/conntrack.ts';
import type { ConntrackLayer, LayerKind } from '../../src/core/conntrack.ts';

const origin = (kind: LayerKind) => () => ({ short: kind, long: kind });
const answering = (kind: LayerKind, value: number): ConntrackLayer => fixedLayer(kind, kind, { 'udp-timeout': value }, origin(kind));
const base = staticLayer(LINUX_DEFAULTS, origin('static'));
const above = CONNTRACK_LAYERS.map((l) => l.kind).filter((k): k is Exclude<LayerKind, 'static'> => k !== 'static');

t.test('the static values are last; every kind appears once', async (t) => {
  t.equal(CONNTRACK_LAYERS.at(-1)?.kind, 'static');
  t.equal(new Set(CONNTRACK_LAYERS.map((l) => l.kind)).size, CONNTRACK_LAYERS.length);
});

t.test('a stack is ordered by CONNTRACK_LAYERS whatever order its sources come in', async (t) => {
  const layers = above.map((k, i) => answering(k, 100 + i));
  for (const order of [layers, [...layers].reverse(), [layers[2]!, layers[0]!, layers[4]!, layers[1]!, layers[3]!]]) {
    const stack = stackLayers(order, base);
    t.same(stack.layers.map((l) => l.kind), CONNTRACK_LAYERS.map((l) => l.kind));
    t.same(stack.facts({})['udp-timeout'], { value: 100, source: sourceOf(above[0]!) }, 'the first of the list answers');
  }
});

t.test('of any two sources that answer a key, the one higher in the list wins, recorded under its source', async (t) => {
  for (const [i, high] of above.entries()) {
    for (const low of above.slice(i + 1)) {
      const stack = stackLayers([answering(low, 7), answering(high, 9)], base);
      const view = stack.explain({});
      t.same(view.facts['udp-timeout'], { value: 9, source: sourceOf(high) }, `${high} over ${low}`);
      t.equal(view.origins['udp-timeout'].short, high);
      t.same(view.facts['udp-timeout-stream'], { value: 120, source: 'static' }, 'keys no source answers: the static values');
      t.equal(view.origins['udp-timeout-stream'].short, 'static');
    }
  }
});

t.test('a source sees what the sources below it give (the larger-of rule of IPVS and the nodes)', async (t) => {
  const atLeast60: ConntrackLayer = {
    ...fixedLayer('ipvs', 'ipvs', {}, origin('ipvs')),
    values: (_placement, below) => (below['udp-timeout'].value < 60 ? { 'udp-timeout': 60 } : {}),
  };
  t.same(stackLayers([atLeast60, answering('kube-proxy', 45)], base).facts({})['udp-timeout'], { value: 60, source: 'kube-proxy' });
  t.same(stackLayers([atLeast60, answering('kube-proxy', 90)], base).facts({})['udp-timeout'], { value: 90, source: 'kube-proxy' });
  t.same(stackLayers([atLeast60, answering('local', 90)], base).facts({})['udp-timeout'], { value: 90, source: 'local' });
});

t.test('one source of a kind per stack', async (t) => {
  t.throws(() => stackLayers([answering('nodes', 1), answering('nodes', 2)], base), /stacked twice: nodes/);
  t.same(
    CONNTRACK_KEYS.map((k) => stackLayers([], base).facts({})[k]),
    CONNTRACK_KEYS.map((k) => ({ value: LINUX_DEFAULTS[k], source: 'static' })),
  );
});
