/**
 * The Fastify app (no listen): POST /mutate, /healthz, /readyz. Transport only:
 * body limit, content type, error bodies; the review handler decides.
 */
import Fastify, { LogController } from 'fastify';
import secureJson from 'secure-json-parse';
import type { FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
import type { Server as HttpsServer } from 'node:https';
import type { ReviewHandler } from '../admission/handler.ts';
import { allowed } from '../admission/responses.ts';
import { ErrorCode, errorBody } from '../errors.ts';
import type { WebhookMetrics } from './metrics.ts';
import type { ServerState } from './state.ts';
import { TLS_OPTIONS } from './tls.ts';

/** A 3 MiB object plus the review around it (spec §6). */
export const BODY_LIMIT_BYTES = 7 * 1024 * 1024;
/** Longer than the API server's idle-connection timeout (90 s), so the client closes first. */
export const KEEP_ALIVE_TIMEOUT_MS = 120_000;
/** A request must arrive whole within this; the API server's own timeout is at most 30 s. */
export const REQUEST_TIMEOUT_MS = 30_000;
export const HEADERS_TIMEOUT_MS = 10_000;
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface AppOptions {
  readonly tls: { readonly cert: Buffer; readonly key: Buffer };
  readonly handle: ReviewHandler;
  readonly state: ServerState;
  readonly metrics: WebhookMetrics;
  readonly logger: FastifyBaseLogger;
}

export type WebhookApp = FastifyInstance<HttpsServer>;

export function buildApp(o: AppOptions): WebhookApp {
  const app = Fastify({
    https: { ...TLS_OPTIONS, cert: o.tls.cert, key: o.tls.key, ALPNProtocols: ['http/1.1'], handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS },
    loggerInstance: o.logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    // In-flight requests finish on shutdown; new ones on open connections are still answered.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    exposeHeadRoutes: false,
  }) as unknown as WebhookApp;
  app.server.headersTimeout = HEADERS_TIMEOUT_MS;
  const { metrics, state, handle } = o;

  // JSON only (the API server sends application/json), with errors that say what is wrong.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, secureJson.parse(body, undefined, { protoAction: 'error', constructorAction: 'error' }));
    } catch (error) {
      done(Object.assign(new Error((error as Error).message), { statusCode: 400 }), undefined);
    }
  });

  app.addHook('onSend', async (_req, reply) => {
    // While shutting down, move clients to other replicas.
    if (state.shuttingDown) reply.header('connection', 'close');
  });

  app.post('/mutate', async (request, reply) => {
    let result;
    try {
      result = handle(request.body);
    } catch (error) {
      // A bug must never block pod creation: allow without a patch.
      const uid = uidOf(request.body);
      request.log.error({ err: error, uid }, 'review handler failed; allowing the pod unchanged');
      metrics.admissions.inc({ outcome: 'error' });
      if (uid === undefined) throw error;
      return reply.send(allowed(uid, ['safe-termination: internal error, pod admitted unchanged']));
    }
    if (result.kind === 'malformed') {
      metrics.admissions.inc({ outcome: 'invalid' });
      request.log.warn({ problem: result.message }, 'malformed AdmissionReview');
      const e = errorBody(ErrorCode.malformedReview, result.message);
      return reply.code(e.status).send(e.body);
    }
    metrics.admissions.inc({ outcome: result.outcome });
    metrics.decisions.inc({ decision: result.decision, reason: result.reason ?? '' });
    for (const [key, v] of Object.entries(result.conntrack)) metrics.conntrackValues.inc({ key, source: v.source });
    const line = { uid: result.uid, pod: result.pod, decision: result.decision, reason: result.reason, outcome: result.outcome };
    if (result.decision === 'injected' || result.decision === 'denied') request.log.info(line, result.summary);
    else request.log.debug(line, result.summary);
    return reply.send(result.body);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const reasons = state.notReadyReasons();
    metrics.ready.set(reasons.length === 0 ? 1 : 0);
    if (reasons.length === 0) return { status: 'ready' };
    return reply.code(503).send({ status: 'not ready', reasons });
  });

  app.setNotFoundHandler(async (request, reply) => {
    const e = errorBody(ErrorCode.notFound, `${request.method} ${request.url.split('?')[0] ?? ''}`);
    return reply.code(e.status).send(e.body);
  });

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const status = error.statusCode ?? 500;
    let e;
    if (status === 413) e = errorBody(ErrorCode.bodyTooLarge, '7 MiB');
    else if (status === 415) e = errorBody(ErrorCode.unsupportedMediaType, JSON.stringify(request.headers['content-type'] ?? ''));
    else if (status === 408) e = errorBody(ErrorCode.requestTimeout, '');
    else if (status >= 400 && status < 500) e = errorBody(ErrorCode.invalidJson, error.message);
    else {
      request.log.error({ err: error }, 'request failed');
      e = errorBody(ErrorCode.internal, '');
    }
    if (status < 500) metrics.admissions.inc({ outcome: 'invalid' });
    return reply.code(e.status).send(e.body);
  });

  app.addHook('onResponse', async (request, reply) => {
    if (request.routeOptions.url === '/mutate') {
      metrics.latency.observe({ outcome: String(reply.statusCode) === '200' ? 'ok' : 'error' }, reply.elapsedTime / 1000);
    }
  });
  return app;
}

function uidOf(body: unknown): string | undefined {
  const request = (body as { request?: { uid?: unknown } } | null)?.request;
  return typeof request?.uid === 'string' && request.uid.length > 0 ? request.uid : undefined;
}
