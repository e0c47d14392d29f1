/**
 * The floor of any Fastify webhook on this machine: Fastify with the webhook's own
 * server options (TLS, limits, timeouts, a pino logger at info writing nothing per
 * request) whose POST /mutate parses the body with JSON.parse and returns the
 * ceiling's fixed answer. The webhook minus its own work: validation, decision,
 * patch, metrics, logs.
 *
 * Usage: node bench/fastify-floor.ts CERT_FILE KEY_FILE   (prints {"port":N} when listening)
 */
import Fastify from 'fastify';
import { readFileSync } from 'node:fs';
import { acceptJsonOnly, fastifyOptions } from '../src/server/app.ts';
import type { WebhookApp } from '../src/server/app.ts';
import { createLogger } from '../src/shared/logger.ts';
import { FIXED_ANSWER } from './fixed-answer.ts';

const [certFile, keyFile] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined) {
  process.stderr.write('usage: node bench/fastify-floor.ts CERT_FILE KEY_FILE\n');
  process.exit(2);
}

const app: WebhookApp = Fastify(fastifyOptions({ tls: { cert: readFileSync(certFile), key: readFileSync(keyFile) }, logger: createLogger('info') }));
acceptJsonOnly(app);
app.post('/mutate', async (request, reply) => {
  JSON.parse(request.body as string);
  return reply.type('application/json; charset=utf-8').send(FIXED_ANSWER);
});
app.get('/healthz', async (_request, reply) => reply.send({ status: 'ok' }));

await app.listen({ port: 0, host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 })}\n`);
const stop = (): void => void app.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
