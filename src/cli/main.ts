#!/usr/bin/env node
/** The `safe-termination` command: subcommand dispatch only. */
import { CodedError, UsageError } from '../shared/errors.ts';
import { MIN_NODE_VERSION, olderThan, PRODUCT, VERSION } from '../shared/version.ts';

const USAGE = `${PRODUCT} ${VERSION}: inject safe pod termination (preStop sleep + grace period)

Usage: ${PRODUCT} <command> [flags]

Commands:
  serve     run the mutating admission webhook (HTTPS)
  agent     run the node agent: publish this node's conntrack timeouts as Node annotations
  inject    add the preStop sleep and grace period to manifests (offline, same decision)
  explain   show what inject and the webhook would do to manifests, and why
  diagnose  list stale conntrack entries (DNAT to gone endpoints) by Service
  version   print the version

Run '${PRODUCT} <command> --help' for the flags of a command.
`;

type Command = (argv: readonly string[]) => Promise<number>;

// Loaded on use: each command pulls in only its own dependencies.
const COMMANDS: Readonly<Record<string, Command>> = {
  serve: async (argv) => (await import('./serve.ts')).runServe(argv),
  agent: async (argv) => (await import('./agent.ts')).runAgent(argv),
  inject: async (argv) => (await import('./inject.ts')).runInject(argv),
  explain: async (argv) => (await import('./explain.ts')).runExplain(argv),
  diagnose: async (argv) => (await import('./diagnose.ts')).runDiagnose(argv),
  version: async (argv) => {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(`Usage: ${PRODUCT} version\n\nPrints the version (${VERSION}) and exits.\n`);
      return 0;
    }
    if (argv[0] !== undefined) throw new UsageError('UNEXPECTED_ARGUMENT', { command: 'version', argument: argv[0] });
    process.stdout.write(`${VERSION}\n`);
    return 0;
  },
};

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (olderThan(process.versions.node, MIN_NODE_VERSION)) {
    process.stderr.write(`${PRODUCT}: needs Node ${MIN_NODE_VERSION} or newer; this is Node ${process.versions.node}\n`);
    return 1;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') return COMMANDS['version']!(rest);
  const command = COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`${PRODUCT}: unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (error) {
    if (error instanceof CodedError) {
      process.stderr.write(`${PRODUCT} ${name}: ${error.message}\n`);
      return error.exit;
    }
    process.stderr.write(`${PRODUCT} ${name}: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${PRODUCT}: ${String(error)}\n`);
    process.exitCode = 1;
  },
);
