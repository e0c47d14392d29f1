/** TLS: versions, ALPN, keep-alive, no plaintext, live certificate rotation by symlink swap. */
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync, cpSync, rmSync, mkdtempSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Agent, request } from 'node:https';
import { connect } from 'node:tls';
import type { PeerCertificate } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultedPod, reviewOf } from '../support/pods.ts';
import { httpsRequest, makeCerts, makeCertsValid, startTestWebhook } from '../support/webhook.ts';
import type { CertDir } from '../support/webhook.ts';

function handshake(port: number, options: { minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; ca: Buffer; ALPNProtocols?: string[]; ciphers?: string }): Promise<{ protocol: string | null; alpn: string | false | null; cert: PeerCertificate }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...options }, () => {
      const result = { protocol: socket.getProtocol(), alpn: socket.alpnProtocol, cert: socket.getPeerCertificate() };
      socket.end();
      resolve(result);
    });
    socket.on('error', reject);
  });
}

t.test('TLS 1.2 and 1.3 accepted, older refused, ALPN http/1.1', async (t) => {
  const w = await startTestWebhook();
  t.teardown(() => w.close());
  const v12 = await handshake(w.webhook.port, { ca: w.ca, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
  t.equal(v12.protocol, 'TLSv1.2');
  const v13 = await handshake(w.webhook.port, { ca: w.ca, ALPNProtocols: ['h2', 'http/1.1'] });
  t.equal(v13.protocol, 'TLSv1.3');
  t.equal(v13.alpn, 'http/1.1', 'the API server offers only http/1.1; we never pick h2');
  await t.rejects(handshake(w.webhook.port, { ca: w.ca, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }));
});

t.test('TLS 1.2 offers forward-secret AEAD suites only', async (t) => {
  const w = await startTestWebhook();
  t.teardown(() => w.close());
  const with12 = (ciphers: string) => handshake(w.webhook.port, { ca: w.ca, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers });
  t.equal((await with12('ECDHE-ECDSA-AES128-GCM-SHA256')).protocol, 'TLSv1.2', 'ECDHE + AES-GCM');
  t.equal((await with12('ECDHE-ECDSA-CHACHA20-POLY1305')).protocol, 'TLSv1.2', 'ECDHE + ChaCha20-Poly1305');
  await t.rejects(with12('ECDHE-ECDSA-AES128-SHA'), 'CBC (not AEAD) is refused');
  await t.rejects(with12('ECDHE-ECDSA-AES256-SHA384'), 'CBC with SHA-384 is refused');
  await t.rejects(with12('AES128-GCM-SHA256'), 'no forward secrecy (static RSA key exchange) is refused');
});

t.test('an expired or not-yet-valid certificate: not ready at start, never taken on reload, dates in /readyz', async (t) => {
  const day = 86_400_000;
  const expired = makeCertsValid(new Date(Date.now() - 30 * day), new Date(Date.now() - day));
  const future = makeCertsValid(new Date(Date.now() + day), new Date(Date.now() + 30 * day));
  t.teardown(() => {
    expired.remove();
    future.remove();
  });
  for (const [what, certs, reason] of [
    ['expired', expired, /serving certificate expired at/],
    ['not yet valid', future, /serving certificate not valid before/],
  ] as const) {
    const w = await startTestWebhook({ certs });
    const ready = await httpsRequest(`${w.url}/readyz`, { method: 'GET', ca: certs.ca, rejectUnauthorized: false });
    t.equal(ready.status, 503, `${what}: not ready`);
    const body = JSON.parse(ready.text) as { reasons: string[]; certificate: { notAfter: string } };
    t.match(body.reasons.join(';'), reason, `${what}: /readyz says why`);
    t.match(w.logs.raw.join('\n'), /"level":"error".*the serving certificate is (expired|not valid before)/, `${what}: an error line in the log`);
    await w.close();
  }

  // A valid pair in service; a rotation to an expired one is refused, the good one stays.
  const root = mkdtempSync(join(tmpdir(), 'st-expired-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const good = makeCerts();
  t.teardown(() => good.remove());
  const volume = secretVolume(root, good);
  const certs: CertDir = { dir: volume.dir, ca: good.ca, certFile: join(volume.dir, 'tls.crt'), keyFile: join(volume.dir, 'tls.key'), remove: () => {} };
  const w = await startTestWebhook({ certs, args: ['--tls-reload-interval', '1'] });
  t.teardown(() => w.close());
  const ready = await httpsRequest(`${w.url}/readyz`, { method: 'GET', ca: good.ca });
  t.equal(ready.status, 200);
  const detail = (JSON.parse(ready.text) as { certificate: { notAfter: string; expiresInSeconds: number } }).certificate;
  t.equal(detail.notAfter, new X509Certificate(readFileSync(good.certFile)).validToDate.toISOString(), '/readyz shows the expiry');
  t.ok(detail.expiresInSeconds > 300 * 86_400, `and the seconds left (${detail.expiresInSeconds})`);
  volume.rotate(expired);
  const refused = await until(async () => /certificate_reloads_total\{result="error"\} [1-9]/.test(await (await fetch(w.metricsUrl)).text()), 5000);
  t.ok(refused, 'the expired pair is refused on reload');
  t.match(w.logs.raw.join('\n'), /is expired at .*keeping the current one/);
  t.equal((await handshake(w.webhook.port, { ca: good.ca })).cert.fingerprint256, fingerprint(good.certFile), 'still serving the valid pair');
  t.equal((await httpsRequest(`${w.url}/readyz`, { method: 'GET', ca: good.ca })).status, 200, 'and still ready');
});

t.test('no plaintext on the admission port', async (t) => {
  const w = await startTestWebhook();
  t.teardown(() => w.close());
  const outcome = await new Promise<string>((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port: w.webhook.port, path: '/mutate', method: 'POST', timeout: 5000 }, (res) => {
      resolve(`status ${res.statusCode}`);
      res.resume();
    });
    req.on('error', (e) => resolve(`error ${e.message}`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(JSON.stringify(reviewOf(defaultedPod())));
  });
  t.notMatch(outcome, /status 200/, `plain HTTP is not served: ${outcome}`);
});

t.test('keep-alive: many reviews over one connection', async (t) => {
  const w = await startTestWebhook();
  t.teardown(() => w.close());
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: w.ca });
  t.teardown(() => agent.destroy());
  const sockets = new Set<unknown>();
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve, reject) => {
      const req = request(`${w.url}/mutate?timeout=10s`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        sockets.add(res.socket);
        t.equal(res.headers.connection, 'keep-alive');
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end(JSON.stringify(reviewOf(defaultedPod())));
    });
  }
  t.equal(sockets.size, 1, 'one TLS connection served all 20 requests');
});

/** A Secret volume: files are links into ..data, which is a link to a timestamped dir. */
function secretVolume(root: string, first: CertDir): { dir: string; rotate(next: CertDir): void } {
  const dir = join(root, 'volume');
  mkdirSync(dir);
  let n = 0;
  const publish = (c: CertDir) => {
    const version = join(dir, `..2026_11_26_${n++}`);
    mkdirSync(version);
    cpSync(c.certFile, join(version, 'tls.crt'));
    cpSync(c.keyFile, join(version, 'tls.key'));
    symlinkSync(version.split('/').pop()!, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  };
  publish(first);
  symlinkSync('..data/tls.crt', join(dir, 'tls.crt'));
  symlinkSync('..data/tls.key', join(dir, 'tls.key'));
  return { dir, rotate: publish };
}

const fingerprint = (file: string) => new X509Certificate(readFileSync(file)).fingerprint256;

async function until(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

t.test('certificates rotate by symlink swap without restart; bad ones are not taken', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'st-rotate-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const first = makeCerts();
  const second = makeCerts();
  t.teardown(() => {
    first.remove();
    second.remove();
  });
  const volume = secretVolume(root, first);
  const certs: CertDir = { dir: volume.dir, ca: first.ca, certFile: join(volume.dir, 'tls.crt'), keyFile: join(volume.dir, 'tls.key'), remove: () => {} };
  const w = await startTestWebhook({ certs, args: ['--tls-reload-interval', '1'] });
  t.teardown(() => w.close());
  const seen = async (ca: Buffer) => (await handshake(w.webhook.port, { ca })).cert.fingerprint256;
  t.equal(await seen(first.ca), fingerprint(first.certFile));

  // An established keep-alive connection keeps working across the swap.
  const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: first.ca });
  t.teardown(() => agent.destroy());
  const post = () =>
    new Promise<number>((resolve, reject) => {
      const req = request(`${w.url}/mutate`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(JSON.stringify(reviewOf(defaultedPod())));
    });
  t.equal(await post(), 200);

  volume.rotate(second);
  const swapped = await until(async () => (await seen(second.ca).catch(() => '')) === fingerprint(second.certFile), 5000);
  t.ok(swapped, 'new connections see the new certificate');
  t.equal(await post(), 200, 'the old connection still answers');
  const metrics = await (await fetch(w.metricsUrl)).text();
  t.match(metrics, /safe_termination_certificate_reloads_total\{result="success"\} 1/);
  t.match(w.logs.raw.join('\n'), /serving certificate reloaded/);

  // A broken rotation (garbage certificate) keeps the current pair.
  const broken = join(root, 'broken');
  mkdirSync(broken);
  writeFileSync(join(broken, 'tls.crt'), 'not a certificate');
  cpSync(second.keyFile, join(broken, 'tls.key'));
  volume.rotate({ ...second, certFile: join(broken, 'tls.crt'), keyFile: join(broken, 'tls.key') });
  const failed = await until(async () => /certificate_reloads_total\{result="error"\} [1-9]/.test(await (await fetch(w.metricsUrl)).text()), 5000);
  t.ok(failed, 'the failed reload is counted');
  t.equal(await seen(second.ca), fingerprint(second.certFile), 'still serving the last good certificate');
  t.equal((await httpsRequest(`${w.url}/readyz`, { method: 'GET', ca: second.ca })).status, 200, 'and still ready');
});

t.test('a missing or mismatched certificate fails at start with a clear message', async (t) => {
  const a = makeCerts();
  const b = makeCerts();
  t.teardown(() => {
    a.remove();
    b.remove();
  });
  await t.rejects(startTestWebhook({ certs: { ...a, certFile: join(a.dir, 'missing.crt') } }), /cannot read --tls-cert-file .*missing\.crt: ENOENT/);
  await t.rejects(startTestWebhook({ certs: { ...a, keyFile: b.keyFile } }), /does not belong to the certificate/);
});

t.test('certs/generate.sh: a serving certificate for the Service DNS names, signed by its CA', async (t) => {
  const certs = makeCerts(['--service', 'st-webhook', '--namespace', 'platform', '--days', '30']);
  t.teardown(() => certs.remove());
  const cert = new X509Certificate(readFileSync(certs.certFile));
  const ca = new X509Certificate(certs.ca);
  for (const host of ['st-webhook', 'st-webhook.platform', 'st-webhook.platform.svc', 'st-webhook.platform.svc.cluster.local', 'localhost']) {
    t.equal(cert.checkHost(host), host, `valid for ${host}`);
  }
  t.equal(cert.checkHost('st-webhook.other.svc'), undefined, 'not for another namespace');
  t.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
  t.ok(cert.verify(ca.publicKey) && cert.checkIssued(ca), 'issued by the CA written beside it');
  t.notOk(cert.ca, 'the serving certificate is no CA');
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  t.ok(days > 29 && days <= 30.01, `valid for --days 30 (${days.toFixed(2)})`);
});
