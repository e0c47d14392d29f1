/** batchPerTurn: inputs of one event-loop turn handled back to back, each caller settled with its own result. */
import t from 'tap';
import { batchPerTurn } from '../../src/server/turn-batch.ts';

t.test('inputs of one turn are handled together, after the turn, each answered with its own result', async (t) => {
  const seen: string[] = [];
  const double = batchPerTurn((s: string) => {
    seen.push(s);
    return s + s;
  });
  const answers = ['a', 'b', 'c'].map((s) => double(s));
  t.same(seen, [], 'nothing runs while the turn is still going');
  const first = await answers[0];
  t.equal(first, 'aa');
  t.same(seen, ['a', 'b', 'c'], 'by the first answer, the whole batch has been handled, in order');
  t.same(await Promise.all(answers), ['aa', 'bb', 'cc']);

  const later = double('d');
  t.same(seen, ['a', 'b', 'c'], 'a later input waits for its own turn');
  t.equal(await later, 'dd');
});

t.test('a throw rejects only its own caller', async (t) => {
  const check = batchPerTurn((n: number) => {
    if (n < 0) throw new Error(`negative: ${n}`);
    return n;
  });
  const results = await Promise.allSettled([check(1), check(-2), check(3)]);
  t.same(
    results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
    [1, 'negative: -2', 3],
  );
});
