/**
 * kube-proxy in IPVS mode as a conntrack source: UDP flows also live in IPVS's
 * connection table for its `ipvs.udpTimeout` (0 or unset: the kernel's 300 s),
 * so the UDP wait is at least that, over whatever the sources below give. Read
 * from kube-proxy's ConfigMap by the kube-proxy source; IPVS itself is never read.
 */
import { ipvsRaise } from '../core/conntrack.ts';
import type { ConntrackFacts, ConntrackLayer, PartialConntrackValues } from '../core/conntrack.ts';
import type { KubeProxySource } from './kube-proxy-source.ts';

export function ipvsLayer(kubeProxy: KubeProxySource): ConntrackLayer {
  const raised = new WeakMap<ConntrackFacts, { readonly timeout: number | undefined; readonly values: PartialConntrackValues }>();
  return {
    kind: 'ipvs',
    label: "kube-proxy's IPVS UDP timeout (in IPVS mode)",
    start: () => {},
    ready: kubeProxy.ready,
    values: (_placement, below) => {
      const timeout = kubeProxy.ipvsUdpTimeout;
      let r = raised.get(below);
      if (r === undefined || r.timeout !== timeout) raised.set(below, (r = { timeout, values: ipvsRaise(below, timeout) }));
      return r.values;
    },
    describe: (key, _placement, below) => ({
      short: 'kube-proxy IPVS',
      long: `kube-proxy: IPVS udpTimeout (mode ipvs) in ConfigMap ${kubeProxy.where}, over conntrack's ${below[key].value}s`,
    }),
    stop: async () => {},
  };
}
