/** Facts outside a cluster: this machine's /proc/sys over the static values. */
import { join } from 'node:path';
import { fixedLayer, stackLayers, staticLayer, sysctlName } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackLayer, ConntrackValues } from '../core/conntrack.ts';
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

/** The sysctls as a conntrack source, read once. */
export function localLayer(procDir: string, reading: SysctlReading): ConntrackLayer {
  return fixedLayer('local', `this machine's ${procDir}`, reading.values, (key) => ({ short: 'local /proc', long: `local: ${join(procDir, sysctlName(key))}` }));
}

export async function readLocalFacts(procDir: string, staticValues: ConntrackValues): Promise<LocalFacts> {
  const reading = await readConntrackSysctls(procDir);
  return { facts: stackLayers([localLayer(procDir, reading)], staticLayer(staticValues)).facts({}), reading };
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
