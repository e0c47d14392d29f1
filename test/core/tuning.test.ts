/** Timeout tuning advice: the write-up's values and what they take off a sleep. */
import t from 'tap';
import { LINUX_DEFAULTS } from '../../src/core/conntrack.ts';
import { howToSet, planTuning, sleepForWait, timeoutAdvice, WRITE_UP_TIMEOUTS } from '../../src/core/tuning.ts';

const model = { propagationDelaySeconds: 5, maxSleepSeconds: 300, tcpSizing: 'none' as const };

t.test("the write-up's values (Option 5), as it gives them", async (t) => {
  t.same(WRITE_UP_TIMEOUTS, { 'udp-timeout': 10, 'udp-timeout-stream': 30, 'tcp-timeout-time-wait': 30, 'tcp-timeout-established': 3600 });
});

t.test('the model sleep for a wait: propagation + wait, capped, at least 1', async (t) => {
  t.equal(sleepForWait(30, model), 35);
  t.equal(sleepForWait(400, model), 300);
  t.equal(sleepForWait(0, { propagationDelaySeconds: 0, maxSleepSeconds: 300 }), 1);
});

t.test('per value on Linux defaults: udp-timeout 30 → 10 saves 20s per UDP pod termination', async (t) => {
  const a = Object.fromEntries(timeoutAdvice(LINUX_DEFAULTS, model).map((x) => [x.key, x]));
  t.match(a['udp-timeout'], { current: 30, recommended: 10, sizes: 'UDP pods', sleepNow: 35, sleepRecommended: 15, savedSeconds: 20, caution: undefined });
  t.match(a['udp-timeout-stream'], { current: 120, recommended: 30, sleepNow: 125, sleepRecommended: 35, savedSeconds: 90 });
  t.match(a['tcp-timeout-time-wait'], { current: 120, recommended: 30, sizes: 'TCP pods with --tcp-sizing time-wait', savedSeconds: 90 });
  t.match(a['tcp-timeout-close-wait'], { current: 60, recommended: undefined, sleepNow: 65, sleepRecommended: undefined, savedSeconds: 0 });
  t.match(a['tcp-timeout-established'], { current: 432000, recommended: 3600, sizes: undefined, savedSeconds: 0, caution: /not advised/ });
});

t.test('a node already at or under the write-up saves nothing; an unreadable value is unknown', async (t) => {
  const a = Object.fromEntries(timeoutAdvice({ 'udp-timeout': 5 }, model).map((x) => [x.key, x]));
  t.match(a['udp-timeout'], { current: 5, sleepNow: 10, sleepRecommended: 15, savedSeconds: 0 });
  t.match(a['udp-timeout-stream'], { current: undefined, sleepNow: undefined, savedSeconds: 0 });
});

t.test("a plan: only the values its sleep used, only when the write-up's is lower and the sleep shrinks", async (t) => {
  const sleep = { seconds: 35, propagationDelaySeconds: 5, maxSleepSeconds: 300 };
  t.same(planTuning({ 'udp-timeout': { value: 30 } }, sleep), [
    { key: 'udp-timeout', current: 30, recommended: 10, sleepNow: 35, sleepRecommended: 15, savedSeconds: 20 },
  ]);
  t.same(planTuning({}, { seconds: 5, propagationDelaySeconds: 5, maxSleepSeconds: 300 }), [], 'a TCP pod sized by propagation alone: nothing');
  t.same(planTuning({ 'udp-timeout': { value: 10 } }, { seconds: 15, propagationDelaySeconds: 5, maxSleepSeconds: 300 }), [], 'already there');
  // UDP and time-wait both sized it: lowering one leaves the other's wait.
  const both = planTuning({ 'udp-timeout': { value: 30 }, 'tcp-timeout-time-wait': { value: 120 } }, { seconds: 125, propagationDelaySeconds: 5, maxSleepSeconds: 300 });
  t.same(
    both.map((x) => [x.key, x.sleepRecommended]),
    [['tcp-timeout-time-wait', 35]],
    'udp-timeout alone changes nothing while time-wait holds 125s; time-wait down to 30 leaves udp 30 → 35s',
  );
  // Capped by max-sleep: IPVS's 300s UDP wait under a 60s max-sleep.
  t.same(planTuning({ 'udp-timeout': { value: 300 } }, { seconds: 60, propagationDelaySeconds: 5, maxSleepSeconds: 60 }).map((x) => x.sleepRecommended), [15]);
  t.same(planTuning({ 'udp-timeout': { value: 300 } }, { seconds: 10, propagationDelaySeconds: 5, maxSleepSeconds: 10 }), [], 'capped under the write-up too: nothing saved');
});

t.test('how to set: the kube-proxy field where there is one, and the sysctl', async (t) => {
  t.equal(howToSet('udp-timeout', 10), "kube-proxy's conntrack.udpTimeout: 10s, or sysctl -w net.netfilter.nf_conntrack_udp_timeout=10");
  t.equal(howToSet('udp-timeout-stream', 30), "kube-proxy's conntrack.udpStreamTimeout: 30s, or sysctl -w net.netfilter.nf_conntrack_udp_timeout_stream=30");
  t.equal(howToSet('tcp-timeout-time-wait', 30), 'sysctl -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=30 (kube-proxy has no field for it)');
});
