/**
 * The CustomResourceDefinitions the chart's optional modes need, at pinned
 * releases, taken from the Go module proxy (the machines reach it; nothing else is
 * downloaded): prometheus-operator's monitoring.coreos.com (ServiceMonitor,
 * PrometheusRule) and cert-manager's cert-manager.io (Certificate, Issuer,
 * ClusterIssuer). `go mod download -json MODULE@VERSION` puts the module in Go's
 * module cache, checked against the pinned `h1:` hash; the CRD files are read from
 * its `Dir`.
 *
 * cert-manager's `deploy/crds/*.yaml` are plain controller-gen output (its Helm
 * chart's `templates/crd-*.yaml` carry the same schemas wrapped in template lines).
 * Should a future release template them, lines that are only a template action
 * (`{{- if … }}`, `{{- end }}`, `{{- include … | nindent 4 }}`) are dropped; any other
 * `{{` is refused rather than guessed at.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { sleep } from './control-plane.ts';
import type { ControlPlane } from './control-plane.ts';

export interface PinnedModule {
  readonly module: string;
  readonly version: string;
  /** The module zip's `h1:` hash (go.sum), so a changed upload is refused. */
  readonly sum: string;
}

export const PROMETHEUS_OPERATOR: PinnedModule = {
  module: 'github.com/prometheus-operator/prometheus-operator',
  version: 'v0.85.0',
  sum: 'h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s=',
};

export const CERT_MANAGER: PinnedModule = {
  module: 'github.com/cert-manager/cert-manager',
  version: 'v1.21.2',
  sum: 'h1:UWgoYM+KLNtRlqmoWOKjKBOBUPVHeepQ6/ac3ERJW68=',
};

export type CrdSet = 'monitoring' | 'cert-manager';

interface CrdFile {
  /** Path inside the module. */
  readonly path: string;
  /** metadata.name of the one CRD it holds. */
  readonly name: string;
}

export const CRD_SETS: Readonly<Record<CrdSet, { readonly source: PinnedModule; readonly group: string; readonly version: string; readonly crds: readonly CrdFile[] }>> = {
  monitoring: {
    source: PROMETHEUS_OPERATOR,
    group: 'monitoring.coreos.com',
    version: 'v1',
    crds: [
      { path: 'example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml', name: 'servicemonitors.monitoring.coreos.com' },
      { path: 'example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml', name: 'prometheusrules.monitoring.coreos.com' },
    ],
  },
  'cert-manager': {
    source: CERT_MANAGER,
    group: 'cert-manager.io',
    version: 'v1',
    crds: [
      { path: 'deploy/crds/cert-manager.io_certificates.yaml', name: 'certificates.cert-manager.io' },
      { path: 'deploy/crds/cert-manager.io_issuers.yaml', name: 'issuers.cert-manager.io' },
      { path: 'deploy/crds/cert-manager.io_clusterissuers.yaml', name: 'clusterissuers.cert-manager.io' },
    ],
  },
};

/** The API group a CRD set serves, e.g. for spotting which rendered objects need it. */
export function crdGroup(which: CrdSet): string {
  return CRD_SETS[which].group;
}

function goBinary(): string {
  for (const candidate of ['/usr/local/go/bin/go', 'go']) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next
    }
  }
  throw new Error('no Go toolchain (expected at /usr/local/go/bin/go or on PATH)');
}

const moduleDirs = new Map<string, string>();

/** `go mod download -json` of a pinned module (from the module cache when it is there); its extracted folder. */
export function downloadModule(pin: PinnedModule): string {
  const key = `${pin.module}@${pin.version}`;
  const cached = moduleDirs.get(key);
  if (cached !== undefined) return cached;
  // A folder of its own: no go.mod around, so the download is of exactly this module.
  const cwd = mkdtempSync(join(tmpdir(), 'st-crds-'));
  let out: string;
  try {
    out = execFileSync(goBinary(), ['mod', 'download', '-json', key], {
      cwd,
      encoding: 'utf8',
      timeout: 300_000,
      maxBuffer: 16 << 20,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, GOFLAGS: '-mod=mod' },
    });
  } catch (error) {
    // go mod download -json reports a failure as JSON with "Error" on stdout, and exits 1.
    const stdout = (error as { stdout?: string }).stdout ?? '';
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`go mod download ${key} failed: ${stdout.trim()} ${stderr.trim()}`.trim(), { cause: error });
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
  const info = JSON.parse(out) as { Dir?: string; Sum?: string; Error?: string };
  if (info.Error !== undefined) throw new Error(`go mod download ${key}: ${info.Error}`);
  if (info.Sum !== pin.sum) throw new Error(`${key}: the module proxy's hash ${info.Sum ?? '(none)'} is not the pinned ${pin.sum}`);
  if (info.Dir === undefined) throw new Error(`go mod download ${key} gave no Dir`);
  moduleDirs.set(key, info.Dir);
  return info.Dir;
}

/**
 * A CRD file as plain YAML: whole-line template actions dropped; throws if any
 * other template text is left, or if the file is not exactly the CRD `name`.
 */
export function plainCrd(text: string, name: string, origin: string): string {
  const plain = text
    .split('\n')
    .filter((line) => !/^\s*\{\{.*\}\}\s*$/.test(line))
    .join('\n');
  const leftover = plain.split('\n').findIndex((line) => line.includes('{{'));
  if (leftover !== -1) {
    throw new Error(`${origin}: Helm template text beyond whole-line actions (line "${plain.split('\n')[leftover]!.trim()}"); not stripped by guesswork`);
  }
  const docs = parseAllDocuments(plain).filter((d) => d.contents !== null);
  const objects = docs.map((d) => {
    if (d.errors.length > 0) throw new Error(`${origin}: not YAML: ${d.errors[0]!.message}`);
    return d.toJS() as { kind?: unknown; metadata?: { name?: unknown } };
  });
  if (objects.length !== 1 || objects[0]!.kind !== 'CustomResourceDefinition' || objects[0]!.metadata?.name !== name) {
    throw new Error(`${origin}: expected exactly the CustomResourceDefinition ${name}, found ${JSON.stringify(objects.map((o) => `${String(o.kind)}/${String(o.metadata?.name)}`))}`);
  }
  return plain;
}

/** The set's CRDs as YAML texts, one per CRD. Throws when they cannot be had. */
export function crdDocuments(which: CrdSet): Array<{ name: string; yaml: string }> {
  const set = CRD_SETS[which];
  const dir = downloadModule(set.source);
  return set.crds.map((crd) => {
    const origin = `${set.source.module}@${set.source.version}/${crd.path}`;
    return { name: crd.name, yaml: plainCrd(readFileSync(join(dir, crd.path), 'utf8'), crd.name, origin) };
  });
}

/** Why a set's CRDs cannot be installed here, or false when they can. */
export function crdSkipReason(which: CrdSet): string | false {
  try {
    crdDocuments(which);
    return false;
  } catch (error) {
    return `the ${which} CRDs (${CRD_SETS[which].source.module}@${CRD_SETS[which].source.version}) cannot be had: ${error instanceof Error ? error.message : String(error)}`;
  }
}

interface CrdStatus {
  status?: { conditions?: Array<{ type: string; status: string; message?: string }> };
}

/**
 * `kubectl apply --server-side` of the sets' CRDs, then wait until each is
 * Established and its group/version lists it in discovery (what helm maps kinds with).
 * Returns the CRD names.
 */
export async function installCrds(plane: ControlPlane, which: CrdSet | readonly CrdSet[], timeoutMs = 60_000): Promise<string[]> {
  const sets: readonly CrdSet[] = typeof which === 'string' ? [which] : which;
  const names: string[] = [];
  for (const set of sets) {
    for (const crd of crdDocuments(set)) {
      const file = join(plane.dir, `crd-${crd.name}.yaml`);
      writeFileSync(file, crd.yaml);
      plane.kubectl(['apply', '--server-side', '--field-manager=safe-termination-e2e', '-f', file]);
      names.push(crd.name);
    }
  }
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    for (;;) {
      const crd = await plane.call<CrdStatus>('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
      const conditions = crd.status?.conditions ?? [];
      if (conditions.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms: ${JSON.stringify(conditions)}`);
      await sleep(200);
    }
  }
  for (const set of sets) {
    const { group, version, crds } = CRD_SETS[set];
    const plurals = crds.map((c) => c.name.slice(0, c.name.indexOf('.')));
    for (;;) {
      const r = await plane.api('GET', `/apis/${group}/${version}`);
      const served = r.status === 200 ? ((r.body as { resources?: Array<{ name: string }> }).resources ?? []).map((x) => x.name) : [];
      if (plurals.every((p) => served.includes(p))) break;
      if (Date.now() > deadline) throw new Error(`/apis/${group}/${version} does not list ${plurals.join(', ')} after ${timeoutMs} ms (has ${served.join(', ')})`);
      await sleep(200);
    }
  }
  return names;
}
