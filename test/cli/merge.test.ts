/** The line diff and three-way merge that keep a manifest's formatting around an injection. */
import fc from 'fast-check';
import t from 'tap';
import { alignLines, alignRanges, matchLines, mergeLines, mergeText, patchLine } from '../../src/manifest/merge.ts';

/** Longest common subsequence length, by dynamic programming: the reference. */
function lcs(a: readonly string[], b: readonly string[]): number {
  const row = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let diag = 0;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = a[i - 1] === b[j - 1] ? diag + 1 : Math.max(row[j]!, row[j - 1]!);
      diag = up;
    }
  }
  return row[b.length]!;
}

const lines = fc.array(fc.constantFrom('a', 'b', 'c', 'd', ''), { maxLength: 30 });

t.test('matchLines pairs equal lines, in order, as many as a longest common subsequence', async () => {
  fc.assert(
    fc.property(lines, lines, (a, b) => {
      const map = matchLines(a, b)!;
      let last = -1;
      let count = 0;
      for (let i = 0; i < a.length; i++) {
        const j = map[i]!;
        if (j < 0) continue;
        if (j <= last || a[i] !== b[j]) return false;
        last = j;
        count++;
      }
      return count === lcs(a, b);
    }),
    { numRuns: 500 },
  );
});

t.test('matchLines gives up (undefined) past its budget instead of using unbounded memory', async (t) => {
  const a = Array.from({ length: 400 }, (_, i) => `a${i}`);
  const b = Array.from({ length: 400 }, (_, i) => `b${i}`);
  t.equal(matchLines(a, b, 10_000), undefined);
  t.ok(matchLines(a, b) !== undefined);
});

t.test('merging into an unreformatted text gives the edited text', async () => {
  fc.assert(
    fc.property(lines, lines, (base, edited) => {
      const merged = mergeLines(base, base, edited);
      return merged !== undefined && merged.join('\n') === edited.join('\n');
    }),
    { numRuns: 500 },
  );
});

t.test('an edit is carried into the differently formatted original', async (t) => {
  const base = ['spec:', '  labels: { app: web }', '  containers:', '  - name: app', '    image: x', 'status: {}'];
  const ours = ['spec:', '  labels: {app: web}', '  containers:', '  - name: app', '    image: x', 'status: {}'];
  const edited = ['spec:', '  labels: { app: web }', '  containers:', '  - name: app', '    image: x', '    lifecycle: {}', 'status: {}'];
  t.same(mergeLines(base, ours, edited), ['spec:', '  labels: {app: web}', '  containers:', '  - name: app', '    image: x', '    lifecycle: {}', 'status: {}']);
});

t.test('a changed line keeps its own spacing and comment', async (t) => {
  t.equal(patchLine('a: 45 # team', 'a: 45    # team', 'a: 65 # team'), 'a: 65    # team');
  t.equal(patchLine('x: "a"', "x: 'a'", 'x: "b"'), 'x: "b"', 'unrecognisable: the edited line');
  t.same(mergeLines(['a: 45 # c', 'b: 1'], ['a: 45   # c', 'b:  1'], ['a: 65 # c', 'b: 1']), ['a: 65   # c', 'b:  1']);
});

t.test('a change on a line the original does not have in recognisable form is refused', async (t) => {
  // base line 1 has no counterpart in ours (ours spells the value otherwise, with a line more): cannot place the replacement.
  t.equal(mergeLines(['k:', '  v: 1', 'z: 0'], ['k:', '  # note', '  v: 0x1', 'z: 0'], ['k:', '  v: 2', 'z: 0']), undefined);
});

t.test('lines indented otherwise, or spelt out over several lines, are recognised', async (t) => {
  const base = ['a:', '  - x: 1', '  - y: 2', 'm: {}', 'z: 0'];
  const ours = ['a:', '- x: 1', '  # one more line', '- y: 2', 'm:', '  {}', 'z: 0'];
  const ranges = alignRanges(base, ours)!;
  t.same([...ranges.start], [0, 1, 3, 4, 6]);
  t.same([...ranges.end], [1, 2, 4, 6, 7]);
  // A key added to the mapping of an item, and `m: {}` become a block mapping.
  const edited = ['a:', '  - x: 1', '    w: 3', '  - y: 2', 'm:', '  k: v', 'z: 0'];
  t.same(mergeLines(base, ours, edited), ['a:', '- x: 1', '  w: 3', '  # one more line', '- y: 2', 'm:', '  k: v', 'z: 0']);
  // A changed line keeps its own indentation.
  t.same(mergeLines(base, ours, ['a:', '  - x: 5', '  - y: 2', 'm: {}', 'z: 0']), ['a:', '- x: 5', '  # one more line', '- y: 2', 'm:', '  {}', 'z: 0']);
});

t.test('alignLines pairs lines that differ only in formatting between matched neighbours', async (t) => {
  t.same([...alignLines(['a', 'b { x }', 'c'], ['a', 'b {x}', 'c'])!], [0, 1, 2]);
  t.same([...alignLines(['a', 'b', 'c'], ['a', 'x', 'y', 'c'])!], [0, -1, 3]);
});

t.test('CRLF line endings survive a merge', async (t) => {
  t.equal(mergeText('a: 1\nb: 2\n', 'a: 1\r\nb:  2\r\n', 'a: 1\nb: 2\nc: 3\n'), 'a: 1\r\nb:  2\r\nc: 3\r\n');
});
