import t from 'tap';
import { decodeRecord, encodeRecord } from '../../src/core/record.ts';
import { planOf, decidePod, UDP } from '../support/decide.ts';

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
