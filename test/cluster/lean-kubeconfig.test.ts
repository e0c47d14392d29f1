/**
 * The agent's API access without client-node (lean-kubeconfig.ts, lean-api.ts):
 * in a pod (CA, service-account token read again as it rotates), kubeconfig files
 * (paths relative to the file, inline data, client certificates), what is left to
 * client-node (exec plugins), and the usage errors the webhook's loader gives.
 */
import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Agent } from 'node:https';
import type { RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { SERVICE_ACCOUNT_DIR } from '../../src/cluster/in-pod.ts';
import { ApiClient, ApiStatusError } from '../../src/cluster/lean-api.ts';
import { LeanKubeConfig, readKubeconfig, resolveAgentAccess } from '../../src/cluster/lean-kubeconfig.ts';
import { describeApiError, statusOf } from '../../src/cluster/api-errors.ts';
import { makeNode, startFakeApiServer } from '../support/fake-apiserver.ts';

const tmp = (t: Test): string => {
  const dir = mkdtempSync(join(tmpdir(), 'st-lean-kc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

const kubeconfig = (cluster: string, user: string): string =>
  `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n${cluster}\nusers:\n- name: u\n  user:\n${user}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n`;

t.test('in a pod: HTTPS with the service account CA and token; the token file is read again once old', async (t) => {
  const root = tmp(t);
  const api = await startFakeApiServer({ tls: true, token: 'first' });
  t.teardown(() => api.stop());
  api.setNodes([makeNode('n1')]);
  const sa = join(root, SERVICE_ACCOUNT_DIR);
  mkdirSync(sa, { recursive: true });
  writeFileSync(join(sa, 'token'), 'first');
  writeFileSync(join(sa, 'ca.crt'), api.ca!);
  const port = new URL(api.url).port;
  const access = await resolveAgentAccess({ kubeconfig: undefined, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, inClusterRoot: root });
  t.equal(access.kind, 'in-cluster');
  if (access.kind !== 'in-cluster') return;
  t.equal(access.server, `https://127.0.0.1:${port}`);
  const client = new ApiClient(access.kubeConfig);
  const node = (await client.json('GET', '/api/v1/nodes/n1', { timeoutMs: 2000 })) as { metadata: { name: string } };
  t.equal(node.metadata.name, 'n1');
  t.equal(api.requests.at(-1)?.authorization, 'Bearer first');

  const creds = new LeanKubeConfig({ server: api.url, ca: api.ca, tokenFile: join(sa, 'token'), tokenMaxAgeMs: 50 });
  const header = async (): Promise<unknown> => {
    const o: RequestOptions = {};
    await creds.applyToHTTPSOptions(o);
    return (o.headers as Record<string, string>)['Authorization'];
  };
  t.equal(await header(), 'Bearer first');
  writeFileSync(join(sa, 'token'), 'second');
  t.equal(await header(), 'Bearer first', 'a fresh read is kept');
  await new Promise((r) => setTimeout(r, 80));
  t.equal(await header(), 'Bearer second', 'read again once older than its maximum age');
});

t.test('IPv6 service host in brackets; plain HTTP on the ports client-node treats so', async (t) => {
  const root = tmp(t);
  const sa = join(root, SERVICE_ACCOUNT_DIR);
  mkdirSync(sa, { recursive: true });
  writeFileSync(join(sa, 'token'), 'x');
  const a = await resolveAgentAccess({ kubeconfig: undefined, env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, inClusterRoot: root });
  t.equal(a.kind === 'in-cluster' ? a.server : '', 'https://[fd00::1]:443');
  const b = await resolveAgentAccess({ kubeconfig: undefined, env: { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '8080' }, inClusterRoot: root });
  t.equal(b.kind === 'in-cluster' ? b.server : '', 'http://10.0.0.1:8080');
  t.same(await resolveAgentAccess({ kubeconfig: undefined, env: {}, inClusterRoot: root }), { kind: 'none' });
});

t.test('a kubeconfig file: CA and client certificate by paths relative to the file, or inline; tls-server-name; insecure', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, 'ca.pem'), 'CA');
  writeFileSync(join(dir, 'c.pem'), 'CERT');
  writeFileSync(join(dir, 'k.pem'), 'KEY');
  const file = join(dir, 'kubeconfig');
  writeFileSync(file, kubeconfig('    server: https://api.example:6443\n    certificate-authority: ca.pem\n    tls-server-name: kubernetes', '    client-certificate: c.pem\n    client-key: k.pem'));
  const creds = await readKubeconfig(file);
  t.ok(creds instanceof LeanKubeConfig);
  if (!(creds instanceof LeanKubeConfig)) return;
  t.same(creds.getCurrentCluster(), { server: 'https://api.example:6443' });
  const o: RequestOptions = {};
  await creds.applyToHTTPSOptions(o);
  const agent = (o.agent as Agent & { options: Record<string, unknown> }).options;
  t.equal((agent['ca'] as Buffer).toString(), 'CA');
  t.equal((agent['cert'] as Buffer).toString(), 'CERT');
  t.equal((agent['key'] as Buffer).toString(), 'KEY');
  t.equal(agent['servername'], 'kubernetes');
  t.equal(o.headers, undefined, 'no token: no Authorization header');

  writeFileSync(file, kubeconfig(`    server: https://api.example:6443\n    certificate-authority-data: ${Buffer.from('CA2').toString('base64')}\n    insecure-skip-tls-verify: true`, '    token: abc'));
  const inline = await readKubeconfig(file);
  if (!(inline instanceof LeanKubeConfig)) return t.fail('not read here');
  const p: RequestOptions = {};
  await inline.applyToHTTPSOptions(p);
  t.equal(((p.agent as Agent & { options: Record<string, unknown> }).options['ca'] as Buffer).toString(), 'CA2');
  t.equal((p.agent as Agent & { options: Record<string, unknown> }).options['rejectUnauthorized'], false);
  t.same(p.headers, { Authorization: 'Bearer abc' });
});

t.test('what this reader does not do goes to client-node: exec plugins, proxies', async (t) => {
  const dir = tmp(t);
  const file = join(dir, 'kubeconfig');
  writeFileSync(file, kubeconfig('    server: https://api.example:6443', '    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: get-token'));
  t.equal(await readKubeconfig(file), undefined, 'exec: not read here');
  const access = await resolveAgentAccess({ kubeconfig: file, env: {} });
  t.ok(access.kind === 'kubeconfig' && access.kubeConfig instanceof KubeConfig, "client-node's KubeConfig");
  writeFileSync(file, kubeconfig('    server: https://api.example:6443\n    proxy-url: http://proxy:3128', '    token: x'));
  t.equal(await readKubeconfig(file), undefined, 'proxy-url: not read here');
});

t.test('usage errors as the webhook gives them', async (t) => {
  await t.rejects(resolveAgentAccess({ kubeconfig: '/nonexistent/kubeconfig', env: {} }), { name: 'UsageError', message: /--kubeconfig: cannot load "\/nonexistent\/kubeconfig": ENOENT/ });
  const dir = tmp(t);
  const file = join(dir, 'kubeconfig');
  writeFileSync(file, 'apiVersion: v1\nkind: Config\nclusters: []\n');
  await t.rejects(resolveAgentAccess({ kubeconfig: file, env: {} }), { name: 'UsageError', message: /has no current context with a cluster/ });
  writeFileSync(file, kubeconfig('    server: http://127.0.0.1:1', '    token: x'));
  await t.rejects(resolveAgentAccess({ kubeconfig: file, env: {} }), { name: 'UsageError', message: /HTTP protocol is not allowed/ });
});

t.test('errors: the status and the Status message, as for client-node', async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.stop());
  const creds = await readKubeconfig(api.writeKubeconfig());
  if (!(creds instanceof LeanKubeConfig)) return t.fail('not read here');
  const client = new ApiClient(creds);
  const error = await client.json('GET', '/api/v1/nodes/absent', { timeoutMs: 2000 }).catch((e: unknown) => e);
  t.ok(error instanceof ApiStatusError);
  t.equal(statusOf(error), 404);
  t.match(describeApiError(error), /^HTTP 404: nodes "absent" not found/);
  const refused = await new ApiClient(new LeanKubeConfig({ server: 'http://127.0.0.1:1', insecure: true })).json('GET', '/api', { timeoutMs: 2000 }).catch((e: unknown) => e);
  t.match(describeApiError(refused), /ECONNREFUSED/);
});
