/**
 * kube-proxy's ConfigMap as a conntrack source: read at start and again every
 * interval (a GET: the chart grants `get` on that one ConfigMap, nothing more).
 * Absent, forbidden or unparseable: no values, said once in the log, never an
 * error. Its IPVS UDP timeout is a source of its own (ipvs-layer.ts).
 */
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import type { ConntrackLayer, Origin, PartialConntrackValues } from '../core/conntrack.ts';
import type { Logger } from '../shared/logger.ts';
import { describeApiError, requestOptions, statusOf } from './api.ts';
import { kubeProxyConfigText, parseKubeProxyConfig } from './kube-proxy-config.ts';
import type { ConfigMapRef } from './kube-proxy-config.ts';

export interface KubeProxySourceOptions {
  readonly kubeConfig: KubeConfig;
  readonly log: Logger;
  readonly ref: ConfigMapRef;
  readonly intervalMs: number;
  readonly requestTimeoutMs?: number;
}

export class KubeProxySource implements ConntrackLayer {
  readonly kind = 'kube-proxy';
  readonly label: string;
  /** Settles after the first read, whatever its outcome. */
  readonly ready: Promise<void>;
  /** "kube-system/kube-proxy" */
  readonly where: string;
  readonly #o: KubeProxySourceOptions;
  #settle: () => void = () => {};
  readonly #core: CoreV1Api;
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #values: PartialConntrackValues = {};
  #ipvsUdpTimeout: number | undefined;
  #lastOutcome = '';
  #stopped = false;

  constructor(o: KubeProxySourceOptions) {
    this.#o = o;
    this.#core = o.kubeConfig.makeApiClient(CoreV1Api);
    this.where = `${o.ref.namespace}/${o.ref.name}`;
    this.label = `kube-proxy's ConfigMap ${this.where}`;
    this.ready = new Promise((resolve) => (this.#settle = resolve));
  }

  start(): void {
    void this.#read().finally(this.#settle);
  }

  values(): PartialConntrackValues {
    return this.#values;
  }

  describe(): Origin {
    return { short: 'kube-proxy', long: `kube-proxy: ConfigMap ${this.where}` };
  }

  /** With kube-proxy in IPVS mode: its UDP timeout (ipvs-layer.ts); undefined in other modes or when not read. */
  get ipvsUdpTimeout(): number | undefined {
    return this.#ipvsUdpTimeout;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
  }

  async #read(): Promise<void> {
    const { ref, log } = this.#o;
    const where = this.where;
    let next: PartialConntrackValues | undefined;
    let ipvs: number | undefined;
    let outcome: string;
    try {
      const cm = await this.#core.readNamespacedConfigMap(
        { name: ref.name, namespace: ref.namespace },
        requestOptions({ timeoutMs: this.#o.requestTimeoutMs ?? 10_000, signal: this.#abort.signal }),
      );
      const text = kubeProxyConfigText(cm.data);
      if (text === undefined) {
        next = {};
        outcome = 'ConfigMap has no KubeProxyConfiguration (config.conf)';
      } else {
        const parsed = parseKubeProxyConfig(text);
        next = parsed.ok ? parsed.values : {};
        ipvs = parsed.ok ? parsed.ipvsUdpTimeout : undefined;
        const mode = ipvs === undefined ? '' : ` mode ipvs, udpTimeout ${ipvs}s`;
        outcome = parsed.ok ? `ok ${JSON.stringify(parsed.values)}${mode}` : `unreadable: ${parsed.problem}`;
      }
    } catch (error) {
      if (this.#stopped) return;
      const status = statusOf(error);
      if (status === 404 || status === 403 || status === 401) {
        next = {}; // absent or not ours to read: skipped quietly
        outcome = status === 404 ? 'not found' : `not readable (HTTP ${status})`;
      } else {
        // API server away: keep the last values.
        outcome = `not read: ${describeApiError(error)}`;
      }
    }
    if (this.#stopped) return;
    if (outcome !== this.#lastOutcome) {
      this.#lastOutcome = outcome;
      if (outcome.startsWith('ok ')) log.info({ configMap: where, values: next, ...(ipvs === undefined ? {} : { ipvsUdpTimeout: ipvs }) }, 'kube-proxy conntrack settings read');
      else log.info({ configMap: where, outcome }, 'kube-proxy configuration not used as a conntrack source');
    }
    // An API server away (next undefined) keeps the last IPVS reading too.
    if (next !== undefined) this.#ipvsUdpTimeout = ipvs;
    if (next !== undefined && JSON.stringify(next) !== JSON.stringify(this.#values)) this.#values = Object.freeze(next);
    this.#timer = setTimeout(() => void this.#read(), this.#o.intervalMs);
    this.#timer.unref();
  }
}
