/** Conntrack facts: the timeouts sizing reads, and where each came from (spec §5). */

export const CONNTRACK_KEYS = [
  'udp-timeout',
  'udp-timeout-stream',
  'tcp-timeout-time-wait',
  'tcp-timeout-close-wait',
  'tcp-timeout-established',
] as const;
export type ConntrackKey = (typeof CONNTRACK_KEYS)[number];

export const CONNTRACK_SOURCES = ['nodes', 'kube-proxy', 'local', 'static'] as const;
export type ConntrackSource = (typeof CONNTRACK_SOURCES)[number];

export interface ConntrackValue {
  readonly value: number;
  readonly source: ConntrackSource;
}

export type ConntrackFacts = Readonly<Record<ConntrackKey, ConntrackValue>>;
export type ConntrackValues = Readonly<Record<ConntrackKey, number>>;
export type PartialConntrackValues = Partial<Record<ConntrackKey, number>>;

/** Linux defaults (net/netfilter/nf_conntrack_proto_*.c). */
export const LINUX_DEFAULTS: ConntrackValues = Object.freeze({
  'udp-timeout': 30,
  'udp-timeout-stream': 120,
  'tcp-timeout-time-wait': 120,
  'tcp-timeout-close-wait': 60,
  'tcp-timeout-established': 432000,
});

/** The sysctl behind a key: udp-timeout → nf_conntrack_udp_timeout. */
export function sysctlName(key: ConntrackKey): string {
  return `nf_conntrack_${key.replaceAll('-', '_')}`;
}

export function staticFacts(values: ConntrackValues): ConntrackFacts {
  const out = {} as Record<ConntrackKey, ConntrackValue>;
  for (const key of CONNTRACK_KEYS) out[key] = { value: values[key], source: 'static' };
  return Object.freeze(out);
}

/**
 * Layer sources: for each key the first layer that has a value wins.
 * The last layer must be complete (the static values).
 */
export function layerFacts(
  layers: ReadonlyArray<{ source: ConntrackSource; values: PartialConntrackValues }>,
  fallback: ConntrackFacts,
): ConntrackFacts {
  const out = {} as Record<ConntrackKey, ConntrackValue>;
  for (const key of CONNTRACK_KEYS) {
    let chosen: ConntrackValue = fallback[key];
    for (const layer of layers) {
      const v = layer.values[key];
      if (v !== undefined) {
        chosen = { value: v, source: layer.source };
        break;
      }
    }
    out[key] = chosen;
  }
  return Object.freeze(out);
}

/** The kernel's IPVS UDP timeout when kube-proxy's `ipvs.udpTimeout` is 0 or unset (`ipvsadm --set`'s third value). */
export const IPVS_KERNEL_UDP_TIMEOUT = 300;

/**
 * kube-proxy in IPVS mode (spec §5): UDP flows live on in IPVS's own connection
 * table for `ipvsUdpTimeout` after their last packet, besides conntrack, so the
 * UDP wait (udp-timeout, and udp-timeout-stream for streams) is the larger of the
 * two; where IPVS's is larger, the source is `kube-proxy`.
 */
export function withIpvsUdpTimeout(facts: ConntrackFacts, ipvsUdpTimeout: number | undefined): ConntrackFacts {
  if (ipvsUdpTimeout === undefined) return facts;
  const out: Record<ConntrackKey, ConntrackValue> = { ...facts };
  for (const key of ['udp-timeout', 'udp-timeout-stream'] as const) {
    if (ipvsUdpTimeout > facts[key].value) out[key] = { value: ipvsUdpTimeout, source: 'kube-proxy' };
  }
  return Object.freeze(out);
}
