/** Help text for a flag table: flag, environment variable, default, meaning. */
import type { FlagSpec } from './config.ts';
import { camelToKebab, flagEnvName } from './config.ts';

export function formatDefault(spec: FlagSpec<unknown>): string {
  const value = spec.default;
  if (spec.show) return spec.show(value);
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  return 'unset';
}

export function flagHelp(specs: Readonly<Record<string, FlagSpec<unknown>>>): string {
  const lines: string[] = [];
  for (const [name, spec] of Object.entries(specs)) {
    lines.push(`  --${camelToKebab(name)}  (${flagEnvName(name)}, default ${formatDefault(spec)})`);
    lines.push(`      ${spec.description}; ${spec.accepted}`);
  }
  return lines.join('\n');
}

export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}
