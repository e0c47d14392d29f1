/** scripts/progress.ts: a line per step with the elapsed time; quiet in CI logs unless kept. */
import t from 'tap';
import { formatElapsed, progress, quietProgress } from '../scripts/progress.ts';

function sink(isTTY: boolean): { isTTY: boolean; lines: string[]; write(s: string): void } {
  const lines: string[] = [];
  return { isTTY, lines, write: (s: string) => void lines.push(s) };
}

t.test('on a terminal: every step, with the elapsed time', async (t) => {
  let now = 1000;
  const out = sink(true);
  const p = progress('lab', { env: { CI: 'true' }, stream: out, now: () => now });
  p.step('starting the control plane');
  now += 4250;
  p.step('iptables / unprotected (run 1 of 3)');
  now += 61_000;
  p.step('done');
  t.same(out.lines, ['lab [0.0s] starting the control plane\n', 'lab [4.3s] iptables / unprotected (run 1 of 3)\n', 'lab [1m05s] done\n'], 'a terminal shows the steps even in CI');
  t.equal(p.elapsed(), 65.25);
});

t.test('in CI logs (CI set, stderr not a terminal): only the steps marked keep', async (t) => {
  const out = sink(false);
  const p = progress('kube:build', { env: { CI: '1' }, stream: out, now: () => 0 });
  p.step('building kube-proxy');
  p.step('built v1.37.2', { keep: true });
  t.same(out.lines, ['kube:build [0.0s] built v1.37.2\n']);
  const local = sink(false);
  progress('bench', { env: {}, stream: local, now: () => 0 }).step('sanity');
  t.same(local.lines, ['bench [0.0s] sanity\n'], 'not in CI: every step, even into a file');
});

t.test('quietProgress and formatElapsed', async (t) => {
  t.equal(quietProgress({ CI: 'true' }, { isTTY: false }), true);
  t.equal(quietProgress({ CI: 'true' }, {}), true, 'a pipe has no isTTY');
  t.equal(quietProgress({ CI: 'true' }, { isTTY: true }), false);
  t.equal(quietProgress({}, { isTTY: false }), false);
  t.equal(quietProgress({ CI: '' }, { isTTY: false }), false, 'CI set empty is not CI');
  t.equal(quietProgress({ CI: 'false' }, { isTTY: false }), false);
  t.equal(formatElapsed(0.04), '0.0s');
  t.equal(formatElapsed(59.94), '59.9s');
  t.equal(formatElapsed(60), '1m00s');
  t.equal(formatElapsed(3725), '62m05s');
});
