/**
 * `npm run lab`: the ghost-connection lab. Reproduces the stale-DNAT failure with
 * real iptables DNAT rules (written as kube-proxy writes them) and real conntrack in
 * network namespaces, with an unprotected pod, with a pod that drains gracefully but
 * has no preStop sleep, and with the termination plan the decision core computes,
 * and prints what the clients saw.
 *
 * Root only; installs nothing (says what is missing). Everything it creates lives in
 * namespaces named st-lab-<pid>-*, deleted at the end, on failure and on Ctrl-C.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { describePlan, backendPod, nodeFacts, planFor } from './plan.ts';
import { figures, formatTable, verdict } from './report.ts';
import type { RunFigures } from './report.ts';
import { MODES, runScenario } from './scenario.ts';
import type { Mode, RunResult, ScenarioConfig, Termination } from './scenario.ts';
import { emulatedAsRun, plotTimelines } from './kube/plot.ts';
import { checkPrerequisites, Cleanup, run } from './sys.ts';
import { progress } from '../scripts/progress.ts';
import { createWorld, reapOrphans, setNodeConntrack } from './world.ts';

// `--kube`: the lab on real Kubernetes components (lab/kube/), its own flags.
if (process.argv.includes('--kube')) {
  const { main } = await import('./kube/run.ts');
  process.exit(await main(process.argv.slice(2)));
}

const HELP = `Usage: npm run lab -- [flags]   (as root)
  (npm run lab -- --kube --help: the lab on the real control plane and kube-proxy)

The ghost-connection lab: a client, a node doing kube-proxy's iptables DNAT for a
Service VIP, three backend pods (UDP DNS-like, TCP HTTP-like). One pod is deleted
while clients keep sending: first unprotected (exits on SIGTERM), then drain-only
(drains gracefully on SIGTERM, no preStop sleep), then protected (the same
graceful app with the preStop sleep and grace the decision core computes for its
pod spec).

Flags:
  --json                  print the figures as JSON
  --short                 a quicker run (udp-timeout 3s, propagation 1s; CI)
  --udp-timeout N         the node's nf_conntrack_udp_timeout (default 5; short 3)
  --udp-timeout-stream N  the node's nf_conntrack_udp_timeout_stream (default = udp-timeout)
  --propagation S         seconds until kube-proxy drops the endpoint (default 2; short 1)
  --kube-proxy-cleanup    model kube-proxy's stale-UDP conntrack cleanup (default: the miss case)
  --pinned-udp N          also N UDP clients that never change socket (beyond any sleep)
  --save DIR              write the conntrack listings and EndpointSlice dumps it measured
  --no-drain-only         leave out the drain-only run (a third shorter)
  --check                 exit 1 unless the unprotected run fails after the pod's
                          removal from the rules with conntrack entries still
                          pointing at it, and the protected run has no failure
                          (the drain-only run is reported, not judged)
  --events                with --json: include every client request (time after t0, kind, outcome, backend)
  --plot FILE.svg         also draw each run's timeline (requests, deletion, preStop sleep,
                          SIGTERM, removal from the rules, conntrack entries to the pod; the
                          race and ghost windows shaded) into FILE.svg
`;

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    short: { type: 'boolean', default: false },
    'udp-timeout': { type: 'string' },
    'udp-timeout-stream': { type: 'string' },
    propagation: { type: 'string' },
    'kube-proxy-cleanup': { type: 'boolean', default: false },
    'pinned-udp': { type: 'string', default: '0' },
    save: { type: 'string' },
    'drain-only': { type: 'boolean', default: true },
    check: { type: 'boolean', default: false },
    events: { type: 'boolean', default: false },
    plot: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowNegative: true,
});

if (values.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const short = values.short;
const udpTimeout = Number(values['udp-timeout'] ?? (short ? 3 : 5));
const propagationS = Number(values.propagation ?? (short ? 1 : 2));
const config: ScenarioConfig = {
  udpTimeout,
  udpTimeoutStream: Number(values['udp-timeout-stream'] ?? udpTimeout),
  propagationMs: Math.round(propagationS * 1000),
  warmupMs: short ? 1500 : 2000,
  tailMs: short ? 2000 : 3000,
  drainMs: short ? 1000 : 1500,
  teardownMs: 1000,
  sampleMs: short ? 400 : 500,
  kubeProxyCleanup: values['kube-proxy-cleanup'],
  pinnedUdp: Number(values['pinned-udp']),
  // Lookups keep their socket for up to udp-timeout − 1 s: flows that end within
  // udp-timeout of the endpoint's removal, the ones the sizing model covers.
  udpSessionMs: Math.max(0, udpTimeout - 1) * 1000,
  udpWorkers: short ? 8 : 12,
  kaWorkers: short ? 4 : 6,
  shortWorkers: short ? 3 : 4,
  saveDir: values.save,
};
// In short mode the pod says its propagation budget (the lab's kube-proxy is fast);
// otherwise the model's default budget (5s) applies.
const propagationBudget = short ? `${Math.ceil(propagationS) + 1}s` : undefined;

for (const [name, v] of Object.entries({ 'udp-timeout': config.udpTimeout, 'udp-timeout-stream': config.udpTimeoutStream, propagation: propagationS, 'pinned-udp': config.pinnedUdp })) {
  if (!Number.isFinite(v) || v < 0 || v > 120) {
    process.stderr.write(`lab: --${name} must be a number from 0 to 120\n`);
    process.exit(2);
  }
}

const out = (s: string): void => {
  if (!values.json) process.stdout.write(s);
};
const log = (line: string): void => out(`  ${line}\n`);

const pre = await checkPrerequisites();
if (!pre.ok) {
  process.stderr.write(`lab: cannot run:\n${pre.problems.map((p) => `  - ${p}\n`).join('')}`);
  process.exit(2);
}

const cleanup = new Cleanup();
cleanup.installSignalHandlers();
// Never more than a few minutes, whatever happens.
const hardLimitMs = 240_000;
const hardLimit = setTimeout(() => {
  process.stderr.write(`lab: still running after ${hardLimitMs / 1000}s: aborting\n`);
  void cleanup.run().finally(() => process.exit(3));
}, hardLimitMs);
hardLimit.unref();
// A line per step with the elapsed time on stderr (quiet in CI logs).
const steps = progress('lab');

try {
  const reaped = await reapOrphans();
  if (reaped.length > 0) log(`deleted ${reaped.length} namespaces left by an earlier, killed lab`);
  const iptablesVersion = (await run('iptables', ['--version'])).trim();
  const conntrackVersion = (await run('conntrack', ['--version'])).trim();

  // The plan: from the pod spec and the node's conntrack values as read back from a node namespace.
  steps.step('reading the node\'s conntrack values back from a probe namespace');
  const probe = await createWorld(process.pid, 'f', 0, cleanup);
  await setNodeConntrack(probe.node, { nf_conntrack_udp_timeout: config.udpTimeout, nf_conntrack_udp_timeout_stream: config.udpTimeoutStream });
  const facts = await nodeFacts(probe.node);
  await cleanup.run();
  const pod = backendPod(propagationBudget);
  const plan = planFor(pod, facts);

  out('safe-termination ghost-connection lab\n');
  out(`  ${iptablesVersion} — ${pre.iptablesBackend === 'nf_tables' ? 'nft backend (Debian default); kube-proxy rules via iptables-nft' : 'legacy backend'}; ${conntrackVersion}\n`);
  out(`  node conntrack: nf_conntrack_udp_timeout=${config.udpTimeout}s, nf_conntrack_udp_timeout_stream=${config.udpTimeoutStream}s (set by the lab); kube-proxy propagation ${propagationS}s\n`);
  out(
    config.kubeProxyCleanup
      ? "  kube-proxy stale-UDP cleanup: modelled (deletes UDP entries whose target is not a serving endpoint, at each sync)\n"
      : '  kube-proxy stale-UDP cleanup: absent — the miss case (no conntrack binary, a Service scaled to zero on 1.32+, other dataplanes); --kube-proxy-cleanup models it\n',
  );
  out(`  plan for the backend pod (UDP 53 + TCP 8080${propagationBudget ? `, annotation propagation-delay ${propagationBudget}` : ''}; conntrack facts source local):\n    ${describePlan(plan)}\n`);
  out(`  UDP lookups use one socket for up to ${config.udpSessionMs / 1000}s${config.pinnedUdp > 0 ? `; ${config.pinnedUdp} pinned UDP sockets never go quiet` : ''}\n\n`);

  const timelineSleepMs = plan.sleepSeconds * 1000;
  const results: (RunFigures & { events?: unknown })[] = [];
  const runs: RunResult[] = [];
  const modes: readonly Mode[] = values['drain-only'] ? MODES : MODES.filter((m) => m !== 'drain-only');
  for (const mode of modes) {
    const term: Termination =
      mode === 'protected'
        ? { mode, sleepSeconds: plan.sleepSeconds, graceSeconds: plan.gracePeriodSeconds }
        : { mode, sleepSeconds: 0, graceSeconds: plan.originalGracePeriodSeconds };
    const how = {
      unprotected: 'exits on SIGTERM at once',
      'drain-only': `no preStop sleep, drains gracefully on SIGTERM, grace ${term.graceSeconds}s`,
      protected: `preStop sleep ${plan.sleepSeconds}s, then drains gracefully on SIGTERM, grace ${term.graceSeconds}s`,
    }[mode];
    out(`${mode} run (${how}):\n`);
    steps.step(`${mode} run (${modes.indexOf(mode) + 1} of ${modes.length})`);
    const result = await runScenario(config, term, timelineSleepMs, cleanup, log);
    runs.push(result);
    results.push(values.events ? { ...figures(result), events: result.events } : figures(result));
  }
  steps.step('runs done: the report');
  if (values.plot !== undefined) {
    mkdirSync(dirname(values.plot), { recursive: true });
    writeFileSync(
      values.plot,
      plotTimelines(runs.map(emulatedAsRun), {
        title: 'The ghost-connection lab (emulated kube-proxy): what happens around a pod\'s deletion',
        subtitle: `kube-proxy modelled: propagation ${propagationS}s, stale-UDP cleanup ${config.kubeProxyCleanup ? 'modelled' : 'missed'}; node udp-timeout ${config.udpTimeout}s; npm run lab${short ? ' -- --short' : ''}`,
      }),
    );
    process.stderr.write(`lab: timeline written to ${values.plot}\n`);
  }
  const byMode = (mode: Mode): RunFigures | undefined => results.find((r) => r.mode === mode);
  const v = verdict(byMode('unprotected')!, byMode('protected')!, byMode('drain-only'));

  if (values.json) {
    process.stdout.write(
      JSON.stringify(
        {
          iptables: iptablesVersion,
          conntrack: conntrackVersion,
          config: { ...config, propagationBudget: propagationBudget ?? null },
          plan: { sleepSeconds: plan.sleepSeconds, gracePeriodSeconds: plan.gracePeriodSeconds, originalGracePeriodSeconds: plan.originalGracePeriodSeconds, protocols: plan.protocols, conntrack: plan.conntrack, record: plan.record },
          runs: results,
          verdict: v,
        },
        null,
        2,
      ) + '\n',
    );
  } else {
    out('\n' + formatTable(results));
    out(
      '\n  after-removal: failures seen after kube-proxy dropped the pod (a timeout counts when it expires; JSON failedSentAfterRemoval: those sent after it)\n' +
        '  served-by-removed: answers the deleted pod gave after kube-proxy dropped it (stale entries, served)\n' +
        '  ct@removal: conntrack entries DNATed to the deleted pod right after its removal from the rules\n' +
        '  diagnose@removal: what `safe-termination diagnose` calls them then (stale: target not serving; draining: terminating, still serving)\n' +
        '  ct@exit: …when its process exited; ghost-ct: entries that carried traffic to it after it was gone\n' +
        '  (entry counts leave out TCP TIME_WAIT/CLOSE entries: a new connection replaces them)\n\n',
    );
    for (const line of v.lines) out(`${line}\n`);
  }
  process.exitCode = values.check && !v.ok ? 1 : 0;
} catch (error) {
  process.stderr.write(`lab: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 3;
} finally {
  await cleanup.run();
  clearTimeout(hardLimit);
}
