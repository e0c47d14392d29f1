/**
 * The conntrack text parser, on real output of conntrack-tools 1.4.7 captured in
 * network namespaces (test/fixtures/conntrack/README.md says how).
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { dnatTarget, flowKey, formatAddress, parseConntrack, parseLine } from '../../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../../src/diagnose/conntrack.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/conntrack/${name}`, import.meta.url), 'utf8');
const entry = (line: string): ConntrackEntry => {
  const r = parseLine(line);
  if (typeof r === 'string') throw new Error(r);
  return r;
};

t.test('extended output: family, protocol, timeout, state, both tuples, flags, mark, zone', async (t) => {
  const { entries, skipped } = parseConntrack(fixture('netns-extended.txt'));
  t.equal(skipped.length, 0);
  t.equal(entries.length, 5);
  const [syn, close, udp6, udp4, icmp] = entries as [ConntrackEntry, ConntrackEntry, ConntrackEntry, ConntrackEntry, ConntrackEntry];

  t.equal(syn.family, 'ipv4');
  t.equal(syn.protocol, 'tcp');
  t.equal(syn.protocolNumber, 6);
  t.equal(syn.timeout, 116);
  t.equal(syn.state, 'SYN_SENT');
  t.same(syn.flags, ['UNREPLIED']);
  t.equal(syn.zone, 5);
  t.equal(syn.mark, 0);
  t.same(syn.original, { src: '10.244.0.2', dst: '10.96.0.1', sport: 35394, dport: 443, packets: undefined, bytes: undefined });
  t.same(syn.reply, { src: '10.244.1.2', dst: '10.244.0.2', sport: 6443, dport: 35394, packets: undefined, bytes: undefined });
  t.same(dnatTarget(syn), { ip: '10.244.1.2', port: 6443 }, 'DNAT to another port');

  t.equal(close.state, 'CLOSE');
  t.same(close.flags, ['ASSURED'], 'a flag after the reply tuple');

  t.equal(udp6.family, 'ipv6');
  t.equal(udp6.protocol, 'udp');
  t.equal(udp6.state, undefined);
  t.equal(udp6.original.dst, 'fd00:10:96::a');
  t.same(dnatTarget(udp6), { ip: 'fd00:10:244:1::2', port: 53 });
  t.equal(formatAddress(udp6.reply.src, udp6.reply.sport), '[fd00:10:244:1::2]:53');

  t.same(dnatTarget(udp4), { ip: '10.244.1.2', port: 53 });

  t.equal(icmp.protocol, 'icmp');
  t.equal(icmp.mark, 7);
  t.equal(icmp.original.sport, undefined, 'ICMP has no ports');
  t.equal(dnatTarget(icmp), undefined, 'not translated');
});

t.test('the default output (no -o extended) and extended with id/timestamps parse alike', async (t) => {
  const plain = parseConntrack(fixture('netns-default.txt'));
  const extended = parseConntrack(fixture('netns-extended.txt'));
  const withId = parseConntrack(fixture('netns-extended-id-timestamp.txt'));
  t.equal(plain.skipped.length + withId.skipped.length, 0);
  t.equal(plain.entries[0]?.family, undefined);
  const shape = (e: ConntrackEntry) => [e.protocol, e.state, e.original, e.reply, e.flags, e.mark, e.zone];
  t.same(plain.entries.map(shape), extended.entries.map(shape));
  t.same(withId.entries.map(shape), extended.entries.map(shape), 'the entry id= after use= is not taken for a tuple field');
});

t.test('a lab capture: accounting fields, an "unknown" protocol, 85 entries', async (t) => {
  const { entries, skipped } = parseConntrack(fixture('lab-unprotected-at-removal.txt'));
  t.equal(skipped.length, 0);
  t.equal(entries.length, 85);
  const igmp = entries.find((e) => e.protocol === 'unknown');
  t.equal(igmp?.protocolNumber, 2);
  t.equal(igmp && dnatTarget(igmp), undefined);
  const udp = entries.find((e) => e.protocol === 'udp' && e.original.sport === 52261)!;
  t.same(udp.original, { src: '10.244.0.2', dst: '10.96.0.10', sport: 52261, dport: 53, packets: 8, bytes: 259 });
  t.same(udp.reply, { src: '10.244.1.2', dst: '10.244.0.2', sport: 53, dport: 52261, packets: 6, bytes: 211 });
  t.equal(entries.filter((e) => dnatTarget(e) !== undefined).length, 84);
  t.equal(new Set(entries.map(flowKey)).size, 85, 'flow keys are unique');
});

t.test('the summary line, blank lines and 2>&1 noise', async (t) => {
  const text = `${fixture('netns-extended.txt')}\nconntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.\n\n`;
  const r = parseConntrack(text);
  t.equal(r.entries.length, 5);
  t.equal(r.skipped.length, 0);
  const noisy = parseConntrack('conntrack v1.4.7 (conntrack-tools): Operation not permitted\nhello world\n');
  t.equal(noisy.entries.length, 0);
  t.equal(noisy.skipped.length, 2);
  t.equal(noisy.skipped[0]?.lineNumber, 1);
  t.match(noisy.skipped[1]?.reason, /protocol/);
});

t.test('an entry without a reply tuple or an original tuple is not an entry', async (t) => {
  t.match(parseLine('udp 17 29 src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2'), /reply/);
  t.match(parseLine('udp 17 29 mark=0 use=1'), /original/);
  t.match(parseLine('tcp six 29 src=a dst=b src=c dst=d'), /protocol/);
});

t.test('event lines (conntrack -E) and SCTP/TCP states with digits', async (t) => {
  const e = entry('[DESTROY] udp      17 src=10.244.0.2 dst=10.96.0.10 sport=40000 dport=53 src=10.244.1.2 dst=10.244.0.2 sport=53 dport=40000');
  t.equal(e.timeout, 0);
  t.same(dnatTarget(e), { ip: '10.244.1.2', port: 53 });
  t.equal(entry('tcp 6 60 SYN_SENT2 src=a dst=b sport=1 dport=2 src=c dst=a sport=3 dport=1').state, 'SYN_SENT2');
  t.equal(entry('sctp 132 10 COOKIE_WAIT src=a dst=b sport=1 dport=2 src=c dst=a sport=3 dport=1').state, 'COOKIE_WAIT');
});

t.test('SNAT only (masquerade) is not a DNAT; upper-case IPv6 is normalized', async (t) => {
  const snat = entry('ipv4 2 udp 17 20 src=10.244.0.2 dst=1.1.1.1 sport=5 dport=53 src=1.1.1.1 dst=192.0.2.10 sport=53 dport=5 mark=0 use=1');
  t.equal(dnatTarget(snat), undefined);
  const v6 = entry('ipv6 10 udp 17 20 src=FD00::2 dst=FD00:96::A sport=5 dport=53 src=FD00:1::2 dst=FD00::2 sport=53 dport=5');
  t.equal(v6.original.dst, 'fd00:96::a');
  t.same(dnatTarget(v6), { ip: 'fd00:1::2', port: 53 });
});
