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

export interface ServingCertificate {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Expiry, seconds since the epoch. */
  readonly notAfter: number;
  readonly subject: string;
}

export const TLS_OPTIONS = { minVersion: 'TLSv1.2' } as const satisfies SecureContextOptions;

/** Read and check a certificate/key pair; throws with a message naming the file. */
export async function loadCertificate(certFile: string, keyFile: string): Promise<ServingCertificate> {
  const [cert, key] = await Promise.all([
    readFile(certFile).catch((e: unknown) => {
      throw new Error(`cannot read --tls-cert-file ${certFile}: ${errorMessage(e)}`, { cause: e });
    }),
    readFile(keyFile).catch((e: unknown) => {
      throw new Error(`cannot read --tls-private-key-file ${keyFile}: ${errorMessage(e)}`, { cause: e });
    }),
  ]);
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
  return { cert, key, notAfter: Math.floor(Date.parse(x509.validTo) / 1000), subject: x509.subject.replaceAll('\n', ', ') };
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
