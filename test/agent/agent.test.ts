/**
 * The agent in-process against the fake API server, reading sysctl files from
 * a temp directory laid out like /proc: what it publishes, when it does not,
 * and how it lives through an absent API server or kernel module.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { KubeConfig } from '@kubernetes/client-node';
import { startAgent } from '../../src/agent/agent.ts';
import type { RunningAgent } from '../../src/agent/agent.ts';
import type { ClusterAccess } from '../../src/cluster/kubeconfig.ts';
import { parseAgentConfig } from '../../src/cli/config.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { makeNode, startFakeApiServer, waitUntil } from '../support/fake-apiserver.ts';
import type { FakeApiServer } from '../support/fake-apiserver.ts';
import { LogCapture } from '../support/webhook.ts';

const P = 'conntrack.safe-termination.io/';
const SYSCTLS = {
  nf_conntrack_udp_timeout: 17,
  nf_conntrack_udp_timeout_stream: 120,
  nf_conntrack_tcp_timeout_time_wait: 120,
  nf_conntrack_tcp_timeout_close_wait: 3600,
  nf_conntrack_tcp_timeout_established: 86400,
  nf_conntrack_count: 42,
  nf_conntrack_max: 262144,
};
const STAT = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000002a  00000000 00000010 00000000 00000002 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
0000002a  00000000 00000020 00000000 00000003 00000000 00000000 00000000 00000000 00000004 00000000 00000000 00000000  00000000 00000000 00000000 00000005
`;

interface Proc {
  readonly sys: string;
  readonly net: string;
  write(name: string, value: number | string): void;
  remove(name: string): void;
}

function fakeProc(t: Test, sysctls: Record<string, number> = SYSCTLS): Proc {
  const root = mkdtempSync(join(tmpdir(), 'st-proc-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const sys = join(root, 'sys/net/netfilter');
  const net = join(root, 'net');
  mkdirSync(sys, { recursive: true });
  mkdirSync(join(net, 'stat'), { recursive: true });
  const write = (name: string, value: number | string) => writeFileSync(join(sys, name), `${value}\n`);
  for (const [k, v] of Object.entries(sysctls)) write(k, v);
  writeFileSync(join(net, 'stat/nf_conntrack'), STAT);
  return { sys, net, write, remove: (name) => rmSync(join(sys, name), { force: true }) };
}

interface Rig {
  readonly agent: RunningAgent;
  readonly logs: LogCapture;
  get(path: string): Promise<{ status: number; text: string }>;
  patches(): number;
}

async function runAgent(t: Test, api: FakeApiServer | undefined, proc: Proc, o: { nodeName?: string; intervalMs?: number } = {}): Promise<Rig> {
  const config = parseAgentConfig(
    ['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', proc.sys, '--proc-net-dir', proc.net, '--node-name', o.nodeName ?? 'worker-1', '--reap=false'],
    {},
  );
  const logs = new LogCapture();
  let access: ClusterAccess = { kind: 'none' };
  if (api !== undefined) {
    const kc = new KubeConfig();
    kc.loadFromString(api.kubeconfig());
    access = { kind: 'kubeconfig', kubeConfig: kc, server: api.url, path: 'test' };
  }
  const agent = await startAgent(config, createLogger('debug', logs), access, {
    intervalMs: o.intervalMs ?? 100,
    annotator: { backoff: { initialMs: 50, maxMs: 300 }, requestTimeoutMs: 1000 },
  });
  t.teardown(() => agent.stop());
  return {
    agent,
    logs,
    get: async (path) => {
      const res = await fetch(`http://127.0.0.1:${agent.port}${path}`);
      return { status: res.status, text: await res.text() };
    },
    patches: () => api?.requests.filter((r) => r.method === 'PATCH').length ?? 0,
  };
}

async function apiWith(t: Test, ...names: string[]): Promise<FakeApiServer> {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  api.setNodes(names.map((n) => makeNode(n)));
  return api;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('publishes every timeout as integer seconds plus observed-at, with one merge patch', async (t) => {
  const api = await apiWith(t, 'worker-1', 'worker-2');
  const before = Date.now();
  const r = await runAgent(t, api, fakeProc(t));
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] !== undefined, 'annotations');
  const ann = api.node('worker-1')!['metadata']['annotations'];
  t.equal(ann[`${P}udp-timeout`], '17');
  t.equal(ann[`${P}udp-timeout-stream`], '120');
  t.equal(ann[`${P}tcp-timeout-time-wait`], '120');
  t.equal(ann[`${P}tcp-timeout-close-wait`], '3600');
  t.equal(ann[`${P}tcp-timeout-established`], '86400');
  t.match(ann[`${P}observed-at`], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'RFC 3339');
  const observed = Date.parse(ann[`${P}observed-at`]);
  t.ok(observed >= Math.floor(before / 1000) * 1000 && observed <= Date.now(), 'observed now');
  t.equal(ann['node.alpha.kubernetes.io/ttl'], '0', 'other annotations untouched (merge, not replace)');
  t.notOk(api.node('worker-2')!['metadata']['annotations'][`${P}udp-timeout`], 'only its own node');
  const patch = api.requests.find((q) => q.method === 'PATCH')!;
  t.equal(patch.path, '/api/v1/nodes/worker-1');
  t.equal(patch.contentType, 'application/merge-patch+json');
  t.same(Object.keys(JSON.parse(patch.body!)), ['metadata'], 'the patch touches metadata.annotations only');
  t.equal(r.patches(), 1);
});

t.test('no write while nothing changes; one patch per change', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const proc = fakeProc(t);
  const r = await runAgent(t, api, proc);
  await waitUntil(() => r.patches() === 1, 'first publish');
  await sleep(600); // six more ticks
  t.equal(r.patches(), 1, 'unchanged values: no patch');
  t.equal(api.requests.filter((q) => q.method === 'GET').length, 1, 'and no more reads either');
  const firstObserved = api.node('worker-1')!['metadata']['annotations'][`${P}observed-at`];
  proc.write('nf_conntrack_udp_timeout', 25);
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '25', 'the change published');
  t.equal(r.patches(), 2);
  const ann = api.node('worker-1')!['metadata']['annotations'];
  t.equal(ann[`${P}udp-timeout-stream`], '120');
  t.ok(ann[`${P}observed-at`] >= firstObserved);
  await sleep(300);
  t.equal(r.patches(), 2);
});

t.test('a restart finds its values already on the Node: reads, does not write', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const proc = fakeProc(t);
  const first = await runAgent(t, api, proc);
  await waitUntil(() => first.patches() === 1, 'first publish');
  await first.agent.stop();
  const second = await runAgent(t, api, proc);
  await waitUntil(() => api.requests.filter((q) => q.method === 'GET').length === 2, 'the second agent read the Node');
  await sleep(300);
  t.equal(second.patches(), 1, 'still the first agent\'s single patch');
});

t.test('someone edits the annotation: the periodic re-read puts the value back', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const proc = fakeProc(t);
  const config = parseAgentConfig(['--metrics-port', '0', '--bind-address', '127.0.0.1', '--conntrack-proc-dir', proc.sys, '--proc-net-dir', proc.net, '--reap=false'], { NODE_NAME: 'worker-1' });
  const kc = new KubeConfig();
  kc.loadFromString(api.kubeconfig());
  const agent = await startAgent(config, createLogger('silent'), { kind: 'kubeconfig', kubeConfig: kc, server: api.url, path: 'x' }, {
    intervalMs: 100,
    annotator: { verifyEveryMs: 300, backoff: { initialMs: 50, maxMs: 100 } },
  });
  t.teardown(() => agent.stop());
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '17', 'published');
  const node = api.node('worker-1')!;
  node['metadata']['annotations'][`${P}udp-timeout`] = '5';
  api.upsertNode(node);
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '17', 'restored', 3000);
  t.pass('restored from the sysctl');
});

t.test('API server away at start: healthy, serving metrics, publishing once it is back', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const down = api.fault({ kind: 'status', code: 503 });
  const refused = api.fault({ kind: 'reset' }, { method: 'PATCH' });
  const r = await runAgent(t, api, fakeProc(t));
  await waitUntil(() => api.requests.length >= 4, 'retries');
  t.equal((await r.get('/healthz')).status, 200, 'healthy');
  t.match((await r.get('/metrics')).text, /safe_termination_agent_publishes_total\{result="error"\} [1-9]/, 'errors counted');
  t.same(r.logs.lines.filter((l) => l['level'] === 'warn').map((l) => l['msg']), [`cannot publish conntrack annotations; retrying with backoff`], 'warned once');
  down.remove();
  await waitUntil(() => api.requests.some((q) => q.method === 'PATCH'), 'a patch attempt');
  refused.remove();
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '17', 'published after recovery', 3000);
  await waitUntil(() => r.logs.lines.some((l) => /reachable again/.test(String(l['msg']))), 'recovery logged');
  t.match((await r.get('/metrics')).text, /safe_termination_agent_publishes_total\{result="patched"\} 1/, 'one patch counted');
});

t.test('a hung API server: each call hits its deadline and is retried', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const hang = api.fault({ kind: 'hang' }, { method: 'GET' });
  const r = await runAgent(t, api, fakeProc(t));
  await waitUntil(() => r.logs.lines.some((l) => l['problem'] === 'timed out'), 'a timed-out read', 3000);
  t.equal((await r.get('/healthz')).status, 200, 'healthy meanwhile');
  hang.remove();
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '17', 'published after the API answers', 5000);
});

t.test('a wrong node name: said once with a hint, retried, still healthy', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const r = await runAgent(t, api, fakeProc(t), { nodeName: 'worker-9' });
  await waitUntil(() => api.requests.length >= 3, 'retries');
  const warns = r.logs.lines.filter((l) => l['level'] === 'warn');
  t.equal(warns.length, 1);
  t.match(String(warns[0]!['msg']), /no Node named worker-9/);
  t.equal((await r.get('/healthz')).status, 200);
});

t.test('a kernel without conntrack: said once, nothing published, healthy; publishes when the module appears', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const proc = fakeProc(t, {});
  rmSync(join(proc.net, 'stat/nf_conntrack'));
  const r = await runAgent(t, api, proc);
  await sleep(500);
  t.equal(api.requests.length, 0, 'no API request at all');
  t.equal(r.logs.lines.filter((l) => /no conntrack sysctls/.test(String(l['msg']))).length, 1, 'said once, not per tick');
  const health = await r.get('/healthz');
  t.equal(health.status, 200);
  t.match(JSON.parse(health.text), { status: 'ok', conntrack: 'absent' });
  const metrics = (await r.get('/metrics')).text;
  t.match(metrics, /^safe_termination_conntrack_available 0$/m);
  t.notMatch(metrics, /safe_termination_conntrack_timeout_seconds\{/);
  // kube-proxy loads nf_conntrack: the files appear.
  for (const [k, v] of Object.entries(SYSCTLS)) proc.write(k, v);
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '17', 'published once readable');
  t.ok(r.logs.lines.some((l) => /conntrack sysctls readable/.test(String(l['msg']))));
});

t.test('some sysctls missing: publishes the others, never deletes what it cannot read', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const proc = fakeProc(t);
  const r = await runAgent(t, api, proc);
  await waitUntil(() => r.patches() === 1, 'published');
  proc.remove('nf_conntrack_udp_timeout_stream');
  proc.write('nf_conntrack_udp_timeout', 18);
  await waitUntil(() => api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout`] === '18', 'change');
  t.equal(api.node('worker-1')!['metadata']['annotations'][`${P}udp-timeout-stream`], '120', 'left as it was');
  t.equal(r.logs.lines.filter((l) => /some conntrack sysctls are missing/.test(String(l['msg']))).length, 1);
});

t.test('metrics: table usage, summed kernel counters, published timeouts', async (t) => {
  const api = await apiWith(t, 'worker-1');
  const r = await runAgent(t, api, fakeProc(t));
  await waitUntil(() => r.patches() === 1, 'published');
  const m = await r.get('/metrics');
  t.equal(m.status, 200);
  const lines = m.text;
  t.match(lines, /^safe_termination_conntrack_entries 42$/m);
  t.match(lines, /^safe_termination_conntrack_entries_limit 262144$/m);
  t.match(lines, /^safe_termination_conntrack_available 1$/m);
  t.match(lines, /^# TYPE safe_termination_conntrack_stat_insert_failed_total counter$/m);
  t.match(lines, /^safe_termination_conntrack_stat_insert_failed_total 5$/m);
  t.match(lines, /^safe_termination_conntrack_stat_found_total 48$/m);
  t.match(lines, /^safe_termination_conntrack_stat_invalid_total 5$/m);
  t.match(lines, /^safe_termination_conntrack_stat_search_restart_total 5$/m);
  t.match(lines, /^safe_termination_conntrack_stat_drop_total 0$/m);
  t.match(lines, /^safe_termination_conntrack_stat_early_drop_total 0$/m);
  t.match(lines, /^safe_termination_conntrack_timeout_seconds\{key="udp-timeout"\} 17$/m);
  t.match(lines, /^safe_termination_conntrack_timeout_seconds\{key="tcp-timeout-established"\} 86400$/m);
  t.match(lines, /^safe_termination_agent_last_publish_timestamp_seconds \d+/m);
  t.equal((await r.get('/nope')).status, 404);
});

t.test('no cluster: metrics only, said once', async (t) => {
  const r = await runAgent(t, undefined, fakeProc(t));
  t.equal(r.agent.annotator, undefined);
  t.ok(r.logs.lines.some((l) => /serving metrics only/.test(String(l['msg']))));
  t.match((await r.get('/metrics')).text, /safe_termination_conntrack_timeout_seconds\{key="udp-timeout"\} 17/);
});
