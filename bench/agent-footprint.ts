/**
 * The agent's footprint, printed — a bench, not a test. Runs the production build
 * (`npm run build` first) with the NODE_OPTIONS the chart gives the agent:
 *
 * 1. idle RSS of `safe-termination agent` against a fake API server holding
 *    `--services` Services with one EndpointSlice each, reaper on (the default)
 *    and off, read from /proc/<pid>/status after it has settled (anonymous and
 *    file-backed: the node binary's own pages);
 * 2. where it goes: RSS and V8 heap of a fresh process importing nothing, each
 *    dependency alone, the agent's modules, and @kubernetes/client-node (which
 *    the agent no longer loads);
 * 3. one reaper sweep per size in `--entries` (default 100k and 1M) over a real
 *    conntrack table loaded with `conntrack -R` into a private network namespace,
 *    `--gone` of the entries DNATed to an endpoint that has just left its
 *    EndpointSlice: wall time, the sweep's CPU (the reaper's process and the
 *    `conntrack -D` runs), RSS before, after and at peak. The host's
 *    nf_conntrack_max (global: a namespace cannot raise its own) is raised for the
 *    run when a size needs it and put back after; the namespace is deleted.
 *
 * Needs root, iproute2 and conntrack (for 3).
 *
 *   npx node bench/agent-footprint.ts [--entries 100000,1000000] [--gone 10000] [--services 500] [--sweep-only] [--main dist/src/cli/main.js] [--node-options '…']
 */
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { makeEndpointSlice, makeNode, makeService, startFakeApiServer } from '../test/support/fake-apiserver.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    /** Another build of the command (e.g. an older commit's, for a before/after). */
    main: { type: 'string', default: join(REPO_ROOT, 'dist/src/cli/main.js') },
    entries: { type: 'string', default: '100000,1000000' },
    gone: { type: 'string', default: '10000' },
    services: { type: 'string', default: '500' },
    'sweep-only': { type: 'boolean', default: false },
    /** Instead of the chart's NODE_OPTIONS. */
    'node-options': { type: 'string' },
  },
});
const MAIN = resolve(values.main);
const SIZES = values.entries.split(',').map(Number);
const GONE = Number(values.gone);
const SERVICES = Number(values.services);
/** What charts/safe-termination/templates/agent/daemonset.yaml sets when the reaper or the stale count is on. */
const CHART_NODE_OPTIONS = values['node-options'] ?? /- name: NODE_OPTIONS\s+value: (.+)/.exec(readFileSync(join(REPO_ROOT, 'charts/safe-termination/templates/agent/daemonset.yaml'), 'utf8'))?.[1]?.trim() ?? '';
const CONNTRACK_MAX = '/proc/sys/net/netfilter/nf_conntrack_max';

if (!existsSync(MAIN)) {
  process.stderr.write(`${MAIN} is missing: run npm run build first\n`);
  process.exit(2);
}

const statusOf = (pid: number) => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(s)?.[1] ?? NaN);
  return { rss: Math.round(kib('VmRSS') / 1024), hwm: Math.round(kib('VmHWM') / 1024), anon: Math.round(kib('RssAnon') / 1024), file: Math.round(kib('RssFile') / 1024) };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function idle(reap: boolean, nodeOptions: string): Promise<ReturnType<typeof statusOf>> {
  const api = await startFakeApiServer();
  try {
    api.setNodes([makeNode('worker-1')]);
    api.setServices([...Array(SERVICES)].map((_, i) => makeService('bench', `svc-${i}`, `10.96.${i >> 8}.${i & 255}`, [{ name: 'p', port: 80, protocol: 'TCP', targetPort: 8080 }])));
    api.setEndpointSlices([...Array(SERVICES)].map((_, i) => makeEndpointSlice('bench', `svc-${i}`, [{ name: 'p', port: 8080 }], [{ ip: `10.244.${i >> 8}.${i & 255}` }, { ip: `10.245.${i >> 8}.${i & 255}` }])));
    const kubeconfig = api.writeKubeconfig();
    const child = spawn(process.execPath, [MAIN, 'agent', '--kubeconfig', kubeconfig, '--node-name', 'worker-1', '--metrics-port', '0', '--bind-address', '127.0.0.1', `--reap=${reap}`, '--endpoint-changes', '--log-level', 'warn'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: nodeOptions },
    });
    await sleep(8000);
    const s = statusOf(child.pid!);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return s;
  } finally {
    await api.stop();
  }
}

/** A fresh process that imports `specifiers` and reports its memory a second later. */
function importCost(specifiers: readonly string[], nodeOptions: string): string {
  const code = `${specifiers.map((m) => `await import(${JSON.stringify(m)});`).join(' ')}
    await new Promise((r) => setTimeout(r, 1000));
    const s = (await import('node:fs')).readFileSync('/proc/self/status', 'utf8');
    const k = (n) => Math.round(Number(new RegExp('^' + n + ':\\\\s+(\\\\d+) kB$', 'm').exec(s)[1]) / 1024);
    const m = process.memoryUsage();
    process.stdout.write(JSON.stringify({ rss: k('VmRSS'), anon: k('RssAnon'), file: k('RssFile'), heap: Math.round(m.heapUsed / 1048576), external: Math.round(m.external / 1048576) }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: REPO_ROOT, encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: nodeOptions } });
  if (r.status !== 0) return `failed: ${r.stderr.split('\n')[0] ?? ''}`;
  const v = JSON.parse(r.stdout) as Record<string, number>;
  return `RSS ${v['rss']} MiB (anon ${v['anon']}, file ${v['file']}), heap used ${v['heap']} MiB, external ${v['external']} MiB`;
}

function run(args: string[], timeout = 900_000): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${args.slice(0, 6).join(' ')} failed: ${r.stderr || String(r.error)}`);
  return r.stdout;
}

/** `n` conntrack insert commands, streamed to a file (a 1M-entry batch is ~150 MB: never held whole). */
async function writeInserts(file: string, n: number): Promise<void> {
  const out = createWriteStream(file);
  let batch = '';
  for (let i = 0; i < n; i++) {
    const client = `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    const udp = i % 2 === 0;
    const target = i < GONE ? '10.244.0.1' : `10.244.1.${1 + (i % 200)}`;
    const [p, vport, tport] = udp ? ['udp', 53, 5353] : ['tcp', 80, 8080];
    batch += `-I -p ${p} -s ${client} -d 10.96.0.10 --sport 40000 --dport ${vport} -r ${target} -q ${client} --reply-port-src ${tport} --reply-port-dst 40000${udp ? '' : ' --state ESTABLISHED'} -t 3000\n`;
    if (batch.length > 1 << 20) {
      if (!out.write(batch)) await new Promise((r) => out.once('drain', r));
      batch = '';
    }
  }
  out.end(batch);
  await new Promise((r) => out.once('finish', r));
}

interface Sweep {
  readonly table: number;
  readonly loadMs: number;
  readonly idle: ReturnType<typeof statusOf>;
  /** From the EndpointSlice change to the sweep's log line. */
  readonly wallMs: number;
  /** The sweeps that deleted the gone endpoints' entries, and their time (their log lines). */
  readonly sweeps: number;
  readonly sweepSeconds: number;
  readonly scanned: number;
  readonly cpu: { user: number; system: number; children: number };
  readonly after: ReturnType<typeof statusOf>;
  readonly deleted: number;
  /** The reaper's per-Service lines, warnings and errors. */
  readonly log: readonly string[];
}

/** utime, stime, cutime + cstime of a process, in seconds (clock ticks of 10 ms). */
function cpuOf(pid: number): { user: number; system: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return { user: f[11]! / 100, system: f[12]! / 100, children: (f[13]! + f[14]!) / 100 };
}

/** Forwards 127.0.0.1:PORT (in the namespace) to the fake API server's Unix socket (outside). */
const FORWARDER = `const net = require('node:net'); const [sock, port] = process.argv.slice(1);
net.createServer((c) => { const u = net.connect(sock); c.pipe(u).pipe(c); c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); }).listen(Number(port), '127.0.0.1');`;

/**
 * The agent itself in a namespace holding `size` entries: settled and idle first,
 * then one endpoint leaves its EndpointSlices and the agent's reaper sweeps.
 */
async function sweep(size: number, nodeOptions: string): Promise<Sweep> {
  const ns = `st-bench-${process.pid}-${size}`;
  const dir = mkdtempSync(join(tmpdir(), 'st-footprint-'));
  const children: Array<ReturnType<typeof spawn>> = [];
  run(['ip', 'netns', 'add', ns]);
  const api = await startFakeApiServer({ unixSocket: join(dir, 'api.sock') });
  try {
    run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    await writeInserts(join(dir, 'inserts'), size);
    const t0 = Date.now();
    run(['ip', 'netns', 'exec', ns, 'conntrack', '-R', join(dir, 'inserts')]);
    const loadMs = Date.now() - t0;
    rmSync(join(dir, 'inserts'));
    const count = () => Number(run(['ip', 'netns', 'exec', ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_count']).trim());
    const table = count();

    const ports = (p: string, port: number) => [{ name: p, port, protocol: p === 'dns' ? 'UDP' : 'TCP' }];
    const live = [...Array(200)].map((_, i) => ({ ip: `10.244.1.${1 + i}` }));
    const slices = (withGone: boolean) => [
      makeEndpointSlice('bench', 'dns', ports('dns', 5353), [...(withGone ? [{ ip: '10.244.0.1' }] : []), ...live], { name: 'dns-1' }),
      makeEndpointSlice('bench', 'web', ports('http', 8080), [...(withGone ? [{ ip: '10.244.0.1' }] : []), ...live], { name: 'web-1' }),
    ];
    api.setNodes([makeNode('worker-1')]);
    api.setEndpointSlices(slices(true));
    const port = 16443;
    children.push(spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', FORWARDER, join(dir, 'api.sock'), String(port)], { stdio: 'ignore' }));
    await sleep(500);
    const kubeconfig = api.writeKubeconfig({ server: `http://127.0.0.1:${port}` });
    // `ip netns exec` execs: the child's pid is the agent's.
    const agent = spawn('ip', ['netns', 'exec', ns, process.execPath, MAIN, 'agent', '--kubeconfig', kubeconfig, '--node-name', 'worker-1', '--metrics-port', '0', '--bind-address', '127.0.0.1', '--reap', '--reap-hold', '1s', '--reap-max-per-second', '1000000', '--log-level', 'debug'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, NODE_OPTIONS: nodeOptions },
    });
    children.push(agent);
    // The two Services' slices change one after the other: their endpoints' holds may end in one sweep or two.
    const sweeps: Array<{ at: number; scanned: number; seconds: number; reaped: number }> = [];
    let reaped = 0;
    const reaperLines: string[] = [];
    let rest = '';
    agent.stdout.setEncoding('utf8').on('data', (d: string) => {
      const lines = (rest + d).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) {
        if (/"level":(40|50)|conntrack reaper: /.test(l)) reaperLines.push(l);
        let j: { msg?: string; scanned?: number; seconds?: number; reaped?: Record<string, number> };
        try {
          j = JSON.parse(l) as typeof j;
        } catch {
          continue;
        }
        if (j.msg === 'conntrack reaper: stale entries to gone endpoints deleted') reaped += Object.values(j.reaped ?? {}).reduce((a, b) => a + b, 0);
        if (j.msg === 'conntrack reaper sweep') sweeps.push({ at: Date.now(), scanned: j.scanned ?? 0, seconds: j.seconds ?? 0, reaped });
      }
    });
    await sleep(8000);
    const idleStatus = statusOf(agent.pid!);
    const cpu0 = cpuOf(agent.pid!);
    const changedAt = Date.now();
    api.setEndpointSlices(slices(false));
    const deadline = Date.now() + 900_000;
    const expected = Math.min(GONE, table);
    const doneAt = (): number => sweeps.findIndex((w) => w.reaped >= expected);
    while (doneAt() === -1 && Date.now() < deadline) await sleep(50);
    const done = sweeps.slice(0, doneAt() + 1);
    const last = done.at(-1);
    if (last === undefined) throw new Error('the gone entries were not reaped within 15 minutes');
    await sleep(200);
    const cpu1 = cpuOf(agent.pid!);
    const after = statusOf(agent.pid!);
    return {
      table,
      loadMs,
      idle: idleStatus,
      wallMs: last.at - changedAt,
      sweeps: done.length,
      sweepSeconds: done.reduce((a, w) => a + w.seconds, 0),
      scanned: done.reduce((a, w) => a + w.scanned, 0),
      cpu: { user: cpu1.user - cpu0.user, system: cpu1.system - cpu0.system, children: cpu1.children - cpu0.children },
      after,
      deleted: table - count(),
      log: reaperLines,
    };
  } finally {
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      if (c.exitCode === null) await new Promise((r) => c.once('exit', r));
    }
    await api.stop();
    spawnSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

const line = (s: string) => process.stdout.write(`${s}\n`);

if (!values['sweep-only']) {
  line(`agent idle (production build, ${SERVICES} Services, ${SERVICES} EndpointSlices of 2 endpoints, --endpoint-changes), RSS after 8 s:`);
  for (const [label, opts] of [[`NODE_OPTIONS=${CHART_NODE_OPTIONS} (the chart's)`, CHART_NODE_OPTIONS], ['no V8 flags', '']] as const) {
    const on = await idle(true, opts);
    const off = await idle(false, opts);
    line(`  ${label}:`);
    line(`    reaper on:  ${on.rss} MiB (anon ${on.anon}, file ${on.file}; peak ${on.hwm})`);
    line(`    reaper off: ${off.rss} MiB (anon ${off.anon}, file ${off.file}; peak ${off.hwm})`);
  }

  line(`where it goes (a fresh process each, NODE_OPTIONS=${CHART_NODE_OPTIONS}; "file": the node binary's own pages):`);
  const dist = (p: string) => join(REPO_ROOT, 'dist/src', p);
  for (const [label, specs] of [
    ['node alone', []],
    ['pino', ['pino']],
    ['prom-client', ['prom-client']],
    ['zod', ['zod']],
    ["the agent's modules", [dist('cli/agent.js'), dist('agent/agent.js'), dist('cluster/lean-kubeconfig.js')]],
    ['@kubernetes/client-node (not loaded by the agent)', ['@kubernetes/client-node']],
  ] as const) {
    line(`  ${label}: ${importCost(specs, CHART_NODE_OPTIONS)}`);
  }
}

if (process.getuid?.() !== 0) {
  line('sweep: skipped (needs root for a network namespace)');
} else {
  const savedMax = readFileSync(CONNTRACK_MAX, 'utf8').trim();
  const need = Math.max(...SIZES) + Math.max(...SIZES) / 10;
  let max = Number(savedMax);
  if (need > max) {
    try {
      writeFileSync(CONNTRACK_MAX, String(need));
      max = Number(readFileSync(CONNTRACK_MAX, 'utf8').trim());
      process.stderr.write(`nf_conntrack_max raised from ${savedMax} to ${max} for the run\n`);
    } catch (error) {
      process.stderr.write(`nf_conntrack_max stays ${savedMax}: ${(error as Error).message}\n`);
    }
  }
  try {
    for (const size of SIZES) {
      const s = await sweep(Math.min(size, max - 1000), CHART_NODE_OPTIONS);
      line(`sweep over ${s.table} entries (asked ${size}; loaded in ${(s.loadMs / 1000).toFixed(0)} s; ${GONE} to a gone endpoint; the agent scanned ${s.scanned} in ${s.sweeps} sweep${s.sweeps === 1 ? '' : 's'}, deleted ${s.deleted}):`);
      line(`  agent idle with that table: ${s.idle.rss} MiB (anon ${s.idle.anon}, file ${s.idle.file})`);
      line(`  wall ${(s.wallMs / 1000).toFixed(1)} s from the EndpointSlice change to the last entry deleted (1 s hold; the sweeps themselves ${s.sweepSeconds.toFixed(1)} s)`);
      line(`  CPU: agent ${(s.cpu.user + s.cpu.system).toFixed(1)} s (user ${s.cpu.user.toFixed(1)}, system ${s.cpu.system.toFixed(1)}), conntrack -D ${s.cpu.children.toFixed(1)} s`);
      if (s.deleted !== Math.min(GONE, s.table)) for (const l of s.log) line(`  agent: ${l}`);
      line(`  RSS after the sweep ${s.after.rss} MiB (anon ${s.after.anon}, file ${s.after.file}); peak ${s.after.hwm} MiB`);
    }
  } finally {
    if (readFileSync(CONNTRACK_MAX, 'utf8').trim() !== savedMax) {
      writeFileSync(CONNTRACK_MAX, savedMax);
      process.stderr.write(`nf_conntrack_max restored to ${savedMax}\n`);
    }
  }
}
