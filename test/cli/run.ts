/** Run `inject`/`explain` in-process with captured streams, or as the real command. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runExplain } from '../../src/cli/explain.ts';
import { runInject } from '../../src/cli/inject.ts';
import type { CliIO } from '../../src/cli/command-options.ts';
import { REPO_ROOT } from '../support/webhook.ts';

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export async function runCli(command: 'inject' | 'explain', argv: readonly string[], o: { stdin?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const io: CliIO = {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    readStdin: async () => {
      if (o.stdin === undefined) throw new Error('the test gave no stdin');
      return o.stdin;
    },
    env: o.env ?? {},
  };
  const code = await (command === 'inject' ? runInject(argv, io) : runExplain(argv, io));
  return { code, stdout, stderr };
}

const NODE = join(REPO_ROOT, 'node_modules/.bin/node');
const MAIN = join(REPO_ROOT, 'src/cli/main.ts');

/** The real command in a child process (exit code, stdin, stdout as a user sees them). */
export function spawnCli(argv: readonly string[], o: { stdin?: string; cwd?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [MAIN, ...argv], { cwd: o.cwd ?? REPO_ROOT, env: { PATH: process.env['PATH'] ?? '', ...o.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(o.stdin ?? '');
  });
}
