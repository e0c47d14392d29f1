/**
 * How this process reaches the Kubernetes API (which one: `accessKind`):
 * - `--kubeconfig FILE`: that file (`--kubeconfig default`: $KUBECONFIG, else ~/.kube/config);
 * - in a pod (KUBERNETES_SERVICE_HOST/PORT set and a service-account token
 *   mounted): the in-cluster service-account configuration;
 * - none: the webhook uses this machine's /proc/sys, the agent only serves metrics.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { UsageError } from '../shared/errors.ts';
import { accessKind } from './in-pod.ts';
import type { Access, AccessOptions } from './in-pod.ts';

export { runsInPod, SERVICE_ACCOUNT_DIR } from './in-pod.ts';
/** `--kubeconfig default`: the kubeconfig kubectl would use. */
export const DEFAULT_KUBECONFIG = 'default';

export type ClusterAccess = Access<KubeConfig>;

/** Resolve and load the API access. Throws UsageError when an explicit kubeconfig cannot be loaded. */
export function resolveClusterAccess(o: AccessOptions): ClusterAccess {
  const kind = accessKind(o.kubeconfig, o.env, o.inClusterRoot);
  if (kind === 'kubeconfig' && o.kubeconfig !== undefined) {
    const kc = new KubeConfig();
    const path = o.kubeconfig === DEFAULT_KUBECONFIG ? (o.env['KUBECONFIG'] ?? '~/.kube/config') : o.kubeconfig;
    try {
      if (o.kubeconfig === DEFAULT_KUBECONFIG) kc.loadFromDefault();
      else kc.loadFromFile(o.kubeconfig);
    } catch (error) {
      throw new UsageError('KUBECONFIG_UNLOADABLE', { path, reason: error instanceof Error ? (error.message.split('\n')[0] ?? '') : String(error) });
    }
    const cluster = kc.getCurrentCluster();
    if (cluster === null) {
      throw new UsageError('KUBECONFIG_NO_CLUSTER', path);
    }
    return { kind: 'kubeconfig', kubeConfig: kc, server: cluster.server, path };
  }
  if (kind === 'in-cluster') {
    const kc = new KubeConfig();
    // loadFromCluster reads KUBERNETES_SERVICE_HOST/PORT from process.env.
    const saved = { host: process.env['KUBERNETES_SERVICE_HOST'], port: process.env['KUBERNETES_SERVICE_PORT'] };
    process.env['KUBERNETES_SERVICE_HOST'] = o.env['KUBERNETES_SERVICE_HOST'];
    process.env['KUBERNETES_SERVICE_PORT'] = o.env['KUBERNETES_SERVICE_PORT'];
    try {
      kc.loadFromCluster(o.inClusterRoot ?? '');
    } finally {
      restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
      restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
    }
    return { kind: 'in-cluster', kubeConfig: kc, server: kc.getCurrentCluster()?.server ?? '' };
  }
  return { kind: 'none' };
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) Reflect.deleteProperty(process.env, name);
  else process.env[name] = value;
}
