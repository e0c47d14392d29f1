/** The lab writes kube-proxy's rules in kube-proxy's own format; real iptables accepts them. */
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { natRestore, probability, sepChain, svcChain } from '../../lab/kube-proxy.ts';
import type { LabService } from '../../lab/kube-proxy.ts';

const SVC: LabService = {
  namespace: 'lab',
  name: 'echo',
  clusterCIDR: '10.244.0.0/16',
  ports: [
    { portName: 'lab/echo:dns', protocol: 'udp', clusterIP: '10.96.0.10', port: 53, targetPort: 53 },
    { portName: 'lab/echo:http', protocol: 'tcp', clusterIP: '10.96.0.10', port: 80, targetPort: 8080 },
  ],
};
const IPS = ['10.244.1.2', '10.244.1.3', '10.244.1.4'];

t.test("chain names are kube-proxy's (sha256 → base32 → 16 chars), e.g. kube-dns", async (t) => {
  // Well-known names from every cluster: kube-system/kube-dns:dns (udp), dns-tcp, default/kubernetes:https.
  const port = (portName: string, protocol: 'tcp' | 'udp') => ({ portName, protocol, clusterIP: '10.96.0.10', port: 53, targetPort: 53 });
  t.equal(svcChain(port('kube-system/kube-dns:dns', 'udp')), 'KUBE-SVC-TCOU7JCQXEZGVUNU');
  t.equal(svcChain(port('kube-system/kube-dns:dns-tcp', 'tcp')), 'KUBE-SVC-ERIFXISQEP7F7OF4');
  t.equal(svcChain(port('default/kubernetes:https', 'tcp')), 'KUBE-SVC-NPX46M4PTMTKRN6Y');
  t.match(sepChain(port('kube-system/kube-dns:dns', 'udp'), '10.244.0.2'), /^KUBE-SEP-[A-Z2-7]{16}$/);
  t.not(sepChain(port('x:y', 'udp'), '10.0.0.1'), sepChain(port('x:y', 'udp'), '10.0.0.2'));
});

t.test('probabilities 1/(n-i) with ten decimals; the last endpoint has none', async (t) => {
  t.equal(probability(3), '0.3333333333');
  t.equal(probability(2), '0.5000000000');
  const { text } = natRestore(SVC, IPS);
  const svc = svcChain(SVC.ports[0]!);
  const jumps = text.split('\n').filter((l) => l.startsWith(`-A ${svc} `) && l.includes('KUBE-SEP-'));
  t.equal(jumps.length, 3);
  t.match(jumps[0], /--comment "lab\/echo:dns -> 10\.244\.1\.2:53" -m statistic --mode random --probability 0\.3333333333 -j KUBE-SEP-/);
  t.match(jumps[1], /--probability 0\.5000000000 -j KUBE-SEP-/);
  t.notMatch(jumps[2], /statistic/);
  t.match(text, /-A KUBE-SEP-\w+ -m comment --comment lab\/echo:dns -m udp -p udp -j DNAT --to-destination 10\.244\.1\.2:53/);
  t.match(text, /-A KUBE-SERVICES -m comment --comment "lab\/echo:http cluster IP" -m tcp -p tcp -d 10\.96\.0\.10\/32 --dport 80 -j KUBE-SVC-/);
  t.match(text, /! -s 10\.244\.0\.0\/16 -j KUBE-MARK-MASQ/);
});

t.test('removing an endpoint: the remaining ones get 1/2, the old KUBE-SEP chains are flushed and deleted', async (t) => {
  const first = natRestore(SVC, IPS);
  const second = natRestore(SVC, IPS.slice(1), first.chains);
  const removed = SVC.ports.map((p) => sepChain(p, IPS[0]!));
  for (const chain of removed) {
    t.match(second.text, new RegExp(`^:${chain} - \\[0:0\\]$`, 'm'));
    t.match(second.text, new RegExp(`^-X ${chain}$`, 'm'));
    t.notOk(second.chains.has(chain));
  }
  t.notMatch(second.text, /0\.3333333333/);
  t.match(second.text, /--probability 0\.5000000000/);
});

const isRoot = process.getuid?.() === 0;
const hasTools = (() => {
  try {
    execFileSync('iptables-restore', ['--version'], { stdio: 'ignore' });
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

t.test('iptables-restore --noflush accepts the rules in a private namespace', { skip: !isRoot || !hasTools ? 'needs root, iproute2 and iptables' : false }, async (t) => {
  const ns = `st-lab-${process.pid}-t-node`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  const restore = (text: string) => execFileSync('ip', ['netns', 'exec', ns, 'iptables-restore', '--noflush'], { input: text });
  const first = natRestore(SVC, IPS);
  restore(first.text);
  restore(natRestore(SVC, IPS.slice(1), first.chains).text);
  const saved = execFileSync('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' });
  t.match(saved, /--probability 0\.50000000000 -j KUBE-SEP-/, 'iptables prints the probability with 11 decimals');
  t.notMatch(saved, new RegExp(sepChain(SVC.ports[0]!, IPS[0]!)), 'the removed endpoint chain is gone');
  t.equal((saved.match(/-j DNAT --to-destination/g) ?? []).length, 4, 'two endpoints × two ports');
});
