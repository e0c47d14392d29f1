/**
 * The ceiling of any Node webhook on this machine: a bare node:https server with
 * the webhook's certificate and TLS settings that reads the body, parses it with
 * JSON.parse and returns a fixed AdmissionReview answer. No framework, no checks.
 *
 * Usage: node bench/ceiling.ts CERT_FILE KEY_FILE   (prints {"port":N} when listening)
 */
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

const [certFile, keyFile] = process.argv.slice(2);
if (certFile === undefined || keyFile === undefined) {
  process.stderr.write('usage: node bench/ceiling.ts CERT_FILE KEY_FILE\n');
  process.exit(2);
}

const ANSWER = Buffer.from(
  JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true } }),
);
const BAD = Buffer.from('{"code":"INVALID_JSON"}');

const server = createServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'], keepAliveTimeout: 120_000 },
  (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let ok = true;
      try {
        JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        ok = false;
      }
      res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json; charset=utf-8', 'content-length': ok ? ANSWER.length : BAD.length });
      res.end(ok ? ANSWER : BAD);
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
