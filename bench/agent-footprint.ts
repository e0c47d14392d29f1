/**
 * The agent's footprint (spec §8, issue 17), printed — a bench, not a test:
 *
 * 1. idle RSS of `safe-termination agent` against a fake API server holding
 *    `--services` Services with one EndpointSlice each, with the reaper on (the
 *    default) and off, read from /proc/<pid>/status after it has settled;
 * 2. one reaper sweep over a real conntrack table of `--entries` entries (default
 *    100k; `conntrack -R` into a private network namespace), `--gone` of them
 *    DNATed to an endpoint that has just left its EndpointSlice: the sweep's CPU
 *    time (the agent's and the `conntrack -D` runs'), RSS before and at peak.
 *
 * Needs root, iproute2 and conntrack (for 2). The namespace is deleted at the end.
 * The table is bounded by the host's global nf_conntrack_max (not raised here).
 *
 *   npx node bench/agent-footprint.ts [--entries 100000] [--gone 10000] [--services 500]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { makeEndpointSlice, makeNode, makeService, startFakeApiServer } from '../test/support/fake-apiserver.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: { entries: { type: 'string', default: '100000' }, gone: { type: 'string', default: '10000' }, services: { type: 'string', default: '500' } },
});
const ENTRIES = Number(values.entries);
const GONE = Math.min(Number(values.gone), ENTRIES);
const SERVICES = Number(values.services);

const statusOf = (pid: number): { rssMiB: number; hwmMiB: number } => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(s)?.[1] ?? NaN);
  return { rssMiB: Math.round(kib('VmRSS') / 1024), hwmMiB: Math.round(kib('VmHWM') / 1024) };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function idle(reap: boolean): Promise<{ rssMiB: number; hwmMiB: number }> {
  const api = await startFakeApiServer();
  try {
    api.setNodes([makeNode('worker-1')]);
    api.setServices([...Array(SERVICES)].map((_, i) => makeService('bench', `svc-${i}`, `10.96.${i >> 8}.${i & 255}`, [{ name: 'p', port: 80, protocol: 'TCP', targetPort: 8080 }])));
    api.setEndpointSlices([...Array(SERVICES)].map((_, i) => makeEndpointSlice('bench', `svc-${i}`, [{ name: 'p', port: 8080 }], [{ ip: `10.244.${i >> 8}.${i & 255}` }, { ip: `10.245.${i >> 8}.${i & 255}` }])));
    const kubeconfig = api.writeKubeconfig();
    const child = spawn(process.execPath, [join(REPO_ROOT, 'src/cli/main.ts'), 'agent', '--kubeconfig', kubeconfig, '--node-name', 'worker-1', '--metrics-port', '0', '--bind-address', '127.0.0.1', `--reap=${reap}`, '--endpoint-changes', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
    await sleep(8000);
    const s = statusOf(child.pid!);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return s;
  } finally {
    await api.stop();
  }
}

function sweep(): Record<string, unknown> {
  const ns = `st-bench-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'st-footprint-'));
  const run = (args: string[], timeout = 300_000) => {
    const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`${args.slice(0, 6).join(' ')} failed: ${r.stderr || String(r.error)}`);
    return r.stdout;
  };
  run(['ip', 'netns', 'add', ns]);
  try {
    const lines: string[] = [];
    for (let i = 0; i < ENTRIES; i++) {
      const client = `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
      const gone = i < GONE;
      const udp = i % 2 === 0;
      const target = gone ? '10.244.0.1' : `10.244.1.${1 + (i % 200)}`;
      const [p, vport, tport] = udp ? ['udp', 53, 5353] : ['tcp', 80, 8080];
      lines.push(`-I -p ${p} -s ${client} -d 10.96.0.10 --sport 40000 --dport ${vport} -r ${target} -q ${client} --reply-port-src ${tport} --reply-port-dst 40000${udp ? '' : ' --state ESTABLISHED'} -t 3000`);
    }
    writeFileSync(join(dir, 'inserts'), `${lines.join('\n')}\n`);
    const t0 = Date.now();
    run(['ip', 'netns', 'exec', ns, 'conntrack', '-R', join(dir, 'inserts')]);
    const count = Number(run(['ip', 'netns', 'exec', ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_count']).trim());
    process.stderr.write(`loaded ${count} entries in ${Date.now() - t0} ms\n`);
    const ports = (p: string, port: number) => [{ name: p, port, protocol: p === 'dns' ? 'UDP' : 'TCP' }];
    const live = [...Array(200)].map((_, i) => ({ ip: `10.244.1.${1 + i}` }));
    const slices = (withGone: boolean) => [
      makeEndpointSlice('bench', 'dns', ports('dns', 5353), [...(withGone ? [{ ip: '10.244.0.1' }] : []), ...live], { name: 'dns-1' }),
      makeEndpointSlice('bench', 'web', ports('http', 8080), [...(withGone ? [{ ip: '10.244.0.1' }] : []), ...live], { name: 'web-1' }),
    ];
    const input = { before: slices(true), after: slices(false), holdMs: 0, dryRun: false, maxPerSecond: 1_000_000 };
    writeFileSync(join(dir, 'input.json'), JSON.stringify(input));
    const out = run(['ip', 'netns', 'exec', ns, process.execPath, join(REPO_ROOT, 'test/support/reap-sweep.ts'), `@${join(dir, 'input.json')}`]);
    const r = JSON.parse(out) as Record<string, unknown>;
    const after = Number(run(['ip', 'netns', 'exec', ns, 'cat', '/proc/sys/net/netfilter/nf_conntrack_count']).trim());
    return { table: count, gone: GONE, scanned: r['scanned'], deleted: count - after, groups: (r['groups'] as unknown[]).length, sweepMs: r['afterMs'], ...(r['usage'] as object) };
  } finally {
    spawnSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

const onIdle = await idle(true);
const offIdle = await idle(false);
process.stdout.write(`agent idle (${SERVICES} Services, ${SERVICES} EndpointSlices of 2 endpoints, --endpoint-changes):\n`);
process.stdout.write(`  reaper on:  RSS ${onIdle.rssMiB} MiB (peak ${onIdle.hwmMiB} MiB)\n`);
process.stdout.write(`  reaper off: RSS ${offIdle.rssMiB} MiB (peak ${offIdle.hwmMiB} MiB)\n`);
if (process.getuid?.() !== 0) {
  process.stdout.write('sweep: skipped (needs root for a network namespace)\n');
} else {
  const s = sweep();
  process.stdout.write(`sweep over ${String(s['table'])} entries (${String(s['gone'])} to a gone endpoint, deleted ${String(s['deleted'])} in ${String(s['groups'])} conntrack -D):\n`);
  process.stdout.write(`  wall ${String(s['sweepMs'])} ms; agent CPU user ${String(s['userMs'])} ms + system ${String(s['systemMs'])} ms; conntrack -D CPU ${String(s['conntrackToolMs'])} ms\n`);
  process.stdout.write(`  RSS before ${String(s['rssBeforeMiB'])} MiB, peak ${String(s['peakRssMiB'])} MiB (test/support/reap-sweep.ts: the agent's reaper modules, which import the Kubernetes client)\n`);
}

// Where the idle memory goes: RSS of a bare Node, and after importing each heavy dependency alone.
process.stdout.write('idle RSS by import (a fresh process each):\n');
for (const m of ['', 'prom-client', '@kubernetes/client-node']) {
  const code = `${m === '' ? '' : `await import(${JSON.stringify(m)});`} await new Promise((r) => setTimeout(r, 1000)); process.stdout.write(String(Math.round(process.memoryUsage.rss() / 1048576)));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: REPO_ROOT, encoding: 'utf8' });
  process.stdout.write(`  ${m === '' ? 'node alone' : m}: ${r.stdout} MiB\n`);
}
