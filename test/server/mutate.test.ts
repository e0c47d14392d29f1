/** The webhook over real TLS sockets: the AdmissionReview wire contract (admission.k8s.io/v1). */
import t from 'tap';
import { applyAnswer, decodePatch } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';
import type { TestWebhook } from '../support/webhook.ts';

let w: TestWebhook;
t.before(async () => {
  w = await startTestWebhook({ args: ['--conntrack-proc-dir', '/nonexistent'] });
});
t.teardown(() => w.close());

interface ReviewBody {
  apiVersion: string;
  kind: string;
  response: ReviewAnswer;
}

async function review(pod: Record<string, unknown>, opts: Parameters<typeof reviewOf>[1] = {}): Promise<ReviewBody> {
  const res = await w.post(reviewOf(pod, opts));
  if (res.status !== 200) throw new Error(`status ${res.status}: ${res.text}`);
  return res.json<ReviewBody>();
}

t.test('a defaulted ReplicaSet pod gets a conformant patched response', async (t) => {
  const pod = defaultedPod({ containers: [{ name: 'coredns', ports: [{ containerPort: 53, protocol: 'UDP' }, { containerPort: 53, protocol: 'TCP' }] }] });
  const res = await w.post(reviewOf(pod, { uid: 'e911857d-c318-11e8-bbad-025000000001' }), '/mutate?timeout=10s');
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  const body = res.json<ReviewBody>();
  t.equal(body.apiVersion, 'admission.k8s.io/v1');
  t.equal(body.kind, 'AdmissionReview');
  t.equal(body.response.uid, 'e911857d-c318-11e8-bbad-025000000001');
  t.equal(body.response.allowed, true);
  t.equal(body.response.patchType, 'JSONPatch');
  t.match(body.response.patch, /^[A-Za-z0-9+/]+=*$/, 'standard base64');
  t.notOk(body.response.warnings, 'no warnings');
  const out: any = applyAnswer(pod, body.response);
  t.same(podProblems(out), []);
  t.same(out.spec.containers[0].lifecycle, { preStop: { sleep: { seconds: 35 } } });
  t.equal(out.spec.terminationGracePeriodSeconds, 65);
  const record = JSON.parse(out.metadata.annotations['safe-termination.io/injected']);
  t.same(record.conntrack, { 'udp-timeout': { value: 30, source: 'static' } }, 'no /proc here: static values');
  const again = await review(out);
  t.equal(again.response.allowed, true);
  t.equal(again.response.patch, undefined, 'the patched pod needs nothing more');
  t.equal(again.response.patchType, undefined);
});

t.test('requests that are not pod creation are allowed untouched', async (t) => {
  const pod = defaultedPod();
  for (const opts of [
    { operation: 'UPDATE' as const },
    { operation: 'DELETE' as const },
    { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } },
    { kind: { group: '', version: 'v1', kind: 'ConfigMap' } },
    { subResource: 'ephemeralcontainers' },
  ]) {
    const body = await review(pod, opts);
    t.equal(body.response.allowed, true, JSON.stringify(opts));
    t.equal(body.response.patch, undefined);
  }
  const nonPodObject = reviewOf({ metadata: { name: 'cm' }, data: { a: 'b' } }, { kind: { group: '', version: 'v1', kind: 'ConfigMap' } });
  const res = await w.post(nonPodObject);
  t.equal(res.json<ReviewBody>().response.allowed, true);
});

t.test('opted-out and skipped pods get no patch at all', async (t) => {
  for (const pod of [
    defaultedPod({ annotations: { 'safe-termination.io/inject': 'false' } }),
    defaultedPod({ labels: { 'safe-termination.io/inject': 'disabled' } }),
    defaultedPod({ terminationGracePeriodSeconds: 0 }),
    defaultedPod({ owner: { apiVersion: 'batch/v1', kind: 'Job', name: 'nightly' } }),
  ]) {
    const body = await review(pod);
    t.same(Object.keys(body.response).sort(), ['allowed', 'uid']);
  }
});

t.test('invalid annotations are denied with a message naming annotation, value and form', async (t) => {
  const body = await review(defaultedPod({ annotations: { 'safe-termination.io/prestop-sleep': '30 seconds' } }));
  t.equal(body.response.allowed, false);
  t.equal(body.response.patch, undefined);
  t.equal(body.response.status?.code, 400);
  t.match(body.response.status?.message, /safe-termination\.io\/prestop-sleep: invalid value "30 seconds"; expected at least 1s/);
});

t.test('warnings: unknown keys name the nearest known key, each under 120 characters', async (t) => {
  const body = await review(defaultedPod({ annotations: { 'safe-termination.io/prestopsleep': '10', [`safe-termination.io/${'x'.repeat(200)}`]: 'y' } }));
  t.equal(body.response.allowed, true);
  t.ok(body.response.patch);
  t.equal(body.response.warnings?.length, 2);
  t.match(body.response.warnings?.[0], /did you mean safe-termination\.io\/prestop-sleep/);
  t.match(body.response.warnings?.[1], /^unknown annotation safe-termination\.io\/x+… ignored; did you mean safe-termination\.io\/[a-z-]+\?$/, 'a long unknown key is shortened, not the suggestion');
  for (const warning of body.response.warnings ?? []) t.ok(warning.length < 120, `${warning.length} chars`);
  const long = await review(defaultedPod({ annotations: { 'safe-termination.io/exclude-container-names-for-the-sidecars': 'istio-proxy' } }));
  t.match(long.response.warnings, [/^unknown annotation safe-termination\.io\/exclude-contain\S*… ignored; did you mean safe-termination\.io\/exclude-containers\?$/]);
});

t.test('--invalid-annotations ignore admits with a warning and the default', async (t) => {
  const lenient = await startTestWebhook({ args: ['--invalid-annotations', 'ignore', '--conntrack-proc-dir', '/nonexistent'] });
  t.teardown(() => lenient.close());
  const pod = defaultedPod({ annotations: { 'safe-termination.io/max-sleep': 'lots' } });
  const body = (await lenient.post(reviewOf(pod))).json<ReviewBody>();
  t.equal(body.response.allowed, true);
  t.match(body.response.warnings?.[0], /safe-termination\.io\/max-sleep invalid, default used/);
  t.ok(body.response.warnings!.every((w) => w.length < 120));
  t.equal((applyAnswer(pod, body.response) as any).spec.terminationGracePeriodSeconds, 35);
});

t.test('malformed reviews get 400 with a JSON error saying what is wrong', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"apiVersion": ', /not valid JSON/],
    ['empty object', {}, /apiVersion/],
    ['v1beta1', { ...reviewOf(defaultedPod()), apiVersion: 'admission.k8s.io/v1beta1' }, /apiVersion: .*admission\.k8s\.io\/v1/],
    ['no request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, /request/],
    ['no uid', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE' } }, /request\.uid/],
    ['containers not a list', reviewOf({ metadata: {}, spec: { containers: 'app' } }), /request\.object\.spec\.containers/],
    ['annotation not a string', reviewOf({ metadata: { annotations: { a: 5 } }, spec: { containers: [] } }), /request\.object\.metadata\.annotations\.a/],
    ['JSON array', [1, 2], /body|expected object/],
    ['JSON null', 'null', /body|expected object/],
    ['a __proto__ key is dropped, the rest judged as usual (no request here)', '{"apiVersion":"admission.k8s.io/v1","__proto__":{"x":1}}', /request/],
  ];
  for (const [name, body, pattern] of cases) {
    const res = await w.post(body);
    t.equal(res.status, 400, name);
    const err = res.json<{ code: string; message: string }>();
    t.match(err.message, pattern, name);
    t.notMatch(res.text, /at .*\.(ts|js):\d+/, `${name}: no stack trace`);
  }
  const empty = await w.post('');
  t.equal(empty.status, 400);
});

t.test('reviews arriving together each get their own answer', async (t) => {
  // Sent at once over several connections, they are handled in shared batches.
  const cases = Array.from({ length: 48 }, (_, i) => {
    const uid = `together-${i}`;
    switch (i % 4) {
      case 0:
        return { uid, body: reviewOf(defaultedPod({ annotations: { 'safe-termination.io/prestop-sleep': `${i + 1}s` } }), { uid }), expect: `sleep ${i + 1}` };
      case 1:
        return { uid, body: reviewOf(defaultedPod({ annotations: { 'safe-termination.io/prestop-sleep': 'soon' } }), { uid }), expect: 'denied' };
      case 2:
        return { uid, body: '{"apiVersion": ', expect: 'bad JSON' };
      default:
        return { uid, body: reviewOf(defaultedPod(), { uid, operation: 'UPDATE' }), expect: 'untouched' };
    }
  });
  const answers = await Promise.all(cases.map((c) => w.post(c.body)));
  cases.forEach((c, i) => {
    const res = answers[i]!;
    if (c.expect === 'bad JSON') {
      t.equal(res.status, 400, c.uid);
      t.match(res.json<{ message: string }>().message, /not valid JSON/, c.uid);
      return;
    }
    t.equal(res.status, 200, c.uid);
    const r = res.json<ReviewBody>().response;
    t.equal(r.uid, c.uid);
    if (c.expect === 'denied') t.equal(r.allowed, false, c.uid);
    else if (c.expect === 'untouched') t.same(r, { uid: c.uid, allowed: true }, c.uid);
    else {
      const ops = decodePatch(r);
      t.match(JSON.stringify(ops), `"sleep":{"seconds":${c.expect.slice(6)}}`, `${c.uid}: its own sleep`);
    }
  });
});

t.test('transport errors: content type, size, routes', async (t) => {
  const wrongType = await w.post(JSON.stringify(reviewOf(defaultedPod())), '/mutate', { 'content-type': 'text/plain' });
  t.equal(wrongType.status, 415);
  t.match(wrongType.json<{ message: string }>().message, /expected application\/json/);
  const big = JSON.stringify(reviewOf(defaultedPod({ annotations: { big: 'x'.repeat(7 * 1024 * 1024) } })));
  const tooLarge = await w.post(big);
  t.equal(tooLarge.status, 413);
  t.match(tooLarge.json<{ message: string }>().message, /larger than 7 MiB/);
  const notFound = await w.get('/mutate');
  t.equal(notFound.status, 404);
  t.match(notFound.json<{ message: string }>().message, /POST \/mutate/);
  t.equal((await w.post({}, '/validate')).status, 404);
});

t.test('a 3 MiB pod (the API server object limit) is handled', async (t) => {
  const pod = defaultedPod({ annotations: { 'config.example.com/blob': 'y'.repeat(3 * 1024 * 1024 - 4096) } });
  const body = await review(pod);
  t.equal(body.response.allowed, true);
  const ops = decodePatch(body.response);
  t.ok(ops.length >= 3);
  t.same(podProblems(applyAnswer(pod, body.response)), []);
});

t.test('health and readiness', async (t) => {
  const h = await w.get('/healthz');
  t.equal(h.status, 200);
  const r = await w.get('/readyz');
  t.equal(r.status, 200);
  t.match(r.json(), { status: 'ready', certificate: { notAfter: String, expiresInSeconds: Number } });
});

t.test('metrics on the plain-HTTP port', async (t) => {
  const res = await fetch(w.metricsUrl);
  t.equal(res.status, 200);
  const text = await res.text();
  t.match(text, /safe_termination_admissions_total\{outcome="patched"\} [1-9]/);
  t.match(text, /safe_termination_admissions_total\{outcome="denied"\} [1-9]/);
  t.match(text, /safe_termination_admissions_total\{outcome="invalid"\} [1-9]/);
  t.match(text, /safe_termination_decisions_total\{decision="skipped",reason="opted-out-annotation"\} [1-9]/);
  t.match(text, /safe_termination_decisions_total\{decision="ignored",reason="not-create"\} [1-9]/);
  t.match(text, /safe_termination_conntrack_values_used_total\{key="udp-timeout",source="static"\} [1-9]/);
  t.match(text, /safe_termination_admission_duration_seconds_count\{outcome="ok"\} [1-9]/);
  const expiry = /safe_termination_certificate_expiry_timestamp_seconds (\d+)/.exec(text);
  t.ok(expiry && Number(expiry[1]) > Date.now() / 1000 + 300 * 86400, 'a year-long dev certificate');
  t.equal((await fetch(w.metricsUrl.replace('/metrics', '/other'))).status, 404);
});

t.test('logs name uid, pod and decision but never the pod spec', async (t) => {
  const pod = defaultedPod({ generateName: 'payments-5f7c-' }) as any;
  pod.spec.containers[0].env = [{ name: 'DB_PASSWORD', value: 'hunter2-s3cr3t' }];
  const body = await review(pod, { uid: 'log-check-uid' });
  t.equal(body.response.allowed, true);
  const line = w.logs.lines.find((l) => l['uid'] === 'log-check-uid');
  t.ok(line, 'a log line for the request');
  t.equal(line?.['pod'], 'shop/payments-5f7c-*');
  t.equal(line?.['decision'], 'injected');
  t.equal(line?.['level'], 'debug', 'one line per pod only at debug: logging stays off the hot path');
  t.notOk(w.logs.raw.some((l) => l.includes('hunter2-s3cr3t')), 'no secret from the spec in any log line');

  await review(defaultedPod({ annotations: { 'safe-termination.io/prestop-sleep': 'soon' } }), { uid: 'denied-log-uid' });
  const denial = w.logs.lines.find((l) => l['uid'] === 'denied-log-uid');
  t.equal(denial?.['decision'], 'denied');
  t.equal(denial?.['level'], 'info', 'a denial blocks a pod: logged at the default level');
  t.match(String(denial?.['msg']), /prestop-sleep: invalid value "soon"/);
});

t.test('a failure inside the decision admits the pod unchanged (never blocks creation)', async (t) => {
  const broken = await startTestWebhook({
    wireFacts: async () => ({
      facts: {
        conntrackFor: () => {
          throw new Error('boom');
        },
        kubeVersion: () => undefined,
      },
      ready: new Promise<void>(() => {}),
      stop: async () => {},
    }),
  });
  t.teardown(() => broken.close());
  const res = await broken.post(reviewOf(defaultedPod(), { uid: 'boom-uid' }));
  t.equal(res.status, 200);
  const body = res.json<ReviewBody>();
  t.same(body.response, { uid: 'boom-uid', allowed: true, warnings: ['safe-termination: internal error, pod admitted unchanged'] });
  t.match(await (await fetch(broken.metricsUrl)).text(), /safe_termination_admissions_total\{outcome="error"\} 1/);
  const line = broken.logs.lines.find((l) => l['uid'] === 'boom-uid');
  t.equal(line?.['level'], 'error');
  const ready = await broken.get('/readyz');
  t.equal(ready.status, 503, 'facts never synced: not ready');
  t.match(ready.json(), { status: 'not ready', reasons: ['cluster facts not synced yet'] });
  t.same(ready.json<{ reasons: string[] }>().reasons, ['cluster facts not synced yet']);
});

t.test('a port already in use fails the start cleanly', async (t) => {
  const { parseServeConfig } = await import('../../src/cli/config.ts');
  const { startWebhook } = await import('../../src/server/serve.ts');
  const { createLogger } = await import('../../src/shared/logger.ts');
  let stopped = false;
  const config = parseServeConfig(['--port', String(w.webhook.port), '--metrics-port', '0', '--bind-address', '127.0.0.1', '--tls-cert-file', w.certs.certFile, '--tls-private-key-file', w.certs.keyFile], {});
  await t.rejects(
    startWebhook(config, createLogger('silent'), async () => ({
      facts: { conntrackFor: () => { throw new Error('unused'); }, kubeVersion: () => undefined },
      ready: Promise.resolve(),
      stop: async () => {
        stopped = true;
      },
    })),
    /EADDRINUSE/,
  );
  t.ok(stopped, 'the cluster facts wiring was stopped');
});

t.test('huge generated names are shortened in the log', async (t) => {
  const pod = defaultedPod({ generateName: `${'g'.repeat(100_000)}-` });
  const body = await review(pod, { uid: 'long-name-uid' });
  t.equal(body.response.allowed, true);
  const line = w.logs.lines.find((l) => l['uid'] === 'long-name-uid');
  t.ok(String(line?.['pod']).length < 400);
});
