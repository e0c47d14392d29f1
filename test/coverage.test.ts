import t from 'tap';
import { belowFloor, byFolder, DEFAULT_FLOOR, folderOf, formatTable, LINE_FLOORS } from '../scripts/coverage.ts';

const file = (total: number, covered: number) => ({ lines: { total, covered }, branches: { total: 10, covered: 5 } });

t.test('files are grouped by src folder, other files by their top folder', async (t) => {
  t.equal(folderOf('src/core/plan.ts'), 'src/core');
  t.equal(folderOf('bench/bench.ts'), 'bench');
  t.equal(folderOf('e2e/kube/x.ts'), 'e2e');
});

t.test('a folder under its floor is named; one at or over it is not', async (t) => {
  const rows = byFolder(
    {
      total: file(0, 0),
      '/repo/src/core/plan.ts': file(100, 99),
      '/repo/src/core/pod.ts': file(100, 80),
      '/repo/src/server/app.ts': file(100, 99),
      '/repo/src/newfolder/x.ts': file(100, 70),
      '/repo/lab/run.ts': file(100, 10),
    },
    '/repo',
  );
  t.same(rows.map((r) => [r.folder, r.lines.total, r.lines.covered]), [['lab', 100, 10], ['src/core', 200, 179], ['src/newfolder', 100, 70], ['src/server', 100, 99]]);
  // core: 89.5 % against its own floor; a new src folder against the default; lab is not judged.
  t.same(belowFloor(rows).map((r) => r.folder), ['src/core', 'src/newfolder']);
  t.equal(rows.find((r) => r.folder === 'lab')!.floor, undefined);
  t.equal(rows.find((r) => r.folder === 'src/newfolder')!.floor, DEFAULT_FLOOR);
  t.equal(rows.find((r) => r.folder === 'src/core')!.floor, LINE_FLOORS['src/core']);
  const table = formatTable(rows);
  t.match(table, new RegExp(`src/core\\s+89\\.5 %\\s+200\\s+50\\.0 %\\s+${LINE_FLOORS['src/core']} % BELOW FLOOR`));
  t.match(table, /lab\s+10\.0 %\s+100\s+50\.0 %\s+\n/);
  t.match(table, /all files\s+71\.6 %\s+500/);
});
