/**
 * Processes under measurement: the real webhook from the production build and
 * the reference servers (ceiling, Fastify floor, bare handler), each its own
 * process; CPU and RSS read from /proc.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { httpsRequest } from '../test/support/webhook.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '..');
export const DIST_MAIN = join(REPO_ROOT, 'dist/src/cli/main.js');
const CEILING = join(REPO_ROOT, 'bench/ceiling.ts');
const FASTIFY_FLOOR = join(REPO_ROOT, 'bench/fastify-floor.ts');
/** Kernel clock ticks per second (USER_HZ): 100 on every Linux architecture Node supports. */
const CLOCK_TICKS = 100;

/** The servers the bench drives: the build under test, another build, and the three references. */
export type ServerName = 'webhook' | 'baseline' | 'ceiling' | 'fastify' | 'bare-handler';

export interface Served {
  readonly name: ServerName;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly metricsPort: number | undefined;
  /** Resolves with the exit code (or the signal name) and the ms from the last signal sent to exit. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  signal(signal: NodeJS.Signals): void;
  /** SIGINT (no shutdown delay) and wait for exit; SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** The log file's text so far (webhook only). */
  log(): string;
}

export interface CertFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: Buffer;
}

/** Children still running; killed if this process exits first (a failed run leaves nothing behind). */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

function track(child: ChildProcess): Served['exited'] {
  live.add(child);
  return new Promise((res) =>
    child.once('exit', (code, signal) => {
      live.delete(child);
      res({ code, signal });
    }),
  );
}

async function waitFor<T>(what: string, read: () => T | undefined, ms: number, child: ChildProcess, output: () => string): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = read();
    if (v !== undefined) return v;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not up within ${ms} ms:\n${output()}`);
}

function makeServed(name: ServerName, child: ChildProcess, port: number, metricsPort: number | undefined, log: () => string, exited: Served['exited']): Served {
  return {
    name,
    child,
    pid: child.pid ?? 0,
    port,
    metricsPort,
    exited,
    log,
    signal: (s) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(s);
    },
    stop: async (graceMs = 10_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface WebhookProcessOptions {
  readonly certs: CertFiles;
  /** Where the webhook's JSON log goes (its stdout and stderr). */
  readonly logFile: string;
  readonly nodeArgs?: readonly string[];
  readonly args?: readonly string[];
  readonly env?: Record<string, string>;
  /** Another build's main.js (e.g. a copy of dist/ from before a change); default dist/. */
  readonly main?: string;
  /** Name in the tables; default "webhook". */
  readonly name?: 'webhook' | 'baseline';
  /** Run on these CPUs only (taskset -c), e.g. "0". */
  readonly cpus?: string;
}

/** A TCP port free on 127.0.0.1 right now (the kernel's pick). */
export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const address = server.address();
  await new Promise<void>((res) => server.close(() => res()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

async function healthy(port: number, ca: Buffer): Promise<boolean> {
  try {
    return (await httpsRequest(`https://127.0.0.1:${port}/healthz`, { method: 'GET', ca })).status === 200;
  } catch {
    return false;
  }
}

/**
 * `node dist/src/cli/main.js serve` on loopback ports picked beforehand (so any
 * log level works); resolves once /healthz answers.
 */
export async function startWebhookProcess(o: WebhookProcessOptions): Promise<Served> {
  const main = o.main ?? DIST_MAIN;
  if (!existsSync(main)) throw new Error(`${main} is missing: run npm run build first`);
  const port = await freePort();
  const metricsPort = await freePort();
  const fd = openSync(o.logFile, 'w');
  const [command, prefix] = pinned(o.cpus);
  const child = spawn(
    command,
    [
      ...prefix,
      ...(o.nodeArgs ?? []),
      main,
      'serve',
      '--port', String(port),
      '--metrics-port', String(metricsPort),
      '--bind-address', '127.0.0.1',
      '--tls-cert-file', o.certs.certFile,
      '--tls-private-key-file', o.certs.keyFile,
      '--log-level', 'info',
      ...(o.args ?? []),
    ],
    { stdio: ['ignore', fd, fd], env: { ...process.env, ...o.env } },
  );
  closeSync(fd);
  const exited = track(child);
  const log = () => readFileSync(o.logFile, 'utf8');
  let up = false;
  const poll = async (): Promise<void> => {
    up = await healthy(port, o.certs.ca);
  };
  await waitFor('webhook', () => (up ? true : (void poll(), undefined)), 30_000, child, log);
  return makeServed(o.name ?? 'webhook', child, port, metricsPort, log, exited);
}

/** The bare Node HTTPS server: same certificate, parses the body, fixed answer. */
export function startCeilingProcess(certs: CertFiles, nodeArgs: readonly string[] = [], cpus?: string): Promise<Served> {
  return startReferenceProcess('ceiling', CEILING, certs, nodeArgs, cpus);
}

/** Fastify with the webhook's server options: parses the body, fixed answer. */
export function startFastifyFloorProcess(certs: CertFiles, nodeArgs: readonly string[] = [], cpus?: string): Promise<Served> {
  return startReferenceProcess('fastify', FASTIFY_FLOOR, certs, nodeArgs, cpus);
}

/** The ceiling's bare server running the webhook's body parse and review handler (no Fastify, metrics, logs). */
export function startBareHandlerProcess(certs: CertFiles, nodeArgs: readonly string[] = [], cpus?: string): Promise<Served> {
  return startReferenceProcess('bare-handler', CEILING, certs, nodeArgs, cpus, ['--with-handler']);
}

/** A reference server script that prints {"port":N} on stdout once listening. */
async function startReferenceProcess(
  name: ServerName,
  script: string,
  certs: CertFiles,
  nodeArgs: readonly string[],
  cpus: string | undefined,
  args: readonly string[] = [],
): Promise<Served> {
  const [command, prefix] = pinned(cpus);
  const child = spawn(command, [...prefix, ...nodeArgs, script, certs.certFile, certs.keyFile, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = track(child);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const port = await waitFor(name, () => {
    const m = /"port":(\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  }, 30_000, child, () => out);
  return makeServed(name, child, port, undefined, () => out, exited);
}

/** node, or `taskset -c CPUS node` (taskset execs node: the child's pid is node's). */
function pinned(cpus: string | undefined): [string, string[]] {
  return cpus === undefined ? [process.execPath, []] : ['taskset', ['-c', cpus, process.execPath]];
}

/** Pins every thread of this process to `cpus` (taskset -a). */
export function pinSelf(cpus: string): void {
  execFileSync('taskset', ['-a', '-c', '-p', cpus, String(process.pid)], { stdio: 'ignore' });
}

export interface ProcSample {
  /** CPU seconds (user + system) used so far. */
  readonly cpuSeconds: number;
  readonly rssBytes: number;
}

export function sampleProcess(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start at state (field 3).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return { cpuSeconds: (utime + stime) / CLOCK_TICKS, rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/** Samples a process every `everyMs` while a measurement runs: max RSS and CPU used. */
export class ProcessMeter {
  private readonly pid: number;
  private readonly start: ProcSample;
  private readonly startedAt = process.hrtime.bigint();
  private readonly timer: NodeJS.Timeout;
  private maxRss = 0;
  readonly rssSamples: number[] = [];

  constructor(pid: number, everyMs = 250) {
    this.pid = pid;
    const s = sampleProcess(pid);
    if (s === undefined) throw new Error(`process ${pid} is gone`);
    this.start = s;
    this.maxRss = s.rssBytes;
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  private sample(): ProcSample | undefined {
    const s = sampleProcess(this.pid);
    if (s !== undefined) {
      this.maxRss = Math.max(this.maxRss, s.rssBytes);
      this.rssSamples.push(s.rssBytes);
    }
    return s;
  }

  /** CPU seconds used, the share of one core over the wall time, max RSS. */
  finish(): { cpuSeconds: number; cpuShare: number; maxRssBytes: number; rssBytes: number } {
    clearInterval(this.timer);
    const end = this.sample() ?? this.start;
    const wall = Number(process.hrtime.bigint() - this.startedAt) / 1e9;
    const cpu = end.cpuSeconds - this.start.cpuSeconds;
    return { cpuSeconds: cpu, cpuShare: wall > 0 ? cpu / wall : 0, maxRssBytes: this.maxRss, rssBytes: end.rssBytes };
  }
}

/** The 1-minute load average, as `uptime` prints it. */
export function load1(): number {
  return loadavg()[0] ?? 0;
}

export function uptimeLine(): string {
  const [a, b, c] = loadavg();
  return `load average: ${a?.toFixed(2)}, ${b?.toFixed(2)}, ${c?.toFixed(2)}`;
}
