/** Fastify's errors become the webhook's own codes by what went wrong, not by HTTP status alone. */
import t from 'tap';
import { connect } from 'node:tls';
import { errorCodes } from 'fastify';
import type { FastifyError } from 'fastify';
import { httpError } from '../../src/server/app.ts';
import { startTestWebhook } from '../support/webhook.ts';

t.test('each Fastify error code maps to its own code and status', async (t) => {
  const cases: Array<[FastifyError, number, string]> = [
    [new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE(), 413, 'BODY_TOO_LARGE'],
    [new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(), 415, 'UNSUPPORTED_MEDIA_TYPE'],
    [new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH(), 400, 'CONTENT_LENGTH_MISMATCH'],
    [new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY(), 400, 'INVALID_JSON'],
    [new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY(), 400, 'INVALID_JSON'],
    [new errorCodes.FST_ERR_BAD_URL('%zz'), 400, 'BAD_REQUEST'],
  ];
  for (const [error, status, code] of cases) {
    const e = httpError(error, 'text/plain');
    t.equal(e.status, status, error.code);
    t.equal(e.body.code, code, error.code);
  }
  t.match(httpError(new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(), 'text/plain').body.message, /unsupported content type "text\/plain"; expected application\/json/);
});

t.test('a 4xx without a known code is a bad request, not bad JSON; a 408 a timeout; the rest internal', async (t) => {
  const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET', statusCode: 400 }) as FastifyError;
  t.same(httpError(aborted, undefined), { status: 400, body: { code: 'BAD_REQUEST', message: 'bad request: aborted' } });
  const slow = Object.assign(new Error('timeout'), { code: 'X', statusCode: 408 }) as FastifyError;
  t.equal(httpError(slow, undefined).body.code, 'REQUEST_TIMEOUT');
  const bug = Object.assign(new Error('secret detail'), { code: 'X' }) as FastifyError;
  t.same(httpError(bug, undefined), { status: 500, body: { code: 'INTERNAL', message: 'internal error; see the webhook log' } });
});

/** Raw bytes over TLS (ended, or left open), and all the server answers until it closes. */
function rawExchange(url: string, ca: Buffer, bytes: string, end: boolean): Promise<{ status: string; body: { code?: string; message?: string } }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port), ca, servername: 'localhost' }, () => {
      if (end) socket.end(bytes);
      else socket.write(bytes);
    });
    let text = '';
    socket.setEncoding('utf8').on('data', (d: string) => (text += d));
    socket.on('close', () => resolve({ status: text.split('\r\n')[0] ?? '', body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4) || '{}') }));
    socket.on('error', reject);
  });
}

t.test('over the wire: broken requests get a JSON error with their own code, never INVALID_JSON', async (t) => {
  const w = await startTestWebhook({ args: ['--conntrack-proc-dir', '/nonexistent'], timeouts: { requestMs: 500, headersMs: 500, checkIntervalMs: 100 } });
  t.teardown(() => w.close());
  const badUrl = await w.post({}, '/mutate%zz');
  t.equal(badUrl.status, 400);
  t.equal(badUrl.json<{ code: string }>().code, 'BAD_REQUEST', 'a bad URL');

  const head = (length: number) => `POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
  const cut = await rawExchange(w.url, w.ca, `${head(50)}{"apiVersion":`, true);
  t.match(cut.status, /^HTTP\/1\.1 400/, 'a body cut short of its Content-Length');
  t.equal(cut.body.code, 'BAD_REQUEST');

  const slow = await rawExchange(w.url, w.ca, `${head(50)}{"apiVersion":`, false);
  t.match(slow.status, /^HTTP\/1\.1 408/, 'a body that does not arrive in time');
  t.same(slow.body, { code: 'REQUEST_TIMEOUT', message: 'request took too long to arrive' });

  const huge = await rawExchange(w.url, w.ca, `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`, false);
  t.match(huge.status, /^HTTP\/1\.1 431/, 'headers over Node\'s limit');
  t.equal(huge.body.code, 'HEADERS_TOO_LARGE');
});
