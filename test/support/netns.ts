/**
 * Private network namespaces for tests: each has its own loopback and
 * its own per-namespace conntrack sysctls. Created as `st-test-<pid>-<n>`,
 * deleted in teardown. Needs root and iproute2.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import type { Test } from 'tap';
import { REPO_ROOT } from './webhook.ts';

let counter = 0;

/** Why netns tests cannot run here, or false when they can. */
export function netnsSkipReason(): string | false {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (run the suite as root, as CI does)';
  const ip = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (ip.error !== undefined) return '`ip` (iproute2) is not installed';
  return false;
}

export interface Netns {
  readonly name: string;
  /** Run a command inside; throws with its stderr when it fails. */
  exec(args: readonly string[]): string;
  sysctl(key: string, value: string | number): void;
  readSysctl(key: string): string;
  /** Spawn a long-running process inside the namespace (killed in teardown). */
  spawn(args: readonly string[], options?: SpawnOptions): ChildProcess;
}

function run(args: readonly string[]): string {
  const r = spawnSync(args[0]!, args.slice(1), { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined) throw r.error;
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Create a namespace with loopback up; deleted (with its processes stopped) at the end of `t`. */
export function createNetns(t: Test): Netns {
  const name = `st-test-${process.pid}-${++counter}`;
  run(['ip', 'netns', 'add', name]);
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
        const exited = new Promise<void>((r) => c.once('exit', () => r()));
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
    }
    spawnSync('ip', ['netns', 'delete', name], { timeout: 10_000 });
  });
  const exec = (args: readonly string[]): string => run(['ip', 'netns', 'exec', name, ...args]);
  exec(['ip', 'link', 'set', 'lo', 'up']);
  return {
    name,
    exec,
    sysctl: (key, value) => void exec(['sysctl', '-q', '-w', `${key}=${value}`]),
    readSysctl: (key) => exec(['sysctl', '-n', key]).trim(),
    spawn: (args, options = {}) => {
      const child = spawn('ip', ['netns', 'exec', name, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
      children.push(child);
      return child;
    },
  };
}

/** The first line a child prints on stdout (e.g. a port), or an error after `timeoutMs`. */
export function firstLine(child: ChildProcess, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`no output in ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
    child.stderr?.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before printing; stderr: ${err}`));
    });
  });
}

/** A TCP port on the namespace's loopback that reaches `socketPath` (see netns-bridge.ts). */
export async function bridgeToSocket(ns: Netns, socketPath: string): Promise<number> {
  const child = ns.spawn([process.execPath, join(REPO_ROOT, 'test/support/netns-bridge.ts'), socketPath]);
  return Number(await firstLine(child));
}
