/**
 * Parse the text the `conntrack` tool (conntrack-tools) prints for `conntrack -L`,
 * with or without `-o extended`, with or without accounting (`packets=`/`bytes=`),
 * zones, marks, labels and timestamps. Pure: text in, entries out.
 *
 * A line holds two tuples: the original direction (as the first packet left the
 * client) and the reply direction (as the answer is expected). A DNAT shows as a
 * reply source that differs from the original destination: kube-proxy rewrote
 * `client → VIP:port` into `client → pod:targetPort`, so the pod answers from
 * `pod:targetPort`.
 *
 *   ipv4     2 udp      17 28 src=10.244.0.2 dst=10.96.0.10 sport=40000 dport=53 \
 *            src=10.244.1.2 dst=10.244.0.2 sport=53 dport=40000 mark=0 use=1
 */

export interface Tuple {
  readonly src: string;
  readonly dst: string;
  /** Ports for TCP, UDP, SCTP, DCCP, UDP-Lite; undefined for ICMP and others. */
  readonly sport: number | undefined;
  readonly dport: number | undefined;
  /** With nf_conntrack_acct=1. */
  readonly packets: number | undefined;
  readonly bytes: number | undefined;
}

export interface ConntrackEntry {
  /** `ipv4`/`ipv6` with `-o extended`; undefined in the default output. */
  readonly family: string | undefined;
  /** Layer 4 protocol name as printed (`tcp`, `udp`, `sctp`, `icmp`, `unknown`, …). */
  readonly protocol: string;
  readonly protocolNumber: number;
  /** Seconds until the entry expires (unless refreshed). */
  readonly timeout: number;
  /** TCP/SCTP/DCCP state (`ESTABLISHED`, `TIME_WAIT`, …); undefined for UDP. */
  readonly state: string | undefined;
  readonly original: Tuple;
  readonly reply: Tuple;
  /** Bracketed flags without brackets: `UNREPLIED`, `ASSURED`, `OFFLOAD`, … */
  readonly flags: readonly string[];
  readonly mark: number | undefined;
  readonly zone: number | undefined;
  /** The whole line, for display. */
  readonly line: string;
}

export interface SkippedLine {
  /** 1-based line number in the input. */
  readonly lineNumber: number;
  readonly text: string;
  readonly reason: string;
}

export interface ParsedConntrack {
  readonly entries: readonly ConntrackEntry[];
  /** Non-empty lines that are not entries (and not the tool's summary line). */
  readonly skipped: readonly SkippedLine[];
}

/** The summary conntrack prints on stderr (sometimes captured with stdout). */
const SUMMARY = /^conntrack v[\d.]+ \(conntrack-tools\): \d+ flow entries have been shown\.$/;
const FAMILIES = new Set(['ipv4', 'ipv6']);
const TUPLE_KEYS = new Set(['src', 'dst', 'sport', 'dport', 'packets', 'bytes', 'type', 'code', 'id', 'srckey', 'dstkey']);

export function parseConntrack(text: string): ParsedConntrack {
  const entries: ConntrackEntry[] = [];
  const skipped: SkippedLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '' || SUMMARY.test(line)) continue;
    const result = parseLine(line);
    if (typeof result === 'string') skipped.push({ lineNumber: i + 1, text: line, reason: result });
    else entries.push(result);
  }
  return { entries, skipped };
}

interface MutableTuple {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  packets?: number;
  bytes?: number;
}

/** One line → an entry, or the reason it is not one. */
export function parseLine(line: string): ConntrackEntry | string {
  const tokens = line.split(/\s+/);
  let i = 0;
  // A `conntrack -E` event line starts with [NEW]/[UPDATE]/[DESTROY]: skip the tag.
  if (/^\[[A-Z]+\]$/.test(tokens[0] ?? '') && !/=/.test(tokens[0] ?? '')) i++;
  let family: string | undefined;
  if (FAMILIES.has(tokens[i] ?? '') && isUint(tokens[i + 1])) {
    family = tokens[i];
    i += 2;
  }
  const protocol = tokens[i];
  const protocolNumber = tokens[i + 1];
  if (protocol === undefined || !/^[a-z][a-z0-9-]*$/.test(protocol) || !isUint(protocolNumber)) {
    return 'does not start with a protocol name and number';
  }
  i += 2;
  // Event lines (-E) carry no timeout; listing lines always do.
  let timeout = 0;
  if (isUint(tokens[i])) {
    timeout = Number(tokens[i]);
    i++;
  }
  let state: string | undefined;
  if (tokens[i] !== undefined && /^[A-Z][A-Z0-9_]*$/.test(tokens[i] as string)) {
    state = tokens[i];
    i++;
  }
  const original: MutableTuple = {};
  const reply: MutableTuple = {};
  let current: MutableTuple = original;
  const flags: string[] = [];
  let mark: number | undefined;
  let zone: number | undefined;
  for (; i < tokens.length; i++) {
    const token = tokens[i] as string;
    const flag = /^\[([A-Z_]+)\]$/.exec(token);
    if (flag !== null) {
      flags.push(flag[1] as string);
      continue;
    }
    const eq = token.indexOf('=');
    if (eq <= 0) continue; // unknown bare word from a newer conntrack: ignore
    const key = token.slice(0, eq);
    const value = token.slice(eq + 1);
    if (key === 'src' && current === original && original.src !== undefined) current = reply;
    if (TUPLE_KEYS.has(key)) {
      assignTupleField(current, key, value);
      continue;
    }
    if (key === 'mark' && isUint(value)) mark = Number(value);
    else if (key === 'zone' && isUint(value)) zone = Number(value);
    // use=, id=, secctx=, labels=, delta-time=, timestamps: not needed here.
  }
  if (original.src === undefined || original.dst === undefined) return 'no original tuple (src=/dst=)';
  if (reply.src === undefined || reply.dst === undefined) return 'no reply tuple (second src=/dst=)';
  return {
    family,
    protocol,
    protocolNumber: Number(protocolNumber),
    timeout,
    state,
    original: freezeTuple(original),
    reply: freezeTuple(reply),
    flags,
    mark,
    zone,
    line,
  };
}

function assignTupleField(t: MutableTuple, key: string, value: string): void {
  switch (key) {
    case 'src':
      t.src = value.toLowerCase();
      return;
    case 'dst':
      t.dst = value.toLowerCase();
      return;
    case 'sport':
      if (isUint(value)) t.sport = Number(value);
      return;
    case 'dport':
      if (isUint(value)) t.dport = Number(value);
      return;
    case 'packets':
      if (isUint(value)) t.packets = Number(value);
      return;
    case 'bytes':
      if (isUint(value)) t.bytes = Number(value);
      return;
    default:
      // ICMP type/code/id, GRE keys: not used by the diagnosis.
      return;
  }
}

function freezeTuple(t: MutableTuple): Tuple {
  return {
    src: t.src as string,
    dst: t.dst as string,
    sport: t.sport,
    dport: t.dport,
    packets: t.packets,
    bytes: t.bytes,
  };
}

function isUint(s: string | undefined): boolean {
  return s !== undefined && /^\d{1,15}$/.test(s);
}

export interface NatTarget {
  readonly ip: string;
  readonly port: number | undefined;
}

/**
 * Where a DNAT sent the flow: the reply source, when it differs from the original
 * destination (address or port). Undefined for a flow that was not DNATed.
 */
export function dnatTarget(entry: ConntrackEntry): NatTarget | undefined {
  const { original, reply } = entry;
  if (reply.src === original.dst && reply.sport === original.dport) return undefined;
  return { ip: reply.src, port: reply.sport };
}

/** `10.0.0.1:53`, `[fd00::1]:53`, or the bare address without a port. */
export function formatAddress(ip: string, port: number | undefined): string {
  const host = ip.includes(':') ? `[${ip}]` : ip;
  return port === undefined ? host : `${host}:${port}`;
}

/** A stable key for one flow (its original tuple), for comparing samples over time. */
export function flowKey(entry: ConntrackEntry): string {
  const o = entry.original;
  return `${entry.protocol} ${formatAddress(o.src, o.sport)} ${formatAddress(o.dst, o.dport)} z${entry.zone ?? 0}`;
}
