/** Help text for a flag table: flag, environment variable, default, meaning. */
import type { FlagSpec } from '../config.ts';
import { camelToKebab, flagEnvName } from '../config.ts';

export function formatDefault(value: unknown): string {
  if (value === undefined) return 'unset';
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  const v = value as { major?: number; minor?: number };
  return `${v.major ?? '?'}.${v.minor ?? '?'}`;
}

export function flagHelp(specs: Readonly<Record<string, FlagSpec<unknown>>>): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(specs)) {
    lines.push(`  --${camelToKebab(name)}  (${flagEnvName(name)}, default ${formatDefault(spec.default)})`);
    lines.push(`      ${spec.description}; ${spec.accepted}`);
  }
  return lines.join('\n');
}

export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}
