/** Facts outside a cluster (spec §5): this machine's /proc/sys over the static values. */
import { layerFacts, staticFacts, sysctlName } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackValues } from '../core/conntrack.ts';
import { fixedFacts } from '../core/facts.ts';
import type { FactsWiring } from '../core/facts.ts';
import type { KubeVersion } from '../core/model.ts';
import type { Logger } from '../shared/logger.ts';
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

export interface LocalFactsConfig {
  readonly conntrackProcDir: string;
  readonly staticConntrack: ConntrackValues;
  readonly kubernetesVersion: KubeVersion | undefined;
}

/** Outside a cluster: this machine's /proc/sys, then the static values. */
export async function localFactsWiring(config: LocalFactsConfig, log: Logger): Promise<FactsWiring> {
  const local = await readLocalFacts(config.conntrackProcDir, config.staticConntrack);
  if (local.reading.missing.length > 0) {
    log.info(
      { dir: config.conntrackProcDir, missing: local.reading.missing.map(sysctlName) },
      'some conntrack sysctls are not readable here; static values stand in for them',
    );
  }
  return { facts: fixedFacts(local.facts, config.kubernetesVersion), ready: Promise.resolve(), stop: async () => {} };
}
