/**
 * The CLI's Services: those in the same input — one file, a directory
 * (-R), stdin — and those of `--services FILE` (a `kubectl get services -A -o yaml`
 * List) are matched against each template's labels in the workload's namespace;
 * `explain` names the Service that brought each protocol.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from './run.ts';

const dir = mkdtempSync(join(tmpdir(), 'st-cli-services-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const emptyProc = join(dir, 'proc');
mkdirSync(emptyProc);
const PIN = ['--conntrack-proc-dir', emptyProc, '--static-udp-timeout', '30'];

const deployment = (name: string, namespace?: string) => `apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${name}
${namespace === undefined ? '' : `  namespace: ${namespace}\n`}spec:
  selector:
    matchLabels: {app: ${name}}
  template:
    metadata:
      labels: {app: ${name}}
    spec:
      containers:
      - name: ${name}
        image: registry.example.com/${name}:1
`;
const service = (name: string, selector: string, namespace?: string, extra = '') => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
${namespace === undefined ? '' : `  namespace: ${namespace}\n`}spec:
  selector: {app: ${selector}}${extra}
  ports:
  - {port: 53, protocol: UDP}
`;
/** What `kubectl get services -A -o yaml` prints: a v1 List of Services with every namespace set. */
const dump = (items: Array<{ name: string; namespace: string; selector?: string; clusterIP?: string }>) =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'List',
    metadata: { resourceVersion: '' },
    items: items.map((i) => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: i.name, namespace: i.namespace, resourceVersion: '123' },
      spec: { clusterIP: i.clusterIP ?? '10.96.0.10', ...(i.selector === undefined ? {} : { selector: { app: i.selector } }), ports: [{ port: 53, protocol: 'UDP', targetPort: 53 }], type: 'ClusterIP' },
      status: { loadBalancer: {} },
    })),
  });

const sleepOf = (yaml: string): number[] => [...yaml.matchAll(/seconds: (\d+)/g)].map((m) => Number(m[1]));

t.test('a Service in another file of the same directory (-R) counts', async (t) => {
  const d = join(dir, 'app');
  mkdirSync(join(d, 'svc'), { recursive: true });
  writeFileSync(join(d, 'deploy.yaml'), deployment('dns', 'infra'));
  writeFileSync(join(d, 'svc', 'service.yaml'), service('dns', 'dns', 'infra'));
  const flat = await runCli('inject', ['-f', d, ...PIN]);
  t.equal(flat.code, 0, flat.stderr);
  t.same(sleepOf(flat.stdout), [5], 'without -R the Service in the subdirectory is not read');
  const deep = await runCli('inject', ['-f', d, '-R', ...PIN]);
  t.equal(deep.code, 0, deep.stderr);
  t.same(sleepOf(deep.stdout), [35], 'with -R: UDP sizing');
});

t.test('stdin, and namespaces: a Service applies to its own namespace; none counts as default', async (t) => {
  const text = [deployment('dns', 'infra'), service('dns', 'dns', 'other'), deployment('cache'), service('cache', 'cache', 'default'), deployment('resolver'), service('resolver', 'resolver')].join('---\n');
  const run = await runCli('inject', ['-f', '-', ...PIN], { stdin: text });
  t.equal(run.code, 0, run.stderr);
  t.same(sleepOf(run.stdout), [5, 35, 35], 'infra/dns: the Service is in another namespace; cache and resolver: default');
});

t.test('--services FILE: a kubectl dump', async (t) => {
  const file = join(dir, 'services.json');
  writeFileSync(
    file,
    dump([
      { name: 'dns', namespace: 'infra', selector: 'dns' },
      { name: 'dns-headless', namespace: 'infra', selector: 'peer', clusterIP: 'None' },
      { name: 'kubernetes', namespace: 'default' },
    ]),
  );
  const manifest = join(dir, 'deploys.yaml');
  writeFileSync(manifest, [deployment('dns', 'infra'), deployment('peer', 'infra')].join('---\n'));
  const run = await runCli('inject', ['-f', manifest, '--services', file, ...PIN, '-v']);
  t.equal(run.code, 0, run.stderr);
  t.same(sleepOf(run.stdout), [35, 5], 'dns: UDP from the dump; peer: its Service is headless');
  t.match(run.stderr, /read 3 Services from .*services\.json, 1 matched against the pods' labels; not counted: infra\/dns-headless \(headless\), default\/kubernetes \(no-selector\)/);
  t.notMatch(run.stdout, /kind: Service/, 'the dump is not part of the output');

  const explained = await runCli('explain', ['-f', manifest, '--services', file, ...PIN]);
  t.match(explained.stdout, /protocols +udp \(Service infra\/dns\)\n/, 'explain names the Service of each protocol');
  const json = JSON.parse((await runCli('explain', ['-f', manifest, '--services', file, '-o', 'json', ...PIN])).stdout);
  t.same(json.objects[0].plan.protocolOrigins, { udp: { ports: false, services: ['infra/dns'] } });

  const missing = await runCli('inject', ['-f', manifest, '--services', join(dir, 'nope.yaml'), ...PIN]);
  t.equal(missing.code, 1, 'a missing --services file is an input problem');
  t.match(missing.stderr, /no such file \(--services\)/);
  t.equal(missing.stdout, '');
});

t.test('a Service in the input wins over the dump\'s of the same name', async (t) => {
  const file = join(dir, 'dump2.json');
  writeFileSync(file, dump([{ name: 'dns', namespace: 'infra', selector: 'dns' }]));
  const text = [deployment('dns', 'infra'), service('dns', 'dns', 'infra', '\n  clusterIP: None')].join('---\n');
  const run = await runCli('inject', ['-f', '-', '--services', file, ...PIN], { stdin: text });
  t.equal(run.code, 0, run.stderr);
  t.same(sleepOf(run.stdout), [5], 'the manifest makes it headless: it no longer counts');
});
