/** Whether this process runs in a Kubernetes pod with a service account (no client library needed). */
import { existsSync } from 'node:fs';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** KUBERNETES_SERVICE_HOST/PORT set and a service-account token mounted. */
export function runsInPod(env: Readonly<Record<string, string | undefined>>, inClusterRoot = ''): boolean {
  return Boolean(env['KUBERNETES_SERVICE_HOST']) && Boolean(env['KUBERNETES_SERVICE_PORT']) && existsSync(`${inClusterRoot}${SERVICE_ACCOUNT_DIR}/token`);
}
