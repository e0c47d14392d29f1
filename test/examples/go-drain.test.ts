/**
 * examples/go-drain: `go vet` and `go test` of its packages, then the drain
 * scenarios (drain.ts) on the built server and client. Skipped, saying why, when
 * no Go toolchain is installed.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { drainTests } from './drain.ts';

const DIR = fileURLToPath(new URL('../../examples/go-drain/', import.meta.url));

function findGo(): string | undefined {
  for (const candidate of ['go', '/usr/local/go/bin/go']) {
    try {
      execFileSync(candidate, ['version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // not this one
    }
  }
  return undefined;
}

const go = findGo();
// No downloads: the module has no dependencies, and the toolchain is the one installed.
const env = { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod', GOPROXY: 'off' };

function run(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(go as string, args, { cwd: DIR, env, timeout: 300_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, output: stdout + stderr });
    });
  });
}

if (go === undefined) {
  t.test('examples/go-drain', { skip: 'needs a Go toolchain (go on PATH or /usr/local/go/bin/go); none found' }, async () => undefined);
} else {
  t.setTimeout(600_000);
  const bin = mkdtempSync(join(tmpdir(), 'st-go-drain-'));
  t.teardown(() => rmSync(bin, { recursive: true, force: true }));

  t.test('go vet and go test (the retry package)', async (t) => {
    const vet = await run(['vet', './...']);
    t.equal(vet.code, 0, vet.output);
    const test = await run(['test', '-count=1', './...']);
    t.equal(test.code, 0, test.output);
    t.match(test.output, /ok\s+safe-termination\.example\/go-drain\/retry/);
  });

  t.test('builds', async (t) => {
    const build = await run(['build', '-o', `${bin}/`, './...']);
    t.equal(build.code, 0, build.output);
    t.ok(existsSync(join(bin, 'server')) && existsSync(join(bin, 'client')));
  });

  drainTests(t, {
    cwd: DIR,
    server: (addr, budget) => [join(bin, 'server'), ['-addr', addr, '-shutdown-budget', `${budget}s`]],
    client: (hostPort, calls, attempts) => [
      join(bin, 'client'),
      ['-url', `http://${hostPort}/work?ms=5`, '-udp', hostPort, '-n', String(calls), '-interval', '40ms', '-attempts', String(attempts)],
    ],
  });
}
