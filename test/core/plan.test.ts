import t from 'tap';
import { decidePod, decideRaw, factsFrom, planOf, TCP, UDP } from '../support/decide.ts';
import { defaultedPod } from '../support/pods.ts';

const A = (key: string) => `safe-termination.io/${key}`;

t.test('headline numbers: TCP pod 5s/35s, UDP pod 35s/65s', async (t) => {
  const tcp = planOf(decidePod());
  t.equal(tcp.sleepSeconds, 5);
  t.equal(tcp.gracePeriodSeconds, 35);
  t.same(tcp.protocols, ['tcp']);
  t.same(tcp.conntrack, {});
  const udp = planOf(decidePod({ containers: [{ name: 'coredns', ports: [...UDP, { containerPort: 53, protocol: 'TCP' }] }] }));
  t.equal(udp.sleepSeconds, 35);
  t.equal(udp.gracePeriodSeconds, 65);
  t.same(udp.protocols, ['tcp', 'udp']);
  t.same(udp.conntrack, { 'udp-timeout': { value: 30, source: 'static' } });
  t.equal(udp.sleep.kind === 'model' && udp.sleep.waitKey, 'udp-timeout');
});

t.test('the record matches the spec schema', async (t) => {
  const p = planOf(decidePod({ containers: [{ name: 'app', ports: UDP }, { name: 'proxy', ports: TCP, lifecycle: { preStop: { exec: { command: ['/bin/drain'] } } } }] }));
  t.same(p.record, {
    v: 1,
    sleepSeconds: 35,
    gracePeriodSeconds: 65,
    originalGracePeriodSeconds: 30,
    mode: 'sleep',
    containers: ['app'],
    skipped: { proxy: 'has its own preStop hook' },
    protocols: ['tcp', 'udp'],
    conntrack: { 'udp-timeout': { value: 30, source: 'static' } },
    by: 'safe-termination/0.1.0',
  });
});

t.test('udp-streams sizes UDP by the stream timeout (annotation or default)', async (t) => {
  const byAnnotation = planOf(decidePod({ annotations: { [A('udp-streams')]: 'true' }, containers: [{ name: 'app', ports: UDP }] }));
  t.equal(byAnnotation.sleepSeconds, 125);
  t.same(Object.keys(byAnnotation.conntrack), ['udp-timeout-stream']);
  const byDefault = planOf(decidePod({ containers: [{ name: 'app', ports: UDP }] }, { defaults: { udpStreams: true } }));
  t.equal(byDefault.sleepSeconds, 125);
  const off = planOf(decidePod({ annotations: { [A('udp-streams')]: 'false' }, containers: [{ name: 'app', ports: UDP }] }, { defaults: { udpStreams: true } }));
  t.equal(off.sleepSeconds, 35);
});

t.test('TCP sizing: none, time-wait, close-wait', async (t) => {
  t.equal(planOf(decidePod({}, { defaults: { tcpSizing: 'none' } })).sleepSeconds, 5);
  t.equal(planOf(decidePod({}, { defaults: { tcpSizing: 'time-wait' } })).sleepSeconds, 125);
  t.equal(planOf(decidePod({}, { defaults: { tcpSizing: 'close-wait' } })).sleepSeconds, 65);
  const mixed = planOf(decidePod({ containers: [{ name: 'a', ports: [...UDP, ...TCP] }] }, { defaults: { tcpSizing: 'close-wait' } }));
  t.equal(mixed.sleepSeconds, 65, 'the max over protocols');
  t.same(Object.keys(mixed.conntrack).sort(), ['tcp-timeout-close-wait', 'udp-timeout']);
  const sctp = planOf(decidePod({ containers: [{ name: 'a', ports: [{ containerPort: 9, protocol: 'SCTP' }] }] }, { defaults: { tcpSizing: 'time-wait' } }));
  t.same(sctp.protocols, ['sctp']);
  t.equal(sctp.sleepSeconds, 125, 'SCTP counts as TCP');
});

t.test('conntrack values and their sources come from the facts', async (t) => {
  const p = planOf(decidePod({ containers: [{ name: 'a', ports: UDP }] }, { facts: factsFrom('nodes', { 'udp-timeout': 17 }) }));
  t.equal(p.sleepSeconds, 22);
  t.same(p.record.conntrack, { 'udp-timeout': { value: 17, source: 'nodes' } });
});

t.test('propagation-delay and max-sleep, from annotations or defaults', async (t) => {
  t.equal(planOf(decidePod({ annotations: { [A('propagation-delay')]: '12s' } })).sleepSeconds, 12);
  t.equal(planOf(decidePod({}, { defaults: { propagationDelaySeconds: 9 } })).sleepSeconds, 9);
  const capped = planOf(decidePod({ annotations: { [A('max-sleep')]: '1m', [A('udp-streams')]: 'true' }, containers: [{ name: 'a', ports: UDP }] }));
  t.equal(capped.sleepSeconds, 60);
  t.ok(capped.sleep.kind === 'model' && capped.sleep.capped);
  t.equal(planOf(decidePod({ containers: [{ name: 'a', ports: UDP }] }, { defaults: { maxSleepSeconds: 20 } })).sleepSeconds, 20);
});

t.test('the computed sleep is at least 1s', async (t) => {
  const p = planOf(decidePod({ annotations: { [A('propagation-delay')]: '0' } }));
  t.equal(p.sleepSeconds, 1);
  t.equal(p.gracePeriodSeconds, 31);
  t.equal(planOf(decidePod({ annotations: { [A('max-sleep')]: '0' } })).sleepSeconds, 1);
});

t.test('prestop-sleep is exact and not capped by max-sleep', async (t) => {
  const p = planOf(decidePod({ annotations: { [A('prestop-sleep')]: '400', [A('max-sleep')]: '60' }, containers: [{ name: 'a', ports: UDP }] }));
  t.equal(p.sleepSeconds, 400);
  t.equal(p.gracePeriodSeconds, 430);
  t.same(p.conntrack, {}, 'no conntrack value was used');
  t.equal(p.sleep.kind, 'annotation');
});

t.test('grace: original + sleep, or max(original, sleep + shutdown-budget)', async (t) => {
  t.equal(planOf(decidePod({ terminationGracePeriodSeconds: 60 })).gracePeriodSeconds, 65);
  t.equal(planOf(decidePod({ terminationGracePeriodSeconds: null })).gracePeriodSeconds, 35, 'absent grace is the API default 30');
  t.equal(planOf(decidePod({ annotations: { [A('shutdown-budget')]: '10s' } })).gracePeriodSeconds, 30, 'max keeps the original');
  t.equal(planOf(decidePod({ annotations: { [A('shutdown-budget')]: '40s' } })).gracePeriodSeconds, 45);
  t.equal(planOf(decidePod({}, { defaults: { shutdownBudgetSeconds: 40 } })).gracePeriodSeconds, 45, 'chart default budget');
  const zeroBudget = planOf(decidePod({ annotations: { [A('shutdown-budget')]: '0', [A('prestop-sleep')]: '50' } }));
  t.equal(zeroBudget.gracePeriodSeconds, 51, 'grace ≥ sleep + 1 even with no budget');
});

t.test('the sleep carries its arithmetic: the uncapped sum, then max-sleep or the 1s minimum', async (t) => {
  t.match(planOf(decidePod()).sleep, { kind: 'model', seconds: 5, uncappedSeconds: 5, capped: false, raised: false });
  const capped = planOf(decidePod({ containers: [{ name: 'a', ports: UDP }] }, { defaults: { maxSleepSeconds: 20 } }));
  t.match(capped.sleep, { kind: 'model', seconds: 20, conntrackWait: 30, uncappedSeconds: 35, maxSleep: { value: 20, source: 'config' }, capped: true, raised: false });
  const floor = planOf(decidePod({ annotations: { [A('propagation-delay')]: '0' } }));
  t.match(floor.sleep, { kind: 'model', seconds: 1, uncappedSeconds: 0, capped: false, raised: true });
  const cappedToZero = planOf(decidePod({ annotations: { [A('max-sleep')]: '0' } }));
  t.match(cappedToZero.sleep, { seconds: 1, uncappedSeconds: 5, capped: true, raised: true }, 'a max-sleep of 0 still leaves 1s');
});

t.test('the grace carries its arithmetic: the sum or the max with the budget, then sleep + 1s', async (t) => {
  t.same(planOf(decidePod({ terminationGracePeriodSeconds: 60 })).grace, { kind: 'added', seconds: 65, sumSeconds: 65, raised: false });
  const zero = planOf(decidePod({ terminationGracePeriodSeconds: 0, annotations: { [A('prestop-sleep')]: '3' } }));
  t.same(zero.grace, { kind: 'added', seconds: 4, sumSeconds: 3, raised: true });
  const kept = planOf(decidePod({ annotations: { [A('shutdown-budget')]: '10s' } }));
  t.same(kept.grace, { kind: 'shutdown-budget', seconds: 30, shutdownBudget: { value: 10, source: 'annotation' }, maxSeconds: 30, raised: false }, 'the original wins');
  const configured = planOf(decidePod({}, { defaults: { shutdownBudgetSeconds: 40 } }));
  t.same(configured.grace, { kind: 'shutdown-budget', seconds: 45, shutdownBudget: { value: 40, source: 'config' }, maxSeconds: 45, raised: false }, 'sleep + budget wins');
  const noBudget = planOf(decidePod({ annotations: { [A('shutdown-budget')]: '0', [A('prestop-sleep')]: '50' } }));
  t.match(noBudget.grace, { kind: 'shutdown-budget', seconds: 51, maxSeconds: 50, raised: true });
});

t.test('grace 0: left alone unless prestop-sleep or shutdown-budget is annotated', async (t) => {
  const d = decidePod({ terminationGracePeriodSeconds: 0 });
  t.equal(d.kind === 'skip' && d.reason, 'zero-grace-period');
  const slept = planOf(decidePod({ terminationGracePeriodSeconds: 0, annotations: { [A('prestop-sleep')]: '3' } }));
  t.equal(slept.sleepSeconds, 3);
  t.equal(slept.gracePeriodSeconds, 4);
  const budget = planOf(decidePod({ terminationGracePeriodSeconds: 0, annotations: { [A('shutdown-budget')]: '5' } }));
  t.equal(budget.gracePeriodSeconds, 10);
  t.equal(decidePod({ terminationGracePeriodSeconds: 0 }, { defaults: { shutdownBudgetSeconds: 5 } }).kind, 'skip', 'a chart default is not the pod asking');
});

t.test('protocols come from containers that keep serving', async (t) => {
  const excludedUdp = planOf(decidePod({ annotations: { [A('exclude-containers')]: 'metrics' }, containers: [{ name: 'app', ports: TCP }, { name: 'metrics', ports: UDP }] }));
  t.same(excludedUdp.protocols, ['tcp'], 'an excluded container gets SIGTERM at once');
  t.same(excludedUdp.skipped, { metrics: 'excluded by annotation' });
  const notIncluded = planOf(decidePod({ annotations: { [A('containers')]: 'app' }, containers: [{ name: 'app', ports: TCP }, { name: 'dns', ports: UDP }] }));
  t.same(notIncluded.protocols, ['tcp']);
  t.same(notIncluded.skipped, { dns: 'not in the containers annotation' });
  const ownHookUdp = planOf(decidePod({ containers: [{ name: 'app', ports: TCP }, { name: 'dns', ports: UDP, lifecycle: { preStop: { sleep: { seconds: 3 } } } }] }));
  t.same(ownHookUdp.protocols, ['tcp', 'udp'], 'a container keeping its own hook still serves');
  const sidecarUdp = planOf(decidePod({ initContainers: [{ name: 'mesh', ports: UDP, restartPolicy: 'Always' }], containers: [{ name: 'app', ports: TCP }] }));
  t.same(sidecarUdp.protocols, ['tcp', 'udp'], 'native sidecars serve until after the main containers');
  const initUdp = planOf(decidePod({ initContainers: [{ name: 'setup', ports: UDP }], containers: [{ name: 'app' }] }));
  t.same(initUdp.protocols, ['tcp'], 'a plain init container has exited; no ports means TCP');
  const annotated = planOf(decidePod({ annotations: { [A('protocols')]: 'UDP' }, containers: [{ name: 'app', ports: TCP }] }));
  t.same(annotated.protocols, ['udp']);
  t.equal(annotated.protocolsFrom, 'annotation');
  t.equal(annotated.sleepSeconds, 35);
  const defaulted = defaultedPod({ containers: [{ name: 'app' }] }) as any;
  defaulted.spec.containers[0].ports = [{ containerPort: 80 }];
  t.same(planOf(decideRaw(defaulted)).protocols, ['tcp'], 'protocol defaults to TCP');
});

t.test('the serving containers, with the protocols of their ports: hooked, keeping their own hook, native sidecars', async (t) => {
  const p = planOf(
    decidePod({
      annotations: { [A('exclude-containers')]: 'metrics' },
      initContainers: [{ name: 'setup', ports: UDP }, { name: 'mesh', ports: [...UDP, ...TCP], restartPolicy: 'Always' }],
      containers: [{ name: 'app', ports: TCP }, { name: 'own', lifecycle: { preStop: { exec: { command: ['/bin/drain'] } } } }, { name: 'metrics', ports: UDP }],
    }),
  );
  t.same(p.serving, [
    { name: 'app', protocols: ['tcp'] },
    { name: 'own', protocols: [] },
    { name: 'mesh', protocols: ['tcp', 'udp'] },
  ]);
  t.same(p.protocolOrigins, { tcp: { ports: true, services: [] }, udp: { ports: true, services: [] } });
});

t.test('alreadyHooked: the chosen containers whose preStop is already the planned hook', async (t) => {
  const record = '{"v":1,"sleepSeconds":5,"gracePeriodSeconds":35,"originalGracePeriodSeconds":30,"mode":"sleep","containers":["a","b","c"],"skipped":{},"protocols":["tcp"],"conntrack":{},"by":"safe-termination/0.1.0"}';
  const pod = {
    annotations: { [A('injected')]: record },
    terminationGracePeriodSeconds: 35,
    containers: [{ name: 'a', lifecycle: { preStop: { sleep: { seconds: 5 } } } }, { name: 'b' }, { name: 'c', lifecycle: { preStop: { sleep: { seconds: 5 } } } }],
  };
  const p = planOf(decidePod(pod));
  t.same(p.containers, ['a', 'b', 'c']);
  t.same(p.alreadyHooked, ['a', 'c']);
  t.equal(p.originalGracePeriodSeconds, 30);
  t.same(planOf(decidePod(pod, { defaults: { prestopMode: 'exec' } })).alreadyHooked, [], 'in exec mode every sleep action is rewritten');
  t.same(planOf(decidePod({ ...pod, annotations: { ...pod.annotations, [A('propagation-delay')]: '6' } })).alreadyHooked, [], 'a new sleep rewrites them all');
});

t.test('every regular container not excluded is hooked; sidecars and ephemeral containers are not', async (t) => {
  const raw = defaultedPod({
    initContainers: [{ name: 'mesh', restartPolicy: 'Always' }, { name: 'setup' }],
    containers: [{ name: 'app' }, { name: 'proxy' }, { name: 'logs' }],
    annotations: { [A('exclude-containers')]: 'logs' },
  }) as any;
  raw.spec.ephemeralContainers = [{ name: 'debug', image: 'busybox' }];
  const p = planOf(decideRaw(raw));
  t.same(p.containers, ['app', 'proxy']);
  t.same(p.skipped, { logs: 'excluded by annotation' });
});

t.test('containers and exclude-containers combine: exclusion applies to the inclusion list', async (t) => {
  const p = planOf(decidePod({ annotations: { [A('containers')]: 'a,b', [A('exclude-containers')]: 'b' }, containers: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] }));
  t.same(p.containers, ['a']);
  t.same(p.skipped, { b: 'excluded by annotation', c: 'not in the containers annotation' });
});

t.test('containers naming an init container (a native sidecar): a warning, the app containers listed are hooked', async (t) => {
  const d = decidePod({
    initContainers: [{ name: 'istio-proxy', restartPolicy: 'Always' }],
    containers: [{ name: 'app' }, { name: 'batch' }],
    annotations: { [A('containers')]: 'app,istio-proxy' },
  });
  t.same(planOf(d).containers, ['app']);
  t.same(d.warnings, ['safe-termination.io/containers: init container istio-proxy not hooked; sidecars stop after the app containers']);
  const only = decidePod({ initContainers: [{ name: 'istio-proxy', restartPolicy: 'Always' }], containers: [{ name: 'app' }], annotations: { [A('containers')]: 'istio-proxy' } });
  t.equal(only.kind, 'skip');
  t.match(only.warnings, [/init container istio-proxy not hooked/], 'the skip says why');
});

t.test('existing preStop hooks: keep by default, replace on request', async (t) => {
  const own = { preStop: { httpGet: { path: '/drain', port: 8080 } } };
  const kept = planOf(decidePod({ containers: [{ name: 'app', lifecycle: own }, { name: 'side' }] }));
  t.same(kept.containers, ['side']);
  t.same(kept.skipped, { app: 'has its own preStop hook' });
  t.equal(kept.gracePeriodSeconds, 35, 'grace still raised when any container was injected');
  const replaced = planOf(decidePod({ annotations: { [A('existing-prestop')]: 'replace' }, containers: [{ name: 'app', lifecycle: own }] }));
  t.same(replaced.containers, ['app']);
  t.same(planOf(decidePod({ containers: [{ name: 'app', lifecycle: own }] }, { defaults: { existingPrestop: 'replace' } })).containers, ['app']);
  const postStartOnly = planOf(decidePod({ containers: [{ name: 'app', lifecycle: { postStart: { exec: { command: ['true'] } } } }] }));
  t.same(postStartOnly.containers, ['app'], 'a postStart hook is not a preStop hook');
});

t.test('prestop-mode: auto picks native sleep from 1.30 or when unknown', async (t) => {
  t.equal(planOf(decidePod({}, { kubeVersion: { major: 1, minor: 29 } })).mode.mode, 'exec');
  t.equal(planOf(decidePod({}, { kubeVersion: { major: 1, minor: 30 } })).mode.mode, 'sleep');
  t.equal(planOf(decidePod({}, { kubeVersion: { major: 2, minor: 0 } })).mode.mode, 'sleep');
  t.equal(planOf(decidePod()).mode.mode, 'sleep', 'unknown version counts as current');
  t.equal(planOf(decidePod({ annotations: { [A('prestop-mode')]: 'exec' } })).mode.mode, 'exec');
  t.equal(planOf(decidePod({ annotations: { [A('prestop-mode')]: 'sleep' } }, { kubeVersion: { major: 1, minor: 28 } })).mode.mode, 'sleep');
  t.equal(planOf(decidePod({}, { defaults: { prestopMode: 'exec' } })).mode.mode, 'exec');
  t.same(planOf(decidePod({}, { defaults: { prestopMode: 'exec' } })).hook, { exec: { command: ['sleep', '5'] } });
  t.same(planOf(decidePod()).hook, { sleep: { seconds: 5 } });
});

t.test('Windows pods are skipped in exec mode only', async (t) => {
  const win = { spec: { os: { name: 'windows' } } };
  const d = decidePod({ ...win }, { defaults: { prestopMode: 'exec' } });
  t.equal(d.kind === 'skip' && d.reason, 'windows-exec-mode');
  t.equal(decidePod({ ...win }).kind, 'inject', 'native sleep needs no binary');
});

t.test('opt-outs, mirror pods and Job pods get nothing', async (t) => {
  const reason = (d: ReturnType<typeof decidePod>) => (d.kind === 'skip' ? d.reason : d.kind);
  t.equal(reason(decidePod({ annotations: { [A('inject')]: 'false' } })), 'opted-out-annotation');
  t.equal(reason(decidePod({ annotations: { [A('inject')]: 'false', [A('prestop-sleep')]: 'bogus' } })), 'opted-out-annotation', 'no denial for an opted-out pod');
  t.equal(reason(decidePod({ labels: { 'safe-termination.io/inject': 'disabled' } })), 'opted-out-label');
  t.equal(reason(decidePod({ annotations: { 'kubernetes.io/config.mirror': 'abc' }, owner: { apiVersion: 'v1', kind: 'Node', name: 'n1' } })), 'mirror-pod');
  t.equal(reason(decidePod({ owner: { apiVersion: 'batch/v1', kind: 'Job', name: 'migrate' } })), 'job-pod');
  t.equal(reason(decidePod({ owner: { apiVersion: 'batch/v1', kind: 'Job', name: 'migrate' } }, { defaults: { injectJobPods: true } })), 'inject');
  t.equal(reason(decidePod({ annotations: { [A('inject')]: 'true' } })), 'inject');
  t.equal(reason(decidePod({ containers: [{ name: 'a', lifecycle: { preStop: { sleep: { seconds: 1 } } } }] })), 'no-eligible-containers');
  t.equal(reason(decidePod({ annotations: { [A('exclude-containers')]: 'app' } })), 'no-eligible-containers');
});

t.test('invalid annotations: deny names the problem; ignore warns and uses the default', async (t) => {
  const pod = { annotations: { [A('max-sleep')]: 'forever', [A('protocols')]: 'quic' }, containers: [{ name: 'a', ports: UDP }] };
  const d = decidePod(pod);
  t.equal(d.kind, 'deny');
  if (d.kind === 'deny') {
    t.equal(d.problems.length, 2);
    t.match(d.message, /safe-termination\.io\/max-sleep: invalid value "forever"; expected/);
    t.match(d.message, /safe-termination\.io\/protocols: invalid value "quic"; expected a comma list of tcp, udp, sctp/);
  }
  const ignored = decidePod(pod, { defaults: { invalidAnnotations: 'ignore' } });
  const p = planOf(ignored);
  t.equal(p.sleepSeconds, 35, 'defaults used: UDP from ports, max-sleep 300');
  t.equal(ignored.warnings.length, 2);
  for (const w of ignored.warnings) t.match(w, /invalid, default used/);
});

t.test('an unreadable or foreign record is treated as absent, with a warning', async (t) => {
  for (const text of ['not json', '{"v":2,"sleepSeconds":5}', '{"v":1}', '[]']) {
    const d = decidePod({ annotations: { [A('injected')]: text }, terminationGracePeriodSeconds: 40 });
    const p = planOf(d);
    t.equal(p.originalGracePeriodSeconds, 40, text);
    t.match(d.warnings.join(' '), /safe-termination\.io\/injected ignored/);
  }
});

t.test('every plan keeps 1 ≤ sleep ≤ grace - 1', async (t) => {
  const graces = [null, 0, 1, 5, 30, 3600];
  const sleeps = [undefined, '1', '35', '2h'];
  const budgets = [undefined, '0', '7'];
  for (const g of graces) for (const s of sleeps) for (const b of budgets) {
    const annotations: Record<string, string> = {};
    if (s) annotations[A('prestop-sleep')] = s;
    if (b) annotations[A('shutdown-budget')] = b;
    const d = decidePod({ terminationGracePeriodSeconds: g, annotations, containers: [{ name: 'a', ports: UDP }] });
    if (d.kind !== 'inject') {
      t.equal(g, 0, `only grace 0 without annotations is skipped (${s}, ${b})`);
      continue;
    }
    t.ok(d.plan.sleepSeconds >= 1 && d.plan.sleepSeconds + 1 <= d.plan.gracePeriodSeconds, `grace ${g} sleep ${s} budget ${b}`);
  }
});
