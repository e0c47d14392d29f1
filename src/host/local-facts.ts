/** Facts outside a cluster (spec §5): this machine's /proc/sys over the static values. */
import { layerFacts, staticFacts } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackValues } from '../core/conntrack.ts';
import { readConntrackSysctls } from './sysctl.ts';
import type { SysctlReading } from './sysctl.ts';

export interface LocalFacts {
  readonly facts: ConntrackFacts;
  readonly reading: SysctlReading;
}

export async function readLocalFacts(procDir: string, staticValues: ConntrackValues): Promise<LocalFacts> {
  const reading = await readConntrackSysctls(procDir);
  return { facts: layerFacts([{ source: 'local', values: reading.values }], staticFacts(staticValues)), reading };
}
