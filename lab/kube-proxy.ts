/**
 * The iptables rules kube-proxy (iptables mode) writes for a ClusterIP Service, in
 * its own format (pkg/proxy/iptables/proxier.go): KUBE-SERVICES → KUBE-SVC-<hash>
 * → one `-m statistic --mode random --probability 1/(n-i)` jump per endpoint →
 * KUBE-SEP-<hash> → DNAT. Chain names are kube-proxy's: base32(sha256(...))[:16].
 * Written with `iptables-restore --noflush` like kube-proxy's full sync: the chain
 * lines flush the chains they name, stale KUBE-SEP chains are flushed and deleted.
 *
 * And kube-proxy's stale-UDP cleanup (pkg/proxy/conntrack/cleanup.go), optional:
 * delete UDP entries whose original destination is the Service IP and whose reply
 * source is not a *serving* endpoint.
 */
import { createHash } from 'node:crypto';

export interface ServicePortSpec {
  /** `namespace/name:portName`, kube-proxy's ServicePortName string. */
  readonly portName: string;
  readonly protocol: 'tcp' | 'udp';
  readonly clusterIP: string;
  readonly port: number;
  readonly targetPort: number;
}

export interface LabService {
  readonly namespace: string;
  readonly name: string;
  readonly ports: readonly ServicePortSpec[];
  /** Pod CIDR, for kube-proxy's "masquerade off-cluster traffic" rule (LocalModeClusterCIDR). */
  readonly clusterCIDR: string;
}

const MASQ_MARK = '0x4000';
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = ((value << 8) | b) >>> 0;
    bits += 8;
    while (bits >= 5) {
      out += B32.charAt((value >>> (bits - 5)) & 31);
      bits -= 5;
    }
  }
  if (bits > 0) out += B32.charAt((value << (5 - bits)) & 31);
  return out;
}

function hash16(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 16);
}

/** KUBE-SVC-XXXX: `servicePortPolicyClusterChain(svcPortName, protocol)`. */
export function svcChain(p: ServicePortSpec): string {
  return `KUBE-SVC-${hash16(p.portName + p.protocol)}`;
}

/** KUBE-SEP-XXXX: `servicePortEndpointChainName(svcPortName, protocol, "ip:port")`. */
export function sepChain(p: ServicePortSpec, endpointIp: string): string {
  return `KUBE-SEP-${hash16(p.portName + p.protocol + `${endpointIp}:${p.targetPort}`)}`;
}

/** kube-proxy's computeProbability: fmt.Sprintf("%0.10f", 1.0/float64(n)). */
export function probability(n: number): string {
  return (1 / n).toFixed(10);
}

/**
 * The nat table for a full sync with these endpoint IPs (ready, not terminating:
 * kube-proxy drops terminating endpoints from the rules while ready ones exist).
 * `previous` are chains of an earlier sync that must be flushed and deleted.
 */
export function natRestore(svc: LabService, endpointIps: readonly string[], previous: ReadonlySet<string> = new Set()): { text: string; chains: Set<string> } {
  const chains: string[] = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];
  const rules: string[] = [];
  rules.push(`-A KUBE-POSTROUTING -m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`);
  rules.push(`-A KUBE-POSTROUTING -j MARK --xor-mark ${MASQ_MARK}`);
  rules.push(`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`);
  rules.push(`-A KUBE-MARK-MASQ -j MARK --or-mark ${MASQ_MARK}`);
  const active = new Set<string>();
  for (const p of svc.ports) {
    const svcChainName = svcChain(p);
    const clusterIpMatch = `-m comment --comment "${p.portName} cluster IP" -m ${p.protocol} -p ${p.protocol} -d ${p.clusterIP}/32 --dport ${p.port}`;
    if (endpointIps.length === 0) continue; // kube-proxy then REJECTs in the filter table; not needed here
    rules.push(`-A KUBE-SERVICES ${clusterIpMatch} -j ${svcChainName}`);
    chains.push(svcChainName);
    active.add(svcChainName);
    rules.push(`-A ${svcChainName} ${clusterIpMatch} ! -s ${svc.clusterCIDR} -j KUBE-MARK-MASQ`);
    endpointIps.forEach((ip, i) => {
      const sep = sepChain(p, ip);
      const comment = `-m comment --comment "${p.portName} -> ${ip}:${p.targetPort}"`;
      const stat = i < endpointIps.length - 1 ? ` -m statistic --mode random --probability ${probability(endpointIps.length - i)}` : '';
      rules.push(`-A ${svcChainName} ${comment}${stat} -j ${sep}`);
    });
    for (const ip of endpointIps) {
      const sep = sepChain(p, ip);
      chains.push(sep);
      active.add(sep);
      rules.push(`-A ${sep} -m comment --comment ${p.portName} -s ${ip}/32 -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -m comment --comment ${p.portName} -m ${p.protocol} -p ${p.protocol} -j DNAT --to-destination ${ip}:${p.targetPort}`);
    }
  }
  rules.push(
    `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
  );
  const stale = [...previous].filter((c) => !active.has(c) && (c.startsWith('KUBE-SVC-') || c.startsWith('KUBE-SEP-')));
  const lines = ['*nat', ...chains.map((c) => `:${c} - [0:0]`), ...stale.map((c) => `:${c} - [0:0]`), ...rules, ...stale.map((c) => `-X ${c}`), 'COMMIT', ''];
  return { text: lines.join('\n'), chains: active };
}

/** The jump rules kube-proxy ensures once (EnsureRule, prepended) outside its restore. */
export const JUMP_RULES: readonly (readonly string[])[] = [
  ['-t', 'nat', '-I', 'PREROUTING', '1', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'],
  ['-t', 'nat', '-I', 'OUTPUT', '1', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'],
  ['-t', 'nat', '-I', 'POSTROUTING', '1', '-m', 'comment', '--comment', 'kubernetes postrouting rules', '-j', 'KUBE-POSTROUTING'],
];

/** `conntrack -D` arguments kube-proxy's cleanup amounts to, per stale endpoint IP of a UDP Service port. */
export function udpCleanupArgs(clusterIP: string, staleEndpointIp: string): string[] {
  return ['-D', '-p', 'udp', '--orig-dst', clusterIP, '--reply-src', staleEndpointIp];
}
