/**
 * Services and EndpointSlices from the cluster, through @kubernetes/client-node,
 * against a small in-test HTTP server speaking the Kubernetes list protocol
 * (limit/continue pagination), a model whose answers the test controls.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { listServicesAndSlices } from '../../src/cluster/service-lists.ts';
import { buildServiceIndex } from '../../src/diagnose/endpoints.ts';

t.setTimeout(120_000);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = fileURLToPath(new URL('../fixtures/conntrack/', import.meta.url));
const dump = JSON.parse(readFileSync(join(FIX, 'lab-unprotected-endpoints.json'), 'utf8'));

/** The API server's wire format: items without kind, list metadata with continue. */
function listBody(kind: string, apiVersion: string, items: unknown[], cont: string | undefined) {
  return { kind: `${kind}List`, apiVersion, metadata: { resourceVersion: '4711', ...(cont ? { continue: cont } : {}) }, items };
}

interface FakeApi {
  readonly server: Server;
  readonly url: string;
  readonly requests: string[];
}

async function fakeApi(handler?: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<FakeApi> {
  const requests: string[] = [];
  const [svc, slice] = dump.items;
  const strip = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== 'kind' && k !== 'apiVersion'));
  // Two extra Services so that pagination (limit 500) is exercised with a small page by the server.
  const services = [strip(svc), { metadata: { namespace: 'default', name: 'kubernetes' }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443, protocol: 'TCP' }] } }];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
    if (handler?.(req, res)) return;
    const url = new URL(req.url ?? '/', 'http://x');
    res.setHeader('content-type', 'application/json');
    if (url.pathname === '/api/v1/services') {
      // One item per page: the client must follow `continue`.
      const page = Number(url.searchParams.get('continue') ?? '0');
      res.end(JSON.stringify(listBody('Service', 'v1', [services[page]], page + 1 < services.length ? String(page + 1) : undefined)));
    } else if (url.pathname === '/apis/discovery.k8s.io/v1/endpointslices') {
      res.end(JSON.stringify(listBody('EndpointSlice', 'discovery.k8s.io/v1', [strip(slice)], undefined)));
    } else {
      res.statusCode = 404;
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 404 }));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

async function kubeconfig(dir: string, url: string): Promise<string> {
  const path = join(dir, 'kubeconfig');
  await writeFile(
    path,
    `apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "${url}", insecure-skip-tls-verify: true}}]
users: [{name: me, user: {token: lab-token}}]
contexts: [{name: lab, context: {cluster: lab, user: me}}]
current-context: lab
`,
  );
  return path;
}

t.test('lists Services (following continue) and EndpointSlices with the kubeconfig credentials', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.server.close());
  const dir = await mkdtemp(join(tmpdir(), 'st-cluster-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const objects = await listServicesAndSlices({ kubeconfig: await kubeconfig(dir, api.url) });
  const index = buildServiceIndex(objects);
  t.equal(index.serviceCount, 2);
  t.equal(index.sliceCount, 1);
  t.ok(index.frontends.has('UDP|10.96.0.10|53'));
  t.ok(index.frontends.has('TCP|10.96.0.1|443'));
  t.equal(index.endpoints.get('lab/echo')?.size, 2);
  t.equal(api.requests.filter((r) => r.startsWith('GET /api/v1/services')).length, 2, 'two pages');
  t.ok(api.requests.every((r) => r.endsWith('Bearer lab-token')));
  t.ok(api.requests.some((r) => /limit=500/.test(r)));
});

t.test('the CLI with --kubeconfig: same report as from the dump', async (t) => {
  const api = await fakeApi();
  t.teardown(() => api.server.close());
  const dir = await mkdtemp(join(tmpdir(), 'st-cluster-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kc = await kubeconfig(dir, api.url);
  const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'src/cli/main.ts'), 'diagnose', '--kubeconfig', kc, '--conntrack-file', join(FIX, 'lab-unprotected-at-removal.txt'), '--json'],
      { cwd: ROOT, timeout: 60_000, env: { PATH: process.env['PATH'] ?? '' } },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
  t.equal(out.code, 3, `exit 3: stale entries found; ${out.stderr}`);
  const report = JSON.parse(out.stdout);
  t.match(report, { stale: 11, endpoints: { services: 2, endpointSlices: 1 } });
  t.match(report.endpoints.from, /^cluster of /);
});

t.test('an API server that does not answer: a clear error after the timeout', async (t) => {
  const api = await fakeApi(() => true); // never responds
  t.teardown(() => {
    api.server.closeAllConnections();
    api.server.close();
  });
  const dir = await mkdtemp(join(tmpdir(), 'st-cluster-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await t.rejects(listServicesAndSlices({ kubeconfig: await kubeconfig(dir, api.url), timeoutMs: 300 }), /did not answer the Service\/EndpointSlice lists within 0.3s/);
});

t.test('a refused list is named with the API server\'s reason and the permission diagnose needs; both when both are refused', async (t) => {
  const forbidden = (resource: string) => (req: IncomingMessage, res: ServerResponse): boolean => {
    const what = req.url?.startsWith('/apis/discovery.k8s.io/') === true ? 'endpointslices.discovery.k8s.io' : 'services';
    if (resource !== 'both' && what !== resource) return false;
    res.statusCode = 403;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Forbidden', code: 403, message: `${what} is forbidden: User "system:serviceaccount:ops:diag" cannot list resource "${what}"` }));
    return true;
  };
  const dir = await mkdtemp(join(tmpdir(), 'st-cluster-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const NEEDS = ' (diagnose needs list on services and discovery.k8s.io endpointslices in all namespaces)';
  const failure = async (resource: string): Promise<string> => {
    const api = await fakeApi(forbidden(resource));
    t.teardown(() => api.server.close());
    return listServicesAndSlices({ kubeconfig: await kubeconfig(dir, api.url) }).then(
      () => 'listed',
      (e: unknown) => (e as Error).message,
    );
  };
  t.equal(await failure('services'), `cannot list Services: HTTP 403: services is forbidden: User "system:serviceaccount:ops:diag" cannot list resource "services"${NEEDS}`);
  t.equal(
    await failure('both'),
    `cannot list Services: HTTP 403: services is forbidden: User "system:serviceaccount:ops:diag" cannot list resource "services"; cannot list EndpointSlices: HTTP 403: endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:ops:diag" cannot list resource "endpointslices.discovery.k8s.io"${NEEDS}`,
    'both lists named, Services first, whichever answered first',
  );
});
