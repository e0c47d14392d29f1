/**
 * kube-proxy in IPVS mode as a conntrack source: UDP flows also live in IPVS's
 * connection table for its `ipvs.udpTimeout` (0 or unset: the kernel's 300 s),
 * so the UDP wait is at least that, over whatever the sources below give. Read
 * from kube-proxy's ConfigMap by the kube-proxy source; IPVS itself is never read.
 */
import { ipvsRaise } from '../core/conntrack.ts';
import type { ConntrackLayer } from '../core/conntrack.ts';
import type { KubeProxySource } from './kube-proxy-source.ts';

export function ipvsLayer(kubeProxy: KubeProxySource): ConntrackLayer {
  return {
    kind: 'ipvs',
    label: "kube-proxy's IPVS UDP timeout (in IPVS mode)",
    start: () => {},
    ready: kubeProxy.ready,
    values: (_placement, below) => ipvsRaise(below, kubeProxy.ipvsUdpTimeout),
    describe: (key, _placement, below) => ({
      short: 'kube-proxy IPVS',
      long: `kube-proxy: IPVS udpTimeout (mode ipvs) in ConfigMap ${kubeProxy.where}, over conntrack's ${below[key].value}s`,
    }),
    stop: async () => {},
  };
}
