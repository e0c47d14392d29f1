/**
 * Serving certificate from files, swapped live (cert-manager's file_source):
 * re-read on an interval and on file events, swapped only when the bytes
 * change and the pair is valid, unhealthy until the first load.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { SecureContextOptions } from 'node:tls';
import { allOrEveryFailure } from '../shared/settle.ts';

export interface ServingCertificate {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Start of validity, seconds since the epoch. */
  readonly notBefore: number;
  /** Expiry, seconds since the epoch. */
  readonly notAfter: number;
  readonly subject: string;
}

/**
 * TLS 1.2 with forward-secret AEAD suites only (ECDHE with AES-GCM or
 * ChaCha20-Poly1305; the API server's Go client offers them), and TLS 1.3.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const TLS_OPTIONS = { minVersion: 'TLSv1.2', ciphers: TLS_CIPHERS, honorCipherOrder: true } as const satisfies SecureContextOptions;

/** Why the certificate must not be served now (expired, not yet valid), or undefined. */
export function validityProblem(cert: Pick<ServingCertificate, 'notBefore' | 'notAfter'>, nowMs: number = Date.now()): string | undefined {
  const now = nowMs / 1000;
  if (now >= cert.notAfter) return `expired at ${new Date(cert.notAfter * 1000).toISOString()}`;
  if (now < cert.notBefore) return `not valid before ${new Date(cert.notBefore * 1000).toISOString()}`;
  return undefined;
}

/** Read and check a certificate/key pair; throws with a message naming the file. */
export async function loadCertificate(certFile: string, keyFile: string): Promise<ServingCertificate> {
  const flags = ['--tls-cert-file', '--tls-private-key-file'] as const;
  const paths = [certFile, keyFile] as const;
  const [cert, key] = await allOrEveryFailure([readFile(certFile), readFile(keyFile)], (failures) =>
    failures.map((f) => `cannot read ${flags[f.index]} ${paths[f.index]}: ${errorMessage(f.error)}`).join('; '),
  );
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new Error(`--tls-cert-file ${certFile} is not a PEM certificate: ${errorMessage(e)}`, { cause: e });
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    throw new Error(`--tls-private-key-file ${keyFile} is not a PEM private key: ${errorMessage(e)}`, { cause: e });
  }
  if (!x509.checkPrivateKey(privateKey)) throw new Error(`the key in ${keyFile} does not belong to the certificate in ${certFile}`);
  return {
    cert,
    key,
    notBefore: Math.floor(Date.parse(x509.validFrom) / 1000),
    notAfter: Math.floor(Date.parse(x509.validTo) / 1000),
    subject: x509.subject.replaceAll('\n', ', '),
  };
}

export interface CertificateWatcherOptions {
  readonly certFile: string;
  readonly keyFile: string;
  readonly intervalMs: number;
  readonly current: ServingCertificate;
  readonly onChange: (cert: ServingCertificate) => void;
  readonly onError: (error: Error) => void;
}

/** Watches the files; calls onChange with each new valid pair. Returns a stop function. */
export function watchCertificate(o: CertificateWatcherOptions): () => void {
  let current = o.current;
  let running = false;
  let again = false;
  let stopped = false;
  const check = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        try {
          const next = await loadCertificate(o.certFile, o.keyFile);
          if (stopped) return;
          if (!next.cert.equals(current.cert) || !next.key.equals(current.key)) {
            const problem = validityProblem(next);
            if (problem !== undefined) throw new Error(`the certificate in ${o.certFile} is ${problem}`);
            current = next;
            o.onChange(next);
          }
        } catch (e) {
          // Mid-rotation the pair can be briefly inconsistent; keep the old one.
          if (!stopped) o.onError(e instanceof Error ? e : new Error(String(e)));
        }
      } while (again && !stopped);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void check(), o.intervalMs);
  timer.unref();
  // Secret volumes swap a symlink in the directory: watch the directories.
  const watchers: FSWatcher[] = [];
  for (const dir of new Set([dirname(o.certFile), dirname(o.keyFile)])) {
    try {
      const w = watch(dir, () => void check());
      w.on('error', () => w.close());
      w.unref();
      watchers.push(w);
    } catch {
      // The interval still catches changes.
    }
  }
  return () => {
    stopped = true;
    clearInterval(timer);
    for (const w of watchers) w.close();
  };
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) return (e as NodeJS.ErrnoException).code ?? e.message;
  return String(e);
}
