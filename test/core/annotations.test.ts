import t from 'tap';
import { describeProblem, nearestKnownKey, readSettings } from '../../src/core/annotations.ts';

const names = ['app', 'proxy', 'init-sidecar'];
const read = (a: Record<string, string>) => readSettings(a, names);

t.test('no annotations means no settings', async (t) => {
  t.same(readSettings(undefined, names), { settings: {}, problems: [], warnings: [] });
  t.same(read({ 'app.kubernetes.io/name': 'web', 'other.io/x': 'y' }), { settings: {}, problems: [], warnings: [] });
});

t.test('every annotation is read', async (t) => {
  const r = read({
    'safe-termination.io/inject': 'true',
    'safe-termination.io/prestop-sleep': '1m',
    'safe-termination.io/propagation-delay': '0',
    'safe-termination.io/shutdown-budget': '20s',
    'safe-termination.io/max-sleep': '1h',
    'safe-termination.io/protocols': 'UDP, tcp,Sctp,udp',
    'safe-termination.io/udp-streams': 'true',
    'safe-termination.io/containers': 'app,proxy',
    'safe-termination.io/exclude-containers': 'proxy',
    'safe-termination.io/prestop-mode': 'exec',
    'safe-termination.io/existing-prestop': 'replace',
  });
  t.same(r.problems, []);
  t.same(r.warnings, []);
  t.same(r.settings, {
    inject: true,
    prestopSleep: 60,
    propagationDelay: 0,
    shutdownBudget: 20,
    maxSleep: 3600,
    protocols: ['udp', 'tcp', 'sctp'],
    udpStreams: true,
    containers: ['app', 'proxy'],
    excludeContainers: ['proxy'],
    prestopMode: 'exec',
    existingPrestop: 'replace',
  });
});

t.test('invalid values are problems naming annotation, value and accepted form', async (t) => {
  const bad: Record<string, string> = {
    'safe-termination.io/inject': 'no',
    'safe-termination.io/prestop-sleep': '0',
    'safe-termination.io/propagation-delay': '1.5s',
    'safe-termination.io/shutdown-budget': '-1',
    'safe-termination.io/max-sleep': '5 minutes',
    'safe-termination.io/protocols': 'tcp,http',
    'safe-termination.io/udp-streams': 'True',
    'safe-termination.io/containers': 'app,,proxy',
    'safe-termination.io/exclude-containers': 'Bad_Name',
    'safe-termination.io/prestop-mode': 'Sleep',
    'safe-termination.io/existing-prestop': 'merge',
  };
  const r = read(bad);
  t.equal(r.problems.length, Object.keys(bad).length);
  t.same(r.settings, {});
  for (const p of r.problems) {
    t.equal(p.value, bad[p.key]);
    const msg = describeProblem(p);
    t.match(msg, p.key);
    t.match(msg, JSON.stringify(p.value));
    t.match(msg, /expected /);
  }
  const sleep = r.problems.find((p) => p.key === 'safe-termination.io/prestop-sleep');
  t.match(sleep?.accepted, /at least 1s/);
});

t.test('prestop-sleep must be at least 1s; the others may be 0', async (t) => {
  t.equal(read({ 'safe-termination.io/prestop-sleep': '0s' }).problems.length, 1);
  t.same(read({ 'safe-termination.io/prestop-sleep': '1' }).settings, { prestopSleep: 1 });
  t.same(read({ 'safe-termination.io/max-sleep': '0' }).settings, { maxSleep: 0 });
  t.same(read({ 'safe-termination.io/shutdown-budget': '0s' }).settings, { shutdownBudget: 0 });
});

t.test('containers naming an absent container is invalid; exclusions of absent ones only warn', async (t) => {
  const inc = read({ 'safe-termination.io/containers': 'app,ghost' });
  t.equal(inc.problems.length, 1);
  t.match(inc.problems[0]?.accepted, /app, proxy, init-sidecar/);
  t.equal(inc.settings.containers, undefined);
  const exc = read({ 'safe-termination.io/exclude-containers': 'ghost' });
  t.same(exc.problems, []);
  t.same(exc.settings.excludeContainers, ['ghost']);
  t.match(exc.warnings[0], /no container named ghost/);
});

t.test('unknown keys under the prefix warn with the nearest known key', async (t) => {
  const r = read({ 'safe-termination.io/prestop-slep': '10', 'safe-termination.io/injected': '{}' });
  t.same(r.problems, []);
  t.same(r.settings, {});
  t.equal(r.warnings.length, 1);
  t.match(r.warnings[0], /safe-termination\.io\/prestop-slep.*safe-termination\.io\/prestop-sleep/);
  t.equal(nearestKnownKey('exclude-container'), 'safe-termination.io/exclude-containers');
  t.equal(nearestKnownKey('UDP-STREAM'), 'safe-termination.io/udp-streams');
});

t.test('long values are shortened in messages', async (t) => {
  const r = read({ 'safe-termination.io/max-sleep': 'x'.repeat(5000) });
  t.ok(describeProblem(r.problems[0]!).length < 200);
});
