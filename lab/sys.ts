/**
 * The lab's contact with the machine: run commands (ip, iptables-restore,
 * conntrack, sysctl), check prerequisites, and keep a cleanup list that runs on
 * normal exit, failure, Ctrl-C and SIGTERM.
 */
import { execFile, spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

export class CommandError extends Error {
  readonly stderr: string;
  constructor(message: string, stderr: string) {
    super(message);
    this.name = 'CommandError';
    this.stderr = stderr;
  }
}

/** Run a command; resolve with stdout, reject with a message carrying stderr. */
export function run(cmd: string, args: readonly string[], options: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: options.timeoutMs ?? 10_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const detail = stderr.trim() || error.message;
        reject(new CommandError(`${cmd} ${args.join(' ')}: ${detail}`, stderr));
      } else {
        resolve(stdout);
      }
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/**
 * Run a command inside a network namespace. nsenter (util-linux) enters only the
 * network namespace; `ip netns exec` would also remount /sys, three times slower.
 */
export function inNs(ns: string, cmd: string, args: readonly string[], options: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  return run('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], options);
}

/** The conntrack listing of a namespace, raw text (stdout only; the summary goes to stderr). */
export function conntrackList(ns: string, protocol?: 'udp' | 'tcp'): Promise<string> {
  return inNs(ns, 'conntrack', ['-L', '-o', 'extended', ...(protocol ? ['-p', protocol] : [])]);
}

export async function which(cmd: string): Promise<string | undefined> {
  // The PATH the lab will spawn with (as root it holds /usr/sbin, where ip and iptables live).
  const dirs = (process.env['PATH'] ?? '').split(delimiter).filter((d) => d !== '');
  for (const dir of dirs) {
    const path = join(dir, cmd);
    try {
      await access(path, fsConstants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return undefined;
}

export interface Prerequisites {
  readonly ok: boolean;
  readonly problems: readonly string[];
  /** `nf_tables` or `legacy`, from `iptables --version`. */
  readonly iptablesBackend: string | undefined;
}

/** Root, and the tools from Debian packages iproute2, iptables, conntrack, procps. */
export async function checkPrerequisites(): Promise<Prerequisites> {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('not root: network namespaces, iptables and conntrack need root (run with sudo)');
  const missing: string[] = [];
  const pkg: Record<string, string> = { ip: 'iproute2', iptables: 'iptables', 'iptables-restore': 'iptables', conntrack: 'conntrack', sysctl: 'procps', nsenter: 'util-linux' };
  for (const tool of Object.keys(pkg)) if ((await which(tool)) === undefined) missing.push(tool);
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map((m) => pkg[m]))].join(' ');
    problems.push(`missing ${missing.join(', ')}: install with apt-get install -y ${pkgs} (Debian/Ubuntu)`);
  }
  let iptablesBackend: string | undefined;
  if (!missing.includes('iptables')) {
    try {
      const version = await run('iptables', ['--version']);
      iptablesBackend = /\((nf_tables|legacy)\)/.exec(version)?.[1] ?? 'legacy';
    } catch {
      // reported below when used
    }
  }
  return { ok: problems.length === 0, problems, iptablesBackend };
}

/** Cleanup actions, run last-in first-out, once, also on signals. */
export class Cleanup {
  readonly #actions: { name: string; fn: () => Promise<void> }[] = [];
  #running: Promise<void> | undefined;
  #installed = false;

  add(name: string, fn: () => Promise<void>): void {
    this.#actions.push({ name, fn });
  }

  /** Run every action (errors are printed, not thrown). */
  run(): Promise<void> {
    this.#running ??= (async () => {
      while (this.#actions.length > 0) {
        const action = this.#actions.pop()!;
        try {
          await action.fn();
        } catch (error) {
          process.stderr.write(`lab cleanup: ${action.name}: ${error instanceof Error ? error.message : String(error)}\n`);
        }
      }
    })();
    const done = this.#running;
    done.finally(() => {
      this.#running = undefined;
    }).catch(() => undefined);
    return done;
  }

  /** On SIGINT/SIGTERM/SIGHUP: clean up, then exit 130/143. */
  installSignalHandlers(): void {
    if (this.#installed) return;
    this.#installed = true;
    const onSignal = (signal: NodeJS.Signals): void => {
      process.stderr.write(`\nlab: ${signal}: cleaning up\n`);
      this.run().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    process.once('SIGHUP', onSignal);
  }
}

/** A child process in a namespace (nsenter execs it: the child's pid is the command's), stdout split into lines. */
export function spawnInNs(ns: string, argv: readonly string[], onLine: (line: string) => void): ReturnType<typeof spawn> {
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      onLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    process.stderr.write(d.replace(/^/gm, `[${ns}] `));
  });
  return child;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
