import t from 'tap';
import type { Test } from 'tap';
import { planPatch } from '../../src/core/patch.ts';
import type { Operation } from '../../src/core/patch.ts';
import { decideRaw, parsePod, planOf, TCP, UDP } from '../support/decide.ts';
import type { DecideOptions } from '../support/decide.ts';
import { applyOps } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { defaultedPod } from '../support/pods.ts';
import type { PodOptions } from '../support/pods.ts';

const RECORD = 'safe-termination.io/injected';

/** One webhook call: decide, patch, apply, validate. Returns the new pod and the ops. */
function call(raw: any, o: DecideOptions = {}): { pod: any; ops: Operation[] } {
  const d = decideRaw(raw, o);
  if (d.kind !== 'inject') return { pod: raw, ops: [] };
  const ops = planPatch(parsePod(raw), d.plan);
  const pod = applyOps(raw, ops);
  return { pod, ops };
}

const ALLOWED_PATH = /^\/(metadata(\/annotations(\/safe-termination\.io~1injected)?)?|spec\/terminationGracePeriodSeconds|spec\/containers\/\d+\/lifecycle(\/preStop)?)$/;

function checkOps(t: Test, ops: Operation[]): void {
  for (const op of ops) t.match(op.path, ALLOWED_PATH, `${op.op} ${op.path} touches only what the product owns`);
}

t.test('patches apply, validate, and reach a fixed point', async (t) => {
  const shapes: PodOptions[] = [
    {},
    { containers: [{ name: 'coredns', ports: [...UDP, ...TCP] }] },
    { terminationGracePeriodSeconds: null },
    { annotations: { 'team.example.com/owner': 'payments' } },
    { containers: [{ name: 'app', lifecycle: { postStart: { exec: { command: ['true'] } } } }, { name: 'proxy', ports: UDP }] },
    { containers: [{ name: 'app' }, { name: 'side', lifecycle: { preStop: { httpGet: { path: '/q', port: 80 } } } }] },
    { annotations: { 'safe-termination.io/existing-prestop': 'replace' }, containers: [{ name: 'app', lifecycle: { preStop: { httpGet: { path: '/q', port: 80 } } } }] },
    { initContainers: [{ name: 'mesh', restartPolicy: 'Always', ports: UDP }], containers: [{ name: 'app' }] },
    { annotations: { 'safe-termination.io/prestop-mode': 'exec' } },
    { annotations: { 'safe-termination.io/prestop-sleep': '2h', 'safe-termination.io/shutdown-budget': '0' } },
  ];
  for (const shape of shapes) {
    const raw = defaultedPod(shape);
    t.same(podProblems(raw), [], 'input is valid');
    const first = call(raw);
    t.ok(first.ops.length > 0, 'first call patches');
    checkOps(t, first.ops);
    t.same(podProblems(first.pod), [], `patched pod is valid: ${JSON.stringify(shape)}`);
    const second = call(first.pod);
    t.same(second.ops, [], 'second call returns no patch');
  }
});

t.test('annotations absent: the whole map is added; present: one escaped key', async (t) => {
  const bare = defaultedPod();
  t.notOk((bare as any).metadata.annotations);
  const { ops } = call(bare);
  t.same(ops.find((o) => o.path.startsWith('/metadata')), { op: 'add', path: '/metadata/annotations', value: { [RECORD]: (call(bare).pod).metadata.annotations[RECORD] } });
  const annotated = defaultedPod({ annotations: { 'a.example.com/b': 'c' } });
  const r = call(annotated);
  const op = r.ops.find((o) => o.path.startsWith('/metadata'));
  t.equal(op?.path, '/metadata/annotations/safe-termination.io~1injected');
  t.equal(r.pod.metadata.annotations['a.example.com/b'], 'c', 'other annotations untouched');
  const record = JSON.parse(r.pod.metadata.annotations[RECORD]);
  t.equal(record.v, 1);
});

t.test('lifecycle absent → add lifecycle; lifecycle without preStop → add preStop', async (t) => {
  const raw = defaultedPod({ containers: [{ name: 'a' }, { name: 'b', lifecycle: { postStart: { exec: { command: ['true'] } } } }] });
  const { ops, pod } = call(raw);
  t.same(ops.filter((o) => o.path.includes('/containers/')), [
    { op: 'add', path: '/spec/containers/0/lifecycle', value: { preStop: { sleep: { seconds: 5 } } } },
    { op: 'add', path: '/spec/containers/1/lifecycle/preStop', value: { sleep: { seconds: 5 } } },
  ]);
  t.same(pod.spec.containers[1].lifecycle.postStart, { exec: { command: ['true'] } }, 'postStart untouched');
});

t.test('grace absent → add; present → replace', async (t) => {
  t.same(call(defaultedPod({ terminationGracePeriodSeconds: null })).ops.find((o) => o.path.includes('Grace')), { op: 'add', path: '/spec/terminationGracePeriodSeconds', value: 35 });
  t.same(call(defaultedPod()).ops.find((o) => o.path.includes('Grace')), { op: 'replace', path: '/spec/terminationGracePeriodSeconds', value: 35 });
});

t.test('nulls (as in hand-written manifests) are treated as absent', async (t) => {
  const raw: any = defaultedPod();
  raw.metadata.annotations = null;
  raw.spec.containers[0].lifecycle = null;
  raw.spec.terminationGracePeriodSeconds = null;
  const { pod } = call(raw);
  t.same(pod.spec.containers[0].lifecycle, { preStop: { sleep: { seconds: 5 } } });
  t.equal(pod.spec.terminationGracePeriodSeconds, 35);
  t.ok(pod.metadata.annotations[RECORD]);
  raw.spec.containers[0].lifecycle = { preStop: null };
  t.same(call(raw).pod.spec.containers[0].lifecycle, { preStop: { sleep: { seconds: 5 } } });
});

t.test('reinvocation after another webhook adds a sidecar: hooks it, re-sizes, never raises grace twice', async (t) => {
  const first = call(defaultedPod({ containers: [{ name: 'app', ports: TCP }] }));
  t.equal(first.pod.spec.terminationGracePeriodSeconds, 35);
  const withSidecar = structuredClone(first.pod);
  withSidecar.spec.containers.push({ name: 'dns-proxy', image: 'proxy:1', ports: [{ containerPort: 53, protocol: 'UDP' }] });
  const second = call(withSidecar);
  checkOps(t, second.ops);
  t.same(podProblems(second.pod), []);
  t.same(second.pod.spec.containers.map((c: any) => c.lifecycle?.preStop), [{ sleep: { seconds: 35 } }, { sleep: { seconds: 35 } }]);
  t.equal(second.pod.spec.terminationGracePeriodSeconds, 65, 'original 30 (from the record) + 35, not 35 + 35');
  const record = JSON.parse(second.pod.metadata.annotations[RECORD]);
  t.equal(record.originalGracePeriodSeconds, 30);
  t.same(record.containers, ['app', 'dns-proxy']);
  t.same(call(second.pod).ops, [], 'and then a fixed point');
  // A sidecar that brings its own hook keeps it.
  const withHooked = structuredClone(first.pod);
  withHooked.spec.containers.push({ name: 'envoy', image: 'envoy:1', lifecycle: { preStop: { exec: { command: ['/drain'] } } } });
  const third = call(withHooked);
  t.same(third.ops, [{ op: 'add', path: '/metadata/annotations/safe-termination.io~1injected', value: third.pod.metadata.annotations[RECORD] }], 'only the record notes the skip');
  t.same(JSON.parse(third.pod.metadata.annotations[RECORD]).skipped, { envoy: 'has its own preStop hook' });
});

t.test('hooks listed in the record are ours to update; others are the user\'s', async (t) => {
  const first = call(defaultedPod({ containers: [{ name: 'app', ports: TCP }] }), { defaults: { prestopMode: 'exec' } });
  t.same(first.pod.spec.containers[0].lifecycle.preStop, { exec: { command: ['sleep', '5'] } });
  const resized = call(first.pod, { kubeVersion: { major: 1, minor: 31 } });
  t.same(resized.ops.find((o) => o.path.includes('preStop')), { op: 'replace', path: '/spec/containers/0/lifecycle/preStop', value: { sleep: { seconds: 5 } } });
  t.equal(resized.pod.spec.terminationGracePeriodSeconds, 35);
  const excluded = structuredClone(first.pod);
  excluded.metadata.annotations['safe-termination.io/exclude-containers'] = 'app';
  excluded.spec.containers.push({ name: 'other', image: 'x' });
  const r = call(excluded);
  t.same(r.pod.spec.containers[0].lifecycle, {}, 'our hook removed from a container now excluded');
  t.same(r.pod.spec.containers[1].lifecycle.preStop, { sleep: { seconds: 5 } });
  t.same(podProblems(r.pod), []);
});

t.test('an injected pod edited since: its new grace and its own hook are the user\'s', async (t) => {
  const first = call(defaultedPod({ containers: [{ name: 'app', ports: TCP }, { name: 'worker', ports: TCP }] }));
  t.equal(first.pod.spec.terminationGracePeriodSeconds, 35);
  // A GitOps user raises grace in the injected manifest and gives one container a drain hook.
  const edited = structuredClone(first.pod);
  edited.spec.terminationGracePeriodSeconds = 90;
  edited.spec.containers[1].lifecycle.preStop = { exec: { command: ['/drain'] } };
  const d = decideRaw(edited);
  const r = call(edited);
  checkOps(t, r.ops);
  t.same(podProblems(r.pod), []);
  t.equal(r.pod.spec.terminationGracePeriodSeconds, 95, '90 is the new original: 90 + 5, not 30 + 5');
  t.equal(planOf(d).originalGraceFrom, 'pod');
  t.match(d.warnings, [/terminationGracePeriodSeconds changed since injection \(35s → 90s\): taken as the original/]);
  t.same(r.pod.spec.containers[1].lifecycle.preStop, { exec: { command: ['/drain'] } }, 'the user\'s hook is kept');
  const record = JSON.parse(r.pod.metadata.annotations[RECORD]);
  t.same(record.skipped, { worker: 'has its own preStop hook' });
  t.equal(record.originalGracePeriodSeconds, 90);
  t.same(call(r.pod).ops, [], 'and then a fixed point, without the warning');
  t.same(decideRaw(r.pod).warnings, []);
  // Excluding that container later does not remove the user's hook either.
  const excluded = structuredClone(r.pod);
  excluded.metadata.annotations['safe-termination.io/exclude-containers'] = 'worker';
  t.same(call(excluded).pod.spec.containers[1].lifecycle.preStop, { exec: { command: ['/drain'] } });
  // Grace lowered below what we set is honoured the same way.
  const lowered = structuredClone(first.pod);
  lowered.spec.terminationGracePeriodSeconds = 10;
  t.equal(call(lowered).pod.spec.terminationGracePeriodSeconds, 15);
});

t.test('a record from a manifest (CLI) is re-sized to the cluster facts', async (t) => {
  const raw = defaultedPod({ containers: [{ name: 'dns', ports: UDP }] });
  const cli = call(raw);
  t.equal(cli.pod.spec.terminationGracePeriodSeconds, 65);
  const { factsFrom } = await import('../support/decide.ts');
  const cluster = call(cli.pod, { facts: factsFrom('nodes', { 'udp-timeout': 60 }) });
  t.equal(cluster.pod.spec.containers[0].lifecycle.preStop.sleep.seconds, 65);
  t.equal(cluster.pod.spec.terminationGracePeriodSeconds, 95);
});

t.test('pods with no patch: skips produce no operations', async (t) => {
  const d = decideRaw(defaultedPod({ annotations: { 'safe-termination.io/inject': 'false' } }));
  t.equal(d.kind, 'skip');
  t.throws(() => planOf(d));
});
