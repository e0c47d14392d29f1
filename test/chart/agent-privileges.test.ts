/**
 * The agent needs no privilege beyond hostNetwork: the readers it runs
 * (readConntrackSysctls, readConntrackUsage, readConntrackStat) get the network
 * namespace's conntrack values as the user of the chart's securityContext, with
 * every capability dropped and no-new-privs, while writing a sysctl is refused.
 * A private network namespace stands in for the host's (hostNetwork = "the pod is
 * in the node's network namespace"); its own nf_conntrack_udp_timeout is set to 17.
 * With agent.staleConntrack.enabled the chart's one extra grant, supplementary group
 * 0, is what lets the table reader read /proc/net/nf_conntrack (0440 root:root):
 * with it the reader gets the namespace's real DNAT entries, without it EACCES.
 * With agent.reap.enabled (the default) the container runs as uid 0 with NET_ADMIN
 * as its only capability: exactly what lets the reaper's `conntrack -D` delete an
 * entry, which the reaper-off context cannot.
 * Needs root, iproute2 and util-linux's setpriv (CI has them); skipped otherwise.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { REPO_ROOT } from '../../scripts/helm.ts';
import { one, podSpecOf, render } from './render.ts';

const run = promisify(execFile);
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const why =
  process.getuid?.() !== 0 ? 'needs root (ip netns)'
  : !has('ip') ? 'needs iproute2'
  : !has('setpriv') ? 'needs setpriv (util-linux)'
  : !existsSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout') ? 'needs the nf_conntrack module'
  : undefined;

t.test('the agent reads the node\'s conntrack values as its unprivileged pod user', { skip: why ?? false }, async (t) => {
  // agent.reap.enabled=false: the agent's least privilege without the reaper (with it: the last test).
  const ds = one(await render({ set: ['agent.reap.enabled=false'] }), 'DaemonSet');
  const pod = podSpecOf(ds);
  const sc = { ...pod.securityContext, ...pod.containers[0].securityContext };
  t.equal(pod.hostNetwork, true, 'the agent is in the node\'s network namespace');
  t.same(sc.capabilities, { drop: ['ALL'] }, 'with no capability');
  t.equal(sc.allowPrivilegeEscalation, false);
  t.notOk(pod.volumes.some((v: Record<string, unknown>) => 'hostPath' in v), 'and no hostPath');
  const uid = String(sc.runAsUser);
  const gid = String(sc.runAsGroup);
  t.not(uid, '0');

  const ns = `st-chart-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => {
    spawnSync('ip', ['netns', 'delete', ns]);
  });
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=17']);

  const script = `
    const { readConntrackSysctls } = await import(${JSON.stringify(join(REPO_ROOT, 'src/host/sysctl.ts'))});
    const { readConntrackUsage, readConntrackStat } = await import(${JSON.stringify(join(REPO_ROOT, 'src/agent/conntrack-stats.ts'))});
    const { writeFile } = await import('node:fs/promises');
    let write;
    try { await writeFile('/proc/sys/net/netfilter/nf_conntrack_udp_timeout', '5'); write = 'written'; } catch (e) { write = e.code; }
    process.stdout.write(JSON.stringify({
      uid: process.getuid(),
      sysctls: await readConntrackSysctls('/proc/sys/net/netfilter'),
      usage: await readConntrackUsage('/proc/sys/net/netfilter'),
      stat: await readConntrackStat('/proc/net'),
      write,
    }));`;
  const setpriv = ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs'];
  const r = await run('ip', ['netns', 'exec', ns, ...setpriv, join(REPO_ROOT, 'node_modules/.bin/node'), '--input-type=module', '-e', script], { timeout: 30_000 });
  const out = JSON.parse(r.stdout);
  t.equal(out.uid, Number(uid), `ran as uid ${uid}`);
  t.same(out.sysctls.missing, [], 'every conntrack timeout is readable');
  t.equal(out.sysctls.values['udp-timeout'], 17, 'the namespace\'s own value, 17');
  t.equal(out.sysctls.values['udp-timeout-stream'], Number(execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream'], { encoding: 'utf8' }).trim()));
  t.ok(Number.isInteger(out.usage.entries) && out.usage.limit > 0, `table usage readable (${out.usage.entries}/${out.usage.limit})`);
  t.ok(out.stat !== undefined && 'insert_failed' in out.stat, '/proc/net/stat/nf_conntrack readable');
  t.equal(out.write, 'EACCES', 'and it cannot change a sysctl: no privilege at all');
  t.equal(execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_udp_timeout'], { encoding: 'utf8' }).trim(), '17');
});

t.test('agent.staleConntrack: supplementary group 0, and nothing else, lets the agent read the conntrack table', { skip: why ?? (existsSync('/proc/net/nf_conntrack') ? (has('iptables') ? false : 'needs iptables') : 'no /proc/net/nf_conntrack (CONFIG_NF_CONNTRACK_PROCFS)') }, async (t) => {
  const on = podSpecOf(one(await render({ set: ['agent.staleConntrack.enabled=true', 'agent.reap.enabled=false'] }), 'DaemonSet'));
  const off = podSpecOf(one(await render({ set: ['agent.reap.enabled=false'] }), 'DaemonSet'));
  const sc = { ...on.securityContext, ...on.containers[0].securityContext };
  t.same(sc.capabilities, { drop: ['ALL'] }, 'still no capability');
  t.same(on.securityContext.supplementalGroups, [0]);

  const ns = `st-chart-ct-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => {
    spawnSync('ip', ['netns', 'delete', ns]);
  });
  const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
  inNs('ip', 'link', 'set', 'lo', 'up');
  inNs('sysctl', '-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=120');
  inNs('iptables', '-t', 'nat', '-A', 'OUTPUT', '-d', '127.0.10.10/32', '-p', 'udp', '--dport', '53', '-j', 'DNAT', '--to-destination', '127.0.20.1:5353');
  const node = join(REPO_ROOT, 'node_modules/.bin/node');
  // Three flows through the "Service" DNAT (nobody answers: UNREPLIED entries, as real as any).
  inNs(node, '-e', `const d = require('node:dgram'); let n = 3; for (let i = 0; i < 3; i++) { const s = d.createSocket('udp4'); s.send('q', 53, '127.0.10.10', () => { s.close(); if (--n === 0) process.exit(0); }); }`);

  const script = `
    const { ConntrackTable, ConntrackUnreadableError } = await import(${JSON.stringify(join(REPO_ROOT, 'src/host/conntrack-table.ts'))});
    const table = new ConntrackTable({ procNetDir: '/proc/net', bin: '/nonexistent/conntrack' });
    const dnat = [];
    try {
      const read = await table.read((e) => { if (e.reply.src !== e.original.dst) dnat.push(e.original.dst + ' -> ' + e.reply.src + ':' + e.reply.sport); });
      process.stdout.write(JSON.stringify({ groups: process.getgroups(), read, dnat }));
    } catch (e) {
      process.stdout.write(JSON.stringify({ groups: process.getgroups(), error: e instanceof ConntrackUnreadableError ? e.reasons : String(e) }));
    }`;
  const as = async (pod: any) => {
    const c = { ...pod.securityContext, ...pod.containers[0].securityContext };
    const groups: number[] = pod.securityContext.supplementalGroups ?? [];
    const setpriv = ['setpriv', `--reuid=${c.runAsUser}`, `--regid=${c.runAsGroup}`, groups.length > 0 ? `--groups=${groups.join(',')}` : '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs'];
    const r = await run('ip', ['netns', 'exec', ns, ...setpriv, node, '--input-type=module', '-e', script], { timeout: 30_000 });
    return JSON.parse(r.stdout);
  };
  const granted = await as(on);
  t.same(granted.groups.sort(), [0, Number(sc.runAsGroup)].sort(), 'the pod\'s groups: its own and 0');
  t.equal(granted.read?.source, 'proc', 'read /proc/net/nf_conntrack');
  t.same(granted.dnat, ['127.0.10.10 -> 127.0.20.1:5353', '127.0.10.10 -> 127.0.20.1:5353', '127.0.10.10 -> 127.0.20.1:5353'], 'the namespace\'s three DNAT entries');
  const denied = await as(off);
  t.same(denied.groups, [Number(sc.runAsGroup)], 'without the grant: its own group only');
  t.match(denied.error?.proc, /nf_conntrack: permission denied/, 'the same reader is refused');
});

t.test('agent.reap: uid 0 with NET_ADMIN only, as rendered, deletes conntrack entries; the reaper-off context cannot', { skip: why ?? (has('conntrack') ? false : 'needs the conntrack tool') }, async (t) => {
  const on = podSpecOf(one(await render(), 'DaemonSet'));
  const off = podSpecOf(one(await render({ set: ['agent.reap.enabled=false'] }), 'DaemonSet'));
  const ns = `st-chart-reap-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => {
    spawnSync('ip', ['netns', 'delete', ns]);
  });
  const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const insert = () => inNs('conntrack', '-I', '-p', 'udp', '-s', '127.0.0.5', '-d', '127.0.10.10', '--sport', '40000', '--dport', '53', '-r', '127.0.20.1', '-q', '127.0.0.5', '--reply-port-src', '5353', '--reply-port-dst', '40000', '-t', '300');
  insert();
  const node = join(REPO_ROOT, 'node_modules/.bin/node');
  const script = `
    const { deleteFlowGroup } = await import(${JSON.stringify(join(REPO_ROOT, 'src/host/conntrack-delete.ts'))});
    try {
      process.stdout.write(JSON.stringify(await deleteFlowGroup({ protocol: 'udp', origDst: '127.0.10.10', dport: 53, replySrc: '127.0.20.1', sport: 5353 })));
    } catch (e) { process.stdout.write(JSON.stringify({ error: e.message })); }`;
  const as = async (pod: any) => {
    const c = { ...pod.securityContext, ...pod.containers[0].securityContext };
    const caps: string[] = (c.capabilities?.add ?? []).map((x: string) => `+${x.toLowerCase()}`);
    t.same(c.capabilities?.drop, ['ALL']);
    const setpriv = ['setpriv', `--reuid=${c.runAsUser}`, `--regid=${c.runAsGroup}`, '--clear-groups', '--inh-caps=-all', `--bounding-set=${['-all', ...caps].join(',')}`, '--no-new-privs'];
    const r = await run('ip', ['netns', 'exec', ns, ...setpriv, node, '--input-type=module', '-e', script], { timeout: 30_000 });
    return JSON.parse(r.stdout);
  };
  const denied = await as(off);
  t.match(denied.error, /CAP_NET_ADMIN/, 'reaper off: uid 65532 without capability cannot delete');
  t.match(inNs('conntrack', '-L'), /dst=127\.0\.10\.10 .*src=127\.0\.20\.1/, 'the entry is still there');
  t.same(await as(on), { deleted: 1 }, 'reaper on: the rendered context deletes it');
  t.notMatch(inNs('conntrack', '-L'), /dst=127\.0\.10\.10/, 'gone');
});
