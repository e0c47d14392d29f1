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
      '/repo/src/server/app.ts': file(100, 90),
      '/repo/lab/run.ts': file(100, 10),
    },
    '/repo',
  );
  t.same(rows.map((r) => [r.folder, r.lines.total, r.lines.covered]), [['lab', 100, 10], ['src/core', 200, 179], ['src/server', 100, 90]]);
  // core: 89.5 % against its floor; lab against the default floor.
  t.same(belowFloor(rows).map((r) => r.folder), ['lab', 'src/core']);
  t.equal(rows.find((r) => r.folder === 'lab')!.floor, DEFAULT_FLOOR);
  t.equal(rows.find((r) => r.folder === 'src/core')!.floor, LINE_FLOORS['src/core']);
  const table = formatTable(rows);
  t.match(table, /src\/core\s+89\.5 %\s+200\s+50\.0 %\s+95 % BELOW FLOOR/);
  t.match(table, /all files\s+69\.8 %\s+400/);
});
