/**
 * `npm run lab -- --kube`: the ghost-connection lab on real Kubernetes components
 *: etcd, kube-apiserver, kube-controller-manager (Deployment,
 * ReplicaSet and EndpointSlice controllers), kube-scheduler and kube-proxy built
 * from source (`npm run kube:build`), the product installed with its chart and run
 * as `safe-termination serve` (the webhook the API server calls) and `agent` (in
 * the node's namespace), and the LAB KUBELET stand-in (lab/kube/kubelet.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { controlPlaneSkipReason, startControlPlane } from '../../e2e/control-plane.ts';
import type { ControlPlane } from '../../e2e/control-plane.ts';
import { installChart, startHostAgent, startHostWebhook, waitFor } from '../../e2e/on-host.ts';
import type { HostProcess } from '../../e2e/on-host.ts';
import { progress } from '../../scripts/progress.ts';
import { checkPrerequisites, Cleanup, run, which } from '../sys.ts';
import { reapOrphans } from '../world.ts';
import { LabKubelet } from './kubelet.ts';
import { plotTimelines } from './plot.ts';
import { figures, formatReaperTable, formatTable, LEGEND, REAPER_LEGEND, verdict } from './report.ts';
import type { StepFigures } from './report.ts';
import { PROXY_MODES, RuleWatcher } from './rules.ts';
import type { ProxyMode } from './rules.ts';
import { MODES, runKubeScenario } from './scenario.ts';
import type { KubeRunResult, KubeScenarioConfig, Mode, ReapLog } from './scenario.ts';
import { createKubeWorld, setConntrackSysctls, startKubeProxy } from './world.ts';

/** The agent's --reap-hold (the chart's default). */
const REAP_HOLD_S = 5;

const HELP = `Usage: npm run lab -- --kube [flags]   (as root; needs \`npm run build\` and \`npm run kube:build\`)

The ghost-connection lab on the real control plane and the real kube-proxy. For
each proxy mode and each run (unprotected, drain-only, protected), a namespace with
two Deployments behind Services (UDP 53 + TCP 80), scaled down through /scale:
echo 3→2 and solo 1→0, with clients sending all along. Failures are counted in
two windows: before the deleted pod's endpoint left the node's rules (the
propagation race) and after (stale conntrack entries: ghost connections).

Flags:
  --proxy-mode M         iptables, nftables or both (default both)
  --short                a quicker run (CI): udp-timeout 3s, fewer clients
  --runs LIST            comma list of unprotected,drain-only,protected (default all;
                         with --reaper both, protected alone is enough)
  --reaper R             the agent's conntrack reaper: on (--reap=true, the default),
                         off (--reap=false) or both (every run once with each, the
                         agent restarted in between; adds long TCP streams with no
                         timeout of their own and a third Service whose pod is lost
                         with its node: link cut, then force-deleted); with off or
                         both, the product's \`diagnose\` runs in the node namespace
                         at the end of every run
  --udp-timeout N        the node's nf_conntrack_udp_timeout (default 5; short 3)
  --pinned-udp N         pinned UDP clients per Service (default 2; short 1)
  --streams N            long-lived TCP streams per Service (default 2; short 1)
  --prestop-mode M       the pods' safe-termination.io/prestop-mode: auto (the native
                         sleep action) or exec (\`sleep N\`, run by the lab kubelet
                         in the pod's network namespace); default auto
  --json                 print the figures as JSON
  --events               with --json: every client request too
  --check                exit 1 unless the verdict's checks hold
  --plot FILE.svg        also draw each run's timeline (requests, deletion, preStop
                         sleep, SIGTERM, out of the rules, conntrack entries to the
                         pod; the race and ghost windows shaded) into FILE.svg
`;

/** The agent's "stale entries … deleted" lines about `namespace`. */
function reaperLines(agent: HostProcess, namespace: string): ReapLog[] {
  return agent
    .logLines()
    .filter((l) => l['msg'] === 'conntrack reaper: stale entries to gone endpoints deleted' && l['namespace'] === namespace)
    .map((l) => ({ time: String(l['time']), service: String(l['service']), reaped: (l['reaped'] ?? {}) as Record<string, number>, targets: (l['targets'] ?? []) as string[] }));
}

export async function main(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv.filter((a) => a !== '--kube'),
    options: {
      'proxy-mode': { type: 'string', default: 'both' },
      short: { type: 'boolean', default: false },
      runs: { type: 'string' },
      reaper: { type: 'string', default: 'on' },
      'udp-timeout': { type: 'string' },
      'pinned-udp': { type: 'string' },
      streams: { type: 'string' },
      'prestop-mode': { type: 'string', default: 'auto' },
      json: { type: 'boolean', default: false },
      events: { type: 'boolean', default: false },
      check: { type: 'boolean', default: false },
      plot: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const short = values.short;
  const proxyModes: ProxyMode[] = values['proxy-mode'] === 'both' ? [...PROXY_MODES] : [values['proxy-mode'] as ProxyMode];
  if (!proxyModes.every((m) => PROXY_MODES.includes(m))) {
    process.stderr.write('lab: --proxy-mode must be iptables, nftables or both\n');
    return 2;
  }
  const reaperArg = values.reaper;
  if (reaperArg !== 'on' && reaperArg !== 'off' && reaperArg !== 'both') {
    process.stderr.write('lab: --reaper must be on, off or both\n');
    return 2;
  }
  const reaperSettings: boolean[] = reaperArg === 'both' ? [true, false] : [reaperArg === 'on'];
  const modes = (values.runs?.split(',') ?? [...MODES]) as Mode[];
  if (!modes.every((m) => MODES.includes(m)) || !modes.includes('protected') || (reaperArg !== 'both' && !modes.includes('unprotected'))) {
    process.stderr.write('lab: --runs must list unprotected and protected (and may list drain-only); with --reaper both, protected is enough\n');
    return 2;
  }
  const prestopMode = values['prestop-mode'];
  if (prestopMode !== 'auto' && prestopMode !== 'exec') {
    process.stderr.write('lab: --prestop-mode must be auto or exec\n');
    return 2;
  }
  const udpTimeout = Number(values['udp-timeout'] ?? (short ? 3 : 5));
  if (!Number.isInteger(udpTimeout) || udpTimeout < 1 || udpTimeout > 120) {
    process.stderr.write('lab: --udp-timeout must be an integer from 1 to 120\n');
    return 2;
  }
  const cfg: KubeScenarioConfig = {
    udpTimeout,
    propagationDelay: short ? '2s' : '3s',
    prestopMode,
    warmupMs: short ? 2000 : 3000,
    // Long enough for a missed UDP entry to expire and for the reaper's sweep (its hold is 5 s).
    tailMs: Math.max(udpTimeout + 1, REAP_HOLD_S + 2) * 1000,
    sampleMs: 500,
    // Enough lookups and connections that the sub-second race shows every time.
    udpWorkers: short ? 12 : 16,
    udpSessionMs: Math.max(0, udpTimeout - 1) * 1000,
    pinnedUdp: Number(values['pinned-udp'] ?? (short ? 1 : 2)),
    shortWorkers: short ? 4 : 6,
    kaWorkers: short ? 2 : 4,
    streamWorkers: Number(values.streams ?? (short ? 1 : 2)),
    longWorkers: reaperArg === 'both' ? Number(values.streams ?? (short ? 1 : 2)) : 0,
    lostPod: reaperArg === 'both',
    sweepAfterMs: (REAP_HOLD_S + 1) * 1000,
    diagnose: reaperArg !== 'on',
  };

  const out = (s: string): void => {
    if (!values.json) process.stdout.write(s);
  };
  // Every line with the wall clock: the lab kubelet's and kube-proxy's lines side by side.
  const log = (line: string): void => out(`  ${new Date().toISOString().slice(11, 23)} ${line}\n`);

  const pre = await checkPrerequisites();
  const problems = [...pre.problems];
  const skip = controlPlaneSkipReason();
  if (skip !== false) problems.push(skip);
  if (proxyModes.includes('nftables') && (await which('nft')) === undefined) problems.push('missing nft: install with apt-get install -y nftables (for --proxy-mode nftables)');
  if ((await which('bash')) === undefined) problems.push('missing bash (the lab kubelet probes readiness with bash /dev/tcp)');
  if (problems.length > 0) {
    process.stderr.write(`lab: cannot run:\n${problems.map((p) => `  - ${p}\n`).join('')}`);
    return 2;
  }

  const cleanup = new Cleanup();
  cleanup.installSignalHandlers();
  const hardLimitMs = 900_000;
  const hardLimit = setTimeout(() => {
    process.stderr.write(`lab: still running after ${hardLimitMs / 1000}s: aborting\n`);
    void cleanup.run().finally(() => process.exit(3));
  }, hardLimitMs);
  hardLimit.unref();

  const NODE = 'lab-node';
  // A line per step with the elapsed time on stderr (quiet in CI logs).
  const steps = progress('lab');
  const totalRuns = proxyModes.length * modes.length * reaperSettings.length;
  const results: KubeRunResult[] = [];
  const versions: Record<string, string> = {};
  try {
    await reapOrphans();
    const started = Date.now();
    steps.step('starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)');
    const plane: ControlPlane = await startControlPlane();
    cleanup.add('stop the control plane', () => plane.stop());
    versions['kubernetes'] = ((await plane.call<{ gitVersion: string }>('GET', '/version')).gitVersion);
    versions['iptables'] = (await run('iptables', ['--version'])).trim();
    versions['conntrack'] = (await run('conntrack', ['--version'])).trim();
    if (proxyModes.includes('nftables')) versions['nft'] = (await run('nft', ['--version'])).trim();
    await plane.createNode(NODE);
    steps.step('installing the chart with helm, starting the webhook');
    await installChart(plane, 'st', 'safe-termination', ['--wait=false']);
    const webhook = await startHostWebhook(plane, 'st', 'safe-termination');
    cleanup.add('stop the webhook', () => webhook.stop());
    out(`safe-termination ghost-connection lab on real Kubernetes (${versions['kubernetes']}; control plane up in ${((Date.now() - started) / 1000).toFixed(1)}s)\n`);
    out(`  ${versions['iptables']}; ${versions['conntrack']}${versions['nft'] ? `; ${versions['nft']}` : ''}\n`);
    out(`  node conntrack: nf_conntrack_udp_timeout=${udpTimeout}s (set by the lab, published by the real agent); pods annotated propagation-delay ${cfg.propagationDelay}\n`);
    out(`  lab kubelet: a stand-in (no kubelet or container runtime here); everything else is the real component\n\n`);

    for (const proxy of proxyModes) {
      const tag = proxy === 'iptables' ? 'ki' : 'kn';
      steps.step(`${proxy}: the node namespace, the agent, kube-proxy --proxy-mode=${proxy}`);
      const world = await createKubeWorld(plane, tag, cleanup);
      await setConntrackSysctls(world.node, { nf_conntrack_udp_timeout: udpTimeout, nf_conntrack_udp_timeout_stream: udpTimeout * 2, nf_conntrack_acct: 1 });
      const startAgent = async (reap: boolean): Promise<HostProcess> => {
        // Without the annotation first, so that the wait below sees this agent's.
        await plane.call('PATCH', `/api/v1/nodes/${NODE}`, { metadata: { annotations: { 'conntrack.safe-termination.io/udp-timeout': null } } }, { contentType: 'application/merge-patch+json' });
        const a = await startHostAgent(plane, 'safe-termination', {
          nodeName: NODE,
          netns: { name: world.node, bridgePort: Number(new URL(world.apiServer).port) },
          extraArgs: ['--interval=1s', `--reap=${reap}`, `--reap-hold=${REAP_HOLD_S}s`],
        });
        cleanup.add('stop the agent', () => a.stop());
        await waitFor('the agent\'s udp-timeout annotation', 30_000, async () => {
          const n = await plane.call<{ metadata: { annotations?: Record<string, string> } }>('GET', `/api/v1/nodes/${NODE}`);
          return n.metadata.annotations?.['conntrack.safe-termination.io/udp-timeout'] === String(udpTimeout);
        }, () => a.output());
        return a;
      };
      let agent: HostProcess = await startAgent(reaperSettings[0]!);
      const kp = await startKubeProxy(plane, world, NODE, proxy, cleanup);
      const rules = new RuleWatcher(world.node, proxy, (c) => log(`kube-proxy (${proxy}): ${c.key} ${c.removed.length > 0 ? `-${c.removed.join(',')}` : ''}${c.added.length > 0 ? ` +${c.added.join(',')}` : ''} → [${c.now.join(', ')}]`));
      rules.start(100);
      cleanup.add('stop the rule watcher', async () => rules.stop());
      const kubelet = new LabKubelet(plane, world, NODE, log);
      kubelet.start();
      cleanup.add('stop the lab kubelet', () => kubelet.stop());
      out(`kube-proxy --proxy-mode=${proxy} in ${world.node}:\n`);
      for (const [i, reaper] of reaperSettings.entries()) {
        if (i > 0) {
          await agent.stop();
          agent = await startAgent(reaper);
        }
        for (const mode of modes) {
          const label = `${proxy} / ${mode}${reaperArg === 'on' ? '' : ` / reaper ${reaper ? 'on' : 'off'}`}`;
          out(`${label}:\n`);
          steps.step(`${label} (run ${results.length + 1} of ${totalRuns})`);
          const r = await runKubeScenario({ plane, world, kubelet, rules, proxy, cleanup, log, reaper }, mode, cfg);
          r.reaped.push(...reaperLines(agent, r.namespace));
          results.push(r);
        }
      }
      await kubelet.stop();
      rules.stop();
      await agent.stop();
      kp.child.kill('SIGTERM');
    }

    const figs: StepFigures[] = results.flatMap((r) => figures(r));
    const v = verdict(figs);
    if (values.plot !== undefined) {
      steps.step(`drawing the timelines into ${values.plot}`);
      const subtitle = `${versions['kubernetes']} (kube-proxy ${proxyModes.join(', ')}); node udp-timeout ${udpTimeout}s, pods annotated propagation-delay ${cfg.propagationDelay}; npm run lab -- --kube${short ? ' --short' : ''}; ${new Date().toISOString().slice(0, 10)}`;
      mkdirSync(dirname(values.plot), { recursive: true });
      writeFileSync(values.plot, plotTimelines(results, { subtitle }));
      process.stderr.write(`lab: timeline written to ${values.plot}\n`);
    }
    if (values.json) {
      process.stdout.write(
        JSON.stringify(
          { versions, config: cfg, runs: figs.map((f) => (values.events ? f : { ...f, events: undefined })), verdict: v },
          null,
          2,
        ) + '\n',
      );
    } else {
      out('\n' + formatTable(figs) + '\n' + LEGEND + '\n');
      if (reaperArg !== 'on') out('the conntrack reaper, on and off:\n' + formatReaperTable(figs) + '\n' + REAPER_LEGEND + '\n');
      for (const line of v.lines) out(`${line}\n`);
    }
    return values.check && !v.ok ? 1 : 0;
  } catch (error) {
    process.stderr.write(`lab: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return 3;
  } finally {
    await cleanup.run();
    clearTimeout(hardLimit);
  }
}
