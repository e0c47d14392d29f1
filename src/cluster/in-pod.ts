/** Whether this process runs in a Kubernetes pod with a service account (no client library needed). */
import { existsSync } from 'node:fs';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** KUBERNETES_SERVICE_HOST/PORT set and a service-account token mounted. */
export function runsInPod(env: Readonly<Record<string, string | undefined>>, inClusterRoot = ''): boolean {
  return Boolean(env['KUBERNETES_SERVICE_HOST']) && Boolean(env['KUBERNETES_SERVICE_PORT']) && existsSync(`${inClusterRoot}${SERVICE_ACCOUNT_DIR}/token`);
}

/** Which API, if any: `--kubeconfig` first, else the in-cluster one in a pod, else none (this machine's facts). */
export type AccessKind = 'kubeconfig' | 'in-cluster' | 'none';

/** The API this process reaches, with the credentials of the client that uses it. */
export type Access<Credentials> =
  | { readonly kind: 'in-cluster'; readonly kubeConfig: Credentials; readonly server: string }
  | { readonly kind: 'kubeconfig'; readonly kubeConfig: Credentials; readonly server: string; readonly path: string }
  | { readonly kind: 'none' };

export interface AccessOptions {
  readonly kubeconfig: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Prefix of the service-account directory (tests point it at a temp dir). */
  readonly inClusterRoot?: string;
}

export function accessKind(kubeconfig: string | undefined, env: Readonly<Record<string, string | undefined>>, inClusterRoot = ''): AccessKind {
  if (kubeconfig !== undefined) return 'kubeconfig';
  return runsInPod(env, inClusterRoot) ? 'in-cluster' : 'none';
}
