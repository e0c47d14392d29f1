/**
 * The reaper on REAL conntrack: in a network namespace the test creates, with
 * iptables DNAT rules as kube-proxy writes them and real UDP flows through them,
 * plus 5,200 entries inserted with `conntrack -I` (IPv4 and IPv6, TCP and
 * UDP) to four kinds of target: an endpoint that left every EndpointSlice, a
 * terminating one, a live one and one never seen in any slice — and direct flows
 * to the gone pod (no DNAT). The reaper (test/support/reap-sweep.ts: the agent's
 * EndpointTracker, Reaper, ConntrackTable and `conntrack -D`) runs inside the
 * namespace as root with NET_ADMIN as its only capability — the chart's
 * securityContext with agent.reap.enabled — and only the gone endpoint's DNATed
 * entries go; a dry run deletes nothing and counts them.
 * Needs root, iproute2, iptables/ip6tables, conntrack and setpriv; skipped otherwise.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { makeEndpointSlice, makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { bridgeToSocket, createNetns, firstLine, netnsSkipReason } from '../support/netns.ts';
import type { Netns } from '../support/netns.ts';
import { REPO_ROOT } from '../support/webhook.ts';

t.setTimeout(120_000);

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const skip =
  netnsSkipReason() ||
  (['iptables', 'ip6tables', 'conntrack', 'setpriv'].find((c) => !has(c)) ?? false ? `needs iptables, ip6tables, conntrack and setpriv` : false) ||
  (existsSync('/proc/net/nf_conntrack') ? false : 'no /proc/net/nf_conntrack');

// Service "web" (TCP 80 → 8080) and "dns" (UDP 53 → 5353), IPv4 and IPv6.
const WEB4 = '127.0.10.10';
const DNS4 = '127.0.10.12';
const DNS4_LIVE = '127.0.10.13'; // "dns-b": real flows to a live endpoint
const OTHER4 = '127.0.10.11'; // another DNAT (a NodePort hostPort, a CNI port map): never an endpoint
const WEB6 = 'fd00:10:96::a';
const DNS6 = 'fd00:10:96::b';
const GONE4 = '127.0.20.1';
const TERM4 = '127.0.20.2';
const LIVE4 = '127.0.20.3';
const NEVER4 = '127.0.30.1';
const GONE6 = 'fd00:10:244::1';
const TERM6 = 'fd00:10:244::2';
const LIVE6 = 'fd00:10:244::3';
const N = 400; // entries per kind and family

/** `conntrack -I` lines (for `conntrack -R`): n flows from distinct clients to vip:vport, DNATed to target:tport. */
function inserts(protocol: 'tcp' | 'udp', vip: string, vport: number, target: string, tport: number, n: number, clientBase: number): string[] {
  const v6 = vip.includes(':');
  return [...Array(n)].map((_, i) => {
    const c = clientBase + i;
    const client = v6 ? `fd00:1::${c.toString(16)}` : `127.1.${(c >> 8) & 255}.${c & 255}`;
    const sport = 20000 + (c % 40000);
    const state = protocol === 'tcp' ? ' --state ESTABLISHED' : '';
    return `-I -p ${protocol} -s ${client} -d ${vip} --sport ${sport} --dport ${vport} -r ${target} -q ${client} --reply-port-src ${tport} --reply-port-dst ${sport}${state} -t 3000`;
  });
}

const slices = (phase: 'before' | 'after') => [
  makeEndpointSlice('lab', 'web', [{ name: 'http', port: 8080, protocol: 'TCP' }], [
    ...(phase === 'before' ? [{ ip: GONE4 }] : []),
    phase === 'before' ? { ip: TERM4 } : { ip: TERM4, ready: false, serving: true, terminating: true },
    { ip: LIVE4 },
  ]),
  makeEndpointSlice('lab', 'web6', [{ name: 'http', port: 8080, protocol: 'TCP' }], [
    ...(phase === 'before' ? [{ ip: GONE6 }] : []),
    phase === 'before' ? { ip: TERM6 } : { ip: TERM6, ready: false, serving: false, terminating: true },
    { ip: LIVE6 },
  ]),
  makeEndpointSlice('lab', 'dns', [{ name: 'dns', port: 5353, protocol: 'UDP' }], [...(phase === 'before' ? [{ ip: GONE4 }] : []), { ip: LIVE4 }]),
  makeEndpointSlice('lab', 'dns-b', [{ name: 'dns', port: 5353, protocol: 'UDP' }], [{ ip: LIVE4 }]),
  makeEndpointSlice('lab', 'dns6', [{ name: 'dns', port: 5353, protocol: 'UDP' }], [...(phase === 'before' ? [{ ip: GONE6 }] : []), { ip: LIVE6 }]),
];

const RESPONDER = `
const dgram = require('node:dgram');
for (const addr of ['${GONE4}', '${LIVE4}']) {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send('answer', r.port, r.address));
  s.bind(5353, addr);
}
setTimeout(() => process.stdout.write('ready\\n'), 100);
`;
const CLIENT = (vip: string, n: number) => `
const dgram = require('node:dgram');
const ask = () => new Promise((resolve) => {
  const s = dgram.createSocket('udp4');
  s.on('message', () => { s.close(); resolve(true); });
  s.send('query', 53, '${vip}');
  setTimeout(() => { try { s.close(); } catch {} resolve(false); }, 1000);
});
Promise.all([...Array(${n})].map(ask)).then((a) => process.stdout.write(JSON.stringify(a) + '\\n'));
`;

/** The namespace's table, counted by (protocol, original destination, reply source:port). */
function census(ns: Netns): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of ns.exec(['conntrack', '-L', '-f', 'ipv4']).split('\n').concat(ns.exec(['conntrack', '-L', '-f', 'ipv6']).split('\n'))) {
    const m = /^(tcp|udp)\s.*?\bdst=(\S+) .*?\bdport=(\d+) .*?\bsrc=(\S+) .*?\bsport=(\d+)/.exec(line.replace(/^(\S+\s+\d+\s+\d+(?:\s+[A-Z_]+)?)\s+src=\S+/, '$1'));
    if (m === null) continue;
    const k = `${m[1]} ${m[2]}:${m[3]} → ${m[4]}:${m[5]}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

const sweep = (ns: Netns, input: object): Record<string, unknown> => {
  // Root with NET_ADMIN as the only capability (bounding set), no new privileges: the chart's securityContext with agent.reap.enabled.
  // Not ns.exec: its 10 s limit is short for a Node start plus a sweep on a busy 2-core machine.
  const r = spawnSync('ip', ['netns', 'exec', ns.name, 'setpriv', '--bounding-set=-all,+net_admin', '--inh-caps=-all', '--no-new-privs', process.execPath, join(REPO_ROOT, 'test/support/reap-sweep.ts'), JSON.stringify(input)], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`reap-sweep failed (${String(r.status ?? r.error)}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
};

t.test('the reaper on a real table: only the gone endpoint\'s DNATed entries go; dry run deletes nothing', { skip, timeout: 110_000 }, async (t) => {
  const ns = createNetns(t);
  for (const a of [WEB6, GONE6, TERM6, LIVE6]) ns.exec(['ip', 'addr', 'add', `${a}/128`, 'dev', 'lo', 'nodad']);
  ns.sysctl('net.netfilter.nf_conntrack_udp_timeout', 300);
  ns.exec(['iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${DNS4}/32`, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `${GONE4}:5353`]);
  ns.exec(['iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${DNS4_LIVE}/32`, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `${LIVE4}:5353`]);
  ns.exec(['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${WEB6}/128`, '-p', 'tcp', '--dport', '80', '-j', 'DNAT', '--to-destination', `[${GONE6}]:8080`]);
  await firstLine(ns.spawn([process.execPath, '-e', RESPONDER]));
  t.same(JSON.parse(ns.exec([process.execPath, '-e', CLIENT(DNS4, 5)])), [true, true, true, true, true], 'real flows through the DNAT to the pod that will go');
  t.same(JSON.parse(ns.exec([process.execPath, '-e', CLIENT(DNS4_LIVE, 3)])), [true, true, true], 'and to a live one');

  const dir = mkdtempSync(join(tmpdir(), 'st-reap-netns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lines = [
    ...inserts('tcp', WEB4, 80, GONE4, 8080, N, 0),
    ...inserts('tcp', WEB4, 80, TERM4, 8080, N, 1000),
    ...inserts('tcp', WEB4, 80, LIVE4, 8080, N, 2000),
    ...inserts('tcp', OTHER4, 80, NEVER4, 8080, N, 3000),
    ...inserts('tcp', GONE4, 8080, GONE4, 8080, N, 4000), // direct to the pod: no DNAT
    ...inserts('udp', DNS4, 53, GONE4, 5353, N, 5000),
    ...inserts('udp', DNS4, 53, LIVE4, 5353, N, 6000),
    ...inserts('tcp', WEB6, 80, GONE6, 8080, N, 7000),
    ...inserts('tcp', WEB6, 80, TERM6, 8080, N, 8000),
    ...inserts('tcp', WEB6, 80, LIVE6, 8080, N, 9000),
    ...inserts('tcp', GONE6, 8080, GONE6, 8080, N, 10000),
    ...inserts('udp', DNS6, 53, GONE6, 5353, N, 11000),
    ...inserts('udp', DNS6, 53, LIVE6, 5353, N, 12000),
  ];
  writeFileSync(join(dir, 'inserts'), `${lines.join('\n')}\n`);
  ns.exec(['conntrack', '-R', join(dir, 'inserts')]);
  const before = census(ns);
  const total = [...before.values()].reduce((a, b) => a + b, 0);
  t.ok(total >= lines.length + 8, `${total} entries in the namespace's table`);
  const k = (p: string, vip: string, vport: number, target: string, tport: number) => `${p} ${vip}:${vport} → ${target}:${tport}`;
  const GONE_KEYS = [k('tcp', WEB4, 80, GONE4, 8080), k('udp', DNS4, 53, GONE4, 5353), k('tcp', WEB6, 80, GONE6, 8080), k('udp', DNS6, 53, GONE6, 5353)];
  t.same(GONE_KEYS.map((x) => before.get(x)), [N, N + 5, N, N], 'the entries to the endpoint that goes, inserted and real');

  const input = { before: slices('before'), after: slices('after'), holdMs: 1000, maxPerSecond: 100_000 };
  const dry = sweep(ns, { ...input, dryRun: true });
  t.equal(dry['result'], 'ok');
  t.equal(dry['scanned'], total, 'the sweep read the whole table');
  t.same(
    (dry['groups'] as Array<Record<string, string | number>>).map((g) => `${g['service']} ${g['protocol']} ${g['origDst']}:${g['dport']} → ${g['replySrc']}:${g['sport']} ×${g['entries']} deleted ${g['deleted']}`).sort(),
    [
      `lab/dns udp ${DNS4}:53 → ${GONE4}:5353 ×${N + 5} deleted 0`,
      `lab/dns6 udp ${DNS6}:53 → ${GONE6}:5353 ×${N} deleted 0`,
      `lab/web tcp ${WEB4}:80 → ${GONE4}:8080 ×${N} deleted 0`,
      `lab/web6 tcp ${WEB6}:80 → ${GONE6}:8080 ×${N} deleted 0`,
    ],
    'dry run: the gone endpoint\'s entries found, per Service',
  );
  t.same(dry['reapedMetric'], [
    `reap_dry_run namespace="lab",service="dns",protocol="udp" ${N + 5}`,
    `reap_dry_run namespace="lab",service="dns6",protocol="udp" ${N}`,
    `reap_dry_run namespace="lab",service="web",protocol="tcp" ${N}`,
    `reap_dry_run namespace="lab",service="web6",protocol="tcp" ${N}`,
  ]);
  t.same(census(ns), before, 'dry run: the table is unchanged');

  const wet = sweep(ns, { ...input, dryRun: false });
  t.equal(wet['result'], 'ok');
  t.ok((wet['sweptAtMs'] as number) >= 1000 && (wet['sweptAtMs'] as number) < 2000, `swept ${String(wet['sweptAtMs'])} ms after the endpoint went (hold 1 s)`);
  t.same((wet['groups'] as Array<Record<string, number>>).map((g) => g['deleted']).sort(), [N, N, N, N + 5].sort(), 'each group deleted exactly its entries');
  t.same(wet['reapedMetric'], [
    `reaped namespace="lab",service="dns",protocol="udp" ${N + 5}`,
    `reaped namespace="lab",service="dns6",protocol="udp" ${N}`,
    `reaped namespace="lab",service="web",protocol="tcp" ${N}`,
    `reaped namespace="lab",service="web6",protocol="tcp" ${N}`,
  ]);
  const after = census(ns);
  for (const key of GONE_KEYS) t.equal(after.get(key), undefined, `gone: ${key}`);
  const kept = [...before.entries()].filter(([key]) => !GONE_KEYS.includes(key));
  t.ok(kept.length >= 10, 'the other kinds of entry');
  for (const [key, n] of kept) t.equal(after.get(key), n, `kept: ${key}`);
  t.equal([...after.values()].reduce((a, b) => a + b, 0), total - 4 * N - 5, 'nothing else deleted');
});

t.test('`safe-termination agent` in the namespace: an endpoint leaves its EndpointSlice, the agent reaps its flows within the hold and a second', { skip, timeout: 90_000 }, async (t) => {
  const ns = createNetns(t);
  ns.sysctl('net.netfilter.nf_conntrack_udp_timeout', 300);
  ns.exec(['iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${DNS4}/32`, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `${GONE4}:5353`]);
  await firstLine(ns.spawn([process.execPath, '-e', RESPONDER]));
  t.same(JSON.parse(ns.exec([process.execPath, '-e', CLIENT(DNS4, 4)])), [true, true, true, true], 'real flows through the DNAT');
  const dir = mkdtempSync(join(tmpdir(), 'st-reap-agent-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'inserts'), `${[...inserts('udp', DNS4, 53, GONE4, 5353, 500, 0), ...inserts('udp', DNS4, 53, LIVE4, 5353, 500, 1000), ...inserts('tcp', WEB4, 80, GONE4, 8080, 300, 2000)].join('\n')}\n`);
  ns.exec(['conntrack', '-R', join(dir, 'inserts')]);
  const count = (re: RegExp) => ns.exec(['cat', '/proc/net/nf_conntrack']).split('\n').filter((l) => re.test(l)).length;
  const toGone = / udp .*dst=127\.0\.10\.12 .*src=127\.0\.20\.1 .*sport=5353 /;
  const toLive = / udp .*dst=127\.0\.10\.12 .*src=127\.0\.20\.3 .*sport=5353 /;
  const tcpGone = / tcp .*dst=127\.0\.10\.10 .*src=127\.0\.20\.1 .*sport=8080 /;
  t.same([count(toGone), count(toLive), count(tcpGone)], [504, 500, 300], 'the table before');

  chmodSync(dir, 0o755);
  const api = await startFakeApiServer({ unixSocket: join(dir, 'api.sock') });
  t.teardown(() => api.stop());
  api.setNodes([makeNode('worker-1')]);
  api.setEndpointSlices(slices('before'));
  const bridge = await bridgeToSocket(ns, join(dir, 'api.sock'));
  const kubeconfig = api.writeKubeconfig({ server: `http://127.0.0.1:${bridge}` });
  chmodSync(dirname(kubeconfig), 0o755);
  let log = '';
  const metricsPort = 9813;
  const agent = ns.spawn([
    'setpriv', '--bounding-set=-all,+net_admin', '--inh-caps=-all', '--no-new-privs',
    process.execPath, join(REPO_ROOT, 'src/cli/main.ts'), 'agent', '--kubeconfig', kubeconfig, '--node-name', 'worker-1',
    '--metrics-port', String(metricsPort), '--bind-address', '127.0.0.1', '--reap-hold', '2s', '--log-level', 'debug',
  ]);
  agent.stdout!.on('data', (c: Buffer) => (log += c.toString('utf8')));
  agent.stderr!.on('data', (c: Buffer) => (log += c.toString('utf8')));
  t.teardown(() => {
    if (!t.passing()) t.comment(`agent log:\n${log}`);
  });
  await waitUntil(() => log.includes('"resource":"endpointslices"') && log.includes('informer synced'), 'the slices listed', 30_000, 100);
  await new Promise((r) => setTimeout(r, 500));
  t.same([count(toGone), count(toLive), count(tcpGone)], [504, 500, 300], 'listed endpoints: nothing reaped');
  const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
  t.match(status, /^Uid:\s+0\s+0\s+0\s+0$/m, 'the agent runs as root');
  t.match(status, /^CapEff:\s+0000000000001000$/m, 'with NET_ADMIN as its only capability');

  api.setEndpointSlices(slices('after'));
  const removedAt = Date.now();
  await waitUntil(() => count(toGone) === 0 && count(tcpGone) === 0, 'the gone endpoint\'s entries deleted', 20_000, 50);
  const took = Date.now() - removedAt;
  t.ok(took >= 2000 && took < 5000, `deleted ${took} ms after the slice changed (hold 2 s)`);
  t.equal(count(toLive), 500, 'the live endpoint\'s entries stay');
  const metrics = ns.exec([process.execPath, '-e', `fetch('http://127.0.0.1:${metricsPort}/metrics').then((r) => r.text()).then((x) => process.stdout.write(x))`]);
  t.match(metrics, /^safe_termination_conntrack_reaped_total\{namespace="lab",service="dns",protocol="udp"\} 504$/m);
  t.match(metrics, /^safe_termination_conntrack_reaped_total\{namespace="lab",service="web",protocol="tcp"\} 300$/m);
  t.match(metrics, /^safe_termination_conntrack_reap_errors_total 0$/m);
  await waitUntil(() => log.includes('conntrack reaper: stale entries to gone endpoints deleted'), 'the log lines', 5000, 50);
  const lines = log.split('\n').filter((l) => l.includes('conntrack reaper: stale entries to gone endpoints deleted'));
  t.equal(lines.length, 2, 'one line per Service');
  t.equal(agent.exitCode, null, 'the agent is still running');
});
