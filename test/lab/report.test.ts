/** The lab's figures and verdict (pure: no root, no namespaces). */
import t from 'tap';
import { figures, formatTable, verdict } from '../../lab/report.ts';
import type { RunFigures } from '../../lab/report.ts';
import type { ClientEvent, Mode, ProtocolConntrack, RunResult } from '../../lab/scenario.ts';

const REMOVAL = 1000;
const ct = (atRemoval: number, stale: number, draining: number): ProtocolConntrack => ({ atRemoval, staleAtRemoval: stale, drainingAtRemoval: draining, atExit: 0, ghosts: 0 });

/** A run: 40 good answers per kind, plus the given failures; `udpCt` entries to the pod at removal. */
function run(mode: Mode, failures: readonly ClientEvent[], udpCt = 0): RunFigures {
  const ok: ClientEvent[] = [];
  for (const k of ['udp', 'tcp-ka', 'tcp-short'] as const) for (let i = 0; i < 40; i++) ok.push({ t: -2000 + i * 100, d: 2, k, o: 'ok', b: 'b2' });
  const result: RunResult = {
    mode,
    sleepSeconds: mode === 'protected' ? 5 : 0,
    graceSeconds: mode === 'protected' ? 35 : 30,
    removed: { name: 'b1', ip: '10.244.1.2' },
    timeline: { removal: REMOVAL, sigterm: mode === 'protected' ? 5000 : 0, exit: mode === 'protected' ? 5020 : 30, end: 8000, cleanups: [] },
    events: [...ok, ...failures],
    conntrack: { udp: ct(udpCt, mode === 'protected' ? 0 : udpCt, mode === 'protected' ? udpCt : 0), tcp: ct(0, 0, 0) },
    samples: 10,
  };
  return figures(result);
}

/** Refused at once while the rules still had the pod. */
const beforeRemoval: ClientEvent[] = [
  { t: 200, d: 1, k: 'udp', o: 'refused' },
  { t: 300, d: 1, k: 'tcp-short', o: 'refused' },
];
/** Sent before the removal, timed out after it; and one sent after it. */
const afterRemoval: ClientEvent[] = [
  { t: 800, d: 2000, k: 'udp', o: 'timeout' },
  { t: 1500, d: 2000, k: 'udp', o: 'timeout' },
];

t.test('figures: failures by phase, and those sent after the removal', async (t) => {
  const f = run('unprotected', [...beforeRemoval, ...afterRemoval, { t: 1200, d: 2000, k: 'udp-pinned', o: 'timeout' }], 6);
  t.equal(f.failed, 4, 'udp-pinned is not counted');
  t.equal(f.failedAfterRemoval, 2);
  t.same(f.kinds.udp?.failedByPhase, { 'before-deletion': 0, 'before-removal': 1, 'after-removal': 2 });
  t.equal(f.kinds.udp?.failedSentAfterRemoval, 1);
  t.equal(f.kinds['tcp-short']?.failedByPhase['after-removal'], 0);
  t.equal(f.kinds['udp-pinned']?.failed, 1);
});

t.test('verdict ok: failures after the removal with entries still to the pod, none protected; drain-only printed, not judged', async (t) => {
  const unprotected = run('unprotected', [...beforeRemoval, ...afterRemoval], 6);
  const protectedRun = run('protected', [], 8);
  for (const drainOnly of [undefined, run('drain-only', beforeRemoval, 3), run('drain-only', [], 0)]) {
    const v = verdict(unprotected, protectedRun, drainOnly);
    t.ok(v.ok, v.lines.join('\n'));
    t.ok(v.checks.every((c) => c.ok));
    t.equal(v.lines.some((l) => l.startsWith('drain-only:')), drainOnly !== undefined, 'the drain-only line iff the run happened');
    t.match(v.lines.at(-1), /^verdict: ok/);
  }
  const v = verdict(unprotected, protectedRun, run('drain-only', beforeRemoval, 3));
  t.match(v.lines.join('\n'), /^unprotected: 4 failed \(udp 3, tcp-ka 0, tcp-short 1\), 2 after the removal from the rules \(1 sent after it\); 6 conntrack entries to the pod after its removal \(udp 6, tcp 0; 6 stale, 0 draining\)$/m);
  t.match(v.lines.join('\n'), /^drain-only: +2 failed .*does not prevent them \(reported, not judged\)$/m);
  t.match(v.lines.join('\n'), /^protected: +0 failed .*8 draining\) — with the plan's preStop sleep of 5s$/m);
});

t.test('verdict: each failed condition is named and said', async (t) => {
  const protectedRun = run('protected', [], 8);
  const failedChecks = (u: RunFigures, p: RunFigures = protectedRun) => {
    const v = verdict(u, p);
    t.notOk(v.ok);
    return { names: v.checks.filter((c) => !c.ok).map((c) => c.name), text: v.lines.filter((l) => l.startsWith('verdict: FAILED')).join('\n') };
  };

  t.ok(verdict(run('unprotected', beforeRemoval, 6), protectedRun).ok, 'failures before the removal, with stale entries, are the bug shown');

  let r = failedChecks(run('unprotected', [...beforeRemoval, ...afterRemoval], 0));
  t.same(r.names, ['unprotected-stale-conntrack'], 'failures without entries still to the pod are not enough');
  t.match(r.text, /no conntrack entry pointed at the removed pod after its removal \(udp 0, tcp 0\)/);

  r = failedChecks(run('unprotected', [], 0));
  t.same(r.names, ['unprotected-fails', 'unprotected-stale-conntrack']);
  t.match(r.text, /no failed request — the lab did not reproduce the bug/);

  r = failedChecks(run('unprotected', afterRemoval, 6), run('protected', [{ t: 1500, d: 2000, k: 'udp', o: 'timeout' }], 8));
  t.same(r.names, ['protected-no-failure']);
  t.match(r.text, /protected-no-failure: protected run: 1 failed requests \(udp 1, tcp-ka 0, tcp-short 0\) despite the plan's preStop sleep of 5s/);

  // A failing drain-only run never fails the verdict, nor does a drain-only run without failures.
  t.ok(verdict(run('unprotected', afterRemoval, 6), protectedRun, run('drain-only', afterRemoval, 4)).ok);
});

t.test('table: a row per run and kind, with the after-removal column', async (t) => {
  const text = formatTable([run('unprotected', [...beforeRemoval, ...afterRemoval], 6), run('drain-only', beforeRemoval, 3), run('protected', [], 8)]);
  const lines = text.trimEnd().split('\n');
  t.match(lines[0], /^run +traffic +sent +failed +after-removal +refused +reset +unreach +timeout +wrong +served-by-removed +ct@removal +diagnose@removal +ct@exit +ghost-ct$/);
  t.same(
    lines.slice(1).map((l) => l.split(/\s{2,}/).slice(0, 2).join(' | ')),
    ['unprotected | udp (lookups)', 'unprotected | tcp (keep-alive)', 'unprotected | tcp (short conns)', 'drain-only | udp (lookups)', 'drain-only | tcp (keep-alive)', 'drain-only | tcp (short conns)', 'protected | udp (lookups)', 'protected | tcp (keep-alive)', 'protected | tcp (short conns)'],
  );
  t.match(lines[1], /^unprotected +udp \(lookups\) +43 +3 +2 +1 +0 +0 +2 +0 +0 +udp 6 +6 stale/);
});
