import { existsSync, readFileSync } from 'node:fs';
import t from 'tap';
import { CONNTRACK_STATS, parseConntrackStat } from '../../src/agent/conntrack-stats.ts';

// Linux 6.x layout, two CPUs (columns named by the header; values hexadecimal).
const KERNEL_6 = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000012c  00000002 0000000a 00000000 000000ff 00000000 00000000 00000000 00000000 00000001 00000003 00000000 00000000  00000000 00000000 00000000 00000010
0000012c  00000000 00000005 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000000 00000004 00000000  00000000 00000000 00000000 00000001
`;

// Linux 4.x layout: other columns, another order.
const KERNEL_4 = `entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000010  00000000 00000100 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
`;

t.test('sums each named column over CPUs, reading hexadecimal; entries is not summed', async (t) => {
  const s = parseConntrackStat(KERNEL_6)!;
  t.equal(s['found'], 0x0a + 0x05);
  t.equal(s['invalid'], 0xff + 0x01);
  t.equal(s['insert_failed'], 3);
  t.equal(s['drop'], 3);
  t.equal(s['early_drop'], 4);
  t.equal(s['search_restart'], 0x11);
  t.notOk('entries' in s);
  const old = parseConntrackStat(KERNEL_4)!;
  t.equal(old['found'], 256, 'columns found by name, not position');
});

t.test('not that file: undefined', async (t) => {
  t.equal(parseConntrackStat(''), undefined);
  t.equal(parseConntrackStat('entries found\n0000 zz\n'), undefined);
  t.equal(parseConntrackStat('entries found\n0000\n'), undefined, 'a short row');
});

t.test('this machine\'s own file parses, with every exported counter', { skip: existsSync('/proc/net/stat/nf_conntrack') ? false : 'no /proc/net/stat/nf_conntrack here' }, async (t) => {
  const s = parseConntrackStat(readFileSync('/proc/net/stat/nf_conntrack', 'utf8'));
  t.ok(s);
  for (const name of CONNTRACK_STATS) t.type(s![name], 'number', name);
});
