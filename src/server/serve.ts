/** `safe-termination serve`: wires config, facts, TLS files, app, metrics and shutdown. */
import type { Server } from 'node:http';
import { createReviewHandler } from '../admission/handler.ts';
import type { ConfigMapRef } from '../cluster/kube-proxy-config.ts';
import type { ConntrackValues } from '../core/conntrack.ts';
import type { FactsWiring } from '../core/facts.ts';
import type { KubeVersion, ModelDefaults } from '../core/model.ts';
import { localFactsWiring } from '../host/local-facts.ts';
import { buildApp } from './app.ts';
import type { ServerTimeouts, WebhookApp } from './app.ts';
import type { Logger, LogLevel } from '../shared/logger.ts';
import { startMetricsServer } from '../shared/metrics-endpoint.ts';
import { createWebhookMetrics } from './metrics.ts';
import type { WebhookMetrics } from './metrics.ts';
import { ServerState } from './state.ts';
import { loadCertificate, TLS_OPTIONS, validityProblem, watchCertificate } from './tls.ts';

export interface RunningWebhook {
  readonly app: WebhookApp;
  readonly metricsServer: Server;
  readonly state: ServerState;
  readonly metrics: WebhookMetrics;
  /** Bound ports (useful with port 0). */
  readonly port: number;
  readonly metricsPort: number;
  /** Not ready at once, then (after the delay) stop accepting, finish in-flight requests, close. */
  shutdown(delayMs?: number): Promise<void>;
}

export interface ServeConfig {
  readonly port: number;
  readonly bindAddress: string;
  readonly metricsPort: number;
  readonly tlsCertFile: string;
  readonly tlsPrivateKeyFile: string;
  readonly logLevel: LogLevel;
  readonly shutdownDelaySeconds: number;
  readonly shutdownTimeoutSeconds: number;
  readonly tlsReloadIntervalSeconds: number;
  readonly maxConnections: number;
  readonly maxBodyBytesInFlight: number;
  readonly model: ModelDefaults;
  readonly kubernetesVersion: KubeVersion | undefined;
  readonly staticConntrack: ConntrackValues;
  readonly conntrackProcDir: string;
  readonly kubeconfig: string | undefined;
  readonly informerSyncTimeoutSeconds: number;
  /** undefined: kube-proxy's configuration is not read. */
  readonly kubeProxyConfigMap: ConfigMapRef | undefined;
  readonly kubeProxyIntervalSeconds: number;
  /** Keep a Service informer (in a cluster): the Services selecting a pod add their protocols. */
  readonly servicesInformer: boolean;
}

export async function startWebhook(
  config: ServeConfig,
  log: Logger,
  wireFacts: (config: ServeConfig, log: Logger) => Promise<FactsWiring> = localFactsWiring,
  options: { readonly timeouts?: Partial<ServerTimeouts> } = {},
): Promise<RunningWebhook> {
  const state = new ServerState();
  const metrics = createWebhookMetrics();
  const certificate = await loadCertificate(config.tlsCertFile, config.tlsPrivateKeyFile);
  state.certificateLoaded = true;
  state.certificate = certificate;
  metrics.certificateExpiry.set(certificate.notAfter);
  const startProblem = validityProblem(certificate);
  if (startProblem !== undefined) {
    // Not ready (so no Service routes here) until a valid pair is mounted and reloaded.
    log.error({ certFile: config.tlsCertFile, subject: certificate.subject }, `the serving certificate is ${startProblem}: not ready until a valid one replaces it`);
  }

  const wiring = await wireFacts(config, log);
  state.factsReady = false;
  void wiring.ready.then(() => {
    state.factsReady = true;
  });

  const handle = createReviewHandler({ defaults: config.model, facts: wiring.facts });
  const app = buildApp({
    tls: certificate,
    handle,
    state,
    metrics,
    logger: log,
    timeouts: options.timeouts,
    limits: { maxConnections: config.maxConnections, maxBodyBytesInFlight: config.maxBodyBytesInFlight },
  });
  const stopWatching = watchCertificate({
    certFile: config.tlsCertFile,
    keyFile: config.tlsPrivateKeyFile,
    intervalMs: config.tlsReloadIntervalSeconds * 1000,
    current: certificate,
    onChange: (next) => {
      app.server.setSecureContext({ ...TLS_OPTIONS, cert: next.cert, key: next.key });
      state.certificate = next;
      metrics.certificateExpiry.set(next.notAfter);
      metrics.certificateReloads.inc({ result: 'success' });
      log.info({ subject: next.subject, notAfter: new Date(next.notAfter * 1000).toISOString() }, 'serving certificate reloaded');
    },
    onError: (error) => {
      metrics.certificateReloads.inc({ result: 'error' });
      log.warn({ problem: error.message }, 'serving certificate not reloaded; keeping the current one');
    },
  });

  let metricsServer: Server | undefined;
  try {
    metricsServer = await startMetricsServer(metrics.registry, config.metricsPort, config.bindAddress);
    await app.listen({ port: config.port, host: config.bindAddress });
  } catch (error) {
    // A port in use: release what started so the process can exit with the error.
    stopWatching();
    metricsServer?.close();
    await app.close().catch(() => undefined);
    await wiring.stop();
    throw error;
  }
  const metricsListener = metricsServer;
  const address = app.server.address();
  const metricsAddress = metricsListener.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const metricsPort = typeof metricsAddress === 'object' && metricsAddress !== null ? metricsAddress.port : config.metricsPort;
  log.info({ port, metricsPort, certificateExpires: new Date(certificate.notAfter * 1000).toISOString() }, 'webhook serving');

  let closing: Promise<void> | undefined;
  const shutdown = (delayMs = config.shutdownDelaySeconds * 1000): Promise<void> => {
    closing ??= (async () => {
      state.shuttingDown = true;
      log.info({ delayMs }, 'shutting down: not ready, finishing in-flight requests');
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      stopWatching();
      const force = setTimeout(() => app.server.closeAllConnections(), config.shutdownTimeoutSeconds * 1000);
      force.unref();
      await app.close();
      clearTimeout(force);
      await new Promise<void>((r) => metricsListener.close(() => r()));
      metricsListener.closeAllConnections();
      await wiring.stop();
      log.info('webhook stopped');
    })();
    return closing;
  };
  return { app, metricsServer: metricsListener, state, metrics, port, metricsPort, shutdown };
}
