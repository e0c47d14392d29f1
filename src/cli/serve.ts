/** `safe-termination serve`: parse flags, start the webhook, handle signals. */
import { parseServeConfig, SERVE_FLAGS } from '../config.ts';
import { createLogger } from '../server/logger.ts';
import { startWebhook } from '../server/serve.ts';
import { flagHelp, wantsHelp } from './help.ts';

const HELP = `Usage: safe-termination serve --tls-cert-file FILE --tls-private-key-file FILE [flags]

Runs the mutating admission webhook: POST /mutate, GET /healthz and GET /readyz
over HTTPS, Prometheus metrics over plain HTTP on --metrics-port.
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
  const webhook = await startWebhook(config, log);
  return new Promise<number>((resolve) => {
    let signals = 0;
    const stop = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        process.exit(1);
      }
      // SIGTERM comes from the kubelet: wait for endpoints to drop us. SIGINT is a person.
      const delay = signal === 'SIGTERM' ? undefined : 0;
      webhook.shutdown(delay).then(
        () => resolve(0),
        (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
