/**
 * Builds the Kubernetes components the e2e tests and the lab run against, from the
 * Go module proxy, at one pinned release: kube-apiserver, kube-controller-manager,
 * kube-scheduler, kube-proxy, and the etcd that release's go.mod requires.
 *
 * k8s.io/kubernetes lists its staging modules (k8s.io/api, …) at v0.0.0 with
 * `replace => ./staging/...`; a module that requires it needs one replace per
 * staging module to the published v0.<minor>.<patch>. That list is generated from
 * the release's own go.mod, so a version bump is one constant.
 *
 * The binaries go to a cache outside the repository, keyed by version:
 * $SAFE_TERMINATION_KUBE_CACHE (default ~/.cache/safe-termination/kube)/<version>/bin.
 * A second run finds them and returns at once. Nothing built is committed.
 *
 *   node scripts/kube-build.ts            build (or find) the binaries, print their folder
 *   node scripts/kube-build.ts --path     print the folder only if built; exit 1 if not
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { progress as stepProgress } from './progress.ts';

/** The newest 1.37 patch the module proxy serves that builds here. */
export const KUBE_VERSION = 'v1.37.2';

export const KUBE_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'] as const;
export const ETCD = 'etcd';
export type KubeBinary = (typeof KUBE_COMPONENTS)[number] | typeof ETCD;

const GO_CANDIDATES = ['go', '/usr/local/go/bin/go'];

export function kubeCacheRoot(): string {
  return process.env['SAFE_TERMINATION_KUBE_CACHE'] ?? join(homedir(), '.cache/safe-termination/kube');
}

export function kubeBinDir(version: string = KUBE_VERSION): string {
  return join(kubeCacheRoot(), version, 'bin');
}

const ALL_BINARIES: readonly KubeBinary[] = [...KUBE_COMPONENTS, ETCD];

/** The folder of the built binaries, or undefined when any is missing. */
export function builtKubeBinDir(version: string = KUBE_VERSION): string | undefined {
  const dir = kubeBinDir(version);
  return ALL_BINARIES.every((name) => isExecutable(join(dir, name))) ? dir : undefined;
}

function isExecutable(path: string): boolean {
  try {
    return (statSync(path).mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

function goBinary(): string {
  for (const candidate of GO_CANDIDATES) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next
    }
  }
  throw new Error('no Go toolchain: install Go ≥ 1.26 (expected at /usr/local/go/bin/go or on PATH)');
}

export interface ReleaseModule {
  /** `k8s.io/api => k8s.io/api v0.37.2`, one per staging module. */
  readonly stagingReplaces: readonly string[];
  readonly etcdVersion: string;
  readonly goVersion: string;
}

/** What the build module needs, read from the release's own go.mod. */
export function readReleaseModule(goMod: string, version: string = KUBE_VERSION): ReleaseModule {
  const stagingVersion = version.replace(/^v1\./, 'v0.');
  const stagingReplaces: string[] = [];
  for (const match of goMod.matchAll(/^\s*(k8s\.io\/[\w.-]+)\s+=>\s+\.\/staging\/src\/\1\s*$/gm)) {
    stagingReplaces.push(`${match[1]} => ${match[1]} ${stagingVersion}`);
  }
  const etcd = /^\s*go\.etcd\.io\/etcd\/server\/v3\s+(v\S+)/m.exec(goMod);
  const go = /^go\s+(\S+)/m.exec(goMod);
  if (stagingReplaces.length === 0) throw new Error('the release go.mod has no staging replaces: not k8s.io/kubernetes?');
  if (etcd === null || go === null) throw new Error('the release go.mod names no go.etcd.io/etcd/server/v3 or go version');
  return { stagingReplaces, etcdVersion: etcd[1]!, goVersion: go[1]! };
}

export function buildModuleGoMod(release: ReleaseModule, version: string = KUBE_VERSION): string {
  return [
    'module safe-termination.io/kube-build',
    '',
    `go ${release.goVersion}`,
    '',
    'require (',
    `\tk8s.io/kubernetes ${version}`,
    `\tgo.etcd.io/etcd/server/v3 ${release.etcdVersion}`,
    ')',
    '',
    'replace (',
    ...release.stagingReplaces.map((line) => `\t${line}`),
    ')',
    '',
  ].join('\n');
}

/** A line per step (scripts/progress.ts); in CI logs only what was built or found. */
function progress(): { step(text: string): void } {
  const p = stepProgress('kube:build');
  return { step: (text) => p.step(text, { keep: text.startsWith('built') || text.startsWith('found') }) };
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
      if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolvePromise();
      else reject(new Error(`${command} ${args.join(' ')} exited ${code}:\n${stderr.trim()}`));
    });
  });
}

function dirSize(path: string): number {
  let total = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const full = join(path, entry.name);
    total += entry.isDirectory() ? dirSize(full) : statSync(full).size;
  }
  return total;
}

/** Build the binaries unless the cache has them; returns their folder. */
export async function buildKube(version: string = KUBE_VERSION): Promise<string> {
  const log = progress();
  const found = builtKubeBinDir(version);
  if (found !== undefined) {
    log.step(`found ${version} in ${found}`);
    return found;
  }
  const go = goBinary();
  const root = join(kubeCacheRoot(), version);
  const work = join(root, 'module');
  mkdirSync(work, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, GOFLAGS: '-mod=mod', CGO_ENABLED: '0', GOTOOLCHAIN: 'local' };

  log.step(`reading k8s.io/kubernetes@${version}'s go.mod from the module proxy`);
  const download = JSON.parse(
    execFileSync(go, ['mod', 'download', '-json', `k8s.io/kubernetes@${version}`], { cwd: work, env, encoding: 'utf8', maxBuffer: 16 << 20 }),
  ) as { GoMod?: string; Error?: string };
  if (download.GoMod === undefined) throw new Error(`go mod download k8s.io/kubernetes@${version}: ${download.Error ?? 'no go.mod'}`);
  const release = readReleaseModule(readFileSync(download.GoMod, 'utf8'), version);
  writeFileSync(join(work, 'go.mod'), buildModuleGoMod(release, version));
  rmSync(join(work, 'go.sum'), { force: true });
  log.step(`${release.stagingReplaces.length} staging replaces, etcd ${release.etcdVersion}`);

  const [major, minor] = version.replace(/^v/, '').split('.');
  const versionPackage = 'k8s.io/component-base/version';
  const ldflags = [
    '-s',
    '-w',
    `-X ${versionPackage}.gitVersion=${version}`,
    `-X ${versionPackage}.gitMajor=${major}`,
    `-X ${versionPackage}.gitMinor=${minor}`,
    `-X ${versionPackage}.gitTreeState=clean`,
    `-X ${versionPackage}.buildDate=1970-01-01T00:00:00Z`,
  ].join(' ');
  const staging = join(root, 'bin.partial');
  mkdirSync(staging, { recursive: true });
  for (const component of KUBE_COMPONENTS) {
    if (isExecutable(join(staging, component))) continue;
    log.step(`building ${component}`);
    await run(go, ['build', '-trimpath', '-ldflags', ldflags, '-o', join(staging, component), `k8s.io/kubernetes/cmd/${component}`], work, env);
  }
  if (!isExecutable(join(staging, ETCD))) {
    log.step(`building etcd ${release.etcdVersion}`);
    await run(go, ['build', '-trimpath', '-ldflags', '-s -w', '-o', join(staging, ETCD), 'go.etcd.io/etcd/server/v3'], work, env);
  }
  const bin = kubeBinDir(version);
  rmSync(bin, { recursive: true, force: true });
  renameSync(staging, bin);
  log.step(`built ${version} in ${bin} (${(dirSize(bin) / 2 ** 20).toFixed(0)} MiB)`);
  return bin;
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === '--path') {
    const dir = builtKubeBinDir();
    if (dir === undefined) {
      process.stderr.write(`kube:build: ${KUBE_VERSION} is not built: run \`npm run kube:build\`\n`);
      return 1;
    }
    process.stdout.write(`${dir}\n`);
    return 0;
  }
  if (argv.length > 0) {
    process.stderr.write('usage: node scripts/kube-build.ts [--path]\n');
    return 2;
  }
  process.stdout.write(`${await buildKube()}\n`);
  return 0;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`kube:build: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
