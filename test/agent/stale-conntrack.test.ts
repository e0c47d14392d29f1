/**
 * The agent's stale-entry count (--stale-conntrack-interval) in-process: the
 * fake API server's Services and EndpointSlices against a conntrack table file
 * laid out like /proc/net/nf_conntrack. What the gauge says, when it says nothing
 * (no endpoint data yet, an API server gone for too long, an unreadable table),
 * that each of those is logged once, and that the rest of the agent carries on.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { startAgent } from '../../src/agent/agent.ts';
import type { AgentTuning, RunningAgent } from '../../src/agent/agent.ts';
import { ENDPOINTSLICES_PATH, SERVICES_PATH } from '../../src/agent/service-endpoints.ts';
import type { ClusterAccess } from '../../src/cluster/kubeconfig.ts';
import { parseAgentConfig } from '../../src/cli/config.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeEndpointSlice, makeNode, makeService, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const DNS_PORTS = [
  { name: 'dns', port: 53, protocol: 'UDP' },
  { name: 'dns-tcp', port: 53, protocol: 'TCP' },
];
const DNS = makeService('kube-system', 'kube-dns', '10.96.0.10', DNS_PORTS);
const WEB = makeService('shop', 'web', '10.96.5.5', [{ name: 'http', port: 80, targetPort: 8080 }]);
const dnsSlice = (endpoints: Parameters<typeof makeEndpointSlice>[3]) => makeEndpointSlice('kube-system', 'kube-dns', DNS_PORTS, endpoints);
const webSlice = (endpoints: Parameters<typeof makeEndpointSlice>[3]) => makeEndpointSlice('shop', 'web', [{ name: 'http', port: 8080 }], endpoints);

/** Lines as /proc/net/nf_conntrack writes them. */
const udp = (client: string, sport: number, vip: string, target: string, replied = true) =>
  `ipv4     2 udp      17 28 src=${client} dst=${vip} sport=${sport} dport=53 ${replied ? '' : '[UNREPLIED] '}src=${target} dst=${client} sport=53 dport=${sport} mark=0 zone=0 use=2`;
const tcp = (state: string, client: string, sport: number, vip: string, dport: number, target: string, tport: number) =>
  `ipv4     2 tcp      6 100 ${state} src=${client} dst=${vip} sport=${sport} dport=${dport} src=${target} dst=${client} sport=${tport} dport=${sport} [ASSURED] mark=0 zone=0 use=2`;

/** 3 UDP + 1 TCP entries to the deleted 10.244.1.2, 2 live, 1 TIME_WAIT (closed), 1 to the web Service's old pod, 1 without DNAT. */
const TABLE = [
  udp('10.244.0.5', 40001, '10.96.0.10', '10.244.1.2'),
  udp('10.244.0.5', 40002, '10.96.0.10', '10.244.1.2'),
  udp('10.244.0.6', 40003, '10.96.0.10', '10.244.1.2', false),
  udp('10.244.0.6', 40004, '10.96.0.10', '10.244.1.3'),
  tcp('ESTABLISHED', '10.244.0.5', 50001, '10.96.0.10', 53, '10.244.1.2', 53),
  tcp('ESTABLISHED', '10.244.0.5', 50002, '10.96.0.10', 53, '10.244.1.3', 53),
  tcp('TIME_WAIT', '10.244.0.5', 50003, '10.96.0.10', 53, '10.244.1.2', 53),
  tcp('ESTABLISHED', '10.244.0.7', 50004, '10.96.5.5', 80, '10.244.2.9', 8080),
  tcp('ESTABLISHED', '10.244.0.7', 50005, '192.0.2.1', 443, '192.0.2.1', 443),
];

interface Rig {
  readonly agent: RunningAgent;
  readonly logs: LogCapture;
  readonly netDir: string;
  metrics(): Promise<string>;
  health(): Promise<any>;
  msgs(re: RegExp): Array<Record<string, unknown>>;
}

async function rig(t: Test, api: FakeApiServer | undefined, o: { args?: string[]; table?: string[] | null; tuning?: AgentTuning['staleConntrack'] } = {}): Promise<Rig> {
  const root = mkdtempSync(join(tmpdir(), 'st-stale-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const sys = join(root, 'sys');
  const net = join(root, 'net');
  mkdirSync(sys);
  mkdirSync(net);
  writeFileSync(join(sys, 'nf_conntrack_udp_timeout'), '30\n');
  writeFileSync(join(sys, 'nf_conntrack_count'), `${TABLE.length}\n`);
  writeFileSync(join(sys, 'nf_conntrack_max'), '262144\n');
  if (o.table !== null) writeFileSync(join(net, 'nf_conntrack'), `${(o.table ?? TABLE).join('\n')}\n`);
  const config = parseAgentConfig(
    ['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', sys, '--proc-net-dir', net, '--node-name', 'worker-1', ...(o.args ?? ['--stale-conntrack-interval', '60s'])],
    {},
  );
  let access: ClusterAccess = { kind: 'none' };
  if (api !== undefined) {
    const kc = new KubeConfig();
    kc.loadFromString(api.kubeconfig());
    access = { kind: 'kubeconfig', kubeConfig: kc, server: api.url, path: 'test' };
  }
  const logs = new LogCapture();
  const agent = await startAgent(config, createLogger('debug', logs), access, {
    intervalMs: 1000,
    annotator: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1000 },
    staleConntrack: {
      intervalMs: 100,
      endpoints: { informer: { backoff: { initialMs: 30, maxMs: 200 }, requestTimeoutMs: 1000 } },
      table: { bin: join(root, 'no-conntrack-tool') },
      ...o.tuning,
    },
  });
  t.teardown(() => agent.stop());
  return {
    agent,
    logs,
    netDir: net,
    metrics: async () => (await fetch(`http://127.0.0.1:${agent.port}/metrics`)).text(),
    health: async () => (await fetch(`http://127.0.0.1:${agent.port}/healthz`)).json(),
    msgs: (re) => logs.lines.filter((l) => re.test(String(l['msg']))),
  };
}

async function cluster(t: Test): Promise<FakeApiServer> {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes([makeNode('worker-1')]);
  api.setServices([DNS, WEB]);
  api.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }]), webSlice([{ ip: '10.244.2.10' }])]);
  return api;
}

/** The stale series of a scrape, as `namespace/service/protocol value`. */
function staleSeries(text: string): string[] {
  return [...text.matchAll(/^safe_termination_conntrack_stale_entries\{namespace="([^"]+)",service="([^"]+)",protocol="([^"]+)"\} (\d+)$/gm)]
    .map((m) => `${m[1]}/${m[2]}/${m[3]} ${m[4]}`)
    .sort();
}

const scans = (text: string, result: string): number => Number(new RegExp(`^safe_termination_conntrack_stale_scans_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? -1);

t.test('counts stale entries per Service and protocol; series go when the endpoint is listed again', async (t) => {
  const api = await cluster(t);
  const r = await rig(t, api);
  await waitUntil(async () => scans(await r.metrics(), 'ok') >= 1, 'a scan');
  let m = await r.metrics();
  t.same(staleSeries(m), ['kube-system/kube-dns/tcp 1', 'kube-system/kube-dns/udp 3', 'shop/web/tcp 1'], 'UDP ×3 and TCP ×1 to the gone pod, and the web Service\'s old pod; TIME_WAIT and live ones not');
  t.match(m, /^safe_termination_conntrack_stale_available 1$/m);
  t.match(m, /^safe_termination_conntrack_stale_scanned_entries 9$/m);
  t.match(m, /^safe_termination_conntrack_stale_scan_duration_seconds \d/m);
  t.match(m, /^# TYPE safe_termination_conntrack_stale_entries gauge$/m);
  t.match(m, /^safe_termination_conntrack_entries 9$/m, 'the other metrics are still there');
  const found = r.msgs(/^stale conntrack entries/);
  t.equal(found.length, 1, 'said once');
  t.match(found[0], { stale: 5, source: 'proc', top: ['kube-system/kube-dns udp ×3 → 10.244.1.2:53 (gone)', 'kube-system/kube-dns tcp ×1 → 10.244.1.2:53 (gone)', 'shop/web tcp ×1 → 10.244.2.9:8080 (gone)'] });
  t.match(await r.health(), { status: 'ok', staleConntrack: { result: 'ok', stale: 5, source: 'proc' } });

  // The pod is back (terminating but still serving: its preStop sleep holds it up): draining, not stale.
  api.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }, { ip: '10.244.1.2', ready: false, serving: true, terminating: true }]), webSlice([{ ip: '10.244.2.10' }])]);
  await waitUntil(async () => staleSeries(await r.metrics()).length === 1, 'the kube-dns series gone');
  t.same(staleSeries(await r.metrics()), ['shop/web/tcp 1'], 'only the other Service\'s');
  // It stops serving: stale again.
  api.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }, { ip: '10.244.1.2', ready: false, serving: false, terminating: true }]), webSlice([{ ip: '10.244.2.9' }])]);
  await waitUntil(async () => staleSeries(await r.metrics()).join() === 'kube-system/kube-dns/tcp 1,kube-system/kube-dns/udp 3', 'not serving = stale; web fixed');
  // All listed: nothing stale, no series at all.
  api.setEndpointSlices([dnsSlice([{ ip: '10.244.1.3' }, { ip: '10.244.1.2' }]), webSlice([{ ip: '10.244.2.9' }])]);
  await waitUntil(async () => staleSeries(await r.metrics()).length === 0, 'no stale series');
  m = await r.metrics();
  t.match(m, /^safe_termination_conntrack_stale_available 1$/m, 'still measuring');
  await waitUntil(() => r.msgs(/no stale conntrack entries any more/).length === 1, 'the end said once');
  t.equal(api.requests.filter((q) => q.query['watch'] === undefined && (q.path === SERVICES_PATH || q.path === ENDPOINTSLICES_PATH)).length, 2, 'one list each: the changes came by watch');
});

t.test('no endpoint data yet (API server hangs): nothing reported, the rest of the agent unaffected', async (t) => {
  const api = await cluster(t);
  const hang = api.fault({ kind: 'hang' }, { path: SERVICES_PATH });
  const r = await rig(t, api);
  await waitUntil(async () => scans(await r.metrics(), 'no-endpoints') >= 3, 'several scans');
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations']['conntrack.safe-termination.io/udp-timeout'] === '30', 'annotations published meanwhile');
  const m = await r.metrics();
  t.same(staleSeries(m), [], 'no series: not everything counted as stale');
  t.match(m, /^safe_termination_conntrack_stale_available 0$/m);
  t.match(await r.health(), { status: 'ok', staleConntrack: { result: 'no-endpoints' } });
  t.equal(r.msgs(/waiting for the Services and EndpointSlices/).length, 1, 'said once');
  hang.remove();
  await waitUntil(async () => staleSeries(await r.metrics()).length === 3, 'counts once the lists arrive', 5000);
});

t.test('API server gone after the sync: the last index for a while, then nothing, then counts again', async (t) => {
  const api = await cluster(t);
  const r = await rig(t, api, { tuning: { endpoints: { maxFailingMs: 500, informer: { backoff: { initialMs: 30, maxMs: 200 }, requestTimeoutMs: 500 } } } });
  await waitUntil(async () => staleSeries(await r.metrics()).length === 3, 'counting');
  const down = api.fault({ kind: 'status', code: 503 });
  api.dropWatches();
  await waitUntil(async () => (await r.metrics()).includes('safe_termination_conntrack_stale_available 0'), 'gives up after maxFailingMs', 5000);
  t.same(staleSeries(await r.metrics()), [], 'series cleared: an old index would miscount new pods');
  const before = scans(await r.metrics(), 'no-endpoints');
  await waitUntil(async () => scans(await r.metrics(), 'no-endpoints') > before + 3, 'more scans');
  t.equal(r.msgs(/Service endpoints not current/).length, 1, 'said once, not per scan');
  t.match(r.msgs(/Service endpoints not current/)[0], { problem: /API server has not been reachable for \d+s \(HTTP 503/ });
  down.remove();
  await waitUntil(async () => staleSeries(await r.metrics()).length === 3, 'counting again', 5000);
});

t.test('no readable table: available 0, said once with the reasons; counts once the file appears', async (t) => {
  const api = await cluster(t);
  const r = await rig(t, api, { table: null });
  await waitUntil(async () => scans(await r.metrics(), 'unreadable') >= 3, 'several scans');
  const m = await r.metrics();
  t.match(m, /^safe_termination_conntrack_stale_available 0$/m);
  t.same(staleSeries(m), []);
  const said = r.msgs(/cannot read the conntrack table/);
  t.equal(said.length, 1, 'said once');
  t.match(said[0], { level: 'warn', problem: /nf_conntrack does not exist .*; no .*no-conntrack-tool tool/ });
  t.equal((await fetch(`http://127.0.0.1:${r.agent.port}/healthz`)).status, 200, 'healthy');
  writeFileSync(join(r.netDir, 'nf_conntrack'), `${TABLE.join('\n')}\n`);
  await waitUntil(async () => staleSeries(await r.metrics()).length === 3, 'counting once readable');
  t.equal(r.msgs(/counting stale conntrack entries$/).length, 0);
});

t.test('off by default: no stale metrics; with the reaper off too, no Service or EndpointSlice request', async (t) => {
  const api = await cluster(t);
  const r = await rig(t, api, { args: ['--reap=false'] });
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations']['conntrack.safe-termination.io/udp-timeout'] === '30', 'published');
  t.equal(r.agent.staleConntrack, undefined);
  t.notMatch(await r.metrics(), /stale/);
  t.same(api.requests.filter((q) => q.path !== '/api/v1/nodes/worker-1'), [], 'only its own Node');

  const api2 = await cluster(t);
  const byDefault = await rig(t, api2, { args: [] });
  await waitUntil(() => api2.requests.some((q) => q.path === '/apis/discovery.k8s.io/v1/endpointslices'), 'the reaper (on by default) lists EndpointSlices');
  t.equal(byDefault.agent.staleConntrack, undefined, 'the stale count stays off');
  t.notMatch(await byDefault.metrics(), /stale_entries/);
  t.same(api2.requests.filter((q) => q.path.includes('/services')), [], 'and no Service is read');
});

t.test('on, but no cluster: said once, metrics only', async (t) => {
  const r = await rig(t, undefined);
  t.equal(r.agent.staleConntrack, undefined);
  t.equal(r.msgs(/--stale-conntrack-interval needs the Kubernetes API/).length, 1);
  t.match(await r.metrics(), /^safe_termination_conntrack_stale_available 0$/m);
});

t.test('a table read that does not end is abandoned after --conntrack-read-timeout, said with the flag to raise', async (t) => {
  const api = await cluster(t);
  const r = await rig(t, api, { args: ['--stale-conntrack-interval', '60s', '--conntrack-read-timeout', '1s'], table: null });
  // A FIFO that a writer keeps filling: each scan reads it until the deadline.
  const fifo = join(r.netDir, 'nf_conntrack');
  t.equal(spawnSync('mkfifo', [fifo]).status, 0, 'mkfifo');
  const writer = spawn('sh', ['-c', 'while :; do yes "not a conntrack line" > "$0" 2>/dev/null; done', fifo], { detached: true, stdio: 'ignore' });
  // The agent stops first: a read blocked opening the FIFO would wait for a writer forever.
  t.teardown(async () => {
    await r.agent.stop();
    if (writer.pid !== undefined) process.kill(-writer.pid, 'SIGKILL');
  });
  const started = Date.now();
  await waitUntil(async () => scans(await r.metrics(), 'error') >= 1, 'a scan abandoned', 10_000);
  const took = Date.now() - started;
  t.ok(took >= 1000 && took < 8000, `abandoned after the 1 s timeout (${took} ms)`);
  const warned = r.msgs(/^stale conntrack scan failed; trying again/);
  t.equal(warned.length, 1, 'one warning');
  t.match(String(warned[0]?.['problem']), /took over 1s \(\d+ entries so far\); abandoned \(a larger table needs a longer --conntrack-read-timeout\)/);
  t.match(await r.metrics(), /^safe_termination_conntrack_stale_available 0$/m, 'no count rather than a partial one');
  t.equal((await fetch(`http://127.0.0.1:${r.agent.port}/healthz`)).status, 200, 'the agent keeps serving');
});

t.test('the read timeout flag: at least a second, 60s by default', async (t) => {
  t.equal(parseAgentConfig([], {}).conntrackReadTimeoutSeconds, 60);
  t.equal(parseAgentConfig(['--conntrack-read-timeout', '2m'], {}).conntrackReadTimeoutSeconds, 120);
  t.equal(parseAgentConfig([], { SAFE_TERMINATION_CONNTRACK_READ_TIMEOUT: '90s' }).conntrackReadTimeoutSeconds, 90);
  t.throws(() => parseAgentConfig(['--conntrack-read-timeout', '0'], {}), /--conntrack-read-timeout/);
});

t.test('the flag: a duration, 0 is off', async (t) => {
  const parse = (v: string) => parseAgentConfig(['--stale-conntrack-interval', v], {}).staleConntrackIntervalSeconds;
  t.equal(parse('2m'), 120);
  t.equal(parse('0'), 0);
  t.equal(parseAgentConfig([], {}).staleConntrackIntervalSeconds, 0, 'off by default');
  t.equal(parseAgentConfig([], { SAFE_TERMINATION_STALE_CONNTRACK_INTERVAL: '90s' }).staleConntrackIntervalSeconds, 90);
  t.throws(() => parse('1.5m'), /--stale-conntrack-interval/);
});
