/**
 * The streaming tally (what the agent uses on a node's whole table) gives exactly
 * the report of `diagnose()` for the same entries: on the lab's real captures, with
 * and without Service objects (inference), and on random tables and indexes.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import t from 'tap';
import { diagnose } from '../../src/diagnose/classify.ts';
import { parseConntrack, parseLine } from '../../src/diagnose/conntrack.ts';
import type { ConntrackEntry } from '../../src/diagnose/conntrack.ts';
import { buildServiceIndex, parseKubernetesObjects } from '../../src/diagnose/endpoints.ts';
import { DiagnoseTally } from '../../src/diagnose/tally.ts';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/conntrack/${name}`, import.meta.url), 'utf8');

function tallied(entries: readonly ConntrackEntry[], index: ReturnType<typeof buildServiceIndex>) {
  const tally = new DiagnoseTally(index);
  for (const e of entries) tally.add(e);
  return tally.report();
}

for (const run of ['unprotected', 'protected'] as const) {
  t.test(`lab ${run}: the same report as diagnose()`, async (t) => {
    const entries = parseConntrack(fixture(`lab-${run}-at-removal.txt`)).entries;
    const objects = parseKubernetesObjects(fixture(`lab-${run}-endpoints.json`));
    const full = buildServiceIndex(objects);
    const expected = diagnose(entries, full);
    t.ok(expected.stale + expected.draining > 0, 'the capture has stale or draining entries');
    t.same(tallied(entries, full), expected);
    // Without the Service object the VIP's Service is inferred from its endpoints.
    const slicesOnly = buildServiceIndex(objects.filter((o) => (o as { kind: string }).kind === 'EndpointSlice'));
    const inferred = diagnose(entries, slicesOnly);
    t.ok(inferred.groups.some((g) => g.attribution === 'inferred'), 'inference is exercised');
    t.same(tallied(entries, slicesOnly), inferred);
  });
}

t.test('report() can be called mid-way and the tally goes on', async (t) => {
  const entries = parseConntrack(fixture('lab-unprotected-at-removal.txt')).entries;
  const index = buildServiceIndex(parseKubernetesObjects(fixture('lab-unprotected-endpoints.json')));
  const tally = new DiagnoseTally(index);
  const half = Math.floor(entries.length / 2);
  for (const e of entries.slice(0, half)) tally.add(e);
  t.same(tally.report(), diagnose(entries.slice(0, half), index));
  for (const e of entries.slice(half)) tally.add(e);
  t.same(tally.report(), diagnose(entries, index));
  t.equal(tally.entries, entries.length);
});

// Random tables over a small address space, so that destinations, targets and
// Services collide often: every branch (service, nodePort, inferred, ambiguous,
// unattributed, gone, not-serving, draining, closed) is hit.
const VIPS = ['10.96.0.10', '10.96.0.11', '10.96.0.12', 'fd00::a'];
const PODS = ['10.244.1.2', '10.244.1.3', '10.244.1.4', 'fd00::1:2'];
const PORTS = [53, 80, 8080];
const STATES = [undefined, 'ESTABLISHED', 'TIME_WAIT', 'SYN_SENT', 'CLOSE'];

const arbService = fc.record({
  ns: fc.constantFrom('a', 'b'),
  name: fc.constantFrom('s1', 's2', 's3'),
  vip: fc.constantFrom(...VIPS),
  withObject: fc.boolean(),
  ports: fc.uniqueArray(fc.record({ port: fc.constantFrom(...PORTS), target: fc.constantFrom(...PORTS), protocol: fc.constantFrom('UDP', 'TCP'), nodePort: fc.option(fc.constantFrom(30053, 30080), { nil: undefined }) }), {
    minLength: 1,
    maxLength: 2,
    selector: (p) => `${p.port}/${p.protocol}`,
  }),
  endpoints: fc.array(fc.record({ ip: fc.constantFrom(...PODS), ready: fc.option(fc.boolean(), { nil: undefined }), serving: fc.option(fc.boolean(), { nil: undefined }), terminating: fc.option(fc.boolean(), { nil: undefined }) }), { maxLength: 3 }),
});

const arbEntry = fc.record({
  udp: fc.boolean(),
  dst: fc.constantFrom(...VIPS, '192.168.0.5'),
  dport: fc.constantFrom(...PORTS, 30053, 30080),
  target: fc.constantFrom(...PODS, '10.96.0.10'),
  tport: fc.constantFrom(...PORTS),
  state: fc.constantFrom(...STATES),
  unreplied: fc.boolean(),
  sport: fc.integer({ min: 1024, max: 1100 }),
});

type ServiceCase = typeof arbService extends fc.Arbitrary<infer T> ? T : never;
type EntryCase = typeof arbEntry extends fc.Arbitrary<infer T> ? T : never;

function objectsOf(services: readonly ServiceCase[]): unknown[] {
  const out: unknown[] = [];
  services.forEach((s, i) => {
    if (s.withObject) {
      out.push({
        kind: 'Service',
        metadata: { namespace: s.ns, name: s.name },
        spec: { clusterIP: s.vip, ports: s.ports.map((p, j) => ({ name: `p${j}`, port: p.port, protocol: p.protocol, ...(p.nodePort ? { nodePort: p.nodePort } : {}) })) },
      });
    }
    out.push({
      kind: 'EndpointSlice',
      metadata: { namespace: s.ns, name: `${s.name}-${i}`, labels: { 'kubernetes.io/service-name': s.name } },
      addressType: 'IPv4',
      ports: s.ports.map((p, j) => ({ name: `p${j}`, port: p.target, protocol: p.protocol })),
      endpoints: s.endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready, serving: e.serving, terminating: e.terminating } })),
    });
  });
  return out;
}

function lineOf(e: EntryCase): ConntrackEntry {
  const v6 = e.dst.includes(':');
  const client = v6 ? 'fd00::2' : '10.244.0.2';
  const proto = e.udp ? 'udp      17 25' : `tcp      6 100 ${e.state ?? 'ESTABLISHED'}`;
  const line = `${v6 ? 'ipv6     10' : 'ipv4     2'} ${proto} src=${client} dst=${e.dst} sport=${e.sport} dport=${e.dport} ${e.unreplied ? '[UNREPLIED] ' : ''}src=${e.target} dst=${client} sport=${e.tport} dport=${e.sport} mark=0 use=1`;
  const parsed = parseLine(line);
  if (typeof parsed === 'string') throw new Error(`${parsed}: ${line}`);
  return parsed;
}

t.test('random tables: the tally equals diagnose()', async (t) => {
  let checked = 0;
  let withStale = 0;
  let withInferred = 0;
  let withUnattributed = 0;
  fc.assert(
    fc.property(fc.array(arbService, { maxLength: 4 }), fc.array(arbEntry, { maxLength: 60 }), (services, raw) => {
      const index = buildServiceIndex(objectsOf(services));
      const entries = raw.map(lineOf);
      const expected = diagnose(entries, index);
      const got = tallied(entries, index);
      checked++;
      if (expected.stale > 0) withStale++;
      if (expected.groups.some((g) => g.attribution === 'inferred')) withInferred++;
      if (expected.unattributed.length > 0) withUnattributed++;
      // JSON: exact, including the order of groups, targets and unattributed destinations.
      return JSON.stringify(sortKeys(got)) === JSON.stringify(sortKeys(expected));
    }),
    { numRuns: 1500, seed: 20_241_126 },
  );
  t.comment(`${checked} tables: ${withStale} with stale entries, ${withInferred} with inferred Services, ${withUnattributed} with unattributed entries`);
  t.ok(withStale > 100 && withInferred > 20 && withUnattributed > 100, 'the random tables cover the branches');
});

/** Object keys sorted (staleByState is built in entry order by both, but that order is not part of the contract). */
function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => [k, sortKeys(x)]));
  }
  return v;
}
