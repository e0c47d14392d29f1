/**
 * The ghost-connection lab on the real components, short: the control
 * plane, the real kube-proxy (iptables mode, and nftables mode where `nft` is
 * installed) in a node namespace, the chart's
 * webhook and agent, the lab kubelet; an unprotected and a protected run, each
 * scaling echo 3→2 and solo 1→0 through /scale. Then the protected run with the
 * agent's conntrack reaper on and off (iptables mode), with a pod lost with its
 * node. Asserts the verdict's named checks; the figures are printed for the log.
 */
import { execFile, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import t from 'tap';
import { controlPlaneSkipReason } from './control-plane.ts';
import type { StepFigures, Verdict } from '../lab/kube/report.ts';
import { checkPrerequisites, which } from '../lab/sys.ts';

interface LabJson {
  readonly runs: readonly StepFigures[];
  readonly verdict: Verdict;
}

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const pre = await checkPrerequisites();
const skip = controlPlaneSkipReason() || (pre.ok ? false : `the lab cannot run here: ${pre.problems.join('; ')}`);
// nftables mode needs the `nft` tool (Debian package nftables); without it, iptables mode only.
const proxyModes = (await which('nft')) === undefined ? ['iptables'] : ['iptables', 'nftables'];

async function runLab(args: readonly string[], timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string; pid: number }> {
  let pid = 0;
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, [join(ROOT, 'lab/run.ts'), '--kube', ...args], { cwd: ROOT, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (error, out, err) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout: out, stderr: err }),
    );
    pid = child.pid ?? 0;
  });
  return { ...r, pid };
}

const labNamespaces = (pid: number): string[] =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(`st-lab-${pid}-`));

t.test(`the lab on real kube-proxy (${proxyModes.join(', ')}): the unprotected scale-down shows the race, the webhook-injected sleep removes it`, { skip, timeout: 300_000 }, async (t) => {
  const started = Date.now();
  const { code, stdout, stderr, pid } = await runLab(['--short', '--proxy-mode', proxyModes.length === 2 ? 'both' : 'iptables', '--runs', 'unprotected,protected', '--json'], 280_000);
  t.comment(`lab took ${((Date.now() - started) / 1000).toFixed(1)}s`);
  t.equal(code, 0, `lab exit code (stderr: ${stderr.slice(-3000)})`);
  const report = JSON.parse(stdout) as LabJson;
  for (const line of report.verdict.lines) t.comment(line);
  const check = (name: string): boolean => report.verdict.checks.filter((c) => c.name === name).every((c) => c.ok) && report.verdict.checks.some((c) => c.name === name);
  for (const name of ['endpoint-left-rules', 'pods-through-webhook', 'unprotected-race', 'protected-no-race-failure']) {
    t.ok(check(name), `${name}: ${report.verdict.checks.filter((c) => c.name === name).map((c) => c.message).join('; ')}`);
  }
  t.ok(report.verdict.ok, 'verdict ok');

  // Both steps ran in both runs, and the protected pods held the sleep the API server stored.
  t.equal(report.runs.length, 4 * proxyModes.length, 'per proxy mode: unprotected and protected, 3→2 and 1→0');
  for (const proxy of proxyModes) {
    for (const name of ['unprotected-race', 'protected-no-race-failure']) t.ok(report.verdict.checks.some((c) => c.name === name && c.proxy === proxy && c.ok), `${name} judged and held in ${proxy} mode`);
  }
  for (const s of report.runs.filter((r) => r.mode === 'protected')) {
    t.match(s.stored.preStop, /^sleep action \d+s$/, `${s.step}: the stored preStop is the native sleep`);
    const sleepS = Number(/(\d+)s$/.exec(s.stored.preStop)?.[1]);
    t.ok((s.timeline.sigterm ?? 0) >= sleepS * 1000 - 100, `${s.step}: SIGTERM came after the stored sleep (${s.timeline.sigterm} ms ≥ ${sleepS} s)`);
  }
  for (const s of report.runs.filter((r) => r.mode === 'unprotected')) t.equal(s.stored.preStop, 'none', `unprotected ${s.step}: no preStop`);

  // Nothing left behind.
  t.same(labNamespaces(pid), [], 'the lab deleted its network namespaces');
});

t.test('the lab with the conntrack reaper on and off (iptables): pinned flows and a lost pod', { skip, timeout: 150_000 }, async (t) => {
  const started = Date.now();
  const { code, stdout, stderr, pid } = await runLab(['--short', '--proxy-mode', 'iptables', '--runs', 'protected', '--reaper', 'both', '--json'], 140_000);
  t.comment(`lab took ${((Date.now() - started) / 1000).toFixed(1)}s`);
  t.equal(code, 0, `lab exit code (stderr: ${stderr.slice(-3000)})`);
  const report = JSON.parse(stdout) as LabJson;
  for (const line of report.verdict.lines) t.comment(line);
  for (const name of ['endpoint-left-rules', 'pods-through-webhook', 'protected-no-race-failure', 'reaper-no-failure-after-sweep', 'reaper-off-long-streams-blackholed', 'reaper-scale-to-zero-clean', 'reaper-diagnose-clean']) {
    const checks = report.verdict.checks.filter((c) => c.name === name);
    t.ok(checks.length > 0 && checks.every((c) => c.ok), `${name}: ${checks.map((c) => c.message).join('; ')}`);
  }
  t.same(
    report.runs.map((s) => `${s.reaper ? 'on' : 'off'} ${s.step}`),
    ['on 3→2', 'on 1→0', 'on lost', 'off 3→2', 'off 1→0', 'off lost'],
    'the protected run with the reaper on, then off: 3→2, 1→0 and a lost pod',
  );
  const lost = report.runs.find((s) => s.reaper && s.step === 'lost');
  t.ok((lost?.detect.detected ?? 0) > 0, `with the reaper, the long stream to the lost pod is reset (${JSON.stringify(lost?.detect)})`);
  t.ok(report.runs.filter((s) => s.reaper).some((s) => s.reaped > 0), 'the agent logged reaped entries');
  t.same(labNamespaces(pid), [], 'the lab deleted its network namespaces');
});
