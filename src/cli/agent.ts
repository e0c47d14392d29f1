/** `safe-termination agent`: parse flags, start the node agent, stop on SIGTERM/SIGINT. */
import { AGENT_FLAGS, parseAgentConfig } from './config.ts';
import { UsageError } from '../shared/errors.ts';
import { createLogger } from '../shared/logger.ts';
import { runUntilSignal } from './signals.ts';
import { flagHelp, wantsHelp } from './help.ts';

const HELP = `Usage: safe-termination agent --node-name NODE [flags]

Runs the node agent (a DaemonSet with hostNetwork: true): reads this node's
conntrack sysctls (nf_conntrack_udp_timeout, …) at start and every --interval,
and writes them to the Node as conntrack.safe-termination.io/<name> annotations
(with a merge patch, only when a value changed), where the webhook reads them.
Serves GET /healthz and Prometheus metrics (table usage, the kernel's conntrack
counters, the published timeouts) over plain HTTP on --metrics-port.
In a pod it uses the service account; elsewhere pass --kubeconfig, or it only
serves metrics.

With --stale-conntrack-interval (off by default) it also reads the node's whole
conntrack table (/proc/net/nf_conntrack: group 0 suffices; else the conntrack
tool) every interval and exports the entries a Service sent to an endpoint that is
gone or not serving, per Service and protocol, as
safe_termination_conntrack_stale_entries — what 'safe-termination diagnose'
prints. It watches Services and EndpointSlices for that (list/watch RBAC).

Example:
  safe-termination agent --node-name "$NODE_NAME" --interval 60s
  safe-termination agent --node-name "$NODE_NAME" --stale-conntrack-interval 2m

Flags:
${flagHelp(AGENT_FLAGS)}
`;

export async function runAgent(argv: readonly string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(HELP);
    return 0;
  }
  const config = parseAgentConfig(argv, process.env);
  // Loaded here, not at the top: other commands do not pay for the agent's modules.
  const [{ startAgent }, { resolveAgentAccess }] = await Promise.all([import('../agent/agent.ts'), import('../cluster/lean-kubeconfig.ts')]);
  const access = await resolveAgentAccess({ kubeconfig: config.kubeconfig, env: process.env });
  if (access.kind !== 'none' && config.nodeName === undefined) {
    throw new UsageError('MISSING_FLAG', { flag: '--node-name (or NODE_NAME)', why: ' to publish the Node annotations' });
  }
  const log = createLogger(config.logLevel);
  const agent = await startAgent(config, log, access);
  return runUntilSignal(log, () => agent.stop());
}
