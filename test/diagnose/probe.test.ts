/** The agent's stale-entries probe: classification into a prom-client Gauge. */
import { readFileSync } from 'node:fs';
import { Gauge, Registry } from 'prom-client';
import t from 'tap';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import { buildServiceIndex, parseKubernetesObjects } from '../../src/diagnose/endpoints.ts';
import { STALE_ENTRIES_METRIC, StaleConntrackProbe } from '../../src/diagnose/probe.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/conntrack/${name}`, import.meta.url), 'utf8');

function gaugeIn(registry: Registry) {
  return new Gauge({ name: STALE_ENTRIES_METRIC.name, help: STALE_ENTRIES_METRIC.help, labelNames: [...STALE_ENTRIES_METRIC.labelNames], registers: [registry] });
}

t.test('exports stale entries per Service and protocol; a later clean reading removes the series', async (t) => {
  const registry = new Registry();
  let run: 'unprotected' | 'protected' = 'unprotected';
  let reads = 0;
  const probe = new StaleConntrackProbe({
    readConntrack: async () => {
      reads++;
      return parseConntrack(fixture(`lab-${run}-at-removal.txt`));
    },
    serviceIndex: () => buildServiceIndex(parseKubernetesObjects(fixture(`lab-${run}-endpoints.json`))),
    gauge: gaugeIn(registry),
  });
  t.equal(probe.last, undefined);
  const [a, b] = await Promise.all([probe.measure(), probe.measure()]);
  t.equal(a, b, 'concurrent calls share one measurement');
  t.equal(reads, 1);
  const text = await registry.metrics();
  t.match(text, /# TYPE safe_termination_conntrack_stale_entries gauge/);
  t.match(text, /safe_termination_conntrack_stale_entries\{namespace="lab",service="echo",protocol="udp"\} 7/);
  t.match(text, /safe_termination_conntrack_stale_entries\{namespace="lab",service="echo",protocol="tcp"\} 4/);
  t.equal(probe.last?.stale, 11);

  run = 'protected';
  await probe.measure();
  t.equal(reads, 2);
  t.notMatch(await registry.metrics(), /safe_termination_conntrack_stale_entries\{/, 'no stale series once they are gone');
  t.equal(probe.last?.draining, 6);
});

t.test('a failed reading rejects and keeps the last good report and gauge', async (t) => {
  const registry = new Registry();
  let fail = false;
  const probe = new StaleConntrackProbe({
    readConntrack: async () => {
      if (fail) throw new Error('conntrack not found');
      return parseConntrack(fixture('lab-unprotected-at-removal.txt'));
    },
    serviceIndex: async () => buildServiceIndex(parseKubernetesObjects(fixture('lab-unprotected-endpoints.json'))),
    gauge: gaugeIn(registry),
  });
  await probe.measure();
  fail = true;
  await t.rejects(probe.measure(), /conntrack not found/);
  t.equal(probe.last?.stale, 11);
  t.match(await registry.metrics(), /protocol="udp"\} 7/);
});
