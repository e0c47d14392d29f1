/** Long-running commands: stop on SIGTERM or SIGINT; a second signal exits at once. */
import type { Logger } from '../shared/logger.ts';

/**
 * After a clean stop the process ends by itself once nothing is open. A request
 * that cannot be aborted would hold it much longer: client-node's Watch has no
 * way to cancel a watch whose response headers have not come yet (a hung API
 * server), and it waits out its 90 s idle deadline. So the process exits this
 * long after the stop at the latest; logs are flushed on exit.
 */
export const EXIT_AFTER_STOP_MS = 1000;

/** Resolves to the exit code once `stop` has finished (0) or failed (1). */
export function runUntilSignal(log: Logger, stop: (signal: NodeJS.Signals) => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let signals = 0;
    const finish = (code: number): void => {
      resolve(code);
      setTimeout(() => process.exit(code), EXIT_AFTER_STOP_MS).unref();
    };
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        process.exit(1);
      }
      stop(signal).then(
        () => finish(0),
        (error: unknown) => {
          log.error({ problem: error instanceof Error ? error.message : String(error) }, 'stop failed');
          finish(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
