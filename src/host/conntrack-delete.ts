/**
 * Delete conntrack entries with the `conntrack` tool (conntrack-tools, netlink;
 * needs CAP_NET_ADMIN in the network namespace's user namespace).
 *
 * One call deletes the flows of one Service frontend to one target:
 *   conntrack -D -p udp --orig-dst VIP --dport 53 --reply-src POD --reply-port-src 5353
 * which is exactly the set of entries the reaper's rule selects for that pair:
 * each has that DNAT (reply source ≠ original destination) to that gone target,
 * and nothing else matches (a direct connection to the pod has orig-dst = POD; a
 * flow to another endpoint has another reply source). An entry created since the
 * scan for the same pair is just as stale, and one that was replaced (a TIME_WAIT
 * reopened, an expired UDP flow recreated) now points elsewhere and stays.
 *
 * Why not one `-D` per entry (by its full original tuple): conntrack-tools 1.4.7
 * implements every `-D` as a dump of the whole table filtered in the kernel, so
 * each costs O(table): 2000 per-tuple deletes (`conntrack -R` batch) on a
 * 100k-entry table ran for over ten minutes of CPU; one per-target `-D` deletes
 * 100k entries in about a second. The count of deleted entries is read from the
 * tool's summary line on stderr.
 */
import { spawn } from 'node:child_process';
import { isIP } from 'node:net';
import { CodedError } from '../shared/errors.ts';
import type { ErrorParams } from '../shared/errors.ts';

export interface FlowGroup {
  /** `tcp`, `udp`, `sctp`. */
  readonly protocol: string;
  readonly origDst: string;
  readonly dport: number;
  readonly replySrc: string;
  readonly sport: number;
}

export interface DeleteResult {
  readonly deleted: number;
}

type DeleteErrorCode = 'FLOW_NOT_DELETABLE' | 'CONNTRACK_TOOL_MISSING' | 'CONNTRACK_TOOL_UNRUNNABLE' | 'CONNTRACK_TOOL_FAILED';

export class ConntrackDeleteError<C extends DeleteErrorCode = DeleteErrorCode> extends CodedError<C> {
  constructor(code: C, params: ErrorParams<C>) {
    super(code, params);
    this.name = 'ConntrackDeleteError';
  }
}

const DELETED = /(\d+) flow entries have been deleted/;
const PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

/** The arguments of the deletion (validated: nothing reaches the tool that is not an address, a port or a known protocol). */
export function deleteArgs(g: FlowGroup): string[] {
  if (!PROTOCOLS.has(g.protocol)) throw new ConntrackDeleteError('FLOW_NOT_DELETABLE', `protocol ${JSON.stringify(g.protocol)} is not reaped`);
  const fam = isIP(g.origDst);
  if (fam === 0 || isIP(g.replySrc) !== fam) throw new ConntrackDeleteError('FLOW_NOT_DELETABLE', `not a pair of addresses of one family: ${g.origDst}, ${g.replySrc}`);
  for (const p of [g.dport, g.sport]) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new ConntrackDeleteError('FLOW_NOT_DELETABLE', `bad port ${p}`);
  return [
    '-D',
    ...(fam === 6 ? ['-f', 'ipv6'] : []),
    '-p', g.protocol,
    '--orig-dst', g.origDst,
    '--dport', String(g.dport),
    '--reply-src', g.replySrc,
    '--reply-port-src', String(g.sport),
  ];
}

export interface DeleteOptions {
  /** The tool; default `conntrack`. */
  readonly bin?: string;
  /** Run it through this prefix (tests: `ip netns exec NAME`). */
  readonly prefix?: readonly string[];
  readonly timeoutMs?: number;
}

/** Delete one group; resolves with how many entries went (0 when none matched). */
export function deleteFlowGroup(g: FlowGroup, o: DeleteOptions = {}): Promise<DeleteResult> {
  const bin = o.bin ?? 'conntrack';
  const args = deleteArgs(g);
  const [cmd, ...rest] = [...(o.prefix ?? []), bin, ...args];
  return new Promise((resolve, reject) => {
    // stdout lists every deleted entry: not read.
    const child = spawn(cmd as string, rest, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30_000);
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        error.code === 'ENOENT'
          ? new ConntrackDeleteError('CONNTRACK_TOOL_MISSING', { bin, advice: 'the reaper needs the conntrack tool (Debian package conntrack)' })
          : new ConntrackDeleteError('CONNTRACK_TOOL_UNRUNNABLE', { bin, reason: error.message }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const m = DELETED.exec(stderr);
      if (m !== null) {
        resolve({ deleted: Number(m[1]) });
        return;
      }
      const detail = stderr.trim().split('\n').join('; ') || 'no message';
      const hint = /permission|not permitted/i.test(detail) ? ' (deleting conntrack entries needs CAP_NET_ADMIN)' : '';
      reject(new ConntrackDeleteError('CONNTRACK_TOOL_FAILED', { command: `${bin} ${args.join(' ')}`, ended: `(${signal ?? `exit code ${code}`})`, detail, hint }));
    });
  });
}
