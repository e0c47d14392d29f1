/** The plain-HTTP scrape endpoint the webhook and the agent serve. */
import { createServer } from 'node:http';
import type { Server, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

/**
 * Timeouts for a plain-HTTP scrape server: a scraper sends one small GET, so a client
 * that takes longer than 10 s for its headers or 30 s for its request is cut off
 * (Node's defaults: 60 s and 5 min), and idle keep-alive connections close after 65 s.
 */
export function limitSlowClients(server: Server): void {
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
}

/** Plain-HTTP server for GET /metrics. Resolves once listening. */
export async function startMetricsServer(registry: Registry, port: number, host?: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      writeMetrics(registry, res);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found: metrics are at GET /metrics\n');
  });
  limitSlowClients(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Answers a scrape with the registry's text (500 if collecting fails). */
export function writeMetrics(registry: Registry, res: ServerResponse): void {
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(text);
    },
    () => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('metrics unavailable\n');
    },
  );
}
