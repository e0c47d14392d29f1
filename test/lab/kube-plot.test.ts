/** The real lab's --plot picture, drawn from a synthetic timeline: valid XML, the windows, markers, dots and conntrack line. */
import t from 'tap';
import { emulatedAsRun, ghostWindowEnd, plotTimelines, PLOT_COLOURS } from '../../lab/kube/plot.ts';
import type { RunResult } from '../../lab/scenario.ts';
import type { ClientEvent, KubeRunResult, Mode, StepResult } from '../../lab/kube/scenario.ts';

/**
 * A strict well-formedness check for the XML the plotter writes (no dependency): one
 * prolog, elements properly nested with quoted and unique attributes, text without a
 * raw `<` or a bare `&`. Returns the problems.
 */
export function xmlProblems(xml: string): string[] {
  const problems: string[] = [];
  const body = xml.replace(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n/, '');
  if (body === xml) problems.push('no XML declaration');
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[A-Za-z][\w:-]*="[^"<]*")*)\s*(\/?)>/g;
  const stack: string[] = [];
  let at = 0;
  let roots = 0;
  const checkText = (text: string, where: number): void => {
    if (text.includes('<')) problems.push(`a raw < or a malformed tag near offset ${where}: ${text.slice(0, 60)}`);
    for (const m of text.matchAll(/&([^;\s]*);?/g)) if (!/^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);$/.test(m[0])) problems.push(`a bare & near offset ${where}`);
  };
  for (const m of body.matchAll(tag)) {
    checkText(body.slice(at, m.index), at);
    at = m.index + m[0].length;
    const [, close, name, attrs, selfClose] = m as unknown as [string, string, string, string, string];
    const names = [...attrs.matchAll(/([A-Za-z][\w:-]*)=/g)].map((a) => a[1]);
    if (new Set(names).size !== names.length) problems.push(`<${name}> repeats an attribute`);
    checkText(attrs.replace(/[\w:-]+="/g, '').replace(/"/g, ''), m.index);
    if (close === '/') {
      if (stack.pop() !== name) problems.push(`</${name}> closes the wrong element`);
    } else if (selfClose !== '/') {
      if (stack.length === 0) roots++;
      stack.push(name);
    } else if (stack.length === 0) roots++;
  }
  checkText(body.slice(at).trim(), at);
  if (stack.length > 0) problems.push(`unclosed: ${stack.join(' > ')}`);
  if (roots !== 1) problems.push(`${roots} root elements`);
  return problems;
}

const ev = (t: number, d: number, k: ClientEvent['k'], o: ClientEvent['o'], b?: string): ClientEvent => (b === undefined ? { t, d, k, o } : { t, d, k, o, b });

function step(mode: Mode): StepResult {
  const protectedRun = mode === 'protected';
  const sigterm = protectedRun ? 8000 : 0;
  const events: ClientEvent[] = [];
  for (let t = -2000; t < 12_000; t += 100) events.push(ev(t, 2, 'udp', 'ok', t % 300 === 0 ? 'echo-a-<1>' : 'echo-b'));
  // Unprotected: two failures in the race window, one after (a ghost).
  if (!protectedRun) events.push(ev(300, 2000, 'udp', 'timeout'), ev(500, 3, 'tcp-short', 'refused'), ev(1500, 3, 'udp-pinned', 'reset'));
  return {
    step: '3→2',
    pod: { name: 'echo-a-<1>', ip: '10.244.1.2' },
    stored: protectedRun ? { preStop: 'sleep action 8s', grace: 38, record: { v: 1 } } : { preStop: 'none', grace: 30, record: null },
    timeline: { scaled: -40, removal: 900, preStopDone: protectedRun ? 8000 : undefined, sigterm, notReady: undefined, exit: sigterm + 100, torndown: sigterm + 300, removed: sigterm + 400, end: 12_000 },
    events,
    conntrack: { udp: { atRemoval: 3, atExit: 1, atEnd: 0, ghosts: 1 }, tcp: { atRemoval: 1, atExit: 0, atEnd: 0, ghosts: 0 } },
    gonePackets: { udp: 0, tcp: 0, afterSweep: { udp: 0, tcp: 0 } },
    conntrackSeries: [
      { t: -1000, udp: 4, tcp: 2 },
      { t: 0, udp: 4, tcp: 1 },
      { t: 1000, udp: 3, tcp: 1 },
      { t: 2500, udp: 1, tcp: 0 },
      { t: 4000, udp: 0, tcp: 0 },
      { t: 6000, udp: 0, tcp: 0 },
    ],
  };
}

const run = (mode: Mode): KubeRunResult => ({ proxy: 'iptables', mode, reaper: true, namespace: `lab-ipt-${mode}`, reaped: [], steps: [step(mode)] });

t.test('the picture of two runs: valid XML, windows, markers, requests, conntrack', async (t) => {
  const svg = plotTimelines([run('unprotected'), run('protected')], { subtitle: 'v1.37 & friends <test>' });
  t.same(xmlProblems(svg), [], 'well-formed XML');
  t.same(xmlProblems('<?xml version="1.0" encoding="UTF-8"?>\n<svg><g><text>a & b</text></svg>').length, 3, 'the check itself finds a bare &, a wrong close and an unclosed element');
  t.match(svg, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="\d+" height="\d+"/);
  t.match(svg, /v1\.37 &amp; friends &lt;test&gt;/, 'text is escaped');
  t.match(svg, /echo-a-&lt;1&gt;/, 'pod names are escaped');
  const panels = svg.match(/<g class="panel" [^>]*>/g) ?? [];
  t.equal(panels.length, 2, 'a panel per run and step');
  t.match(panels[0], /data-mode="unprotected"/);
  t.match(panels[1], /data-mode="protected"/);
  t.equal((svg.match(/class="window-race"/g) ?? []).length, 2, 'the race window, shaded in each panel');
  t.equal((svg.match(/class="window-ghosts"/g) ?? []).length, 2, 'the ghost window, shaded in each panel');
  t.equal((svg.match(/class="marker-deletion"/g) ?? []).length, 2, 'the deletion');
  t.equal((svg.match(/class="marker-sigterm"/g) ?? []).length, 2, 'SIGTERM');
  t.equal((svg.match(/class="marker-removal"/g) ?? []).length, 2, 'the endpoint leaving the rules');
  t.equal((svg.match(/class="prestop"/g) ?? []).length, 1, 'the preStop sleep, in the protected run only');
  t.match(svg, /preStop sleep action 8s/);
  t.equal((svg.match(/class="ct-udp"/g) ?? []).length, 2, 'the conntrack count line (udp)');
  t.equal((svg.match(/class="ct-tcp"/g) ?? []).length, 2, 'the conntrack count line (tcp)');
  t.equal((svg.match(/data-outcome="timeout"/g) ?? []).length, 1);
  t.equal((svg.match(/data-outcome="refused"/g) ?? []).length, 1);
  t.equal((svg.match(/data-outcome="reset"/g) ?? []).length, 1);
  t.ok(svg.includes(`fill="${PLOT_COLOURS.deletedPod}"`), 'answers of the deleted pod in their own colour');
  t.ok(svg.includes(`fill="${PLOT_COLOURS.otherPods[0]}"`), 'answers of another pod');
  t.match(svg, /iptables · unprotected · \S+ 3→2 — failed: race 2, after 1/, 'the unprotected panel counts the windows as report.ts does');
  t.match(svg, /iptables · protected · \S+ 3→2 — failed: race 0, after 0/);
  t.match(svg, /it answered 37 requests after it left the rules/, 'served after the removal, as report.ts counts it');
});

t.test('the windows in x: race from the deletion to the removal, ghosts until no entry is left', async (t) => {
  const s = step('unprotected');
  t.equal(ghostWindowEnd(s), 4000, 'the first sample after the removal with no entry');
  t.equal(ghostWindowEnd({ ...s, conntrackSeries: [{ t: 1000, udp: 1, tcp: 0 }] }), 12_000, 'entries to the end: the window runs to the end');
  t.equal(ghostWindowEnd({ ...s, timeline: { ...s.timeline, removal: undefined } }), undefined, 'never out of the rules: no ghost window');
  const svg = plotTimelines([run('unprotected')]);
  const num = (re: RegExp): number => Number(re.exec(svg)?.[1]);
  const raceX = num(/class="window-race" x="([\d.]+)"/);
  const raceW = num(/class="window-race" x="[\d.]+" y="\d+" width="([\d.]+)"/);
  const deletion = num(/class="marker-deletion" x1="([\d.]+)"/);
  const removal = num(/class="marker-removal" x1="([\d.]+)"/);
  const ghostX = num(/class="window-ghosts" x="([\d.]+)"/);
  t.equal(raceX, deletion, 'race starts at the deletion');
  t.ok(Math.abs(raceX + raceW - removal) < 0.2, 'race ends where the pod left the rules');
  t.equal(ghostX, removal, 'ghosts start there');
  t.ok(removal > deletion);
});

t.test('the emulated lab\'s run, drawn the same way (npm run lab -- --plot)', async (t) => {
  const pc = { atRemoval: 2, staleAtRemoval: 2, drainingAtRemoval: 0, atExit: 1, ghosts: 1 };
  const r: RunResult = {
    mode: 'protected',
    sleepSeconds: 5,
    graceSeconds: 35,
    removed: { name: 'b1', ip: '10.244.1.2' },
    timeline: { removal: 1000, sigterm: 5000, exit: 5100, end: 8000, cleanups: [] },
    events: [
      { t: 500, d: 2, k: 'udp', o: 'ok', b: 'b1' },
      { t: 1500, d: 2, k: 'udp', o: 'ok', b: 'b1' },
      { t: 1600, d: 2, k: 'tcp-short', o: 'ok', b: 'b2' },
    ],
    conntrack: { udp: pc, tcp: pc },
    samples: 2,
    conntrackSeries: [{ t: 500, udp: 2, tcp: 0 }, { t: 3000, udp: 0, tcp: 0 }],
  };
  const run = emulatedAsRun(r);
  const s = run.steps[0]!;
  t.equal(s.timeline.preStopDone, 5000, 'the sleep from t0');
  t.equal(s.stored.preStop, 'sleep 5s');
  t.equal(ghostWindowEnd(s), 3000);
  const svg = plotTimelines([run, emulatedAsRun({ ...r, mode: 'unprotected', sleepSeconds: 0, conntrackSeries: undefined })]);
  t.same(xmlProblems(svg), []);
  t.equal((svg.match(/class="prestop"/g) ?? []).length, 1, 'a sleep bar only where there was a sleep');
  t.match(svg, /it answered 1 request after it left the rules/);
});
