import t from 'tap';
import { decodeRecord, encodeRecord, recordOf } from '../../src/core/record.ts';
import { planOf, decidePod, TCP, UDP } from '../support/decide.ts';

t.test('records round-trip and are compact', async (t) => {
  const record = planOf(decidePod({ containers: [{ name: 'a', ports: UDP }] })).record;
  const text = encodeRecord(record);
  t.notMatch(text, /\s/, 'no whitespace');
  t.same(decodeRecord(text), { kind: 'valid', record });
  t.equal(encodeRecord(JSON.parse(text)), text, 'stable key order');
});

t.test('unreadable records say why', async (t) => {
  t.same(decodeRecord(undefined), { kind: 'absent' });
  t.match(decodeRecord('{'), { kind: 'unreadable', reason: 'not JSON' });
  t.match(decodeRecord('{"v":2}'), { kind: 'unreadable', reason: /schema version 2 is not 1/ });
  t.match(decodeRecord('null'), { kind: 'unreadable', reason: /schema version null/ });
  t.match(decodeRecord('{"v":1,"sleepSeconds":-1}'), { kind: 'unreadable', reason: /does not match/ });
});

t.test('the record is derived from its plan', async (t) => {
  const own = { preStop: { exec: { command: ['/bin/drain'] } } };
  const p = planOf(decidePod({ containers: [{ name: 'a', ports: UDP }, { name: 'b', ports: TCP, lifecycle: own }] }, { kubeVersion: { major: 1, minor: 29 } }));
  t.same(p.record, recordOf(p));
  t.match(p.record, { sleepSeconds: p.sleepSeconds, gracePeriodSeconds: p.gracePeriodSeconds, mode: 'exec', containers: ['a'], skipped: { b: 'has its own preStop hook' } });
});
