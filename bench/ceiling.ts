/**
 * The ceiling of any Node webhook on this machine: a bare node:https server with
 * the webhook's certificate and TLS settings that reads the body, parses it with
 * JSON.parse and returns a fixed AdmissionReview answer. No framework, no checks.
 *
 * With --with-handler it is the "bare handler" instead: the same server running
 * the webhook's own body parse and review handler, batched per event-loop turn
 * as the webhook does, and returning its answer. No Fastify, metrics or logs:
 * what the webhook's work costs without a framework.
 *
 * Usage: node bench/ceiling.ts CERT_FILE KEY_FILE [--with-handler]   (prints {"port":N} when listening)
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { FIXED_ANSWER } from './fixed-answer.ts';

const [certFile, keyFile, mode] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined || (mode !== undefined && mode !== '--with-handler')) {
  process.stderr.write('usage: node bench/ceiling.ts CERT_FILE KEY_FILE [--with-handler]\n');
  process.exit(2);
}

const FIXED = Buffer.from(FIXED_ANSWER);
const BAD = Buffer.from('{"code":"INVALID_JSON"}');

/** The answer to a body's text, or undefined for a 400. */
type Answer = (text: string) => Buffer | undefined | Promise<Buffer | undefined>;

const fixedAnswer: Answer = (text) => {
  try {
    JSON.parse(text);
    return FIXED;
  } catch {
    return undefined;
  }
};

/**
 * The webhook's defaults and this machine's conntrack values, as `serve` would
 * read them. Imported here only, so the plain ceiling loads nothing of the webhook.
 */
async function handlerAnswer(): Promise<Answer> {
  const { createReviewHandler } = await import('../src/admission/handler.ts');
  const { parseServeConfig } = await import('../src/cli/config.ts');
  const { createLogger } = await import('../src/shared/logger.ts');
  const { reviewBody } = await import('../src/server/review-body.ts');
  const { localFactsWiring } = await import('../src/host/local-facts.ts');
  const { batchPerTurn } = await import('../src/server/turn-batch.ts');
  const config = parseServeConfig(['--tls-cert-file', certFile!, '--tls-private-key-file', keyFile!], {});
  const wiring = await localFactsWiring(config, createLogger('silent'));
  const handle = createReviewHandler({ defaults: config.model, facts: wiring.facts });
  const review = batchPerTurn((text: string) => reviewBody(handle, text));
  return async (text) => {
    const result = await review(text);
    return result.kind === 'handled' ? Buffer.from(JSON.stringify(result.body)) : undefined;
  };
}

const answer = mode === '--with-handler' ? await handlerAnswer() : fixedAnswer;

const server = createServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'], keepAliveTimeout: 120_000 },
  (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (out: Buffer = BAD): void => {
        res.writeHead(out === BAD ? 400 : 200, { 'content-type': 'application/json; charset=utf-8', 'content-length': out.length });
        res.end(out);
      };
      const out = answer(Buffer.concat(chunks).toString('utf8'));
      if (out instanceof Promise) void out.then(send);
      else send(out);
    });
  },
);
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 })}\n`);
});
const stop = (): void => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
