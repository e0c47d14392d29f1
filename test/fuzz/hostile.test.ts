/**
 * Hostile input over the real TLS server: every body gets a 4xx with
 * a JSON error body, or a conformant 200 — uid echoed; a patch applies (RFC 6902,
 * fast-json-patch) to the pod that was sent and adds no problem to it under the
 * Kubernetes schema and lifecycle rules — within a time bound; the server stays
 * healthy, logs no internal error, and nothing pollutes Object.prototype.
 */
import t from 'tap';
import fc from 'fast-check';
import fjp from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import secureJson from 'secure-json-parse';
import { parseJsonBody } from '../../src/server/review-body.ts';
import { podProblems } from '../support/pod-validation.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import type { ContainerOptions } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';
import type { HttpAnswer, TestWebhook } from '../support/webhook.ts';

/** Deterministic by default; FUZZ_SEED=<n> explores other inputs, FUZZ_RUNS scales the run counts. */
const SEED = Number(process.env['FUZZ_SEED'] ?? 20261126);
const SCALE = Number(process.env['FUZZ_RUNS'] ?? 1);
const runs = (n: number): number => Math.max(1, Math.round(n * SCALE));
/** An ordinary review must be answered within this (generous: CI machines are shared). */
const BOUND_MS = 3000;
/** Multi-MiB bodies and thousands of containers. */
const BIG_BOUND_MS = 10_000;

let w: TestWebhook;
t.before(async () => {
  w = await startTestWebhook({ args: ['--conntrack-proc-dir', '/nonexistent', '--log-level', 'info'] });
});
t.teardown(() => w.close());

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Outcome {
  readonly status: number;
  readonly kind: 'rejected' | 'allowed' | 'patched' | 'denied';
  readonly ms: number;
}

function parseOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text.replace(/^\ufeff/, ''));
  } catch {
    return undefined;
  }
}

/** Checks one answer against the contract; throws with what is wrong. */
function conformance(sent: string, res: HttpAnswer, ms: number, bound: number): Outcome {
  const where = `(body ${sent.length} chars: ${JSON.stringify(sent.slice(0, 120))}…)`;
  if (ms > bound) throw new Error(`answered after ${ms.toFixed(0)} ms, bound ${bound} ms ${where}`);
  if (!/^application\/json/.test(String(res.headers['content-type']))) throw new Error(`status ${res.status} with content-type ${String(res.headers['content-type'])} ${where}`);
  const body = parseOrUndefined(res.text) as Record<string, any> | undefined;
  if (body === undefined) throw new Error(`status ${res.status}: the answer is not JSON: ${res.text.slice(0, 200)} ${where}`);
  if (res.status >= 400 && res.status < 500) {
    if (typeof body['code'] !== 'string' || typeof body['message'] !== 'string') throw new Error(`4xx without code and message: ${res.text.slice(0, 200)} ${where}`);
    if (/\n\s+at /.test(body['message'])) throw new Error(`stack trace in the error body ${where}`);
    return { status: res.status, kind: 'rejected', ms };
  }
  if (res.status !== 200) throw new Error(`status ${res.status}: ${res.text.slice(0, 300)} ${where}`);
  const review = parseOrUndefined(sent) as { request?: { uid?: unknown; object?: unknown } } | undefined;
  if (body['apiVersion'] !== 'admission.k8s.io/v1' || body['kind'] !== 'AdmissionReview') throw new Error(`not an AdmissionReview: ${res.text.slice(0, 200)}`);
  const r = body['response'] as Record<string, any>;
  if (r['uid'] !== review?.request?.uid) throw new Error(`uid ${JSON.stringify(r['uid'])} is not the sent ${JSON.stringify(review?.request?.uid)} ${where}`);
  if (typeof r['allowed'] !== 'boolean') throw new Error('allowed is not a boolean');
  const warnings = (r['warnings'] ?? []) as unknown[];
  for (const warning of warnings) {
    if (typeof warning !== 'string' || Array.from(warning).length >= 120) throw new Error(`warning not a string under 120 characters: ${JSON.stringify(warning)}`);
  }
  if (!r['allowed']) {
    if (typeof r['status']?.message !== 'string' || r['patch'] !== undefined) throw new Error(`a denial needs a message and no patch: ${res.text.slice(0, 300)}`);
    return { status: 200, kind: 'denied', ms };
  }
  if (r['patch'] === undefined) {
    if (r['patchType'] !== undefined) throw new Error('patchType without a patch');
    return { status: 200, kind: 'allowed', ms };
  }
  if (r['patchType'] !== 'JSONPatch' || typeof r['patch'] !== 'string') throw new Error(`bad patchType/patch: ${JSON.stringify(r['patchType'])}`);
  const ops = JSON.parse(Buffer.from(r['patch'], 'base64').toString('utf8')) as Operation[];
  // Apply to a fresh parse of what was sent (JSON.parse, unlike structuredClone, copes with any depth).
  const pod = (parseOrUndefined(sent) as { request: { object: unknown } }).request.object;
  const before = podProblems(pod);
  let patchedPod: unknown;
  try {
    // Validating each operation as it applies; mutating the fresh copy (no deep clone).
    patchedPod = fjp.applyPatch(pod, ops, true, true).newDocument;
  } catch (e) {
    throw new Error(`patch does not apply: ${(e as Error).message} ${where}`, { cause: e });
  }
  const after = podProblems(patchedPod);
  const added = after.filter((p) => !before.includes(p));
  if (added.length > 0) throw new Error(`the patch made the pod invalid: ${added.slice(0, 3).join('; ')} ${where}`);
  return { status: 200, kind: 'patched', ms };
}

async function send(body: string | Buffer, bound = BOUND_MS, headers: Record<string, string> = {}): Promise<Outcome> {
  const text = typeof body === 'string' ? body : body.toString('utf8');
  const start = performance.now();
  const res = await w.post(body, '/mutate?timeout=10s', headers);
  return conformance(text, res, performance.now() - start, bound);
}

/** Runs `tasks` with at most `width` in flight. */
async function pool<T>(items: readonly T[], width: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await task(items[next++] as T);
    }),
  );
}

const tally = new Map<string, number>();
const count = (o: Outcome): Outcome => {
  const key = `${o.status} ${o.kind}`;
  tally.set(key, (tally.get(key) ?? 0) + 1);
  return o;
};

// ---- generators ---------------------------------------------------------------------------

const LONE_SURROGATES = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const ODD_CHARS = fc.oneof(
  fc.constantFrom('\u0000', '\u202e', '\u200f', '\u061c', '\ufeff', '\uffff', '\u0301', '\u2028', '"', '\\', '/', '~', '~1', '~0', '%', '\n', '😀', 'ß', 'İ', '٣'),
  LONE_SURROGATES,
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
);
/** Strings made of ordinary and odd characters: NUL, RTL marks, lone surrogates, JSON-pointer specials. */
const oddString = fc.string({ unit: fc.oneof({ weight: 3, arbitrary: fc.string({ minLength: 1, maxLength: 1 }) }, { weight: 2, arbitrary: ODD_CHARS }), maxLength: 24 });
const dnsName = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/);
const jsonValue: fc.Arbitrary<Json> = fc.jsonValue({ maxDepth: 3, stringUnit: fc.oneof(fc.string({ minLength: 1, maxLength: 1 }), ODD_CHARS) }) as fc.Arbitrary<Json>;

const ANNOTATION_KEYS = [
  'inject', 'prestop-sleep', 'propagation-delay', 'shutdown-budget', 'max-sleep', 'protocols', 'udp-streams',
  'containers', 'exclude-containers', 'prestop-mode', 'existing-prestop', 'injected', 'prestop-slep',
].map((k) => `safe-termination.io/${k}`);
const annotationValue = fc.oneof(
  fc.constantFrom('true', 'false', '35', '35s', '1m30s', '0', '-1', '1.5', '1h', '99999999999', 'udp', 'TCP,udp', 'sctp,bogus', 'sleep', 'exec', 'auto', 'keep', 'replace', 'app', 'app,sidecar', '', ' ', '{"v":1}'),
  oddString,
);

const containerArb: fc.Arbitrary<ContainerOptions> = fc.record(
  {
    name: fc.oneof({ weight: 4, arbitrary: dnsName }, { weight: 1, arbitrary: oddString }),
    ports: fc.array(fc.record({ containerPort: fc.integer({ min: 1, max: 65535 }), protocol: fc.constantFrom('TCP' as const, 'UDP' as const, 'SCTP' as const) }), { maxLength: 3 }),
    lifecycle: fc.constantFrom(
      { preStop: { exec: { command: ['/bin/drain'] } } },
      { preStop: { sleep: { seconds: 5 } } },
      { postStart: { exec: { command: ['true'] } } },
    ),
  },
  { requiredKeys: ['name'] },
);

/** A realistic review with random containers, annotations (valid and invalid), labels and grace. */
const podReview = fc
  .record({
    containers: fc.array(containerArb, { minLength: 1, maxLength: 4 }),
    sidecars: fc.array(containerArb.map((c) => ({ ...c, restartPolicy: 'Always' as const })), { maxLength: 2 }),
    annotations: fc.dictionary(fc.oneof(fc.constantFrom(...ANNOTATION_KEYS), oddString), annotationValue, { maxKeys: 4 }),
    labels: fc.dictionary(fc.constantFrom('app', 'safe-termination.io/inject', 'tier'), fc.constantFrom('web', 'disabled', 'enabled'), { maxKeys: 2 }),
    grace: fc.oneof(fc.constant(undefined), fc.constant(null), fc.integer({ min: 0, max: 4000 })),
    operation: fc.constantFrom('CREATE' as const, 'CREATE' as const, 'CREATE' as const, 'UPDATE' as const),
    uid: fc.oneof({ weight: 4, arbitrary: fc.uuid() }, { weight: 1, arbitrary: oddString.filter((s) => s.length > 0) }),
  })
  .map((o) => {
    const pod = defaultedPod({
      containers: o.containers,
      initContainers: o.sidecars.length > 0 ? o.sidecars : undefined,
      annotations: Object.keys(o.annotations).length > 0 ? o.annotations : undefined,
      labels: o.labels,
      terminationGracePeriodSeconds: o.grace,
    });
    return reviewOf(pod, { uid: o.uid, operation: o.operation }) as Record<string, Json>;
  });

/** Every path to a node of a JSON value. */
function paths(value: Json, prefix: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  out.push(prefix);
  if (Array.isArray(value)) value.forEach((v, i) => paths(v, [...prefix, i], out));
  else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) paths(v, [...prefix, k], out);
  return out;
}

function setAt(root: Json, path: ReadonlyArray<string | number>, value: Json | undefined): Json {
  if (path.length === 0) return value ?? null;
  let node = root as Record<string, Json>;
  for (const p of path.slice(0, -1)) node = node[p as string] as Record<string, Json>;
  const last = path[path.length - 1] as string;
  if (value === undefined) {
    if (Array.isArray(node)) node.splice(Number(last), 1);
    else Reflect.deleteProperty(node, last);
  } else Object.defineProperty(node, last, { value, enumerable: true, writable: true, configurable: true });
  return root;
}

type Mutation = { readonly at: number; readonly how: 'replace' | 'delete' | 'add-key' | 'wrap'; readonly key: string; readonly value: Json };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  how: fc.constantFrom('replace' as const, 'delete' as const, 'add-key' as const, 'wrap' as const),
  key: fc.oneof(oddString, fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'lifecycle', 'preStop', 'name', 'annotations')),
  value: jsonValue,
});

function mutate(review: Json, ms: readonly Mutation[]): Json {
  let root = review;
  for (const m of ms) {
    const all = paths(root);
    const path = all[m.at % all.length]!;
    const current = path.reduce<Json>((n, p) => (n as Record<string, Json>)[p as string] as Json, root);
    if (m.how === 'replace') root = setAt(root, path, m.value);
    else if (m.how === 'delete') root = path.length === 0 ? root : setAt(root, path, undefined);
    else if (m.how === 'wrap') root = setAt(root, path, [current]);
    else if (current !== null && typeof current === 'object' && !Array.isArray(current)) setAt(current, [m.key], m.value);
  }
  return root;
}

// ---- properties ------------------------------------------------------------------------------

t.test('random JSON and random bytes: a 4xx error body, never a crash', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.json({ maxDepth: 4 }), jsonValue.map((v) => JSON.stringify(v)), fc.string({ unit: 'binary', maxLength: 300 }), oddString), async (body) => {
      count(await send(body));
    }),
    { numRuns: runs(150), seed: SEED },
  );
  t.pass('every random body answered within the bound');
});

t.test('random valid-looking reviews: conformant answers, patches that apply and keep the pod valid', async (t) => {
  const kinds = new Set<string>();
  await fc.assert(
    fc.asyncProperty(podReview, async (review) => {
      const body = JSON.stringify(review);
      const o = count(await send(body));
      kinds.add(o.kind);
      if (o.status !== 200) throw new Error(`a well-formed review was rejected with ${o.status}`);
    }),
    { numRuns: runs(200), seed: SEED },
  );
  t.ok(kinds.has('patched') && kinds.has('denied') && kinds.has('allowed'), `patched, denied and allowed all seen (${[...kinds].join(', ')})`);
});

t.test('mutated valid reviews: replaced, deleted, wrapped and added keys at random places', async (t) => {
  await fc.assert(
    fc.asyncProperty(podReview, fc.array(mutation, { minLength: 1, maxLength: 4 }), async (review, ms) => {
      count(await send(JSON.stringify(mutate(review, ms))));
    }),
    { numRuns: runs(300), seed: SEED + 1 },
  );
  t.pass('every mutated review answered conformantly');
});

t.test('a wrong type at every level of a rich review', async (t) => {
  const pod = defaultedPod({
    containers: [
      { name: 'app', ports: [{ containerPort: 8080 }, { containerPort: 53, protocol: 'UDP' }] },
      { name: 'proxy', lifecycle: { preStop: { exec: { command: ['/bin/drain'] } } } },
    ],
    initContainers: [{ name: 'mesh', restartPolicy: 'Always', ports: [{ containerPort: 15001 }] }],
    annotations: { 'safe-termination.io/shutdown-budget': '20s', 'safe-termination.io/protocols': 'tcp,udp' },
    spec: {
      nodeSelector: { zone: 'a' },
      affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'k', operator: 'In', values: ['v'] }], matchFields: [{ key: 'metadata.name', operator: 'In', values: ['n1'] }] }] } } },
      os: { name: 'linux' },
    },
  });
  const review = reviewOf(pod, { uid: 'wrong-types-0001' }) as Json;
  const wrong: Json[] = [null, 0, -1, 2.5, 1e300, true, '', 'x', [], {}, [1, 'a'], { a: { b: [] } }];
  const cases: string[] = [];
  for (const path of paths(review)) {
    for (const value of wrong) cases.push(JSON.stringify(setAt(structuredClone(review), path, value)));
  }
  await pool(cases, 8, async (body) => {
    count(await send(body));
  });
  t.ok(cases.length > 1000, `${cases.length} reviews, each with one node of another type, all answered conformantly`);
});

/** The answer's allowed/patch, for comparing two answers. */
async function decision(body: string): Promise<string> {
  const res = await w.post(body, '/mutate');
  if (res.status !== 200) return `status ${res.status}`;
  const r = res.json<{ response: { allowed: boolean; patch?: string } }>().response;
  return JSON.stringify({ allowed: r.allowed, patch: r.patch === undefined ? undefined : Buffer.from(r.patch, 'base64').toString('utf8') });
}

t.test('__proto__ and constructor.prototype keys: dropped, the pod answered as without them, nothing polluted', async (t) => {
  const base = JSON.stringify(reviewOf(defaultedPod(), { uid: 'proto-0001' }));
  const expected = await decision(base);
  const protoKeys = ['"__proto__"', '"\\u005f\\u005fproto\\u005f\\u005f"', '"__pro\\u0074o__"'];
  const constructorKeys = ['"constructor"', '"\\u0063onstructor"'];
  const values = ['{"polluted":true}', '{"prototype":{"polluted":true}}', '"x"', '[]', 'null'];
  const places = ['{', '"request":{', '"object":{', '"metadata":{', '"labels":{', '"spec":{', '"containers":[{', '"resources":{'];
  const place = (at: string, kv: string): string => (at === '{' ? `{${kv},${base.slice(1)}` : base.replace(at, `${at}${kv},`));
  let total = 0;
  const harmless: string[] = [];
  for (const at of places) {
    for (const value of values) {
      for (const key of protoKeys) {
        const body = place(at, `${key}:${value}`);
        count(await send(body));
        total++;
        const got = await decision(body);
        if (got !== expected) throw new Error(`${key}:${value} after ${at} was answered ${got}, not as without it (${expected})`);
      }
      for (const key of constructorKeys) {
        const body = place(at, `${key}:${value}`);
        const o = count(await send(body));
        total++;
        if (value.includes('prototype')) {
          const got = await decision(body);
          if (got !== expected) throw new Error(`${key}:${value} after ${at} was answered ${got}, not as without it`);
        }
        if (o.status === 200) harmless.push(`${at} ${key}:${value} → ${o.kind}`);
      }
    }
  }
  // A pod with such a key in a free-form map (a CSI volume's attributes) is injected as usual.
  const csi = reviewOf(defaultedPod({ spec: { volumes: [{ name: 'data', csi: { driver: 'x.csi.example.com', volumeAttributes: { size: '1Gi' } } }] } }), { uid: 'proto-csi' });
  const csiBody = JSON.stringify(csi).replace('"volumeAttributes":{', '"volumeAttributes":{"__proto__":{"polluted":"yes"},');
  t.equal(count(await send(csiBody)).kind, 'patched', 'a __proto__ key in volumeAttributes: injected, and the patch applies to the pod as sent');
  await fc.assert(
    fc.asyncProperty(podReview, fc.nat(), fc.constantFrom('__proto__', 'constructor'), jsonValue, async (review, at, key, value) => {
      const without = JSON.stringify(review);
      const targets = paths(review).filter((p) => {
        const node = p.reduce<Json>((n, k) => (n as Record<string, Json>)[k as string] as Json, review);
        return node !== null && typeof node === 'object' && !Array.isArray(node);
      });
      const target = targets[at % targets.length]!;
      const node = target.reduce<Json>((n, k) => (n as Record<string, Json>)[k as string] as Json, review) as Record<string, Json>;
      Object.defineProperty(node, key, { value: key === 'constructor' ? { prototype: value } : value, enumerable: true, writable: true, configurable: true });
      const body = JSON.stringify(review);
      count(await send(body));
      const [got, want] = [await decision(body), await decision(without)];
      if (got !== want) throw new Error(`${key} at ${JSON.stringify(target)} was answered ${got}, not as without it (${want})`);
    }),
    { numRuns: runs(60), seed: SEED + 2 },
  );
  t.ok(total >= 200, `${total} placed keys: every __proto__ and constructor.prototype dropped, the answer as without it`);
  t.ok(harmless.some((h) => h.startsWith('"labels":{')), `a label named "constructor" is an ordinary label (${harmless.length} harmless placements answered 200)`);
  t.same(Object.getOwnPropertyNames(Object.prototype).filter((k) => k === 'polluted'), [], 'Object.prototype untouched');
  t.equal(({} as Record<string, unknown>)['polluted'], undefined, 'no polluted property on plain objects');
});

t.test('terminationGracePeriodSeconds beyond 2^53 (a valid int64): allowed without a patch, skipped as out of range', async (t) => {
  const pod = JSON.stringify(reviewOf(defaultedPod(), { uid: 'grace-int64' }));
  for (const grace of ['9223372036854775807', '9007199254740993', '4294967296']) {
    const body = pod.replace(/"terminationGracePeriodSeconds":\d+/, `"terminationGracePeriodSeconds":${grace}`);
    t.not(body, pod, 'the grace is in the review');
    const o = count(await send(body));
    t.equal(o.kind, 'allowed', `grace ${grace}: allowed, no patch`);
  }
  const metrics = await (await fetch(w.metricsUrl)).text();
  t.match(metrics, /safe_termination_decisions_total\{decision="skipped",reason="grace-period-out-of-range"\} [1-9]/, 'counted as grace-period-out-of-range');
  await fc.assert(
    fc.asyncProperty(fc.bigInt({ min: 2n ** 31n, max: 2n ** 63n - 1n }), async (grace) => {
      const o = count(await send(pod.replace(/"terminationGracePeriodSeconds":\d+/, `"terminationGracePeriodSeconds":${grace}`)));
      if (o.kind !== 'allowed') throw new Error(`grace ${grace} was answered ${o.status} ${o.kind}`);
    }),
    { numRuns: runs(50), seed: SEED + 3 },
  );
});

t.test('deep nesting: 100k nested arrays and objects, at the top and inside the pod', async (t) => {
  const depth = 100_000;
  const arrays = `${'['.repeat(depth)}${']'.repeat(depth)}`;
  const objects = `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
  const review = JSON.stringify(reviewOf(defaultedPod(), { uid: 'deep-0001' }));
  const bodies = [
    arrays,
    objects,
    review.replace('"object":{', `"object":{"deep":${arrays},`),
    review.replace('"containers":[{', `"containers":[{"env":${arrays},`),
    review.replace('"labels":{', `"labels":{"deep":${objects},`),
    review.replace('"request":{', `"request":{"deep":${objects},`),
    review.replace('"request":{', `"request":{"deep":${objects},"constructor":{"prototype":{}},`),
    `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":${arrays}}`,
  ];
  const kinds: string[] = [];
  for (const body of bodies) kinds.push(count(await send(body, BIG_BOUND_MS)).kind);
  t.ok(kinds.includes('patched'), `nesting the pod ignores is no obstacle (${kinds.join(', ')})`);
});

t.test('very long strings: multi-MiB names, annotations and uid', async (t) => {
  const mib = (n: number) => 'x'.repeat(n * 1024 * 1024);
  const odd = Array.from({ length: 64 * 1024 }, (_, i) => ['\u0000', '\u202e', '\ud800', 'é', '"', '\\'][i % 6]).join('');
  const bodies = [
    JSON.stringify(reviewOf(defaultedPod({ generateName: mib(5) }), { uid: 'long-0001' })),
    JSON.stringify(reviewOf(defaultedPod({ annotations: { 'example.com/blob': mib(5) } }), { uid: 'long-0002' })),
    JSON.stringify(reviewOf(defaultedPod({ annotations: { 'safe-termination.io/prestop-sleep': mib(2) } }), { uid: 'long-0003' })),
    JSON.stringify(reviewOf(defaultedPod({ annotations: { [`safe-termination.io/${mib(1)}`]: 'x' } }), { uid: 'long-0004' })),
    JSON.stringify(reviewOf(defaultedPod({ containers: [{ name: mib(1) }] }), { uid: 'long-0005' })),
    JSON.stringify(reviewOf(defaultedPod({ containers: [{ name: odd }], annotations: { [`safe-termination.io/${odd}`]: odd, 'safe-termination.io/containers': odd } }), { uid: 'long-0006' })),
    JSON.stringify(reviewOf(defaultedPod(), { uid: mib(1) })),
  ];
  const kinds: string[] = [];
  for (const body of bodies) kinds.push(count(await send(body, BIG_BOUND_MS)).kind);
  t.same(kinds.slice(0, 3), ['patched', 'patched', 'denied'], 'a long name or annotation is no reason to fail; a long bad value is denied');
  t.equal(kinds.at(-1), 'rejected', 'a 1 MiB uid is not a review');
});

t.test('thousands of containers, and lists that name them all', async (t) => {
  const names = Array.from({ length: 5000 }, (_, i) => `c${i}`);
  const many = (n: number): ContainerOptions[] => names.slice(0, n).map((name, i) => ({ name, ports: [{ containerPort: 1000 + (i % 60000), protocol: i % 7 === 0 ? 'UDP' : 'TCP' }] }));
  const bodies = [
    reviewOf(defaultedPod({ containers: many(5000) }), { uid: 'many-0001' }),
    reviewOf(defaultedPod({ containers: many(3000), annotations: { 'safe-termination.io/containers': names.slice(0, 3000).join(','), 'safe-termination.io/exclude-containers': names.slice(0, 3000).reverse().join(',') } }), { uid: 'many-0002' }),
    reviewOf(defaultedPod({ containers: many(100), initContainers: many(3000).map((c) => ({ ...c, name: `s-${c.name}`, restartPolicy: 'Always' as const })) }), { uid: 'many-0003' }),
    reviewOf(defaultedPod({ annotations: Object.fromEntries(names.map((n) => [`safe-termination.io/unknown-${n}`, n])) }), { uid: 'many-0004' }),
    reviewOf(defaultedPod({ annotations: { 'safe-termination.io/containers': Array.from({ length: 200_000 }, (_, i) => `n${i}`).join(',') } }), { uid: 'many-0005' }),
  ];
  const kinds: string[] = [];
  for (const body of bodies) kinds.push(count(await send(JSON.stringify(body), BIG_BOUND_MS)).kind);
  t.same(kinds, ['patched', 'allowed', 'patched', 'patched', 'denied'], 'answered within the bound, patches valid');
});

t.test('odd unicode in names and annotations', async (t) => {
  await fc.assert(
    fc.asyncProperty(podReview, fc.array(fc.tuple(fc.oneof(fc.constantFrom(...ANNOTATION_KEYS), oddString), oddString), { minLength: 1, maxLength: 4 }), oddString, async (review, entries, name) => {
      const pod = (review['request'] as Record<string, any>)['object'] as Record<string, any>;
      pod['metadata']['annotations'] = Object.fromEntries(entries);
      pod['metadata']['generateName'] = name;
      pod['spec']['containers'][0]['name'] = name;
      count(await send(JSON.stringify(review)));
    }),
    { numRuns: runs(150), seed: SEED + 3 },
  );
  t.pass('odd unicode answered conformantly');
});

t.test('the body parser decides exactly as secure-json-parse does, on any text', async (t) => {
  // The fast path (JSON.parse when no "__proto__"/"constructor" spelling can be present) must be invisible.
  const outcome = (f: () => unknown): string => {
    try {
      return `ok ${JSON.stringify(f())}`;
    } catch (e) {
      return `error ${(e as Error).message}`;
    }
  };
  const spellings = fc.constantFrom('__proto__', '\\u005f_proto__', '__pr\\u006fto__', '\\u005F\\u005Fproto\\u005F\\u005F', 'constructor', 'c\\u006fnstructor', 'prototype', 'proto', 'x');
  const text = fc.oneof(
    fc.json({ maxDepth: 3 }),
    fc.tuple(jsonValue, spellings, jsonValue).map(([a, key, v]) => `{"a":${JSON.stringify(a)},"${key}":${JSON.stringify(key.startsWith('c') ? { prototype: v } : v)}}`),
    fc.tuple(fc.constantFrom('\ufeff', '', ' '), fc.json({ maxDepth: 2 })).map(([p, j]) => `${p}${j}`),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  fc.assert(
    fc.property(text, (body) => {
      const ours = outcome(() => parseJsonBody(body));
      const theirs = outcome(() => secureJson.parse(body, undefined, { protoAction: 'remove', constructorAction: 'remove' }));
      if (ours !== theirs) throw new Error(`${JSON.stringify(body)}: ${ours} vs ${theirs}`);
    }),
    { numRuns: runs(3000), seed: SEED + 4 },
  );
  t.pass('same value or same error for every text');
});

t.test('transport oddities: empty body, wrong content type, invalid UTF-8, BOM', async (t) => {
  const review = JSON.stringify(reviewOf(defaultedPod(), { uid: 'transport-0001' }));
  t.equal((await send('')).status, 400, 'empty body');
  t.equal((await send(review, BOUND_MS, { 'content-type': 'text/plain' })).status, 415, 'text/plain');
  t.equal((await send(Buffer.concat([Buffer.from(review.slice(0, 50)), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from(review.slice(50))]))).status, 400, 'invalid UTF-8 inside JSON');
  const bom = await send(`\ufeff${review}`);
  t.ok(bom.status === 200 || bom.status === 400, `leading BOM: ${bom.status} ${bom.kind}`);
  for (const body of ['null', '[]', '1', '"x"', 'true', '{}', '{"request":null}']) t.equal((await send(body)).status, 400, body);
});

t.test('afterwards: healthy, ready, metrics served, no internal error logged', async (t) => {
  t.equal((await w.get('/healthz')).status, 200);
  t.equal((await w.get('/readyz')).status, 200);
  const metrics = await fetch(w.metricsUrl);
  t.equal(metrics.status, 200);
  const text = await metrics.text();
  t.match(text, /safe_termination_admissions_total\{outcome="invalid"\} [1-9]/);
  t.match(text, /safe_termination_admissions_total\{outcome="patched"\} [1-9]/);
  const errors = w.logs.lines.filter((l) => l['level'] === 'error' || l['level'] === 'fatal');
  t.same(errors.map((l) => l['msg']), [], 'no handler failure or internal error');
  t.comment(`answers: ${[...tally].map(([k, v]) => `${k}: ${v}`).join(', ')}`);
});
