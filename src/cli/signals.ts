/** Long-running commands: stop on SIGTERM or SIGINT; a second signal exits at once. */
import type { Logger } from '../server/logger.ts';

/** Resolves to the exit code once `stop` has finished (0) or failed (1). */
export function runUntilSignal(log: Logger, stop: (signal: NodeJS.Signals) => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        process.exit(1);
      }
      stop(signal).then(
        () => resolve(0),
        (error: unknown) => {
          log.error({ problem: error instanceof Error ? error.message : String(error) }, 'stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
