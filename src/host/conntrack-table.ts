/**
 * Read this network namespace's whole conntrack table, entry by entry, without
 * holding it: the agent's source for counting stale entries.
 *
 * 1. `/proc/net/nf_conntrack` (kernels with CONFIG_NF_CONNTRACK_PROCFS; mode 0440
 *    root:root, so group 0 suffices: no capability). Its lines are what
 *    `conntrack -L -o extended` prints — that tool imitates this file — except
 *    that IPv6 addresses are written in full (`%pI6`: `fd00:0010:…:000a`), which is
 *    turned into the canonical form Kubernetes uses (`fd00:10::a`), and that it
 *    always prints `zone=`. Read in large chunks: the kernel walks the table from
 *    its start on every read(2), so few big reads cost far less than many small.
 * 2. The `conntrack` tool (netlink; needs CAP_NET_ADMIN), when the file cannot be
 *    read and the tool is installed.
 *
 * A source that fails before delivering any entry is skipped for the next; when
 * none works, `ConntrackUnreadableError` says why for each.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { parseLine } from '../diagnose/conntrack.ts';
import type { ConntrackEntry } from '../diagnose/conntrack.ts';
import type { TallyEntry } from '../diagnose/tally.ts';
import { ConntrackToolError, listConntrack } from './conntrack-tool.ts';
import { CodedError } from '../shared/errors.ts';
import type { ErrorParams } from '../shared/errors.ts';

export type ConntrackSource = 'proc' | 'tool';

export class ConntrackUnreadableError extends CodedError<'CONNTRACK_UNREADABLE'> {
  /** Why each source failed, in the order tried. */
  readonly reasons: Readonly<Record<ConntrackSource, string>>;
  constructor(reasons: Record<ConntrackSource, string>) {
    super('CONNTRACK_UNREADABLE', reasons);
    this.name = 'ConntrackUnreadableError';
    this.reasons = reasons;
  }
}

/** A read that stopped part-way (I/O error, deadline): the entries delivered are incomplete. */
export class ConntrackReadError<C extends 'CONNTRACK_READ_STOPPED' | 'CONNTRACK_READ_TIMEOUT' = 'CONNTRACK_READ_STOPPED' | 'CONNTRACK_READ_TIMEOUT'> extends CodedError<C> {
  constructor(code: C, params: ErrorParams<C>) {
    super(code, params);
    this.name = 'ConntrackReadError';
  }
}

export interface TableRead {
  readonly source: ConntrackSource;
  /** Entries delivered. */
  readonly entries: number;
  /** Lines that were not entries (a format this parser does not know). */
  readonly skipped: number;
  readonly firstSkipped: string | undefined;
}

/** How long a whole-table read may take unless told otherwise; a 1,000,000-entry table takes 10 to 20 s. */
export const DEFAULT_READ_DEADLINE_MS = 60_000;

export interface ConntrackTableOptions {
  /** Directory of the `nf_conntrack` file (the agent's --proc-net-dir). */
  readonly procNetDir: string;
  /** The conntrack tool; default `conntrack` (on PATH). */
  readonly bin?: string;
  /** A read taking longer than this is abandoned (bounds the CPU a huge table can take). */
  readonly deadlineMs?: number;
  /** Bytes per read(2). */
  readonly chunkBytes?: number;
}

const FULL_IPV6 = /(?<=(?:^|\s)(?:src|dst)=)[0-9a-f]{4}(?::[0-9a-f]{4}){7}(?=\s|$)/g;
const FULL_IPV6_VALUE = /^[0-9a-f]{4}(?::[0-9a-f]{4}){7}$/;

/** `fd00:0010:0000:0000:0000:0000:0000:000a` → `fd00:10::a` (RFC 5952: the longest run of 2+ zero groups, leftmost, becomes `::`). */
export function canonicalIpv6(full: string): string {
  const groups = full.split(':').map((g) => Number.parseInt(g, 16).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** One line of /proc/net/nf_conntrack → a full entry (addresses in canonical form), or why it is not one. */
export function parseProcLine(line: string): ConntrackEntry | string {
  return parseLine(line.startsWith('ipv6') ? line.replace(FULL_IPV6, canonicalIpv6) : line);
}

/** protocol name and number, optional timeout and state: parseLine's reading of the head of a line. */
const HEAD = /^(?:ipv[46]\s+\d+\s+)?([a-z][a-z0-9-]*)\s+\d+(?:\s+\d+)?(?:\s+([A-Z][A-Z0-9_]*))?(?=\s)/;
const UINT = /^\d{1,15}$/;
const NO_FLAGS: readonly string[] = Object.freeze([]);
const UNREPLIED: readonly string[] = Object.freeze(['UNREPLIED']);

/** The value of ` key=` at or after `from` (before `to`), and where it ends. */
function valueOf(line: string, key: string, from: number, to: number): { value: string; end: number } | undefined {
  const at = line.indexOf(key, from);
  if (at === -1 || at >= to) return undefined;
  const start = at + key.length;
  let end = line.indexOf(' ', start);
  if (end === -1) end = line.length;
  return { value: line.slice(start, end), end };
}

/** An address as parseProcLine gives it: lower case; IPv6 written in full (the file's form, on ipv6 lines) made canonical. */
function address(v: string, ipv6: boolean): string {
  const lower = v.toLowerCase();
  return ipv6 && lower.length === 39 && FULL_IPV6_VALUE.test(lower) ? canonicalIpv6(lower) : lower;
}
const port = (v: string | undefined): number | undefined => (v !== undefined && UINT.test(v) ? Number(v) : undefined);

/**
 * One listing line (/proc/net/nf_conntrack or `conntrack -L -o extended`) → just
 * what the stale count reads, with a few small allocations instead of a full
 * ConntrackEntry's dozens: 100k-entry tables are read every interval. Equal to the
 * same fields of parseProcLine (test/agent/conntrack-table.test.ts checks it on
 * real captures and random lines); undefined for a line parseLine would refuse.
 */
export function parseFlow(raw: string): TallyEntry | undefined {
  const line = raw.charCodeAt(0) === 32 || raw.charCodeAt(0) === 9 ? raw.trim() : raw;
  const head = HEAD.exec(line);
  if (head === null) return undefined;
  const ipv6 = line.startsWith('ipv6');
  const protocol = head[1] as string;
  const state = head[2];
  // The original tuple runs from the first ` src=` to the second; the reply tuple after it.
  const src1 = line.indexOf(' src=', head[0].length - 1);
  if (src1 === -1) return undefined;
  const src2 = line.indexOf(' src=', src1 + 5);
  if (src2 === -1) return undefined;
  const dst = valueOf(line, ' dst=', src1, src2);
  if (dst === undefined) return undefined;
  const dport = valueOf(line, ' dport=', dst.end, src2);
  const replySrc = valueOf(line, ' src=', src2, line.length);
  if (replySrc === undefined || line.indexOf(' dst=', replySrc.end) === -1) return undefined;
  const replyEnd = line.indexOf(' src=', replySrc.end);
  const sport = valueOf(line, ' sport=', replySrc.end, replyEnd === -1 ? line.length : replyEnd);
  return {
    protocol,
    state,
    flags: line.includes(' [UNREPLIED]') ? UNREPLIED : NO_FLAGS,
    original: { dst: address(dst.value, ipv6), dport: port(dport?.value) },
    reply: { src: address(replySrc.value, ipv6), sport: port(sport?.value) },
  };
}

export class ConntrackTable {
  readonly #o: ConntrackTableOptions;
  /** The source that worked last; tried first. */
  #source: ConntrackSource | undefined;
  /** The read buffer, kept between reads (one read at a time uses it). */
  #buffer: Buffer | undefined;
  #bufferBusy = false;
  readonly #deadlineMs: number;

  constructor(o: ConntrackTableOptions) {
    this.#o = o;
    this.#deadlineMs = o.deadlineMs ?? DEFAULT_READ_DEADLINE_MS;
  }

  get path(): string {
    return join(this.#o.procNetDir, 'nf_conntrack');
  }

  /** Every entry of the table to `onEntry`, in table order; `signal` abandons the read (the agent stops). */
  async read(onEntry: (entry: TallyEntry) => void, signal?: AbortSignal): Promise<TableRead> {
    const order: ConntrackSource[] = this.#source === 'tool' ? ['tool', 'proc'] : ['proc', 'tool'];
    const reasons: Partial<Record<ConntrackSource, string>> = {};
    for (const source of order) {
      const r = source === 'proc' ? await this.#readProc(onEntry, signal) : await this.#readTool(onEntry);
      if (typeof r === 'string') {
        reasons[source] = r;
        continue;
      }
      this.#source = source;
      return r;
    }
    this.#source = undefined;
    throw new ConntrackUnreadableError({ proc: reasons.proc ?? '', tool: reasons.tool ?? '' });
  }

  /** A result, or why the file cannot be opened (nothing delivered); throws when a read breaks off. */
  async #readProc(onEntry: (entry: TallyEntry) => void, signal: AbortSignal | undefined): Promise<TableRead | string> {
    const path = this.path;
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return `${path} does not exist (nf_conntrack not loaded, or a kernel without CONFIG_NF_CONNTRACK_PROCFS)`;
      if (code === 'EACCES' || code === 'EPERM') {
        return `${path}: permission denied (the file is root:root 0440: run the agent with supplementary group 0, as the chart does with agent.staleConntrack.enabled)`;
      }
      return `${path}: ${(error as Error).message}`;
    }
    const deadline = Date.now() + this.#deadlineMs;
    const own = !this.#bufferBusy;
    const buffer = own ? (this.#buffer ??= Buffer.allocUnsafe(this.#o.chunkBytes ?? 1024 * 1024)) : Buffer.allocUnsafe(this.#o.chunkBytes ?? 1024 * 1024);
    if (own) this.#bufferBusy = true;
    let rest = '';
    let entries = 0;
    let skipped = 0;
    let firstSkipped: string | undefined;
    const take = (line: string): void => {
      if (line.length === 0) return;
      const r = parseFlow(line);
      if (r === undefined) {
        skipped++;
        if (firstSkipped === undefined) {
          const why = parseProcLine(line);
          firstSkipped = `${typeof why === 'string' ? why : 'not understood'}: ${line.slice(0, 200)}`;
        }
      } else {
        entries++;
        onEntry(r);
      }
    };
    try {
      for (;;) {
        let n: number;
        try {
          ({ bytesRead: n } = await fh.read(buffer, 0, buffer.length, null));
        } catch (error) {
          throw new ConntrackReadError('CONNTRACK_READ_STOPPED', { reading: `reading ${path}`, ended: 'failed', entries, reason: (error as Error).message });
        }
        if (n === 0) break;
        // The file is ASCII; latin1 decodes a chunk that ends mid-line without loss.
        const text = rest + buffer.toString('latin1', 0, n);
        let start = 0;
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
          take(text.slice(start, nl));
          start = nl + 1;
        }
        rest = text.slice(start);
        if (signal?.aborted === true) throw new ConntrackReadError('CONNTRACK_READ_STOPPED', { reading: `reading ${path}`, ended: 'abandoned', entries, reason: 'stopping' });
        if (Date.now() > deadline) {
          throw new ConntrackReadError('CONNTRACK_READ_TIMEOUT', { path, seconds: this.#deadlineMs / 1000, entries });
        }
      }
      take(rest);
    } finally {
      if (own) this.#bufferBusy = false;
      await fh.close();
    }
    return { source: 'proc', entries, skipped, firstSkipped };
  }

  async #readTool(onEntry: (entry: TallyEntry) => void): Promise<TableRead | string> {
    const bin = this.#o.bin ?? 'conntrack';
    let entries = 0;
    try {
      const r = await listConntrack({
        bin,
        timeoutMs: this.#deadlineMs,
        onEntry: (e) => {
          entries++;
          onEntry(e);
        },
      });
      const first = r.skipped[0];
      return { source: 'tool', entries, skipped: r.skipped.length, firstSkipped: first === undefined ? undefined : `${first.reason}: ${first.text.slice(0, 200)}` };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (entries > 0) throw new ConntrackReadError('CONNTRACK_READ_STOPPED', { reading: bin, ended: 'failed', entries, reason: message });
      if (error instanceof ConntrackToolError && error.code === 'CONNTRACK_TOOL_MISSING') return `no ${bin} tool (the agent image has none)`;
      return message;
    }
  }
}

/** What `readConntrackText` read. */
export interface TextRead {
  /** Entries delivered. */
  readonly entries: number;
  /** Non-empty lines that are not entries (nor the tool's summary line). */
  readonly skipped: number;
  /** The first of them: its 1-based line number and why it is not an entry. */
  readonly firstSkipped: { readonly lineNumber: number; readonly reason: string } | undefined;
}

/** The summary `conntrack -L` prints on stderr (sometimes captured with stdout). */
const TOOL_SUMMARY = /^conntrack v[\d.]+ \(conntrack-tools\): \d+ flow entries have been shown\.$/;

/**
 * A saved listing (`conntrack -L [-o extended]`, or a copy of /proc/net/nf_conntrack)
 * as it streams in, entry by entry, the way the table reader above takes the file:
 * only the line being parsed is held, so a 500k-entry listing needs no more memory
 * than a small one (`diagnose --conntrack-file`). Lines parseFlow refuses get the
 * full parser (event lines of `conntrack -E`, tagged `[NEW]`), so every line
 * parseConntrack (diagnose/conntrack.ts) accepts is an entry here too.
 */
export async function readConntrackText(input: AsyncIterable<Buffer | string>, onEntry: (entry: TallyEntry) => void): Promise<TextRead> {
  let entries = 0;
  let skipped = 0;
  let lineNumber = 0;
  let firstSkipped: TextRead['firstSkipped'];
  const take = (raw: string): void => {
    lineNumber++;
    const line = raw.trim();
    if (line === '' || TOOL_SUMMARY.test(line)) return;
    const flow = parseFlow(line);
    if (flow !== undefined) {
      entries++;
      onEntry(flow);
      return;
    }
    const full = parseProcLine(line);
    if (typeof full !== 'string') {
      entries++;
      onEntry(full);
      return;
    }
    skipped++;
    firstSkipped ??= { lineNumber, reason: full };
  };
  let rest = '';
  for await (const chunk of input) {
    // Listings are ASCII; latin1 decodes a chunk that ends mid-line without loss.
    const text = rest + (typeof chunk === 'string' ? chunk : chunk.toString('latin1'));
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      take(text.slice(start, nl));
      start = nl + 1;
    }
    rest = text.slice(start);
  }
  if (rest !== '') take(rest);
  return { entries, skipped, firstSkipped };
}
