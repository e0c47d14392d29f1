/**
 * Reading the whole conntrack table for the stale count: /proc/net/nf_conntrack
 * parsed to the same entries as `conntrack -L -o extended` (real captures of the
 * same flows), IPv6 in canonical form, any chunking, a large table in bounded time,
 * the fallback to the conntrack tool, and a clear error when neither is there.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import type { Test } from 'tap';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../../src/diagnose/conntrack.ts';
import type { TallyEntry } from '../../src/diagnose/tally.ts';
import { canonicalIpv6, ConntrackReadError, ConntrackTable, ConntrackUnreadableError, parseFlow, parseProcLine } from '../../src/host/conntrack-table.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/conntrack/${name}`, import.meta.url), 'utf8');

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'st-ct-table-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What matters of an entry (the raw line, use= and the always-printed zone=0 differ by design). */
function essence(e: ConntrackEntry): Record<string, unknown> {
  const out: Record<string, unknown> = { ...e, zone: e.zone ?? 0 };
  Reflect.deleteProperty(out, 'line');
  return out;
}

/** What the stale count reads of an entry (a full ConntrackEntry, or parseFlow's). */
function flow(e: TallyEntry): TallyEntry {
  return {
    protocol: e.protocol,
    state: e.state,
    flags: e.flags.includes('UNREPLIED') ? ['UNREPLIED'] : [],
    original: { dst: e.original.dst, dport: e.original.dport },
    reply: { src: e.reply.src, sport: e.reply.sport },
  };
}

async function readAll(table: ConntrackTable): Promise<{ entries: TallyEntry[]; read: Awaited<ReturnType<ConntrackTable['read']>> }> {
  const entries: TallyEntry[] = [];
  const read = await table.read((e) => entries.push(flow(e)));
  return { entries, read };
}

t.test('canonical IPv6: the full %pI6 form becomes the form Kubernetes writes', async (t) => {
  t.equal(canonicalIpv6('fd00:0010:0096:0000:0000:0000:0000:000a'), 'fd00:10:96::a');
  t.equal(canonicalIpv6('0000:0000:0000:0000:0000:0000:0000:0001'), '::1');
  t.equal(canonicalIpv6('0000:0000:0000:0000:0000:0000:0000:0000'), '::');
  t.equal(canonicalIpv6('fe80:0000:0000:0000:0202:b3ff:fe1e:8329'), 'fe80::202:b3ff:fe1e:8329');
  t.equal(canonicalIpv6('2001:0db8:0000:0001:0001:0001:0001:0001'), '2001:db8:0:1:1:1:1:1', 'a single zero group is not shortened');
  t.equal(canonicalIpv6('2001:0db8:0000:0000:0001:0000:0000:0001'), '2001:db8::1:0:0:1', 'the leftmost of equal runs');
  t.equal(canonicalIpv6('2001:0000:0000:0001:0000:0000:0000:0001'), '2001:0:0:1::1', 'the longest run');
  // The WHATWG URL parser serializes IPv6 hosts the same way (RFC 5952).
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }), (groups) => {
      const full = groups.map((g) => g.toString(16).padStart(4, '0')).join(':');
      return canonicalIpv6(full) === new URL(`http://[${full}]/`).hostname.slice(1, -1);
    }),
    { numRuns: 3000 },
  );
});

t.test('/proc/net/nf_conntrack and `conntrack -L -o extended` of the same flows give the same entries', async (t) => {
  const proc = fixture('proc-nf_conntrack.txt').split('\n').filter((l) => l !== '').map(parseProcLine);
  const tool = parseConntrack(fixture('proc-conntrack-extended.txt'));
  t.equal(tool.skipped.length, 0);
  t.equal(proc.length, 5);
  for (const e of proc) if (typeof e === 'string') t.fail(e);
  t.same(proc.map((e) => essence(e as ConntrackEntry)), tool.entries.map(essence));
  const v6 = proc.find((e) => typeof e !== 'string' && e.family === 'ipv6') as ConntrackEntry;
  t.same([v6.original.src, v6.reply.src], ['fd00:10:96::a', 'fd00:10:244:1::2'], 'IPv6 in canonical form');
  const zoned = proc.find((e) => typeof e !== 'string' && e.zone === 5) as ConntrackEntry;
  t.same(zoned.flags, ['UNREPLIED']);
  t.equal((proc[0] as ConntrackEntry).mark, 7);
});

/** Every listing line of the captures (lab, netns, proc; with and without -o extended). */
function capturedLines(): string[] {
  const files = ['proc-nf_conntrack.txt', 'proc-conntrack-extended.txt', 'netns-extended.txt', 'netns-default.txt', 'netns-extended-id-timestamp.txt', 'lab-unprotected-at-removal.txt', 'lab-protected-at-removal.txt'];
  return files.flatMap((f) => fixture(f).split('\n')).filter((l) => l.trim() !== '' && !l.startsWith('conntrack v'));
}

t.test('parseFlow (the agent\'s lean parse) reads exactly what the full parse does', async (t) => {
  const lines = capturedLines();
  t.ok(lines.length > 150, `${lines.length} captured lines`);
  for (const line of lines) {
    const full = parseProcLine(line);
    const lean = parseFlow(line);
    if (typeof full === 'string') t.equal(lean, undefined, `refused too: ${line}`);
    else if (lean === undefined) t.fail(`parseFlow refused ${line}`);
    else if (JSON.stringify(flow(lean)) !== JSON.stringify(flow(full))) t.same(flow(lean), flow(full), line);
  }
  // Random lines in the listing format, including full-form IPv6, missing ports (ICMP),
  // accounting, flags anywhere, zones, and broken lines.
  const hex4 = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16).padStart(4, '0'));
  const v6full = fc.array(hex4, { minLength: 8, maxLength: 8 }).map((g) => g.join(':'));
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
  const arbLine = fc
    .record({
      v6: fc.boolean(),
      family: fc.boolean(),
      proto: fc.constantFrom(['tcp', 6], ['udp', 17], ['sctp', 132], ['icmp', 1], ['udplite', 136]),
      timeout: fc.option(fc.nat(500000), { nil: undefined }),
      state: fc.option(fc.constantFrom('ESTABLISHED', 'TIME_WAIT', 'SYN_SENT', 'CLOSE', 'COOKIE_ECHOED'), { nil: undefined }),
      a: fc.tuple(v4, v4, v4, v4),
      b: fc.tuple(v6full, v6full, v6full, v6full),
      ports: fc.option(fc.tuple(fc.nat(65535), fc.nat(65535), fc.nat(65535), fc.nat(65535)), { nil: undefined }),
      acct: fc.boolean(),
      unreplied: fc.constantFrom(0, 1, 2),
      assured: fc.boolean(),
      zone: fc.option(fc.nat(9), { nil: undefined }),
      drop: fc.oneof({ arbitrary: fc.constant('none'), weight: 8 }, fc.constantFrom('reply-src', 'orig-dst', 'reply-dst', 'head')),
    })
    .map((r) => {
      const [s1, d1, s2, d2] = r.v6 ? r.b : r.a;
      const ports = (x: number, y: number) => (r.ports === undefined ? 'type=8 code=0 id=77 ' : `sport=${x} dport=${y} `);
      const acct = r.acct ? 'packets=3 bytes=180 ' : '';
      const orig = `src=${s1} ${r.drop === 'orig-dst' ? '' : `dst=${d1} `}${r.ports ? ports(r.ports[0], r.ports[1]) : ports(0, 0)}${acct}`;
      const reply = `${r.drop === 'reply-src' ? '' : `src=${s2} `}${r.drop === 'reply-dst' ? '' : `dst=${d2} `}${r.ports ? ports(r.ports[2], r.ports[3]) : ports(0, 0)}${acct}`;
      const head = r.drop === 'head' ? 'hello world ' : `${r.family ? (r.v6 ? 'ipv6     10 ' : 'ipv4     2 ') : ''}${r.proto[0]}      ${r.proto[1]} ${r.timeout === undefined ? '' : `${r.timeout} `}${r.state === undefined ? '' : `${r.state} `}`;
      return `${head}${orig}${r.unreplied === 1 ? '[UNREPLIED] ' : ''}${reply}${r.unreplied === 2 ? '[UNREPLIED] ' : ''}${r.assured ? '[ASSURED] ' : ''}mark=0 ${r.zone === undefined ? '' : `zone=${r.zone} `}use=1`;
    });
  let compared = 0;
  let refused = 0;
  fc.assert(
    fc.property(arbLine, (line) => {
      const full = parseProcLine(line);
      const lean = parseFlow(line);
      if (typeof full === 'string') {
        refused++;
        return lean === undefined;
      }
      compared++;
      return lean !== undefined && JSON.stringify(flow(lean)) === JSON.stringify(flow(full));
    }),
    { numRuns: 5000, seed: 4711 },
  );
  t.ok(compared > 3000 && refused > 300, `${compared} random entries compared field by field, ${refused} broken lines refused by both`);
});

t.test('reads the file in chunks of any size, lines cut anywhere', async (t) => {
  const dir = tempDir(t);
  const text = fixture('proc-nf_conntrack.txt').repeat(40);
  writeFileSync(join(dir, 'nf_conntrack'), text.slice(0, -1)); // and no final newline
  const whole = await readAll(new ConntrackTable({ procNetDir: dir }));
  t.equal(whole.read.source, 'proc');
  t.equal(whole.read.entries, 200);
  t.equal(whole.read.skipped, 0);
  for (const chunkBytes of [1, 7, 113, 4096]) {
    const r = await readAll(new ConntrackTable({ procNetDir: dir, chunkBytes }));
    t.same(r.entries, whole.entries, `${chunkBytes}-byte reads`);
  }
});

t.test('a line it does not understand is counted, not fatal', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'nf_conntrack'), `${fixture('proc-nf_conntrack.txt')}garbage line here\n`);
  const r = await readAll(new ConntrackTable({ procNetDir: dir }));
  t.equal(r.read.entries, 5);
  t.equal(r.read.skipped, 1);
  t.match(r.read.firstSkipped, /garbage line here/);
});

t.test('a table of 100k entries: streamed in bounded time and memory', async (t) => {
  const dir = tempDir(t);
  const lines: string[] = [];
  for (let i = 0; i < 100_000; i++) {
    const a = `10.244.${(i >> 8) & 255}.${i & 255}`;
    lines.push(
      i % 3 === 0
        ? `ipv4     2 udp      17 25 src=${a} dst=10.96.0.10 sport=${1024 + (i % 60000)} dport=53 src=10.244.200.${i % 7} dst=${a} sport=53 dport=${1024 + (i % 60000)} mark=0 zone=0 use=2`
        : `ipv4     2 tcp      6 431999 ESTABLISHED src=${a} dst=10.96.${i % 200}.1 sport=${1024 + (i % 60000)} dport=443 src=10.244.100.${i % 200} dst=${a} sport=8443 dport=${1024 + (i % 60000)} [ASSURED] mark=0 zone=0 use=2`,
    );
  }
  writeFileSync(join(dir, 'nf_conntrack'), `${lines.join('\n')}\n`);
  const heapBefore = process.memoryUsage().heapUsed;
  let n = 0;
  let peak = 0;
  const started = performance.now();
  const read = await new ConntrackTable({ procNetDir: dir }).read(() => {
    if (++n % 10_000 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - heapBefore);
  });
  const ms = performance.now() - started;
  t.equal(read.entries, 100_000);
  t.comment(`100k entries (${Math.round(lines.join('\n').length / 1e6)} MB) in ${Math.round(ms)} ms, heap growth at most ${Math.round(peak / 1e6)} MB while reading`);
  t.ok(ms < 20_000, 'well within the default 60 s deadline');
  t.ok(peak < 100e6, 'entries are not accumulated');
});

t.test('a read over its deadline is abandoned with an error', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'nf_conntrack'), fixture('proc-nf_conntrack.txt').repeat(200));
  const table = new ConntrackTable({ procNetDir: dir, chunkBytes: 64, deadlineMs: 0 });
  await t.rejects(table.read(() => undefined), ConntrackReadError);
  await t.rejects(table.read(() => undefined), /took over 0s/);
  // The agent stopping abandons a read between chunks.
  const stopping = new AbortController();
  let n = 0;
  const slow = new ConntrackTable({ procNetDir: dir, chunkBytes: 64 });
  await t.rejects(
    slow.read(() => {
      if (++n === 3) stopping.abort();
    }, stopping.signal),
    /abandoned after \d+ entries: stopping/,
  );
  t.ok(n < 10, `stopped after ${n} of 1000 entries`);
});

/** A fake `conntrack` tool: prints a capture for -L (and nothing for -f ipv6), or fails like the real one. */
function fakeTool(dir: string, behaviour: 'list' | 'eperm'): string {
  const bin = join(dir, 'conntrack');
  mkdirSync(dir, { recursive: true });
  const body =
    behaviour === 'list'
      ? `case "$*" in *"-f ipv6"*) exit 0;; esac\ncat '${join(dir, 'capture.txt')}'\necho 'conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.' >&2\n`
      : `echo 'conntrack v1.4.7 (conntrack-tools): Operation not permitted' >&2\nexit 1\n`;
  writeFileSync(join(dir, 'capture.txt'), fixture('proc-conntrack-extended.txt'));
  writeFileSync(bin, `#!/bin/sh\n${body}`);
  chmodSync(bin, 0o755);
  return bin;
}

t.test('no /proc/net/nf_conntrack: the conntrack tool, if there is one', async (t) => {
  const dir = tempDir(t);
  const bin = fakeTool(join(dir, 'bin'), 'list');
  const table = new ConntrackTable({ procNetDir: join(dir, 'proc-net'), bin });
  const r = await readAll(table);
  t.equal(r.read.source, 'tool');
  t.same(r.entries, parseConntrack(fixture('proc-conntrack-extended.txt')).entries.map(flow));
  // The file appears (nf_conntrack loaded later): the tool stays preferred while it works.
  mkdirSync(join(dir, 'proc-net'));
  writeFileSync(join(dir, 'proc-net', 'nf_conntrack'), fixture('proc-nf_conntrack.txt'));
  t.equal((await readAll(table)).read.source, 'tool');
  rmSync(bin);
  t.equal((await readAll(table)).read.source, 'proc', 'and the file when the tool goes');
});

t.test('neither readable: one error that says why for each', async (t) => {
  const dir = tempDir(t);
  const absent = new ConntrackTable({ procNetDir: join(dir, 'none'), bin: join(dir, 'no-such-conntrack') });
  const error = await absent.read(() => undefined).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(error instanceof ConntrackUnreadableError);
  const e = error as ConntrackUnreadableError;
  t.match(e.reasons.proc, /nf_conntrack does not exist \(nf_conntrack not loaded, or a kernel without CONFIG_NF_CONNTRACK_PROCFS\)/);
  t.match(e.reasons.tool, /no .*no-such-conntrack tool/);
  const eperm = new ConntrackTable({ procNetDir: join(dir, 'none'), bin: fakeTool(join(dir, 'bin2'), 'eperm') });
  await t.rejects(eperm.read(() => undefined), /Operation not permitted.*needs root or CAP_NET_ADMIN/);
});
