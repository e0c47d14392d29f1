/**
 * A real Kubernetes control plane on loopback for people (the one the e2e tests
 * use): etcd, kube-apiserver, kube-controller-manager and kube-scheduler, with a
 * Node object named `node-1` (no kubelet: pods are scheduled and stored, not run).
 * Prints the admin kubeconfig's path and runs until Ctrl-C, then removes everything.
 *
 *   npm run kube:up
 */
import { buildKube } from './kube-build.ts';
import { startControlPlane } from '../e2e/control-plane.ts';
import { toolPath } from './helm.ts';

async function main(): Promise<void> {
  await buildKube();
  const started = Date.now();
  const plane = await startControlPlane();
  await plane.createNode('node-1');
  process.stdout.write(
    [
      `control plane ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${plane.server}`,
      `  export KUBECONFIG=${plane.adminKubeconfig}`,
      `  ${toolPath('kubectl')} get nodes`,
      `  node scripts/helm.ts install safe-termination charts/safe-termination -n safe-termination --create-namespace --kubeconfig "$KUBECONFIG"`,
      `logs: ${plane.dir}/logs; Ctrl-C stops it and removes ${plane.dir}`,
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolveSignal) => {
    process.once('SIGINT', resolveSignal);
    process.once('SIGTERM', resolveSignal);
  });
  await plane.stop();
}

main().catch((error: unknown) => {
  process.stderr.write(`kube:up: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
