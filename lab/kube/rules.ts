/**
 * What the real kube-proxy has programmed on the lab's node: which endpoint each
 * Service port's rules send new flows to, read from `iptables-save -t nat`
 * (iptables mode) or `nft list table ip kube-proxy` (nftables mode), polled. The
 * parsing is pure (tested on kube-proxy's own output); the watcher logs changes.
 */
import { inNs } from '../sys.ts';

export type ProxyMode = 'iptables' | 'nftables';
export const PROXY_MODES: readonly ProxyMode[] = ['iptables', 'nftables'];

/** `namespace/name:port` → endpoint IPs the Service port's rules jump to. */
export type RuleEndpoints = ReadonlyMap<string, ReadonlySet<string>>;

/**
 * iptables mode: the KUBE-SVC chain's jumps carry kube-proxy's comment
 * `"ns/name:port -> ip:targetPort"` (pkg/proxy/iptables/proxier.go).
 * nftables mode: the `service-HASH-ns/name/proto/port` chain's DNAT — in 1.37
 * `dnat to ip:port` or a `numgen random mod N map { i : ip . port }`, earlier a
 * vmap of `goto endpoint-…__ip/port` (pkg/proxy/nftables/proxier.go).
 */
export function parseRules(mode: ProxyMode, text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (key: string, ip: string): void => {
    let set = out.get(key);
    if (set === undefined) out.set(key, (set = new Set()));
    set.add(ip);
  };
  if (mode === 'iptables') {
    for (const line of text.split('\n')) {
      if (!line.startsWith('-A KUBE-SVC-') || !line.includes('-j KUBE-SEP-')) continue;
      const m = /--comment "?([^"\s]+) -> ([\d.]+):\d+"?/.exec(line);
      if (m !== null) add(m[1]!, m[2]!);
    }
  } else {
    let key: string | undefined;
    for (const line of text.split('\n')) {
      const head = /^\s*chain service-[A-Z0-9]+-([^/\s]+)\/([^/\s]+)\/[a-z]+\/(\S*) \{\s*$/.exec(line);
      if (head !== null) {
        key = `${head[1]}/${head[2]}:${head[3]}`;
        continue;
      }
      if (key === undefined) continue;
      if (/^\s*\}\s*$/.test(line)) {
        key = undefined;
        continue;
      }
      // 1.37: `dnat to IP:port` (one endpoint) or `dnat ip to numgen random mod N map { 0 : IP . port, … }`;
      // older: `numgen random mod N vmap { 0 : goto endpoint-HASH-ns/name/proto/port__IP/port, … }`.
      for (const m of line.matchAll(/dnat to ([\d.]+):\d+|\d+ : ([\d.]+) \. \d+|goto endpoint-\S+__([\d.]+)\/\d+/g)) add(key, (m[1] ?? m[2] ?? m[3])!);
    }
  }
  return out;
}

export async function readRules(node: string, mode: ProxyMode): Promise<Map<string, Set<string>>> {
  const text = mode === 'iptables' ? await inNs(node, 'iptables-save', ['-t', 'nat']) : await inNs(node, 'nft', ['list', 'table', 'ip', 'kube-proxy']).catch(() => '');
  return parseRules(mode, text);
}

export interface RuleChange {
  readonly at: number;
  readonly key: string;
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly now: readonly string[];
}

/** Polls the node's rules every `everyMs`; keeps every change, with its time. */
export class RuleWatcher {
  readonly changes: RuleChange[] = [];
  #current = new Map<string, Set<string>>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;
  readonly #node: string;
  readonly #mode: ProxyMode;
  readonly #onChange: (c: RuleChange) => void;

  constructor(node: string, mode: ProxyMode, onChange: (c: RuleChange) => void) {
    this.#node = node;
    this.#mode = mode;
    this.#onChange = onChange;
  }

  start(everyMs: number): void {
    this.#timer = setInterval(() => void this.poll(), everyMs);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** The endpoint IPs in the rules of `key` now. */
  endpoints(key: string): ReadonlySet<string> {
    return this.#current.get(key) ?? new Set();
  }

  /** The first time after `since` at which `ip` was in no Service port's rules (undefined: still in). */
  removedAt(ip: string, since: number): number | undefined {
    const inRules = [...this.#current.values()].some((s) => s.has(ip));
    if (inRules) return undefined;
    const last = this.changes.filter((c) => c.at >= since && c.removed.includes(ip)).at(-1);
    return last?.at;
  }

  async poll(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const next = await readRules(this.#node, this.#mode);
      const at = Date.now();
      for (const key of new Set([...this.#current.keys(), ...next.keys()])) {
        const before = this.#current.get(key) ?? new Set<string>();
        const after = next.get(key) ?? new Set<string>();
        const added = [...after].filter((ip) => !before.has(ip));
        const removed = [...before].filter((ip) => !after.has(ip));
        if (added.length === 0 && removed.length === 0) continue;
        const change = { at, key, added, removed, now: [...after].sort() };
        this.changes.push(change);
        this.#onChange(change);
      }
      this.#current = next;
    } catch {
      // the next poll
    } finally {
      this.#busy = false;
    }
  }
}
