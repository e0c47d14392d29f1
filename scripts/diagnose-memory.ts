/**
 * Peak memory of `safe-termination diagnose` on a large conntrack table: writes a
 * generated table of N entries (default 500k, the size of a busy node's) to a
 * temporary file, runs `diagnose --conntrack-file` on it in a child process and
 * prints the child's peak RSS next to the file's size. A figure, not a test
 * (test/diagnose/memory.test.ts checks the bound on a smaller table).
 *
 *   node scripts/diagnose-memory.ts [--entries 500000] [--keep]
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** One Service (lab/echo: 10.96.0.10, UDP 53 and TCP 80→8080) with live endpoints 10.244.1.3 and .4. */
export const ENDPOINTS = join(ROOT, 'test/fixtures/conntrack/lab-unprotected-endpoints.json');

/**
 * Line `i` of a generated table in `conntrack -L -o extended` form: flows to the
 * echo Service, one in 20 to the gone endpoint 10.244.1.2 (stale, unless TCP in
 * TIME_WAIT), and one in 10 not translated at all.
 */
export function tableLine(i: number): string {
  const client = `10.244.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}`;
  const sport = 1024 + (i % 60000);
  const target = i % 20 === 0 ? '10.244.1.2' : i % 2 === 0 ? '10.244.1.3' : '10.244.1.4';
  if (i % 10 === 5) {
    return `ipv4     2 tcp      6 431999 ESTABLISHED src=${client} dst=10.0.0.1 sport=${sport} dport=443 packets=12 bytes=2048 src=10.0.0.1 dst=${client} sport=443 dport=${sport} packets=10 bytes=4096 [ASSURED] mark=0 use=1`;
  }
  if (i % 3 === 0) {
    return `ipv4     2 udp      17 28 src=${client} dst=10.96.0.10 sport=${sport} dport=53 packets=3 bytes=180 src=${target} dst=${client} sport=53 dport=${sport} packets=3 bytes=420 [ASSURED] mark=0 use=1`;
  }
  const state = i % 7 === 0 ? 'TIME_WAIT' : 'ESTABLISHED';
  return `ipv4     2 tcp      6 117 ${state} src=${client} dst=10.96.0.10 sport=${sport} dport=80 packets=5 bytes=328 src=${target} dst=${client} sport=8080 dport=${sport} packets=5 bytes=354 [ASSURED] mark=0 use=1`;
}

/** Write `entries` generated lines to `path`. */
export async function writeTable(path: string, entries: number): Promise<void> {
  const out = createWriteStream(path);
  let batch: string[] = [];
  for (let i = 0; i < entries; i++) {
    batch.push(tableLine(i));
    if (batch.length === 10_000) {
      if (!out.write(batch.join('\n') + '\n')) await new Promise((r) => out.once('drain', r));
      batch = [];
    }
  }
  out.end(batch.length > 0 ? batch.join('\n') + '\n' : '');
  await new Promise<void>((resolve, reject) => {
    out.on('finish', resolve).on('error', reject);
  });
}

/** Prints the process's peak RSS (KiB) on stderr as it exits. */
const RSS_HOOK =
  "data:text/javascript,process.on('exit',()=>{process.stderr.write('\\nmaxrss-kib '+process.resourceUsage().maxRSS+'\\n')})";

export interface DiagnoseRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Peak resident set of the child, bytes. */
  readonly maxRssBytes: number;
  readonly ms: number;
}

/** `safe-termination diagnose ARGS` in a child process, with its peak RSS. */
export function runDiagnose(args: readonly string[]): Promise<DiagnoseRun> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', RSS_HOOK, join(ROOT, 'src/cli/main.ts'), 'diagnose', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /\nmaxrss-kib (\d+)\n/.exec(stderr);
      resolve({ code: code ?? 1, stdout, stderr: stderr.replace(/\nmaxrss-kib \d+\n/, ''), maxRssBytes: m === null ? Number.NaN : Number(m[1]) * 1024, ms: Date.now() - started });
    });
  });
}

const MB = 1024 * 1024;

async function main(): Promise<void> {
  const at = process.argv.indexOf('--entries');
  const entries = at === -1 ? 500_000 : Number(process.argv[at + 1]);
  if (!Number.isInteger(entries) || entries < 1) throw new Error('--entries takes a positive integer');
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-memory-'));
  try {
    const table = join(dir, 'conntrack.txt');
    await writeTable(table, entries);
    const size = (await stat(table)).size;
    const small = join(dir, 'small.txt');
    await writeTable(small, 100);
    const base = await runDiagnose(['--endpointslices', ENDPOINTS, '--conntrack-file', small, '--json']);
    const big = await runDiagnose(['--endpointslices', ENDPOINTS, '--conntrack-file', table, '--json']);
    if (big.code !== 0 && big.code !== 3) throw new Error(`diagnose failed (exit ${big.code}): ${big.stderr}`);
    const report = JSON.parse(big.stdout) as { entries: number; stale: number };
    process.stdout.write(
      [
        `table: ${entries} entries, ${(size / MB).toFixed(1)} MB (${report.entries} read, ${report.stale} stale; exit ${big.code})`,
        `diagnose peak RSS: ${(big.maxRssBytes / MB).toFixed(1)} MB in ${(big.ms / 1000).toFixed(1)} s (100 entries: ${(base.maxRssBytes / MB).toFixed(1)} MB)`,
        '',
      ].join('\n'),
    );
    if (process.argv.includes('--keep')) process.stdout.write(`kept ${table}\n`);
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
