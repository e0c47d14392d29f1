/**
 * The Fastify app (no listen): POST /mutate, /healthz, /readyz. Transport only:
 * body limit, content type, error bodies; the review handler decides.
 */
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyHttpsOptions, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { ReviewHandler } from '../admission/handler.ts';
import { allowed } from '../admission/responses.ts';
import { errorBody } from '../shared/errors.ts';
import type { ErrorBody, HttpErrorCode } from '../shared/errors.ts';
import type { WebhookMetrics } from './metrics.ts';
import type { ServerState } from './state.ts';
import { TLS_OPTIONS } from './tls.ts';
import { reviewBody } from './review-body.ts';
import { batchPerTurn } from './turn-batch.ts';
import { BodyBudget } from './body-budget.ts';

/** A 3 MiB object plus the review around it. */
export const BODY_LIMIT_BYTES = 7 * 1024 * 1024;
/** Longer than the API server's idle-connection timeout (90 s), so the client closes first. */
export const KEEP_ALIVE_TIMEOUT_MS = 120_000;
/** A request must arrive whole within this; the API server's own timeout is at most 30 s. */
export const REQUEST_TIMEOUT_MS = 30_000;
export const HEADERS_TIMEOUT_MS = 10_000;
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/** How often Node checks open connections against the two timeouts above (Node: 30 s), so slow senders are cut on time. */
export const CONNECTIONS_CHECK_INTERVAL_MS = 2_000;

/** Limits on slow clients; tests shorten them. */
export interface ServerTimeouts {
  /** A request's headers must arrive within this. */
  readonly headersMs: number;
  /** A whole request (headers and body) must arrive within this. */
  readonly requestMs: number;
  /** The TLS handshake must finish within this. */
  readonly handshakeMs: number;
  /** How often open connections are checked against headersMs and requestMs. */
  readonly checkIntervalMs: number;
}

export const DEFAULT_TIMEOUTS: ServerTimeouts = Object.freeze({
  headersMs: HEADERS_TIMEOUT_MS,
  requestMs: REQUEST_TIMEOUT_MS,
  handshakeMs: TLS_HANDSHAKE_TIMEOUT_MS,
  checkIntervalMs: CONNECTIONS_CHECK_INTERVAL_MS,
});

export interface AppOptions {
  readonly tls: { readonly cert: Buffer; readonly key: Buffer };
  readonly handle: ReviewHandler;
  readonly state: ServerState;
  readonly metrics: WebhookMetrics;
  readonly logger: FastifyBaseLogger;
  /** Defaults: DEFAULT_TIMEOUTS. */
  readonly timeouts?: Partial<ServerTimeouts>;
  /** Defaults: DEFAULT_LIMITS. */
  readonly limits?: Partial<ServerLimits>;
}

/** Bounds on what clients can make the server hold in memory. */
export interface ServerLimits {
  /** Connections open at once on the webhook port; more are refused. */
  readonly maxConnections: number;
  /** Bytes of request bodies read and handled at once (BodyBudget). */
  readonly maxBodyBytesInFlight: number;
  /** How long a review waits for room in that budget before a 503. */
  readonly queueWaitMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = Object.freeze({
  maxConnections: 500,
  maxBodyBytesInFlight: 16 * 1024 * 1024,
  queueWaitMs: 2000,
});

export type WebhookApp = FastifyInstance<HttpsServer>;

/** The webhook's Fastify and server options: TLS, limits, timeouts, quiet request logging. */
export function fastifyOptions(o: Pick<AppOptions, 'tls' | 'logger' | 'timeouts'>): FastifyHttpsOptions<HttpsServer> {
  const timeouts = { ...DEFAULT_TIMEOUTS, ...o.timeouts };
  return {
    https: {
      ...TLS_OPTIONS,
      cert: o.tls.cert,
      key: o.tls.key,
      ALPNProtocols: ['http/1.1'],
      handshakeTimeout: timeouts.handshakeMs,
      connectionsCheckingInterval: timeouts.checkIntervalMs,
    },
    loggerInstance: o.logger,
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: Fastify's request counter says nothing to an
    // operator, and the lines that matter carry the review's uid.
    childLoggerFactory: (logger: FastifyBaseLogger) => logger,
    bodyLimit: BODY_LIMIT_BYTES,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: timeouts.requestMs,
    // In-flight requests finish on shutdown; new ones on open connections are still answered.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    exposeHeadRoutes: false,
    clientErrorHandler: clientError,
    frameworkErrors: frameworkError,
  };
}

/** A bad URL is answered before routing, outside the error handler. */
function frameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const e = httpError(error, request.headers['content-type']);
  void reply.code(e.status).send(e.body);
}

/** Errors of Node's HTTP parser (before any route: a timeout, oversized headers, broken HTTP), answered from the table. */
function clientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const e =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? errorBody('REQUEST_TIMEOUT', undefined)
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? errorBody('HEADERS_TOO_LARGE', undefined)
        : errorBody('BAD_REQUEST', error.message);
  if (socket.writable) {
    const body = JSON.stringify(e.body);
    socket.write(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(error);
}

export function buildApp(o: AppOptions): WebhookApp {
  const app = Fastify(fastifyOptions(o)) as unknown as WebhookApp;
  app.server.headersTimeout = o.timeouts?.headersMs ?? DEFAULT_TIMEOUTS.headersMs;
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  app.server.maxConnections = limits.maxConnections;
  // Near the cap, idle keep-alive connections are closed (a client reconnects when it
  // needs to): held-open idle connections cannot crowd out the API server's.
  let open = 0;
  app.server.on('connection', (socket: Socket) => {
    open++;
    socket.once('close', () => open--);
    if (open >= limits.maxConnections * 0.9) app.server.closeIdleConnections();
  });
  const budget = new BodyBudget(limits.maxBodyBytesInFlight);
  const { metrics, state } = o;
  // Reviews that arrive in one turn of the event loop are parsed and handled
  // back to back, then answered back to back: under load this costs a fifth
  // less CPU per review than handling each between its TLS and HTTP work, as
  // the code stays in the CPU's caches (bench/RESULTS.md). Alone, a review waits
  // only for the rest of its turn's I/O callbacks.
  const review = batchPerTurn((text: string) => reviewBody(o.handle, text));

  acceptJsonOnly(app);

  // No per-request hooks (each costs a promise per request): the handlers below
  // mark shutdown and record latency themselves.
  const finish = (reply: FastifyReply, outcome: 'ok' | 'error' | undefined): FastifyReply => {
    // While shutting down, move clients to other replicas.
    if (state.shuttingDown) reply.header('connection', 'close');
    if (outcome !== undefined) metrics.latency.observe({ outcome }, reply.elapsedTime / 1000);
    return reply;
  };
  const fail = (reply: FastifyReply, e: { status: number; body: unknown }): FastifyReply => finish(reply, 'error').code(e.status).send(e.body);

  // A callback hook (no promise): a review's body is read only once it has room in the budget.
  const admit = (request: FastifyRequest, reply: FastifyReply, done: () => void): void => {
    const length = Number(request.headers['content-length']);
    const bytes = Number.isFinite(length) && length >= 0 ? Math.min(length, BODY_LIMIT_BYTES) : BODY_LIMIT_BYTES;
    budget.take(bytes, limits.queueWaitMs, (granted) => {
      if (granted) {
        reply.raw.once('close', () => budget.release(bytes));
        done();
        return;
      }
      metrics.admissions.inc({ outcome: 'error' });
      request.log.debug({ bytes, inFlight: budget.used, waiting: budget.waiting }, 'review refused: body budget full');
      void fail(reply.header('retry-after', '1'), errorBody('OVERLOADED', `${budget.capacity} bytes`));
    });
  };

  app.post('/mutate', { onRequest: admit }, async (request, reply) => {
    // No body at all (no content type) is JSON's empty text.
    const result = await review(typeof request.body === 'string' ? request.body : '');
    switch (result.kind) {
      case 'bad-json':
        metrics.admissions.inc({ outcome: 'invalid' });
        return fail(reply, errorBody('INVALID_JSON', result.message));
      case 'malformed':
        metrics.admissions.inc({ outcome: 'invalid' });
        request.log.warn({ problem: result.message }, 'malformed AdmissionReview');
        return fail(reply, errorBody('MALFORMED_REVIEW', result.message));
      case 'crashed':
        // A bug must never block pod creation: allow without a patch.
        request.log.error({ err: result.error, uid: result.uid }, 'review handler failed; allowing the pod unchanged');
        metrics.admissions.inc({ outcome: 'error' });
        if (result.uid === undefined) throw result.error;
        return finish(reply, 'error').send(allowed(result.uid, ['safe-termination: internal error, pod admitted unchanged']));
      case 'handled':
        break;
    }
    metrics.admissions.inc({ outcome: result.outcome });
    metrics.decisions.inc({ decision: result.decision, reason: result.reason ?? '' });
    for (const [key, v] of Object.entries(result.conntrack)) metrics.conntrackValues.inc({ key, source: v.source });
    if (result.injected !== undefined) {
      metrics.injectedSleep.observe(result.injected.sleepSeconds);
      metrics.injectedGrace.observe(result.injected.gracePeriodSeconds);
    }
    // Per-pod lines stay off the hot path (the pod's record annotation and the
    // metrics say what was done); a denial blocks a pod, so it is logged at info.
    const line = { uid: result.uid, pod: result.pod, decision: result.decision, reason: result.reason, outcome: result.outcome };
    if (result.decision === 'denied') request.log.info(line, result.summary);
    else request.log.debug(line, result.summary);
    return finish(reply, 'ok').send(result.body);
  });

  app.get('/healthz', async (_req, reply) => finish(reply, undefined).send({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const reasons = state.notReadyReasons();
    metrics.ready.set(reasons.length === 0 ? 1 : 0);
    const certificate = state.certificateDetail();
    if (reasons.length === 0) return finish(reply, undefined).send({ status: 'ready', certificate });
    return finish(reply, undefined).code(503).send({ status: 'not ready', reasons, certificate });
  });

  app.setNotFoundHandler(async (request, reply) => {
    const e = errorBody('NOT_FOUND', `${request.method} ${request.url.split('?')[0] ?? ''}`);
    return finish(reply, undefined).code(e.status).send(e.body);
  });

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const e = httpError(error, request.headers['content-type']);
    if (e.status >= 500) request.log.error({ err: error }, 'request failed');
    else metrics.admissions.inc({ outcome: 'invalid' });
    return finish(reply, request.routeOptions.url === '/mutate' ? 'error' : undefined).code(e.status).send(e.body);
  });
  return app;
}

/** Fastify's errors (its lib/errors.js) by code, as the webhook's. */
const FASTIFY_ERRORS: ReadonlyMap<string, HttpErrorCode> = new Map<string, HttpErrorCode>([
  ['FST_ERR_CTP_BODY_TOO_LARGE', 'BODY_TOO_LARGE'],
  ['FST_ERR_CTP_INVALID_MEDIA_TYPE', 'UNSUPPORTED_MEDIA_TYPE'],
  ['FST_ERR_CTP_INVALID_CONTENT_LENGTH', 'CONTENT_LENGTH_MISMATCH'],
  ['FST_ERR_CTP_EMPTY_JSON_BODY', 'INVALID_JSON'],
  ['FST_ERR_CTP_INVALID_JSON_BODY', 'INVALID_JSON'],
  ['FST_ERR_BAD_URL', 'BAD_REQUEST'],
  ['ERR_HTTP_REQUEST_TIMEOUT', 'REQUEST_TIMEOUT'],
]);

/** The answer to an error Fastify (or the request stream) raised: by its code; else a 408 is a timeout, another 4xx a bad request. */
export function httpError(error: FastifyError, contentType: string | undefined): { status: number; body: ErrorBody } {
  const status = error.statusCode ?? 500;
  const code = FASTIFY_ERRORS.get(error.code) ?? (status === 408 ? 'REQUEST_TIMEOUT' : status >= 400 && status < 500 ? 'BAD_REQUEST' : 'INTERNAL');
  switch (code) {
    case 'BODY_TOO_LARGE':
      return errorBody(code, '7 MiB');
    case 'UNSUPPORTED_MEDIA_TYPE':
      return errorBody(code, JSON.stringify(contentType ?? ''));
    case 'INVALID_JSON':
    case 'BAD_REQUEST':
      return errorBody(code, error.message);
    case 'CONTENT_LENGTH_MISMATCH':
    case 'REQUEST_TIMEOUT':
      return errorBody(code, undefined);
    default:
      return errorBody('INTERNAL', undefined);
  }
}

/**
 * JSON only (the API server sends application/json; anything else is a 415), kept
 * as text: the webhook parses it in its review batch, where a parse error is a
 * 400 that says what is wrong.
 */
export function acceptJsonOnly(app: FastifyInstance<HttpsServer>): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => done(null, body));
}
