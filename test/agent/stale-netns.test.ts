/**
 * Real conntrack, end to end: the `safe-termination agent` command runs inside a
 * network namespace the test creates (standing in for the node's: the DaemonSet
 * uses hostNetwork) as uid 65532 with supplementary group 0 and no capability —
 * the chart's securityContext with agent.staleConntrack.enabled. In the namespace,
 * iptables DNAT rules written as kube-proxy writes them send UDP flows for two
 * Service VIPs (IPv4 and IPv6) to "pods" whose endpoints the fake API server's
 * EndpointSlices do not list. The agent reads /proc/net/nf_conntrack of the
 * namespace and its gauge counts exactly those flows per Service; once the
 * EndpointSlices list the pods, the series go.
 * Needs root, iproute2, iptables/ip6tables and setpriv; skipped otherwise.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { makeEndpointSlice, makeNode, makeService, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import { bridgeToSocket, createNetns, firstLine, netnsSkipReason } from '../support/netns.ts';
import type { Netns } from '../support/netns.ts';
import { REPO_ROOT } from '../support/webhook.ts';

t.setTimeout(90_000);

const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const skip =
  netnsSkipReason() ||
  (!has('iptables') || !has('ip6tables') ? 'needs iptables and ip6tables' : false) ||
  (!has('setpriv') ? 'needs setpriv (util-linux)' : false) ||
  (existsSync('/proc/net/nf_conntrack') ? false : 'no /proc/net/nf_conntrack (nf_conntrack not loaded, or no CONFIG_NF_CONNTRACK_PROCFS)');

const VIP4 = '127.0.10.10';
const VIP6 = 'fd00:10:96::a';
const OLD4 = '127.0.20.1'; // the deleted pods: flows still go there
const OLD6 = 'fd00:10:244::1';
const NEW4 = '127.0.20.2';
const NEW6 = 'fd00:10:244::2';

/** UDP "DNS" answering on the old pods' addresses, and a client making `n` flows per VIP (one source port each). */
const RESPONDER = `
const dgram = require('node:dgram');
for (const [type, addr] of [['udp4', '${OLD4}'], ['udp6', '${OLD6}']]) {
  const s = dgram.createSocket(type);
  s.on('message', (m, r) => s.send('answer', r.port, r.address));
  s.bind(5353, addr);
}
setTimeout(() => process.stdout.write('ready\\n'), 100);
`;
const CLIENT = (n4: number, n6: number) => `
const dgram = require('node:dgram');
const ask = (type, host) => new Promise((resolve) => {
  const s = dgram.createSocket(type);
  s.on('message', () => { s.close(); resolve(true); });
  s.send('query', 53, host);
  setTimeout(() => { try { s.close(); } catch {} resolve(false); }, 1000);
});
Promise.all([...Array(${n4})].map(() => ask('udp4', '${VIP4}')).concat([...Array(${n6})].map(() => ask('udp6', '${VIP6}'))))
  .then((answers) => process.stdout.write(JSON.stringify(answers) + '\\n'));
`;

function node(ns: Netns, script: string): string {
  return ns.exec([process.execPath, '-e', script]);
}

/** GET the agent's /metrics from inside the namespace (its port is on the namespace's loopback). */
function scrape(ns: Netns, port: number): string {
  return node(ns, `fetch('http://127.0.0.1:${port}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t), (e) => process.stdout.write('unreachable: ' + e.message))`);
}

function staleSeries(text: string): string[] {
  return [...text.matchAll(/^safe_termination_conntrack_stale_entries\{namespace="([^"]+)",service="([^"]+)",protocol="([^"]+)"\} (\d+)$/gm)]
    .map((m) => `${m[1]}/${m[2]}/${m[3]} ${m[4]}`)
    .sort();
}

t.test('the agent in a netns, as uid 65532 + group 0, counts real stale DNAT flows per Service', { skip, timeout: 85_000 }, async (t) => {
  const ns = createNetns(t);
  const T0 = Date.now();
  const mark = (what: string) => t.comment(`${what} at ${Date.now() - T0} ms`);
  ns.exec(['ip', 'addr', 'add', `${VIP6}/128`, 'dev', 'lo', 'nodad']);
  ns.exec(['ip', 'addr', 'add', `${OLD6}/128`, 'dev', 'lo', 'nodad']);
  ns.sysctl('net.netfilter.nf_conntrack_udp_timeout', 120); // entries outlive the test
  // kube-proxy's rules, for locally generated traffic (the nat OUTPUT chain) as on a node.
  ns.exec(['iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${VIP4}/32`, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `${OLD4}:5353`]);
  ns.exec(['ip6tables', '-t', 'nat', '-A', 'OUTPUT', '-d', `${VIP6}/128`, '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', `[${OLD6}]:5353`]);

  await firstLine(ns.spawn([process.execPath, '-e', RESPONDER]));
  const answers = JSON.parse(node(ns, CLIENT(4, 2))) as boolean[];
  t.same(answers, [true, true, true, true, true, true], '6 flows answered by the old pods through the DNAT');
  const table = ns.exec(['cat', '/proc/net/nf_conntrack']);
  t.equal(table.split('\n').filter((l) => / udp .*dport=53 .*sport=5353 /.test(l)).length, 6, 'six DNATed UDP entries in the namespace\'s table');
  t.match(table, /src=fd00:0010:0244:0000:0000:0000:0000:0001/, 'the file writes IPv6 in full');
  mark('flows made');

  const dir = mkdtempSync(join(tmpdir(), 'st-stale-netns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  const api = await startFakeApiServer({ unixSocket: join(dir, 'api.sock') });
  t.teardown(() => api.stop());
  chmodSync(join(dir, 'api.sock'), 0o777);
  api.setNodes([makeNode('worker-1')]);
  const port = (p: number) => [{ name: 'dns', port: p, protocol: 'UDP' }];
  api.setServices([
    makeService('lab', 'echo', VIP4, [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }]),
    makeService('lab', 'echo6', VIP6, [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }]),
  ]);
  const slices = (withOld: boolean) => [
    makeEndpointSlice('lab', 'echo', port(5353), [{ ip: NEW4 }, ...(withOld ? [{ ip: OLD4 }] : [])]),
    makeEndpointSlice('lab', 'echo6', port(5353), [{ ip: NEW6 }, ...(withOld ? [{ ip: OLD6 }] : [])]),
  ];
  api.setEndpointSlices(slices(false));

  const bridge = await bridgeToSocket(ns, join(dir, 'api.sock'));
  const kubeconfig = api.writeKubeconfig({ server: `http://127.0.0.1:${bridge}` });
  chmodSync(dirname(kubeconfig), 0o755);
  chmodSync(kubeconfig, 0o644);
  const metricsPort = 9812;
  let log = '';
  // The chart's securityContext: runAsUser/runAsGroup 65532, supplementalGroups [0], capabilities drop ALL, no privilege escalation.
  const setpriv = ['setpriv', '--reuid=65532', '--regid=65532', '--groups=0', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs'];
  const agent = ns.spawn(
    [
      ...setpriv,
      'env',
      'PATH=/nonexistent', // no conntrack tool, as in the image
      process.execPath,
      join(REPO_ROOT, 'src/cli/main.ts'),
      'agent',
      '--kubeconfig',
      kubeconfig,
      '--stale-conntrack-interval',
      '1',
      '--metrics-port',
      String(metricsPort),
      '--bind-address',
      '127.0.0.1',
    ],
    { env: { PATH: process.env['PATH'] ?? '', NODE_NAME: 'worker-1' } },
  );
  agent.stdout!.on('data', (c: Buffer) => (log += c.toString('utf8')));
  agent.stderr!.on('data', (c: Buffer) => (log += c.toString('utf8')));
  t.teardown(() => {
    if (!t.passing()) t.comment(`agent log:\n${log}`);
  });

  let metrics = '';
  await waitUntil(() => {
    metrics = scrape(ns, metricsPort);
    return /safe_termination_conntrack_stale_scans_total\{result="ok"\} [1-9]/.test(metrics);
  }, 'a successful scan', 40_000, 500);
  mark('first scan');
  t.same(staleSeries(metrics), ['lab/echo/udp 4', 'lab/echo6/udp 2'], 'exactly the flows to the unlisted pods, per Service, IPv4 and IPv6');
  t.match(metrics, /^safe_termination_conntrack_stale_available 1$/m);
  // The agent's log is written asynchronously: wait for the scan's line.
  await waitUntil(() => log.includes('"msg":"stale conntrack entries: flows still sent'), 'the scan logged', 10_000, 100);
  t.match(log, /"source":"proc"/, 'read from /proc/net/nf_conntrack');
  // `ip netns exec`, setpriv and env exec in place: the pid is the agent's.
  const status = readFileSync(`/proc/${agent.pid}/status`, 'utf8');
  t.match(status, /^Uid:\s+65532\s+65532\s+65532\s+65532$/m, 'the agent runs as uid 65532');
  t.match(status, /^Groups:\s+0\s*$/m, 'with supplementary group 0 only');
  t.match(status, /^CapEff:\s+0+$/m, 'and no capability');
  t.match(log, /"msg":"stale conntrack entries: flows still sent to endpoints that are gone or not serving"/);
  t.match(log, /lab\/echo udp ×4 → 127\.0\.20\.1:5353 \(gone\)/);
  t.match(log, /lab\/echo6 udp ×2 → \[fd00:10:244::1\]:5353 \(gone\)/);

  // The EndpointSlices list the old pods again: the same flows are live, the series go.
  api.setEndpointSlices(slices(true));
  await waitUntil(() => {
    metrics = scrape(ns, metricsPort);
    return staleSeries(metrics).length === 0 && /stale_available 1/.test(metrics);
  }, 'no stale series', 20_000, 500);
  mark('listed');
  t.ok(ns.exec(['cat', '/proc/net/nf_conntrack']).split('\n').filter((l) => / udp .*sport=5353 /.test(l)).length >= 6, 'the entries are still there: only their verdict changed');
  t.equal(agent.exitCode, null, 'the agent is still running');
});
