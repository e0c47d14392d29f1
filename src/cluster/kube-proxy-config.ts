/**
 * kube-proxy's configuration as the second source of conntrack values:
 * the `KubeProxyConfiguration` in the `config.conf` key of `kube-system/kube-proxy`
 * (kubeadm's layout). kube-proxy writes the sysctls itself from these fields at
 * start (cmd/kube-proxy/app/server_linux.go): a duration > 0 is written (truncated
 * to whole seconds), 0 leaves the kernel's value alone, and the two TCP fields
 * default to 24h (established) and 1h (close-wait) when absent or null.
 */
import { parse as parseYaml } from 'yaml';
import { IPVS_KERNEL_UDP_TIMEOUT } from '../core/conntrack.ts';
import type { ConntrackKey, PartialConntrackValues } from '../core/conntrack.ts';

/** KubeProxyConfiguration conntrack field → our key. kube-proxy has no time-wait field. */
/** A ConfigMap by namespace and name, e.g. kube-system/kube-proxy. */
export interface ConfigMapRef {
  readonly namespace: string;
  readonly name: string;
}

export const KUBE_PROXY_FIELDS: Readonly<Record<string, ConntrackKey>> = {
  udpTimeout: 'udp-timeout',
  udpStreamTimeout: 'udp-timeout-stream',
  tcpCloseWaitTimeout: 'tcp-timeout-close-wait',
  tcpEstablishedTimeout: 'tcp-timeout-established',
};

/** kube-proxy's defaults for a field absent or null (v1alpha1 and v1alpha2 defaulting). */
const KUBE_PROXY_DEFAULTS: Readonly<Partial<Record<string, number>>> = {
  tcpEstablishedTimeout: 24 * 3600,
  tcpCloseWaitTimeout: 3600,
};

/** The ConfigMap key kubeadm writes the configuration under. */
export const KUBE_PROXY_CONFIG_KEY = 'config.conf';

const UNITS: Readonly<Record<string, number>> = {
  ns: 1e-9,
  us: 1e-6,
  'µs': 1e-6, // U+00B5
  'μs': 1e-6, // U+03BC
  ms: 1e-3,
  s: 1,
  m: 60,
  h: 3600,
};

/**
 * Go's time.ParseDuration, in (fractional) seconds: "30s", "1h0m0s", "1.5h", "300ms",
 * "-1m", "0". Undefined when Go would reject it.
 */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return undefined;
  let total = 0;
  const re = /^(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/;
  while (s.length > 0) {
    const m = re.exec(s);
    if (m === null) return undefined;
    const [all, whole = '', frac, unit = ''] = m;
    if (whole === '' && (frac === undefined || frac === '')) return undefined;
    const n = Number(`${whole || '0'}.${frac ?? '0'}`);
    total += n * UNITS[unit]!;
    s = s.slice(all.length);
  }
  return sign * total;
}

export type KubeProxyReading =
  | {
      readonly ok: true;
      readonly values: PartialConntrackValues;
      /** `mode: ipvs` only: how long IPVS keeps a UDP flow after its last packet (`ipvs.udpTimeout`; 0 or unset: the kernel's 300 s). */
      readonly ipvsUdpTimeout?: number;
    }
  | { readonly ok: false; readonly problem: string };

/** A duration field as kube-proxy uses it: whole seconds > 0, or undefined (left alone). */
function fieldSeconds(raw: unknown, field: string): number | undefined | { problem: string } {
  if (raw === undefined || raw === null) return KUBE_PROXY_DEFAULTS[field];
  if (typeof raw !== 'string') return { problem: `conntrack.${field} is not a duration string` };
  const d = parseGoDuration(raw.trim());
  if (d === undefined) return { problem: `conntrack.${field}: invalid duration ${JSON.stringify(raw)}` };
  if (d <= 0) return undefined;
  return Math.trunc(d);
}

/** Parse a KubeProxyConfiguration (YAML or JSON) into the conntrack values it makes kube-proxy set. */
export function parseKubeProxyConfig(text: string): KubeProxyReading {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    return { ok: false, problem: `not YAML: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}` };
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { ok: false, problem: 'not a YAML mapping' };
  const cfg = doc as Record<string, unknown>;
  if (cfg['kind'] !== 'KubeProxyConfiguration') {
    return { ok: false, problem: `kind is ${JSON.stringify(cfg['kind'] ?? null)}, not KubeProxyConfiguration` };
  }
  // v1alpha2 moved the section under `linux`; v1alpha1 has it at the top.
  const linux = cfg['linux'];
  const section =
    typeof linux === 'object' && linux !== null && 'conntrack' in linux ? (linux as Record<string, unknown>)['conntrack'] : cfg['conntrack'];
  const conntrack = typeof section === 'object' && section !== null ? (section as Record<string, unknown>) : {};
  const values: PartialConntrackValues = {};
  for (const [field, key] of Object.entries(KUBE_PROXY_FIELDS)) {
    const v = fieldSeconds(conntrack[field], field);
    if (typeof v === 'object') return { ok: false, problem: v.problem };
    if (v !== undefined) values[key] = v;
  }
  if (typeof cfg['mode'] !== 'string' || cfg['mode'].trim().toLowerCase() !== 'ipvs') return { ok: true, values };
  // kube-proxy sets IPVS's timeouts only when one of the three is > 0, and then 0 keeps the kernel's value.
  const ipvs = cfg['ipvs'];
  const raw = typeof ipvs === 'object' && ipvs !== null ? (ipvs as Record<string, unknown>)['udpTimeout'] : undefined;
  const udp = fieldSeconds(raw, 'udpTimeout');
  if (typeof udp === 'object') return { ok: false, problem: udp.problem.replace('conntrack.', 'ipvs.') };
  return { ok: true, values, ipvsUdpTimeout: udp ?? IPVS_KERNEL_UDP_TIMEOUT };
}

/** The configuration text of a kube-proxy ConfigMap's data: `config.conf`, else any KubeProxyConfiguration. */
export function kubeProxyConfigText(data: Readonly<Record<string, string>> | undefined): string | undefined {
  if (data === undefined) return undefined;
  const preferred = data[KUBE_PROXY_CONFIG_KEY];
  if (preferred !== undefined) return preferred;
  return Object.values(data).find((v) => /^\s*kind:\s*["']?KubeProxyConfiguration/m.test(v));
}
