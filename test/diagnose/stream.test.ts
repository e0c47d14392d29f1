/** readConntrackText (host/conntrack-table.ts): a listing in chunks cut anywhere gives the tally of the whole text. */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { diagnose } from '../../src/diagnose/classify.ts';
import { parseConntrack } from '../../src/diagnose/conntrack.ts';
import { buildServiceIndex } from '../../src/diagnose/endpoints.ts';
import { DiagnoseTally } from '../../src/diagnose/tally.ts';
import { readConntrackText } from '../../src/host/conntrack-table.ts';

const FIX = new URL('../fixtures/conntrack/', import.meta.url);
const index = buildServiceIndex((JSON.parse(readFileSync(new URL('lab-unprotected-endpoints.json', FIX), 'utf8')) as { items: unknown[] }).items, []);

async function* chunks(text: string, size: number): AsyncIterable<Buffer> {
  for (let i = 0; i < text.length; i += size) yield Buffer.from(text.slice(i, i + size), 'latin1');
}

for (const name of ['lab-unprotected-at-removal.txt', 'netns-extended.txt', 'netns-default.txt', 'proc-nf_conntrack.txt']) {
  t.test(name, async (t) => {
    const text = readFileSync(new URL(name, FIX), 'latin1') + 'not an entry\nconntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n';
    const whole = parseConntrack(text);
    for (const size of [1, 7, 64, 1000, text.length]) {
      const tally = new DiagnoseTally(index);
      const read = await readConntrackText(chunks(text, size), (e) => tally.add(e));
      t.equal(read.entries, whole.entries.length, `chunks of ${size}: every entry`);
      t.equal(read.skipped, whole.skipped.length);
      t.same(read.firstSkipped, { lineNumber: whole.skipped[0]?.lineNumber, reason: whole.skipped[0]?.reason });
      if (!name.startsWith('proc-')) t.same(tally.report(), diagnose(whole.entries, index), `chunks of ${size}: the same report`);
    }
  });
}
