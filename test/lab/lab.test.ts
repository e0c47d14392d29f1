/**
 * The ghost-connection lab, short mode, for real (root, network namespaces,
 * iptables, conntrack). It proves something only if the unprotected pod's
 * deletion makes clients fail after its removal from the rules, with conntrack
 * entries still pointing at it, and the protected one's makes none fail. The
 * drain-only run (graceful app, no preStop sleep) is reported, not judged.
 */
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { RunFigures, Verdict } from '../../lab/report.ts';
import { checkPrerequisites } from '../../lab/sys.ts';

interface LabReport {
  readonly plan: { sleepSeconds: number; gracePeriodSeconds: number; conntrack: unknown };
  readonly runs: readonly RunFigures[];
  readonly verdict: Verdict;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const pre = await checkPrerequisites();
const skip = pre.ok ? false : `the lab cannot run here: ${pre.problems.join('; ')}`;

function labNamespaces(pid: number): string[] {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.startsWith(`st-lab-${pid}-`));
}

function childrenOf(pid: number): number[] {
  const out = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => Number(f[1]) === pid && f.slice(2).some((a) => /lab\/(backend|client)\.ts$/.test(a)))
    .map((f) => Number(f[0]));
}

/** Running (a zombie waiting for its reaper is not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

t.test('short lab: the unprotected pod fails clients after its removal through stale entries, the planned preStop sleep prevents every failure', { skip, timeout: 100_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-lab-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const started = Date.now();
  let pid = 0;
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [join(ROOT, 'lab/run.ts'), '--short', '--json', '--check', '--save', dir], { cwd: ROOT, timeout: 90_000, maxBuffer: 16 * 1024 * 1024 }, (error, out, err) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout: out, stderr: err }),
    );
    pid = child.pid ?? 0;
  });
  t.ok(Date.now() - started < 90_000, 'bounded in time');
  t.same(labNamespaces(pid), [], 'every namespace it created is gone');
  if (!t.equal(code, 0, `lab exit code (stderr: ${stderr.slice(-2000)})`)) return;
  const report = JSON.parse(stdout) as LabReport;

  t.match(report.plan, { sleepSeconds: 5, gracePeriodSeconds: 35, originalGracePeriodSeconds: 30, protocols: ['tcp', 'udp'] });
  t.same(report.plan.conntrack, { 'udp-timeout': { value: 3, source: 'local' } }, 'sized from the node namespace sysctls the lab set');

  t.same(
    report.runs.map((r) => r.mode),
    ['unprotected', 'drain-only', 'protected'],
  );
  const [unprotected, drainOnly, protectedRun] = report.runs as [RunFigures, RunFigures, RunFigures];
  for (const run of report.runs) {
    for (const [kind, k] of Object.entries(run.kinds)) {
      t.ok(k.sent > 20, `${run.mode} ${kind}: clients kept sending (${k.sent})`);
      t.equal(k.failedByPhase['before-deletion'], 0, `${run.mode} ${kind}: no failure before the deletion`);
    }
  }
  t.ok(unprotected.failed > 0, `unprotected: ${unprotected.failed} failed requests (must be > 0, or the lab shows nothing)`);
  t.ok(
    unprotected.conntrack.udp.atRemoval + unprotected.conntrack.tcp.atRemoval > 0,
    `unprotected: conntrack entries still to the removed pod after its removal (udp ${unprotected.conntrack.udp.atRemoval}, tcp ${unprotected.conntrack.tcp.atRemoval}; must be > 0)`,
  );
  t.equal(protectedRun.failed, 0, 'protected: no failed request');
  t.equal(protectedRun.failedAfterRemoval, 0);
  t.ok(report.verdict.ok, report.verdict.lines.join('\n'));
  t.same(
    report.verdict.checks.map((c) => [c.name, c.ok]),
    [
      ['unprotected-fails', true],
      ['unprotected-stale-conntrack', true],
      ['protected-no-failure', true],
    ],
  );

  // Timeline as the plan says: SIGTERM after the sleep, exit within grace, kube-proxy before that.
  t.ok(unprotected.timeline.sigterm < 100, 'unprotected: SIGTERM at once');
  t.equal(drainOnly.sleepSeconds, 0, 'drain-only: no preStop sleep');
  t.ok(drainOnly.timeline.sigterm < 100, 'drain-only: SIGTERM at once');
  t.ok(drainOnly.timeline.exit < 30_000, "drain-only: exited within the pod's own grace");
  t.ok(report.verdict.lines.some((l) => l.startsWith('drain-only:')), 'drain-only: printed in the verdict lines');
  t.ok(protectedRun.timeline.sigterm >= 5000, 'protected: SIGTERM after the 5s preStop sleep');
  t.ok(protectedRun.timeline.exit < 35_000, 'protected: exited within grace');
  t.ok(protectedRun.timeline.removal < protectedRun.timeline.sigterm, 'protected: removed from the rules before SIGTERM');

  // The same entries, judged as `diagnose` judges them: stale when unprotected, draining when protected.
  t.equal(protectedRun.conntrack.udp.staleAtRemoval + protectedRun.conntrack.tcp.staleAtRemoval, 0);
  t.equal(protectedRun.conntrack.udp.ghosts + protectedRun.conntrack.tcp.ghosts, 0, 'protected: no entry carried traffic to the pod after it exited');

  // And the CLI on what the lab saved agrees with the lab.
  const diagnose = (run: string): { stale: number; draining: number } => {
    const r = spawnSync(process.execPath, [join(ROOT, 'src/cli/main.ts'), 'diagnose', '--endpointslices', join(dir, `${run}-endpoints-at-removal.json`), '--conntrack-file', join(dir, `${run}-conntrack-at-removal.txt`), '--json'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    });
    const report = JSON.parse(r.stdout) as { stale: number; draining: number };
    // diagnose's exit status for scripts: 3 when stale entries were found, else 0.
    t.equal(r.status, report.stale > 0 ? 3 : 0, `diagnose ${run}: exit status for ${report.stale} stale entries (${r.stderr})`);
    return report;
  };
  const u = diagnose('unprotected');
  t.equal(u.stale, unprotected.conntrack.udp.staleAtRemoval + unprotected.conntrack.tcp.staleAtRemoval, 'diagnose finds the stale entries the lab counted');
  const p = diagnose('protected');
  t.equal(p.stale, 0);
  t.equal(p.draining, protectedRun.conntrack.udp.drainingAtRemoval + protectedRun.conntrack.tcp.drainingAtRemoval);
});

t.test('Ctrl-C: the lab deletes its namespaces and exits', { skip, timeout: 60_000 }, async (t) => {
  const child = spawn(process.execPath, [join(ROOT, 'lab/run.ts'), '--short'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid!;
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // Wait until the first run's backends and client run (before its t0, when one backend goes), then interrupt.
  const deadline = Date.now() + 40_000;
  let children: number[] = [];
  while (children.length < 4 && !out.includes('t0 —') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    children = childrenOf(pid);
  }
  t.ok(labNamespaces(pid).length >= 5, 'namespaces exist while it runs');
  t.ok(children.length >= 3, `backends and the client run (${children.length})`);
  child.kill('SIGINT');
  t.equal(await exited, 130);
  t.same(labNamespaces(pid), [], 'all deleted');
  t.same(children.filter(alive), [], 'no backend or client left running');
});
