import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { readLocalFacts } from '../../src/host/local-facts.ts';
import { readConntrackSysctls } from '../../src/host/sysctl.ts';
import { LINUX_DEFAULTS } from '../../src/core/conntrack.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { applyAnswer } from '../support/patch.ts';
import { startTestWebhook } from '../support/webhook.ts';

t.test('sysctl files are read; absent or garbled ones are reported missing', async (t) => {
  const dir = t.testdir({ nf_conntrack_udp_timeout: '17\n', nf_conntrack_udp_timeout_stream: '180\n', nf_conntrack_tcp_timeout_time_wait: 'garbage\n' });
  const r = await readConntrackSysctls(dir);
  t.same(r.values, { 'udp-timeout': 17, 'udp-timeout-stream': 180 });
  t.same(r.missing, ['tcp-timeout-time-wait', 'tcp-timeout-close-wait', 'tcp-timeout-established']);
  const facts = (await readLocalFacts(dir, LINUX_DEFAULTS)).facts;
  t.same(facts['udp-timeout'], { value: 17, source: 'local' });
  t.same(facts['tcp-timeout-close-wait'], { value: 60, source: 'static' });
});

t.test('this machine\'s /proc/sys values are what serve uses outside a cluster', { skip: !existsSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout') && 'no conntrack module on this machine' }, async (t) => {
  const expected = Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_udp_timeout', 'utf8').trim());
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', '/proc/sys/net/netfilter'] });
  t.teardown(() => w.close());
  const pod = defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }] });
  const body = (await w.post(reviewOf(pod))).json<any>();
  const out: any = applyAnswer(pod, body.response);
  const record = JSON.parse(out.metadata.annotations['safe-termination.io/injected']);
  t.same(record.conntrack['udp-timeout'], { value: expected, source: 'local' });
  t.equal(record.sleepSeconds, 5 + expected);
});

t.test('the webhook sizes from a given proc dir', async (t) => {
  const dir = t.testdir({ nf_conntrack_udp_timeout: '17\n' });
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', dir] });
  t.teardown(() => w.close());
  const pod = defaultedPod({ containers: [{ name: 'dns', ports: [{ containerPort: 53, protocol: 'UDP' }] }] });
  const out: any = applyAnswer(pod, (await w.post(reviewOf(pod))).json<any>().response);
  t.equal(out.spec.containers[0].lifecycle.preStop.sleep.seconds, 22);
  t.match(w.logs.raw.join('\n'), /static values stand in/);
});
