/**
 * Conntrack health of this node: table usage (`nf_conntrack_count` / `nf_conntrack_max`)
 * and the per-CPU counters of /proc/net/stat/nf_conntrack, summed.
 *
 * That file has a header line naming the columns (their set and order change
 * between kernels: 5.x added clashres and chainlength, dropped searched …) and
 * one line per CPU of hexadecimal values. `entries` is the global table size
 * repeated on every line, so it is not summed.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readIntFile } from '../host/sysctl.ts';

/** The counters exported, by their kernel column name. */
export const CONNTRACK_STATS = ['found', 'invalid', 'insert_failed', 'drop', 'early_drop', 'search_restart'] as const;
export type ConntrackStat = (typeof CONNTRACK_STATS)[number];

/** Sum of every per-CPU column by name (except `entries`); undefined when the text is not that file. */
export function parseConntrackStat(text: string): Record<string, number> | undefined {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const header = lines[0]?.trim().split(/\s+/);
  if (header === undefined || header.length === 0 || !header.every((h) => /^[a-z_]+$/.test(h))) return undefined;
  const sums: Record<string, number> = {};
  for (const name of header) if (name !== 'entries') sums[name] = 0;
  for (const line of lines.slice(1)) {
    const cells = line.trim().split(/\s+/);
    if (cells.length !== header.length || !cells.every((c) => /^[0-9a-fA-F]{1,16}$/.test(c))) return undefined;
    header.forEach((name, i) => {
      if (name !== 'entries') sums[name]! += Number.parseInt(cells[i]!, 16);
    });
  }
  return sums;
}

export async function readConntrackStat(procNetDir: string): Promise<Record<string, number> | undefined> {
  try {
    return parseConntrackStat(await readFile(join(procNetDir, 'stat', 'nf_conntrack'), 'utf8'));
  } catch {
    return undefined;
  }
}

export interface ConntrackUsage {
  readonly entries: number | undefined;
  readonly limit: number | undefined;
}

export async function readConntrackUsage(procSysNetfilterDir: string): Promise<ConntrackUsage> {
  const [entries, limit] = await Promise.all([
    readIntFile(join(procSysNetfilterDir, 'nf_conntrack_count')),
    readIntFile(join(procSysNetfilterDir, 'nf_conntrack_max')),
  ]);
  return { entries, limit };
}
