/**
 * The real lab's pure parts: reading kube-proxy's rules (iptables-save and nft
 * output of kube-proxy v1.37.2, trimmed) and judging the windows.
 */
import t from 'tap';
import { detectFigures, figures, formatReaperTable, formatTable, verdict, windowOf } from '../../lab/kube/report.ts';
import { parseRules } from '../../lab/kube/rules.ts';
import type { ClientEvent, KubeRunResult, Mode, StepResult } from '../../lab/kube/scenario.ts';

const IPTABLES = `*nat
:KUBE-SEP-6E7XQMQ4RAYOWTTM - [0:0]
:KUBE-SVC-ERIFXISQEP7F7OF4 - [0:0]
-A KUBE-SERVICES -d 10.96.0.38/32 -p udp -m comment --comment "lab-ipt-unprotected/echo:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4
-A KUBE-SVC-ERIFXISQEP7F7OF4 ! -s 10.244.0.0/16 -d 10.96.0.38/32 -p udp -m comment --comment "lab-ipt-unprotected/echo:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SVC-ERIFXISQEP7F7OF4 -m comment --comment "lab-ipt-unprotected/echo:dns -> 10.244.1.2:53" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-6E7XQMQ4RAYOWTTM
-A KUBE-SVC-ERIFXISQEP7F7OF4 -m comment --comment "lab-ipt-unprotected/echo:dns -> 10.244.1.3:53" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-IT2ZTR26TO4XFPTO
-A KUBE-SVC-ERIFXISQEP7F7OF4 -m comment --comment "lab-ipt-unprotected/echo:dns -> 10.244.1.4:53" -j KUBE-SEP-XLB2PLFHXYGWMBXA
-A KUBE-SEP-6E7XQMQ4RAYOWTTM -p udp -m comment --comment "lab-ipt-unprotected/echo:dns" -m udp -j DNAT --to-destination 10.244.1.2:53
-A KUBE-SVC-5GFMR3YXYNZCXSAB -m comment --comment "lab-ipt-unprotected/solo:http -> 10.244.1.5:8080" -j KUBE-SEP-QJ7LDA2GGDCUMYVS
COMMIT
`;

const NFTABLES = `table ip kube-proxy {
	chain service-endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}

	chain service-UDLTOOUU-lab-nft-unprotected/echo/tcp/http {
		meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.244.1.2 . 8080, 1 : 10.244.1.3 . 8080, 2 : 10.244.1.4 . 8080 }
	}

	chain service-I5FVMCON-lab-nft-unprotected/solo/udp/dns {
		meta l4proto udp dnat to 10.244.1.5:53
	}

	chain service-OLDSTYLE-ns/old/udp/dns {
		numgen random mod 2 vmap { 0 : goto endpoint-5OJB2KTY-ns/old/udp/dns__10.244.1.7/53 , 1 : goto endpoint-X-ns/old/udp/dns__10.244.1.8/53 }
	}

	chain endpoint-ZZZZ-lab-nft-unprotected/echo/tcp/http__10.244.1.9/8080 {
		ip saddr 10.244.1.9 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.1.9:8080
	}
}
`;

const sets = (m: Map<string, Set<string>>): Record<string, string[]> => Object.fromEntries([...m].map(([k, v]) => [k, [...v].sort()]));

t.test('parseRules reads which endpoints each Service port sends new flows to', async (t) => {
  t.same(sets(parseRules('iptables', IPTABLES)), {
    'lab-ipt-unprotected/echo:dns': ['10.244.1.2', '10.244.1.3', '10.244.1.4'],
    'lab-ipt-unprotected/solo:http': ['10.244.1.5'],
  });
  t.same(
    sets(parseRules('nftables', NFTABLES)),
    {
      'lab-nft-unprotected/echo:http': ['10.244.1.2', '10.244.1.3', '10.244.1.4'],
      'lab-nft-unprotected/solo:dns': ['10.244.1.5'],
      'ns/old:dns': ['10.244.1.7', '10.244.1.8'],
    },
    'an endpoint chain no service chain refers to does not count',
  );
  t.same(sets(parseRules('nftables', '')), {});
});

const ev = (t: number, d: number, k: ClientEvent['k'], o: ClientEvent['o'], b?: string): ClientEvent => (b === undefined ? { t, d, k, o } : { t, d, k, o, b });

function step(label: '3→2' | '1→0' | 'lost', mode: Mode, events: ClientEvent[]): StepResult {
  const removal = 1000;
  const ct = { atRemoval: 1, atExit: 1, atEnd: 0, ghosts: 0 };
  return {
    step: label,
    pod: { name: 'echo-x', ip: '10.244.1.2' },
    stored: mode === 'protected' ? { preStop: 'sleep action 5s', grace: 35, record: { v: 1 } } : { preStop: 'none', grace: 30, record: null },
    timeline: { scaled: -20, removal, preStopDone: undefined, sigterm: 0, notReady: undefined, exit: 10, torndown: 200, removed: 250, end: 9000 },
    events,
    conntrack: { udp: ct, tcp: ct },
    gonePackets: { udp: 0, tcp: 0, afterSweep: { udp: 0, tcp: 0 } },
    conntrackSeries: [],
  };
}

const run = (mode: Mode, events32: ClientEvent[]): KubeRunResult => ({
  proxy: 'iptables',
  mode,
  reaper: true,
  namespace: `lab-ipt-${mode}`,
  reaped: [],
  steps: [step('3→2', mode, events32), step('1→0', mode, [ev(2000, 5, 'udp', 'refused')])],
});

t.test('windows: before the deletion, by send time before/after the removal from the rules', async (t) => {
  t.equal(windowOf(ev(-500, 100, 'udp', 'timeout'), 1000), 'before');
  t.equal(windowOf(ev(-500, 2000, 'udp', 'timeout'), 1000), 'race', 'in flight at the deletion, failed after it');
  t.equal(windowOf(ev(900, 2000, 'udp', 'timeout'), 1000), 'race', 'sent before the removal, timed out after it');
  t.equal(windowOf(ev(1000, 5, 'tcp-short', 'refused'), 1000), 'after');
  t.equal(windowOf(ev(5000, 5, 'udp', 'timeout'), undefined), 'race', 'never removed: all race');
});

t.test('figures count per kind and window; served-after counts the removed pod answering', async (t) => {
  const [s32, s10] = figures(
    run('unprotected', [ev(100, 2000, 'udp', 'timeout'), ev(1200, 3, 'udp', 'ok', 'echo-x'), ev(1300, 2000, 'udp-pinned', 'timeout'), ev(50, 2, 'tcp-short', 'refused'), ev(60, 2, 'tcp-short', 'ok', 'echo-y')]),
  );
  t.same(s32!.kinds.udp, { sent: 2, failed: 1, byWindow: { before: 0, race: 1, after: 0 }, outcomes: { refused: 0, reset: 0, unreachable: 0, timeout: 1, wrong: 0 }, servedAfterRemoval: 1, afterSweep: 0 });
  t.equal(s32!.kinds['udp-pinned']!.byWindow.after, 1);
  t.equal(s32!.kinds['tcp-short']!.byWindow.race, 1);
  t.equal(s10!.kinds.udp!.byWindow.after, 1);
  const table = formatTable([s32!, s10!]);
  t.match(table, /iptables\s+unprotected\s+3→2\s+udp lookups\s+2\s+1\s+1\s+0/);
  t.match(table, /out of the rules \+1\.0s, SIGTERM \+0\.0s/);
});

t.test('verdict: the race unprotected, none protected; pinned flows and 1→0 reported, not judged', async (t) => {
  const u = figures(run('unprotected', [ev(100, 2000, 'udp', 'timeout'), ev(200, 3, 'tcp-short', 'refused')]));
  const p = figures(run('protected', [ev(100, 5, 'udp', 'ok'), ev(3000, 2000, 'udp-pinned', 'timeout'), ev(3000, 2000, 'tcp-stream', 'reset')]));
  const ok = verdict([...u, ...p]);
  t.ok(ok.ok, ok.lines.join('\n'));
  t.same(
    ok.checks.map((c) => [c.name, c.proxy, c.ok]),
    [
      ['endpoint-left-rules', 'all', true],
      ['pods-through-webhook', 'all', true],
      ['unprotected-race', 'iptables', true],
      ['protected-no-race-failure', 'iptables', true],
    ],
  );
  t.match(ok.lines.join('\n'), /iptables protected 3→2: race 0 .*pinned — udp-pinned 1, tcp-stream 1/);

  const early = verdict([...figures(run('unprotected', [ev(-3000, 5, 'udp', 'timeout'), ev(200, 3, 'tcp-short', 'refused')])), ...p]);
  t.ok(early.ok, 'a failure before the deletion is not judged');
  t.ok(early.lines.includes('(failures before any deletion, not judged: iptables unprotected 3→2 1)'), 'but said');

  const noRace = verdict([...figures(run('unprotected', [ev(3000, 5, 'udp', 'timeout')])), ...p]);
  t.notOk(noRace.ok);
  t.match(noRace.lines.at(-1), /FAILED — unprotected-race/);

  const raced = verdict([...u, ...figures(run('protected', [ev(500, 2000, 'tcp-ka', 'reset')]))]);
  t.notOk(raced.ok);
  t.match(raced.checks.find((c) => c.name === 'protected-no-race-failure')!.message, /failed 1 short flows in the race window \(udp 0, tcp-short 0, tcp-ka 1\)|tcp-ka 1/);

  const stuck = verdict([...figures(run('unprotected', [ev(100, 2000, 'udp', 'timeout')])).map((s) => ({ ...s, timeline: { ...s.timeline, removal: undefined } })), ...p]);
  t.notOk(stuck.checks.find((c) => c.name === 'endpoint-left-rules')!.ok);

  const notInjected = verdict([...u, ...figures(run('protected', [])).map((s) => ({ ...s, stored: { preStop: 'none', grace: 30, record: null } }))]);
  t.notOk(notInjected.checks.find((c) => c.name === 'pods-through-webhook')!.ok);
});

/** A protected run with the reaper on or off: 3→2, 1→0 and a lost pod; the sweep time is +6.25 s. */
function reaperRun(reaper: boolean, events: Partial<Record<'3→2' | '1→0' | 'lost', ClientEvent[]>>, packetsAfterSweep = 0): KubeRunResult {
  const steps = (['3→2', '1→0', 'lost'] as const).map((label) => {
    const s = step(label, 'protected', events[label] ?? []);
    const pod = { name: `${label === '3→2' ? 'echo' : label === '1→0' ? 'solo' : 'lost'}-x`, ip: '10.244.1.2' };
    const tcp = label === 'lost' ? packetsAfterSweep : 0;
    return { ...s, pod, timeline: { ...s.timeline, sweep: 6250 }, gonePackets: { udp: 0, tcp, afterSweep: { udp: 0, tcp } } };
  });
  const stale: Record<string, number> = reaper ? {} : { 'lab-ipt-protected-noreap/lost tcp': 3 };
  return {
    proxy: 'iptables',
    mode: 'protected',
    reaper,
    namespace: 'lab-ipt-protected',
    reaped: reaper ? [{ time: '', service: 'lost', reaped: { tcp: 3 }, targets: ['10.244.1.2:8080'] }] : [],
    diagnose: { exitCode: reaper ? 0 : 3, entries: 100, stale: reaper ? 0 : 3, staleByService: stale },
    steps,
  };
}

t.test('detect: a tcp-long failure is detected (RST, ICMP) or never answered', async (t) => {
  t.same(detectFigures([ev(300, 6000, 'tcp-long', 'reset'), ev(-500, 100, 'tcp-long', 'reset'), ev(400, 14_000, 'tcp-long', 'timeout'), ev(400, 5, 'tcp-stream', 'timeout')]), { detected: 1, latestMs: 6300, never: 1 });
  t.same(detectFigures([]), { detected: 0, latestMs: undefined, never: 0 });
});

t.test('verdict: the reaper on against off, judged from the sweep time', async (t) => {
  // On: the long stream to the lost pod reset at +6.5 s; a pinned UDP query lost at SIGTERM (before the sweep time).
  const on = figures(reaperRun(true, { '3→2': [ev(3000, 2000, 'udp-pinned', 'timeout')], lost: [ev(300, 6200, 'tcp-long', 'reset')] }));
  // Off: the long stream never answered, its retransmissions still going to the gone pod.
  const off = figures(reaperRun(false, { '3→2': [ev(3000, 2000, 'udp-pinned', 'timeout')], lost: [ev(300, 13_000, 'tcp-long', 'timeout')] }, 4));
  const v = verdict([...on, ...off]);
  t.ok(v.ok, v.lines.join('\n'));
  t.same(
    v.checks.filter((c) => c.name.startsWith('reaper')).map((c) => [c.name, c.ok]),
    [
      ['reaper-no-failure-after-sweep', true],
      ['reaper-off-long-streams-blackholed', true],
      ['reaper-scale-to-zero-clean', true],
      ['reaper-diagnose-clean', true],
    ],
  );
  t.equal(on[0]!.kinds['udp-pinned']!.byWindow.after, 1, 'the SIGTERM loss is an after-removal failure…');
  t.equal(on[0]!.kinds['udp-pinned']!.afterSweep, 0, '…not one after the sweep time');
  t.equal(off[2]!.kinds['tcp-long']!.afterSweep, 1, 'the blackholed stream waits across the sweep time');
  t.equal(on[2]!.reaped, 3);
  t.match(v.lines.join('\n'), /reaper on vs off, lost: .*tcp-long 0\/0 vs 0\/1; long streams never answered 0 vs 1; packets to the gone pod after the sweep 0 vs 4/);
  t.match(formatReaperTable([...on, ...off]), /iptables\s+protected\s+off\s+lost\s+tcp long\s+1\s+0\s+1\s+1/);

  const leaky = verdict([...figures(reaperRun(true, { lost: [ev(300, 13_000, 'tcp-long', 'timeout')] }, 2)), ...off]);
  t.notOk(leaky.checks.find((c) => c.name === 'reaper-no-failure-after-sweep')!.ok, 'with the reaper, a blackholed stream fails the claim');
  const same = verdict([...on, ...figures(reaperRun(false, { lost: [ev(300, 6200, 'tcp-long', 'reset')] }))]);
  t.notOk(same.checks.find((c) => c.name === 'reaper-off-long-streams-blackholed')!.ok, 'no difference without the reaper: the claim fails');
  t.same(verdict(on).checks.filter((c) => c.name.startsWith('reaper')), [], 'not judged without both runs');
});
