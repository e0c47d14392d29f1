/**
 * Generated parts of README.md: the flag tables and the error codes, between marker comments.
 * `node scripts/docs.ts` rewrites them; `--check` fails when they are stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FlagSpec } from '../src/cli/config.ts';
import { camelToKebab, flagEnvName, SERVE_FLAGS } from '../src/cli/config.ts';
import * as config from '../src/cli/config.ts';
import { formatDefault } from '../src/cli/help.ts';
import { ERRORS } from '../src/shared/errors.ts';

const README = fileURLToPath(new URL('../README.md', import.meta.url));

export function flagTable(specs: Readonly<Record<string, FlagSpec<unknown>>>): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const shown = formatDefault(spec);
    const dflt = shown === 'unset' ? 'unset' : `\`${shown}\``;
    return `| \`--${camelToKebab(name)}\` | \`${flagEnvName(name)}\` | ${dflt} | ${spec.description}; ${spec.accepted} |`;
  });
  return ['| flag | environment | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/** The error table: code, HTTP status or exit status, meaning. */
export function errorTable(): string {
  const rows = Object.entries(ERRORS).map(([code, spec]) => {
    const status = 'status' in spec ? String(spec.status) : '';
    const exit = 'exit' in spec ? String(spec.exit) : '';
    return `| \`${code}\` | ${status} | ${exit} | ${spec.meaning} |`;
  });
  return ['| code | HTTP status | exit status | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

function sections(): Record<string, string> {
  const out: Record<string, string> = { 'serve-flags': flagTable(SERVE_FLAGS), 'error-codes': errorTable() };
  const agent = (config as Record<string, unknown>)['AGENT_FLAGS'] as Readonly<Record<string, FlagSpec<unknown>>> | undefined;
  if (agent) out['agent-flags'] = flagTable(agent);
  return out;
}

export function render(readme: string): string {
  let text = readme;
  for (const [name, body] of Object.entries(sections())) {
    const re = new RegExp(`(<!-- ${name}:start -->)[\\s\\S]*?(<!-- ${name}:end -->)`);
    if (!re.test(text)) throw new Error(`README.md has no <!-- ${name}:start --> … <!-- ${name}:end --> section`);
    text = text.replace(re, (_m, a: string, b: string) => `${a}\n${body}\n${b}`);
  }
  return text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const current = readFileSync(README, 'utf8');
  const next = render(current);
  if (process.argv.includes('--check')) {
    if (next !== current) {
      process.stderr.write('README.md generated tables are stale: run `npm run docs`\n');
      process.exit(1);
    }
  } else if (next !== current) {
    writeFileSync(README, next);
    process.stdout.write('README.md updated\n');
  }
}
