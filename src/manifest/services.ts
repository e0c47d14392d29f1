/**
 * The Services the CLI matches against each workload's template labels: those in the manifests it was given (files, directories, stdin) and
 * those of `--services FILE` (a `kubectl get services -A -o yaml` dump, a List; or
 * any manifest: only its Services are read). A Service applies to the workloads of
 * its own namespace; objects without a namespace all count as `default`, the
 * namespace `kubectl apply` puts them in without `-n`.
 */
import { readService, ServiceIndex } from '../core/services.ts';
import type { ServiceReading } from '../core/services.ts';
import { parseManifest } from './source.ts';
import type { InputProblem, ManifestSource } from './source.ts';

/** What objects without metadata.namespace share. */
export const MANIFEST_DEFAULT_NAMESPACE = 'default';

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every core/v1 Service in a document value, also inside Lists (ServiceList items may omit kind). */
export function collectServices(value: unknown, out: unknown[] = [], inList = false): unknown[] {
  if (!isRecord(value)) return out;
  const kind = value['kind'];
  const apiVersion = value['apiVersion'];
  if ((kind === 'Service' && (apiVersion === 'v1' || apiVersion === undefined)) || (inList && kind === undefined)) out.push(value);
  else if ((kind === 'List' || kind === 'ServiceList') && Array.isArray(value['items'])) {
    for (const item of value['items']) collectServices(item, out, kind === 'ServiceList');
  }
  return out;
}

export interface ServiceReadings {
  readonly readings: readonly ServiceReading[];
  readonly problems: readonly InputProblem[];
}

/** The Services of one source; a source that does not parse gives none (its own problem is reported where it is processed). */
export function servicesOf(source: ManifestSource): ServiceReadings {
  const parsed = parseManifest(source);
  if (!parsed.ok) return { readings: [], problems: parsed.problems };
  const readings: ServiceReading[] = [];
  for (const d of parsed.manifest.documents) {
    for (const raw of collectServices(d.doc.toJS())) {
      const r = readService(raw, MANIFEST_DEFAULT_NAMESPACE);
      if (r !== undefined) readings.push(r);
    }
  }
  return { readings, problems: [] };
}

export interface ManifestServices {
  readonly index: ServiceIndex;
  /** For --verbose. */
  readonly notes: readonly string[];
}

/** One index from the inputs and the --services dump (read first: the inputs' own Services win on a clash). */
export function indexServices(dump: ServiceReadings | undefined, dumpFile: string | undefined, inputs: readonly ServiceReadings[]): ManifestServices {
  const index = new ServiceIndex();
  const notes: string[] = [];
  const describe = (readings: readonly ServiceReading[], where: string): void => {
    if (readings.length === 0) return;
    const counting = readings.filter((r) => r.kind === 'counts').length;
    const excluded = readings.flatMap((r) => (r.kind === 'excluded' ? [`${r.namespace}/${r.name} (${r.why})`] : []));
    notes.push(
      `read ${readings.length} Service${readings.length === 1 ? '' : 's'} from ${where}, ${counting} matched against the pods' labels` +
        (excluded.length === 0 ? '' : `; not counted: ${excluded.slice(0, 5).join(', ')}${excluded.length > 5 ? `, and ${excluded.length - 5} more` : ''}`),
    );
  };
  if (dump !== undefined) {
    for (const r of dump.readings) index.apply(r);
    describe(dump.readings, dumpFile ?? '--services');
  }
  const fromInputs = inputs.flatMap((i) => i.readings);
  for (const r of fromInputs) index.apply(r);
  describe(fromInputs, 'the manifests');
  return { index, notes };
}
