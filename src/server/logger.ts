/** JSON logs (pino). Pod specs are never logged: only uid, name and decision. */
import { pino } from 'pino';
import type { Logger } from 'pino';
import type { LogLevel } from '../config.ts';
import { PRODUCT, VERSION } from '../version.ts';

export type { Logger };

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { name: PRODUCT, version: VERSION },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Belt and braces: never print an object or a token even if one is passed.
      redact: { paths: ['object', 'request.object', 'token', 'authorization'], censor: '[redacted]' },
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
