/**
 * `diagnose --conntrack-file` streams the table: its peak RSS (a child process)
 * does not grow with the table's size. The 500k-entry figure in the README comes
 * from `node scripts/diagnose-memory.ts`; this checks the bound on 200k entries.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ENDPOINTS, runDiagnose, writeTable } from '../../scripts/diagnose-memory.ts';

t.setTimeout(180_000);

t.test('a 200k-entry table costs less extra memory than half its text', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-memory-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const big = join(dir, 'big.txt');
  const small = join(dir, 'small.txt');
  await writeTable(big, 200_000);
  await writeTable(small, 100);
  const size = (await stat(big)).size;
  const base = await runDiagnose(['--endpointslices', ENDPOINTS, '--conntrack-file', small, '--json']);
  const run = await runDiagnose(['--endpointslices', ENDPOINTS, '--conntrack-file', big, '--json']);
  t.equal(run.code, 3, run.stderr);
  t.match(JSON.parse(run.stdout), { entries: 200_000 });
  t.ok(Number.isFinite(run.maxRssBytes) && Number.isFinite(base.maxRssBytes), 'the child reported its peak RSS');
  const MB = 1024 * 1024;
  const grew = run.maxRssBytes - base.maxRssBytes;
  t.comment(`table ${(size / MB).toFixed(1)} MB: peak RSS ${(run.maxRssBytes / MB).toFixed(1)} MB (100 entries: ${(base.maxRssBytes / MB).toFixed(1)} MB)`);
  t.ok(grew < size / 2, `peak RSS grew by ${(grew / MB).toFixed(1)} MB for a ${(size / MB).toFixed(1)} MB table (bound: half of it)`);
});
