/** What a client can make the webhook hold: request bodies in flight, open connections. */
import t from 'tap';
import { connect } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { BodyBudget } from '../../src/server/body-budget.ts';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { startTestWebhook } from '../support/webhook.ts';

t.test('BodyBudget: room at once, then in arrival order as bytes are released, refused after the wait', async (t) => {
  const budget = new BodyBudget(10);
  const got: string[] = [];
  budget.take(6, 1000, (ok) => got.push(`a ${ok}`));
  budget.take(6, 1000, (ok) => got.push(`b ${ok}`));
  budget.take(1, 1000, (ok) => got.push(`c ${ok}`));
  t.same(got, ['a true'], 'a fits; b does not; c waits behind b (no overtaking)');
  t.equal(budget.waiting, 2);
  budget.release(6);
  t.same(got, ['a true', 'b true', 'c true'], 'a released: b and then c');
  t.equal(budget.used, 7);
  budget.take(50, 1000, (ok) => got.push(`d ${ok}`));
  t.equal(budget.waiting, 1, 'a take larger than the capacity waits for all of it');
  budget.release(6);
  budget.release(1);
  t.same(got.at(-1), 'd true', 'and gets it when everything is free');
  budget.release(50);
  budget.take(10, 1000, () => undefined);
  const refused = await new Promise<boolean>((resolve) => budget.take(1, 50, resolve));
  t.equal(refused, false, 'no room within the wait: refused');
  t.equal(budget.waiting, 0);
});

function slowSender(port: number, ca: Buffer, contentLength: number): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      socket.write(`POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${contentLength}\r\n\r\n{"apiVersion":`);
      resolve(socket);
    });
    socket.on('error', reject);
  });
}

t.test('bodies in flight are bounded: a review beyond the budget waits, then gets 503 OVERLOADED; small ones still pass', async (t) => {
  const w = await startTestWebhook({ args: ['--max-body-bytes-in-flight', String(8 * 2 ** 20)] });
  t.teardown(() => w.close());
  const first = await slowSender(w.webhook.port, w.ca, 7 * 2 ** 20);
  t.teardown(() => first.destroy());
  await new Promise((r) => setTimeout(r, 200));
  const small = await w.post(reviewOf(defaultedPod()));
  t.equal(small.status, 200, 'a 1-container review fits beside a 7 MiB one being read');
  const started = Date.now();
  const second = await slowSender(w.webhook.port, w.ca, 7 * 2 ** 20);
  t.teardown(() => second.destroy());
  const answer = await new Promise<string>((resolve) => {
    let text = '';
    second.on('data', (c: Buffer) => {
      text += c.toString('utf8');
      if (text.includes('\r\n\r\n') && text.includes('}')) resolve(text);
    });
    second.on('close', () => resolve(text));
  });
  const waited = Date.now() - started;
  t.match(answer, /^HTTP\/1\.1 503/, 'a second 7 MiB review does not fit: 503');
  t.match(answer, /retry-after: 1/i, 'with Retry-After');
  t.match(answer, /"code":"OVERLOADED"/, 'and the error code');
  t.ok(waited >= 1800 && waited < 6000, `after waiting for room (${waited} ms)`);
  first.destroy();
  await new Promise((r) => setTimeout(r, 200));
  t.equal((await w.post(reviewOf(defaultedPod()))).status, 200, 'the budget is back once the slow sender is gone');
});

t.test('connections are bounded: near --max-connections idle ones are closed and new clients are still served', async (t) => {
  const w = await startTestWebhook({ args: ['--max-connections', '20'] });
  t.teardown(() => w.close());
  const idle: TLSSocket[] = [];
  t.teardown(() => idle.forEach((s) => s.destroy()));
  let closed = 0;
  for (let i = 0; i < 40; i++) {
    await new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: w.webhook.port, ca: w.ca, servername: 'localhost' }, () => resolve());
      s.on('error', () => resolve());
      s.on('close', () => {
        closed++;
        resolve();
      });
      idle.push(s);
    });
  }
  await new Promise((r) => setTimeout(r, 200));
  t.ok(closed >= 20, `${closed} of 40 idle connections closed by the server`);
  t.equal((await w.post(reviewOf(defaultedPod()))).status, 200, 'a new client is answered');
});
