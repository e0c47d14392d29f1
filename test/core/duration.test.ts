import t from 'tap';
import { formatDuration, MAX_DURATION_SECONDS, parseDuration } from '../../src/core/duration.ts';

t.test('accepted forms', async (t) => {
  const cases: Array<[string, number]> = [
    ['0', 0],
    ['35', 35],
    ['035', 35],
    ['35s', 35],
    ['2m', 120],
    ['1m30s', 90],
    ['1h', 3600],
    ['1h0m5s', 3605],
    ['1h30m', 5400],
    ['90s', 90],
    ['1m90s', 150],
    ['0s', 0],
    [String(MAX_DURATION_SECONDS), MAX_DURATION_SECONDS],
  ];
  for (const [text, seconds] of cases) t.equal(parseDuration(text), seconds, text);
});

t.test('rejected forms', async (t) => {
  for (const text of ['', ' 35', '35 ', '-5', '+5', '1.5', '1.5s', '5ms', '1d', '30m1h', '1s1m', 'h', 's', '1hh', '5S', '1e3', '0x10', '١٢', String(MAX_DURATION_SECONDS + 1), '9'.repeat(40)]) {
    t.equal(parseDuration(text), undefined, JSON.stringify(text));
  }
});

t.test('formatting round-trips', async (t) => {
  for (const s of [0, 1, 35, 60, 90, 3600, 3605, 5400, 86399]) t.equal(parseDuration(formatDuration(s)), s);
  t.equal(formatDuration(90), '1m30s');
  t.equal(formatDuration(3600), '1h');
});
