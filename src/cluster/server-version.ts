/**
 * The cluster's version from `/version`, for `prestop-mode: auto` (native sleep
 * from 1.30). Asked at start; when the API server does not answer, the version
 * stays unknown (which counts as a current cluster), said once in the log, and
 * asked again with backoff until it answers. A configured version is never asked.
 */
import { VersionApi } from '@kubernetes/client-node';
import type { KubeConfig, VersionInfo } from '@kubernetes/client-node';
import { parseKubeVersion } from '../core/model.ts';
import type { KubeVersion } from '../core/model.ts';
import type { Logger } from '../shared/logger.ts';
import { backoffDelay, describeApiError, requestOptions } from './api.ts';

/** gitVersion "v1.30.2-eks-1234" first; else major/minor ("1", "30+"). */
export function versionOf(info: Pick<VersionInfo, 'gitVersion' | 'major' | 'minor'>): KubeVersion | undefined {
  const fromGit = typeof info.gitVersion === 'string' ? parseKubeVersion(info.gitVersion) : undefined;
  if (fromGit !== undefined) return fromGit;
  const major = typeof info.major === 'string' ? /^\d+/.exec(info.major)?.[0] : undefined;
  const minor = typeof info.minor === 'string' ? /^\d+/.exec(info.minor)?.[0] : undefined;
  return major !== undefined && minor !== undefined ? { major: Number(major), minor: Number(minor) } : undefined;
}

export interface ServerVersionOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly requestTimeoutMs?: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export class ServerVersion {
  /** Settles after the first answer or failure. */
  readonly firstRead: Promise<void>;
  readonly #o: ServerVersionOptions;
  readonly #api: VersionApi;
  readonly #abort = new AbortController();
  #version: KubeVersion | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopped = false;

  constructor(o: ServerVersionOptions) {
    this.#o = o;
    this.#api = o.kubeConfig.makeApiClient(VersionApi);
    this.firstRead = this.#read();
  }

  get version(): KubeVersion | undefined {
    return this.#version;
  }

  stop(): void {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
  }

  async #read(): Promise<void> {
    try {
      const info = await this.#api.getCode(requestOptions({ timeoutMs: this.#o.requestTimeoutMs ?? 10_000, signal: this.#abort.signal }));
      if (this.#stopped) return;
      const v = versionOf(info);
      if (v === undefined) {
        this.#o.log.warn({ gitVersion: info.gitVersion }, 'unreadable Kubernetes version; prestop-mode auto assumes a current cluster');
        return;
      }
      this.#version = v;
      this.#o.log.info({ kubernetesVersion: `${v.major}.${v.minor}`, gitVersion: info.gitVersion }, 'Kubernetes version read');
    } catch (error) {
      if (this.#stopped) return;
      this.#failures++;
      if (this.#failures === 1) {
        this.#o.log.warn(
          { problem: describeApiError(error) },
          'Kubernetes version unknown (API server not answering); prestop-mode auto assumes a current cluster until it answers',
        );
      }
      const b = this.#o.backoff ?? { initialMs: 5000, maxMs: 300_000 };
      this.#timer = setTimeout(() => void this.#read(), backoffDelay(this.#failures, b.initialMs, b.maxMs));
      this.#timer.unref();
    }
  }
}
