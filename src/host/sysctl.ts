/** This machine's conntrack sysctls, read from /proc/sys/net/netfilter (or a test's copy). */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONNTRACK_KEYS, sysctlName } from '../core/conntrack.ts';
import type { ConntrackKey, PartialConntrackValues } from '../core/conntrack.ts';

export const DEFAULT_PROC_DIR = '/proc/sys/net/netfilter';

export interface SysctlReading {
  readonly values: PartialConntrackValues;
  /** Keys whose file is absent or unreadable (no conntrack module, no permission). */
  readonly missing: readonly ConntrackKey[];
}

export async function readConntrackSysctls(dir: string = DEFAULT_PROC_DIR): Promise<SysctlReading> {
  const values: PartialConntrackValues = {};
  const missing: ConntrackKey[] = [];
  await Promise.all(
    CONNTRACK_KEYS.map(async (key) => {
      const value = await readIntFile(join(dir, sysctlName(key)));
      if (value === undefined) missing.push(key);
      else values[key] = value;
    }),
  );
  return { values, missing: CONNTRACK_KEYS.filter((k) => missing.includes(k)) };
}

/** A non-negative integer file (a sysctl); undefined when absent or not a number. */
export async function readIntFile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const t = text.trim();
  if (!/^\d{1,15}$/.test(t)) return undefined;
  return Number(t);
}
