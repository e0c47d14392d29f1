/** `safe-termination serve`: parse flags, start the webhook, handle signals. */
import { selectFactsWiring } from '../cluster/facts.ts';
import { parseServeConfig, SERVE_FLAGS } from './config.ts';
import { createLogger } from '../shared/logger.ts';
import { startWebhook } from '../server/serve.ts';
import { flagHelp, wantsHelp } from './help.ts';
import { runUntilSignal } from './signals.ts';

const HELP = `Usage: safe-termination serve --tls-cert-file FILE --tls-private-key-file FILE [flags]

Runs the mutating admission webhook: POST /mutate, GET /healthz and GET /readyz
over HTTPS, Prometheus metrics over plain HTTP on --metrics-port.
Conntrack facts: in a pod (or with --kubeconfig), the agent's Node annotations,
then kube-proxy's ConfigMap, then the static values; elsewhere this machine's
/proc/sys/net/netfilter, then the static values.
Durations take whole seconds ("35") or h/m/s units ("2m", "1m30s").

Example:
  safe-termination serve --tls-cert-file certs/dev/tls.crt --tls-private-key-file certs/dev/tls.key

Flags:
${flagHelp(SERVE_FLAGS)}
`;

export async function runServe(argv: readonly string[]): Promise<number> {
  if (wantsHelp(argv)) {
    process.stdout.write(HELP);
    return 0;
  }
  const config = parseServeConfig(argv, process.env);
  const log = createLogger(config.logLevel);
  const webhook = await startWebhook(config, log, selectFactsWiring(process.env));
  // SIGTERM comes from the kubelet: wait for endpoints to drop us. SIGINT is a person.
  return runUntilSignal(log, (signal) => webhook.shutdown(signal === 'SIGTERM' ? undefined : 0));
}
