/** JSON logs (pino). Pod specs are never logged: only uid, name and decision. */
import { pino } from 'pino';
import type { Logger } from 'pino';
import { PRODUCT, VERSION } from './version.ts';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Buffered log lines beyond this are dropped rather than held: a stalled stdout must not grow memory. */
export const MAX_BUFFERED_LOG_BYTES = 16 * 1024 * 1024;

/** Lines are written in batches of this many bytes at least… */
export const LOG_BATCH_BYTES = 4096;
/** …or after this long, whichever comes first. */
export const LOG_FLUSH_INTERVAL_MS = 500;

/**
 * stdout, written asynchronously and in batches: a log line never blocks an
 * admission on a slow stdout pipe, and under load one write carries many lines
 * instead of one write (and one thread-pool hand-off) per line. A quiet webhook's
 * lines go out within LOG_FLUSH_INTERVAL_MS; pino flushes what is left
 * synchronously when the process exits (a SIGKILL loses at most one batch).
 */
function stdoutDestination(): pino.DestinationStream {
  return pino.destination({ fd: 1, sync: false, minLength: LOG_BATCH_BYTES, periodicFlush: LOG_FLUSH_INTERVAL_MS, maxLength: MAX_BUFFERED_LOG_BYTES });
}

let lastMs = Number.NaN;
let lastTime = '';

/** pino's isoTime, formatted once per millisecond instead of once per line. */
export function isoTime(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { name: PRODUCT, version: VERSION },
      timestamp: isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Belt and braces: never print an object or a token even if one is passed.
      redact: { paths: ['object', 'request.object', 'token', 'authorization'], censor: '[redacted]' },
    },
    destination ?? stdoutDestination(),
  );
}
