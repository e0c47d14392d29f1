/** `safe-termination explain`: the arithmetic a person reads, and the JSON a program reads. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from './run.ts';

const proc = mkdtempSync(join(tmpdir(), 'st-explain-proc-'));
t.teardown(() => rmSync(proc, { recursive: true, force: true }));
writeFileSync(join(proc, 'nf_conntrack_udp_timeout'), '30\n');
const LOCAL = ['--conntrack-proc-dir', proc];

function pod(name: string, o: { annotations?: Record<string, string>; grace?: number; udp?: boolean } = {}): string {
  const annotations = o.annotations ? `  annotations:\n${Object.entries(o.annotations).map(([k, v]) => `    ${k}: "${v}"\n`).join('')}` : '';
  return `---
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
${annotations}spec:
${o.grace === undefined ? '' : `  terminationGracePeriodSeconds: ${o.grace}\n`}  containers:
  - name: app
    image: app:1
${o.udp ? '    ports:\n    - containerPort: 53\n      protocol: UDP\n' : ''}`;
}

t.test('the sizing arithmetic, with the source of every input', async (t) => {
  const manifest = [
    pod('dns', { udp: true }),
    pod('capped', { udp: true, annotations: { 'safe-termination.io/max-sleep': '20s' } }),
    pod('floor', { annotations: { 'safe-termination.io/propagation-delay': '0' } }),
    pod('budget', { grace: 10, annotations: { 'safe-termination.io/shutdown-budget': '0', 'safe-termination.io/prestop-sleep': '20' } }),
  ].join('');
  const res = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: manifest });
  t.equal(res.code, 0, res.stderr);
  const blocks = res.stdout.split('\n\n');
  t.equal(blocks.length, 4, 'one block per pod');
  t.match(blocks[0], /^Pod dns {2}\(<stdin>:2\)\n/);
  t.match(blocks[0], /sleep +5s propagation-delay \(default\) \+ 30s udp-timeout \(local \/proc\) = 35s; under max-sleep 300s \(default\)/);
  t.match(blocks[0], /grace +30s original \(API default: terminationGracePeriodSeconds not set\) \+ 35s sleep = 65s/);
  t.match(blocks[0], new RegExp(`udp-timeout +30s {2}local: ${proc}/nf_conntrack_udp_timeout {2}← used`));
  t.match(blocks[0], /udp-timeout-stream +120s {2}static: Linux default\n/);
  t.match(blocks[0], /containers +app {2}preStop sleep 35s \(native sleep action\)/);
  t.match(blocks[0], /mode +sleep: the native sleep action, no binary needed in the image; cluster version unknown: assumed current; prestop-mode auto \(default\)/);
  t.match(blocks[1], /= 35s, capped by max-sleep 20s \(annotation safe-termination\.io\/max-sleep\) → 20s/);
  t.match(blocks[2], /sleep +0s propagation-delay \(annotation safe-termination\.io\/propagation-delay\) \+ 0s conntrack wait \(TCP is not sized by conntrack: tcp-sizing none\) = 0s, raised to the 1s minimum → 1s/);
  t.match(blocks[2], /grace +30s original \(API default: terminationGracePeriodSeconds not set\) \+ 1s sleep = 31s\n/);
  t.match(blocks[3], /sleep +20s from annotation safe-termination\.io\/prestop-sleep \(exact: max-sleep does not apply\)/);
  t.match(blocks[3], /grace +max\(10s original \(the pod's terminationGracePeriodSeconds\), 20s sleep \+ 0s shutdown-budget \(annotation safe-termination\.io\/shutdown-budget\)\) = 20s, raised to sleep \+ 1s → 21s/);
  t.match(blocks[3], /changes +add spec\.containers\[0\]\.lifecycle\n +replace spec\.terminationGracePeriodSeconds = 21\n +add metadata\.annotations\["safe-termination\.io\/injected"\]\n/);
});

t.test('flags are named as the source of the defaults they set', async (t) => {
  const res = await runCli('explain', ['-f', '-', '--propagation-delay', '8', '--max-sleep', '1m', '--prestop-mode', 'exec', '--conntrack', 'udp-timeout=40', ...LOCAL], { stdin: pod('dns', { udp: true }) });
  t.match(res.stdout, /8s propagation-delay \(--propagation-delay\) \+ 40s udp-timeout \(static, --conntrack\) = 48s; under max-sleep 60s \(--max-sleep\)/);
  t.match(res.stdout, /mode +exec: runs `sleep`, which the image must have; prestop-mode exec \(--prestop-mode\)/);
  t.match(res.stdout, /udp-timeout +40s {2}static: --conntrack {2}← used/);
});

t.test('skips, denials and input errors are explained; exit 1 when anything is invalid', async (t) => {
  const manifest = [
    pod('fine'),
    pod('opted-out', { annotations: { 'safe-termination.io/inject': 'false' } }),
    pod('bad', { annotations: { 'safe-termination.io/prestop-mode': 'nap' } }),
  ].join('');
  const res = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: manifest });
  t.equal(res.code, 1);
  t.match(res.stdout, /Pod opted-out .*\n +decision +skipped \(opted-out-annotation\): annotation safe-termination\.io\/inject: "false"; remove the annotation to inject\n/);
  t.match(res.stdout, /Pod bad .*\n +decision +invalid: the webhook would deny this pod\n +annotation safe-termination\.io\/prestop-mode: invalid value "nap"; expected auto, sleep or exec/);
  t.match(res.stdout, /Pod fine .*\n +decision +inject: 3 changes/);
  t.equal(res.stderr, '');
});

t.test('-o json: decisions, plans, arithmetic, conntrack sources and changes for programs', async (t) => {
  const manifest = [pod('dns', { udp: true }), pod('off', { annotations: { 'safe-termination.io/inject': 'false' } })].join('');
  const res = await runCli('explain', ['-f', '-', '-o', 'json', '--kube-version', '1.31', ...LOCAL], { stdin: manifest });
  t.equal(res.code, 0);
  const json = JSON.parse(res.stdout);
  t.same(json.kubernetesVersion, { value: '1.31', origin: '--kubernetes-version' });
  t.same(json.problems, []);
  const [dns, off] = json.objects;
  t.match(dns, { file: '<stdin>', line: 2, document: 1, kind: 'Pod', name: 'dns', namespace: null, path: '', decision: 'inject' });
  t.match(dns.plan, { sleepSeconds: 35, gracePeriodSeconds: 65, originalGracePeriodSeconds: 30, originalGraceFrom: 'api-default', protocols: ['udp'] });
  t.same(dns.plan.record.conntrack, { 'udp-timeout': { value: 30, source: 'local' } });
  t.same(dns.conntrack['udp-timeout'], { value: 30, source: 'local', origin: `local: ${proc}/nf_conntrack_udp_timeout`, used: true });
  t.same(dns.conntrack['tcp-timeout-time-wait'], { value: 120, source: 'static', origin: 'static: Linux default', used: false });
  t.same(dns.containers, [{ name: 'app', role: 'container', result: 'injected', why: 'preStop sleep 35s (native sleep action)' }]);
  t.match(dns.arithmetic.sleep, /= 35s/);
  t.same(dns.changes.map((c: any) => c.path), ['/spec/containers/0/lifecycle', '/spec/terminationGracePeriodSeconds', '/metadata/annotations']);
  t.match(off, { decision: 'skip', reason: 'opted-out-annotation', changes: [] });
  t.notOk('plan' in off);
});

t.test('no pods in the input: said on stderr, exit 0; --quiet says nothing', async (t) => {
  const svc = 'apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n';
  const res = await runCli('explain', ['-f', '-'], { stdin: svc });
  t.equal(res.code, 0);
  t.equal(res.stdout, '');
  t.equal(res.stderr, 'no Pods or pod templates found\n');
  t.equal((await runCli('explain', ['-f', '-', '-q'], { stdin: svc })).stderr, '');
});

t.test('kinds of other API groups: a template at spec.template is explained; one without a pod template is named, in text and JSON', async (t) => {
  const manifest = `apiVersion: apps.openshift.io/v1
kind: DeploymentConfig
metadata: {name: dc, namespace: shop}
spec:
  template:
    spec:
      containers: [{name: app, image: app:1}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: web, namespace: shop}
spec:
  endpoints: [{port: metrics}]
---
apiVersion: v1
kind: List
items:
- apiVersion: argoproj.io/v1alpha1
  kind: Rollout
  metadata: {name: by-ref, namespace: shop}
  spec:
    workloadRef: {apiVersion: apps/v1, kind: Deployment, name: web}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: quiet}
`;
  const res = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: manifest });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /^DeploymentConfig shop\/dc {2}\(<stdin>:6, spec\.template\)\n {2}decision +inject: 3 changes/);
  t.equal(
    res.stderr,
    '<stdin>:9: ServiceMonitor shop/web (monitoring.coreos.com/v1): note: no pod template at spec.template or spec.jobTemplate.spec.template; passed through unchanged (the webhook still sees its pods, if it makes any, when they are created)\n' +
      '<stdin>:18: Rollout shop/by-ref (argoproj.io/v1alpha1): note: no pod template at spec.template or spec.jobTemplate.spec.template; passed through unchanged (the webhook still sees its pods, if it makes any, when they are created)\n',
    'a note per object of another API group without a template; none for the ConfigMap',
  );
  t.equal((await runCli('explain', ['-f', '-', '-q', ...LOCAL], { stdin: manifest })).stderr, '', '--quiet: no notes');
  const json = JSON.parse((await runCli('explain', ['-f', '-', '-o', 'json', ...LOCAL], { stdin: manifest })).stdout);
  t.match(json.objects, [{ kind: 'DeploymentConfig', apiVersion: 'apps.openshift.io/v1', path: 'spec.template', decision: 'inject' }]);
  t.same(
    json.untemplated.map((u: { kind: string; name: string; document: number; line: number }) => [u.kind, u.name, u.document, u.line]),
    [
      ['ServiceMonitor', 'web', 2, 9],
      ['Rollout', 'by-ref', 3, 18],
    ],
  );
  // Kubernetes' own kinds are all known: a Deployment under a wrong group is not guessed at.
  const wrong = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: 'apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: a}]\n' });
  t.equal(wrong.stdout, '');
  t.equal(wrong.stderr, 'no Pods or pod templates found\n');
});

t.test("tuning: the write-up's lower timeout for a value the sleep used, what it saves and how to set it (advice)", async (t) => {
  const res = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: pod('dns', { udp: true }) + pod('web') });
  t.equal(res.code, 0, res.stderr);
  const [dns, web] = res.stdout.split('\n\n');
  t.match(
    dns,
    /\n {2}tuning +udp-timeout 30s → 10s \(the write-up's value\): sleep 15s, not 35s \(20s less per termination\); kube-proxy's conntrack\.udpTimeout: 10s, or sysctl -w net\.netfilter\.nf_conntrack_udp_timeout=10 — advice, not applied\n/,
  );
  t.notMatch(web, /tuning/, 'a TCP pod sized by propagation alone gets no advice');
  const fixed = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: pod('fixed', { udp: true, annotations: { 'safe-termination.io/prestop-sleep': '40' } }) });
  t.notMatch(fixed.stdout, /tuning/, 'an annotated sleep does not depend on conntrack');
  const json = JSON.parse((await runCli('explain', ['-f', '-', '-o', 'json', ...LOCAL], { stdin: pod('dns', { udp: true }) })).stdout);
  t.match(json.objects[0].tuning, [{ key: 'udp-timeout', current: 30, recommended: 10, sleepNow: 35, sleepRecommended: 15, savedSeconds: 20, advice: /advice, not applied/ }]);
});

t.test('containers: already hooked, unhooked, newly hooked, keeping their own hook (its ports still count)', async (t) => {
  const record = '{"v":1,"sleepSeconds":5,"gracePeriodSeconds":35,"originalGracePeriodSeconds":30,"mode":"sleep","containers":["app","old"],"skipped":{},"protocols":["tcp"],"conntrack":{},"by":"safe-termination/0.1.0"}';
  const manifest = `apiVersion: v1
kind: Pod
metadata:
  name: grown
  annotations:
    safe-termination.io/injected: '${record}'
    safe-termination.io/exclude-containers: old
spec:
  terminationGracePeriodSeconds: 35
  containers:
  - {name: app, image: a, lifecycle: {preStop: {sleep: {seconds: 5}}}}
  - {name: old, image: a, lifecycle: {preStop: {sleep: {seconds: 5}}}, ports: [{containerPort: 53, protocol: UDP}]}
  - {name: new, image: a, ports: [{containerPort: 80}]}
  - {name: proxy, image: a, lifecycle: {preStop: {exec: {command: [/drain]}}}, ports: [{containerPort: 15001}]}
`;
  const res = await runCli('explain', ['-f', '-', ...LOCAL], { stdin: manifest });
  t.equal(res.code, 0, res.stderr);
  t.match(
    res.stdout,
    '  containers   app    preStop sleep 5s (native sleep action), already there\n' +
      '               old    excluded by annotation: the hook an earlier injection added is removed\n' +
      '               new    preStop sleep 5s (native sleep action)\n' +
      '               proxy  skipped: has its own preStop hook\n' +
      '  protocols    tcp (ports of new, proxy)\n',
  );
  t.match(res.stdout, /grace +30s original \(from the safe-termination\.io\/injected record\) \+ 5s sleep = 35s\n/);
  const json = JSON.parse((await runCli('explain', ['-f', '-', '-o', 'json', ...LOCAL], { stdin: manifest })).stdout);
  const [grown] = json.objects;
  t.same(
    grown.containers.map((c: { name: string; result: string }) => [c.name, c.result]),
    [
      ['app', 'unchanged'],
      ['old', 'unhooked'],
      ['new', 'injected'],
      ['proxy', 'skipped'],
    ],
  );
  t.same(grown.plan.alreadyHooked, ['app']);
  t.same(grown.plan.unhook, ['old']);
  t.same(grown.plan.serving, [
    { name: 'app', protocols: [] },
    { name: 'new', protocols: ['tcp'] },
    { name: 'proxy', protocols: ['tcp'] },
  ]);
  t.same(grown.plan.skipped, { old: 'excluded by annotation', proxy: 'has its own preStop hook' });
});

t.test('-o json: the sleep and grace arithmetic as numbers, matching the text', async (t) => {
  const manifest = [
    pod('dns', { udp: true }),
    pod('capped', { udp: true, annotations: { 'safe-termination.io/max-sleep': '20s' } }),
    pod('floor', { annotations: { 'safe-termination.io/propagation-delay': '0' } }),
    pod('budget', { grace: 10, annotations: { 'safe-termination.io/shutdown-budget': '0', 'safe-termination.io/prestop-sleep': '20' } }),
  ].join('');
  const json = JSON.parse((await runCli('explain', ['-f', '-', '-o', 'json', ...LOCAL], { stdin: manifest })).stdout);
  const [dns, capped, floor, budget] = json.objects;
  t.match(dns.plan.sleep, { kind: 'model', seconds: 35, uncappedSeconds: 35, capped: false, raised: false });
  t.same(dns.plan.grace, { kind: 'added', seconds: 65, sumSeconds: 65, raised: false });
  t.match(capped.plan.sleep, { seconds: 20, uncappedSeconds: 35, capped: true });
  t.match(capped.arithmetic.sleep, /= 35s, capped by max-sleep 20s .* → 20s$/);
  t.match(floor.plan.sleep, { seconds: 1, uncappedSeconds: 0, raised: true });
  t.match(floor.arithmetic.sleep, /= 0s, raised to the 1s minimum → 1s$/);
  t.same(budget.plan.sleep, { kind: 'annotation', seconds: 20 });
  t.match(budget.plan.grace, { kind: 'shutdown-budget', seconds: 21, maxSeconds: 20, raised: true });
  t.match(budget.arithmetic.grace, /\) = 20s, raised to sleep \+ 1s → 21s/);
});
