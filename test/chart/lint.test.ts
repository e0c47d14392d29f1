/**
 * `helm lint --strict` on the chart with every ci values file (chart-testing's
 * convention), and the NOTES an operator reads after `helm install`.
 */
import t from 'tap';
import { runHelmAsync } from '../../scripts/helm.ts';
import { CHART, ciModes, mapLimit, NAMESPACE, RELEASE } from './render.ts';

const modes = ciModes();

t.test('helm lint --strict passes with the defaults and with every ci values file', async (t) => {
  const runs: Array<[string, string[]]> = [['no values file', []], ...[...modes].map(([mode, file]): [string, string[]] => [mode, ['--values', file]])];
  const results = await mapLimit(runs, 2, ([, extra]) => runHelmAsync(['lint', '--strict', CHART, '--namespace', NAMESPACE, ...extra]));
  runs.forEach(([name], i) => {
    const r = results[i]!;
    t.equal(r.status, 0, `${name}: ${r.stdout}${r.stderr}`);
    t.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/, name);
    t.notMatch(r.stdout, /\[(WARNING|ERROR)\]/, `${name}: no warnings`);
  });
});

t.test('helm lint --strict fails a broken chart (the lint can fail)', async (t) => {
  const r = await runHelmAsync(['lint', '--strict', CHART, '--set', 'webhook.replicas=many']);
  t.not(r.status, 0);
  t.match(r.stdout + r.stderr, /webhook\/replicas/);
});

async function notes(extra: string[] = []): Promise<string> {
  const r = await runHelmAsync(['install', RELEASE, CHART, '--namespace', NAMESPACE, '--dry-run=client', ...extra]);
  if (r.status !== 0) throw new Error(r.stderr);
  const at = r.stdout.indexOf('NOTES:\n');
  if (at === -1) throw new Error('no NOTES in helm install output');
  return r.stdout.slice(at + 'NOTES:\n'.length);
}

t.test('NOTES.txt: the next step (opt a namespace in) and how to check', async (t) => {
  const text = await notes();
  t.match(text, /kubectl label namespace <namespace> safe-termination\.io\/inject=enabled/);
  t.match(text, /safe-termination\\\.io\/injected/, 'how to see the decision record of a pod');
  t.match(text, /certificates: generate; node agent: on/);
  t.match(text, /Pod Security/, 'the agent\'s hostNetwork caveat');
  t.match(text, /helm template, GitOps/, 'the generate-mode caveat');
  t.ok(text.split('\n').length <= 30, 'short');
  const other = await notes(['--set', 'agent.enabled=false', '--set', 'certificates.certManager.enabled=true']);
  t.match(other, /certificates: certManager; node agent: off/);
  t.notMatch(other, /Pod Security/);
  t.notMatch(other, /GitOps/);
  t.notMatch(text, /ConntrackStaleEntries/);
  const noMonitor = await notes(['--set', 'monitoring.prometheusRule.enabled=true', '--set', 'agent.staleConntrack.enabled=true']);
  t.match(noMonitor, /no ConntrackStaleEntries alert: it needs the chart's agent\nServiceMonitor \(monitoring\.serviceMonitor\.enabled=true\)/, 'says why the stale-entry alert is left out');
  t.notMatch(await notes(['--set', 'monitoring.prometheusRule.enabled=true', '--set', 'monitoring.serviceMonitor.enabled=true', '--set', 'agent.staleConntrack.enabled=true']), /ConntrackStaleEntries/);
});
