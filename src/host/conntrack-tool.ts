/**
 * Run the `conntrack` tool (conntrack-tools) and return its listing, parsed.
 * `conntrack -L` lists every address family in current conntrack-tools (1.4.7
 * prints ipv4 and ipv6 lines) but only IPv4 in old ones; when the first listing
 * has no IPv6 line, `-f ipv6` is asked for too (an error there, on a host without
 * IPv6 conntrack, is not fatal).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseLine } from '../diagnose/conntrack.ts';
import type { ConntrackEntry, ParsedConntrack, SkippedLine } from '../diagnose/conntrack.ts';
import { CodedError } from '../shared/errors.ts';
import type { ErrorParams } from '../shared/errors.ts';

export type ConntrackToolCode = 'CONNTRACK_TOOL_MISSING' | 'CONNTRACK_TOOL_UNRUNNABLE' | 'CONNTRACK_TOOL_TIMEOUT' | 'CONNTRACK_TOOL_FAILED';

export class ConntrackToolError<C extends ConntrackToolCode = ConntrackToolCode> extends CodedError<C> {
  constructor(code: C, params: ErrorParams<C>) {
    super(code, params);
    this.name = 'ConntrackToolError';
  }
}

export interface ListOptions {
  /** The tool; default `conntrack`. */
  readonly bin?: string;
  /** Extra filter arguments after `-L` (e.g. `['-p', 'udp']`). */
  readonly filter?: readonly string[];
  readonly timeoutMs?: number;
  /** Called with each entry as it is parsed; the entries are then not collected (a large table in bounded memory). */
  readonly onEntry?: (entry: ConntrackEntry) => void;
}

const SUMMARY = /^conntrack v[\d.]+ \(conntrack-tools\): \d+ flow entries have been shown\.$/;

/** `conntrack -L -o extended` (and `-f ipv6` if needed); entries parsed line by line as they stream. */
export async function listConntrack(options: ListOptions = {}): Promise<ParsedConntrack> {
  const entries: ConntrackEntry[] = [];
  const skipped: SkippedLine[] = [];
  let ipv6 = false;
  const collect = (e: ConntrackEntry): void => {
    if (e.family === 'ipv6') ipv6 = true;
    if (options.onEntry !== undefined) options.onEntry(e);
    else entries.push(e);
  };
  await listOne(options, undefined, collect, skipped);
  if (!ipv6) {
    // Streamed when asked to; else kept apart until the listing has succeeded.
    const v6: ConntrackEntry[] = [];
    try {
      await listOne(options, 'ipv6', options.onEntry ?? ((e) => v6.push(e)), skipped);
    } catch {
      // No IPv6 conntrack on this host.
    }
    entries.push(...v6);
  }
  return { entries, skipped };
}

function listOne(options: ListOptions, family: string | undefined, collect: (e: ConntrackEntry) => void, skipped: SkippedLine[]): Promise<void> {
  const bin = options.bin ?? 'conntrack';
  const args = ['-L', '-o', 'extended', ...(family === undefined ? [] : ['-f', family]), ...(options.filter ?? [])];
  return new Promise<void>((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let lineNumber = 0;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new ConntrackToolError('CONNTRACK_TOOL_TIMEOUT', { command: `${bin} ${args.join(' ')}`, ms: options.timeoutMs ?? 30000 }));
    }, options.timeoutMs ?? 30000);
    createInterface({ input: child.stdout }).on('line', (raw) => {
      lineNumber++;
      const line = raw.trim();
      if (line === '' || SUMMARY.test(line)) return;
      const r = parseLine(line);
      if (typeof r === 'string') skipped.push({ lineNumber, text: line, reason: r });
      else collect(r);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error.code === 'ENOENT'
          ? new ConntrackToolError('CONNTRACK_TOOL_MISSING', {
              bin,
              advice: "install the conntrack tool (Debian/Ubuntu package conntrack, RHEL/Fedora conntrack-tools), or pass --conntrack-file with the output of 'conntrack -L -o extended'",
            })
          : new ConntrackToolError('CONNTRACK_TOOL_UNRUNNABLE', { bin, reason: error.message }),
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) {
        resolve();
        return;
      }
      const detail = stderr.trim().split('\n').filter((l) => !SUMMARY.test(l.trim())).join('; ');
      const hint = /permission|not permitted/i.test(detail) ? ' (listing conntrack needs root or CAP_NET_ADMIN)' : '';
      reject(new ConntrackToolError('CONNTRACK_TOOL_FAILED', { command: `${bin} ${args.join(' ')}`, ended: `with exit code ${code}`, detail: detail || 'no message', hint }));
    });
  });
}
