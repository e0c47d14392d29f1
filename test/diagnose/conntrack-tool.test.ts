/** Running the conntrack tool: stand-in binaries for the behaviours of real conntrack-tools versions. */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { listConntrack } from '../../src/host/conntrack-tool.ts';

const FIX = fileURLToPath(new URL('../fixtures/conntrack/', import.meta.url));

async function fake(t: { teardown(fn: () => unknown): void }, script: string): Promise<{ bin: string; calls: () => Promise<string[]> }> {
  const dir = await mkdtemp(join(tmpdir(), 'st-ct-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const bin = join(dir, 'conntrack');
  await writeFile(bin, `#!/bin/sh\necho "$@" >> ${join(dir, 'calls')}\n${script}\n`);
  await chmod(bin, 0o755);
  return { bin, calls: async () => (await readFile(join(dir, 'calls'), 'utf8')).trim().split('\n') };
}

t.test('current conntrack-tools list every family at once: one call', async (t) => {
  const f = await fake(t, `cat ${join(FIX, 'netns-extended.txt')}`);
  const r = await listConntrack({ bin: f.bin, filter: ['-p', 'udp'] });
  t.equal(r.entries.length, 5);
  t.same(await f.calls(), ['-L -o extended -p udp']);
});

t.test('an old conntrack lists IPv4 only: IPv6 is asked for separately; its failure is not fatal', async (t) => {
  const v4 = join(FIX, 'lab-unprotected-at-removal.txt');
  const ok = await fake(t, `case "$*" in *"-f ipv6"*) grep ^ipv6 ${join(FIX, 'netns-extended.txt')}; exit 0;; esac\ncat ${v4}`);
  const r = await listConntrack({ bin: ok.bin });
  t.equal(r.entries.length, 86);
  t.equal(r.entries.filter((e) => e.family === 'ipv6').length, 1);
  const broken = await fake(t, `case "$*" in *"-f ipv6"*) echo "conntrack v1.4.4 (conntrack-tools): Protocol not supported" >&2; exit 1;; esac\ncat ${v4}`);
  t.equal((await listConntrack({ bin: broken.bin })).entries.length, 85);
});

t.test('a hung tool is killed after the timeout', async (t) => {
  const f = await fake(t, 'exec sleep 30');
  await t.rejects(listConntrack({ bin: f.bin, timeoutMs: 200 }), /did not finish within 200 ms/);
});

t.test('lines that are not entries are reported, not fatal', async (t) => {
  const f = await fake(t, `cat ${join(FIX, 'netns-extended.txt')}; echo "this is not an entry"`);
  const r = await listConntrack({ bin: f.bin });
  t.equal(r.entries.length, 5);
  t.match(r.skipped, [{ lineNumber: 6, text: 'this is not an entry' }]);
});
