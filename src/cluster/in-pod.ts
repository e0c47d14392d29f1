/** Whether this process runs in a Kubernetes pod with a service account (no client library needed). */
import { existsSync } from 'node:fs';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** KUBERNETES_SERVICE_HOST/PORT set and a service-account token mounted. */
export function runsInPod(env: Readonly<Record<string, string | undefined>>, inClusterRoot = ''): boolean {
  return Boolean(env['KUBERNETES_SERVICE_HOST']) && Boolean(env['KUBERNETES_SERVICE_PORT']) && existsSync(`${inClusterRoot}${SERVICE_ACCOUNT_DIR}/token`);
}

/** Which API, if any: `--kubeconfig` first, else the in-cluster one in a pod, else none (this machine's facts). */
export type AccessKind = 'kubeconfig' | 'in-cluster' | 'none';

export function accessKind(kubeconfig: string | undefined, env: Readonly<Record<string, string | undefined>>, inClusterRoot = ''): AccessKind {
  if (kubeconfig !== undefined) return 'kubeconfig';
  return runsInPod(env, inClusterRoot) ? 'in-cluster' : 'none';
}
