/**
 * `safe-termination inject` as a user runs it: inputs and outputs, exit codes,
 * in-place writes, the conntrack sources and the flags shared with `serve`.
 */
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { parseAllDocuments } from 'yaml';
import { runCli, spawnCli } from './run.ts';

const FIXTURES = resolve(import.meta.dirname, '../fixtures/inject');
const fixture = (name: string): string => readFileSync(join(FIXTURES, name), 'utf8');

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'st-inject-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** An empty sysctl directory: no local values, the static ones answer. */
function noProc(t: Test): string[] {
  return ['--conntrack-proc-dir', tempDir(t)];
}

const UDP_POD = `apiVersion: v1
kind: Pod
metadata:
  name: dns
spec:
  containers:
  - name: dns
    image: registry.example.com/dns:1
    ports:
    - containerPort: 53
      protocol: UDP
`;

function record(text: string, docIndex = 0): any {
  const doc = parseAllDocuments(text)[docIndex]!.toJS();
  const meta = doc.kind === 'Pod' ? doc.metadata : doc.spec.template.metadata;
  return JSON.parse(meta.annotations['safe-termination.io/injected']);
}

t.test('the real command: stdin to stdout, quiet on success, exit 0', async (t) => {
  const res = await spawnCli(['inject', '-f', '-', ...noProc(t)], { stdin: fixture('pod.yaml') });
  t.equal(res.code, 0);
  t.equal(res.stderr, '', 'nothing on stderr');
  t.equal(res.stdout, fixture('pod.injected.yaml'));
});

t.test('exit codes: 2 for usage errors, 1 for invalid input', async (t) => {
  const cases: Array<[string[], number, RegExp]> = [
    [['inject'], 2, /-f is required/],
    [['inject', '-f', 'x.yaml', '--no-such-flag'], 2, /unknown flag --no-such-flag/],
    [['inject', '-f', 'x.yaml', '-z'], 2, /unknown flag -z/],
    [['inject', '-f', 'x.yaml', 'extra'], 2, /unexpected argument "extra"/],
    [['inject', '-f', 'x.yaml', '--quiet', '--verbose'], 2, /exclude each other/],
    [['inject', '-f', '-', '--in-place'], 2, /cannot rewrite stdin/],
    [['inject', '-f', 'x.yaml', '--in-place', '-o', 'y.yaml'], 2, /exclude each other/],
    [['inject', '-f', 'x.yaml', '--propagation-delay', '1.5s'], 2, /--propagation-delay: invalid value "1.5s"/],
    [['inject', '-f', 'x.yaml', '--conntrack', 'udp=30'], 2, /--conntrack: invalid value "udp=30"; expected comma-separated key=seconds/],
    [['explain', '-f', 'x.yaml', '-o', 'yaml'], 2, /--output: invalid value "yaml"; expected one of text, json/],
    [['inject', '-f', join(FIXTURES, 'no-such-file.yaml')], 1, /no-such-file\.yaml: no such file or directory/],
    [['inject', '-f', join(FIXTURES, 'invalid-yaml.yaml')], 1, /invalid-yaml\.yaml:8: invalid YAML/],
  ];
  for (const [argv, code, message] of cases) {
    const res = await runCli(argv[0] as 'inject' | 'explain', argv.slice(1));
    t.equal(res.code, code, argv.join(' '));
    t.match(res.stderr, message, argv.join(' '));
    t.equal(res.stdout, '', `${argv.join(' ')}: nothing on stdout`);
  }
  const main = await spawnCli(['inject']);
  t.equal(main.code, 2, 'the real command exits 2 on a usage error');
  t.match(main.stderr, /Run 'safe-termination inject --help'/);
});

t.test('--help of each subcommand, with examples; the main usage lists them', async (t) => {
  for (const cmd of ['inject', 'explain'] as const) {
    const res = await runCli(cmd, ['--help']);
    t.equal(res.code, 0);
    t.match(res.stdout, /Examples:\n {2}safe-termination /);
    t.match(res.stdout, /--conntrack/);
    t.match(res.stdout, /--from-node-annotations/);
    t.match(res.stdout, /--propagation-delay {2}\(SAFE_TERMINATION_PROPAGATION_DELAY, default 5s\)/, 'the model flags of serve');
    t.match(res.stdout, /Exit status: 0 .*; 1 .*\n.*2 wrong usage/s);
  }
  const usage = await spawnCli(['--help']);
  t.match(usage.stdout, /\n {2}inject {4}/);
  t.match(usage.stdout, /\n {2}explain {3}/);
});

t.test('--in-place rewrites only files that change, keeps their mode, and writes nothing when any input fails', async (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'good.yaml');
  const same = join(dir, 'opt-out.yaml');
  const bad = join(dir, 'bad.yaml');
  cpSync(join(FIXTURES, 'deployment.yaml'), good);
  cpSync(join(FIXTURES, 'opt-out.yaml'), same);
  cpSync(join(FIXTURES, 'invalid-annotation.yaml'), bad);
  chmodSync(good, 0o640);

  const failed = await runCli('inject', ['-f', good, '-f', same, '-f', bad, '--in-place', ...noProc(t)]);
  t.equal(failed.code, 1);
  t.match(failed.stderr, /bad\.yaml:29: Deployment shop\/broken: annotation safe-termination\.io\/prestop-sleep: invalid value "1\.5s"/);
  t.match(failed.stderr, /2 problems; nothing written/);
  t.equal(readFileSync(good, 'utf8'), fixture('deployment.yaml'), 'the valid file is not written either');

  const sameMtime = statSync(same).mtimeMs;
  const ok = await runCli('inject', ['-f', good, '-f', same, '-i', ...noProc(t)]);
  t.equal(ok.code, 0);
  t.equal(ok.stdout, '', 'in place: nothing on stdout');
  t.equal(readFileSync(good, 'utf8'), fixture('deployment.injected.yaml'));
  t.equal(statSync(good).mode & 0o777, 0o640, 'file mode kept');
  t.equal(readFileSync(same, 'utf8'), fixture('opt-out.yaml'));
  t.equal(statSync(same).mtimeMs, sameMtime, 'an unchanged file is not rewritten');

  const again = await runCli('inject', ['-f', good, '--in-place', '--verbose', ...noProc(t)]);
  t.equal(readFileSync(good, 'utf8'), fixture('deployment.injected.yaml'), 'idempotent in place');
  t.match(again.stderr, /Deployment shop\/web: unchanged, already injected/);
  t.match(again.stderr, /rewrote 0 of 1 file/);
});

t.test('-o writes a file; directories are read by name, -R into subdirectories; outputs join into one stream', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'sub'));
  cpSync(join(FIXTURES, 'pod.yaml'), join(dir, 'a-pod.yaml'));
  cpSync(join(FIXTURES, 'checkout.json'), join(dir, 'b-checkout.json'));
  writeFileSync(join(dir, 'notes.txt'), 'not a manifest');
  cpSync(join(FIXTURES, 'replicaset.yaml'), join(dir, 'sub', 'rs.yml'));
  const out = join(tempDir(t), 'out.yaml');

  const flat = await runCli('inject', ['-f', dir, '-o', out, ...noProc(t)]);
  t.equal(flat.code, 0);
  t.equal(flat.stdout, '');
  const text = readFileSync(out, 'utf8');
  t.equal(text, `${fixture('pod.injected.yaml')}---\n${fixture('checkout.injected.json')}`);
  const docs = parseAllDocuments(text);
  t.same(docs.map((d: any) => d.toJS().kind), ['Pod', 'Deployment'], 'one valid YAML stream (JSON is YAML)');

  const deep = await runCli('inject', ['-f', dir, '-R', ...noProc(t)]);
  t.equal(parseAllDocuments(deep.stdout).length, 3, 'with -R the subdirectory too');
  t.match(deep.stdout, /kind: ReplicaSet/);

  const empty = join(dir, 'sub', 'empty');
  mkdirSync(empty);
  const none = await runCli('inject', ['-f', empty]);
  t.equal(none.code, 1);
  t.match(none.stderr, /no \.yaml, \.yml, \.json files in this directory/);
});

t.test('--conntrack values win over every other source and are recorded as static', async (t) => {
  const res = await runCli('inject', ['-f', '-', '--conntrack', 'udp-timeout=45,nf_conntrack_udp_timeout_stream=2m', ...noProc(t)], { stdin: UDP_POD });
  t.equal(res.code, 0);
  const r = record(res.stdout);
  t.equal(r.sleepSeconds, 50);
  t.equal(r.gracePeriodSeconds, 80);
  t.same(r.conntrack, { 'udp-timeout': { value: 45, source: 'static' } });
});

t.test('by default this machine\'s /proc/sys (source local), then the static values', async (t) => {
  const proc = tempDir(t);
  writeFileSync(join(proc, 'nf_conntrack_udp_timeout'), '60\n');
  const res = await runCli('inject', ['-f', '-', '--conntrack-proc-dir', proc], { stdin: UDP_POD });
  t.same(record(res.stdout).conntrack, { 'udp-timeout': { value: 60, source: 'local' } });
  t.equal(record(res.stdout).sleepSeconds, 65);

  const streams = UDP_POD.replace('  name: dns\n', '  name: dns\n  annotations:\n    safe-termination.io/udp-streams: "true"\n');
  const fallback = await runCli('inject', ['-f', '-', '--conntrack-proc-dir', proc, '--static-udp-timeout-stream', '100', '-v'], { stdin: streams });
  t.same(record(fallback.stdout).conntrack, { 'udp-timeout-stream': { value: 100, source: 'static' } });
  t.match(fallback.stderr, /note: not readable in .*: nf_conntrack_udp_timeout_stream/);
});

t.test('--from-node-annotations: the maximum over the nodes the pod can land on, as the webhook takes it', async (t) => {
  const dir = tempDir(t);
  const nodes = join(dir, 'nodes.yaml');
  const node = (name: string, pool: string, udp: string | undefined) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { pool, 'kubernetes.io/hostname': name }, annotations: udp === undefined ? {} : { 'conntrack.safe-termination.io/udp-timeout': udp } },
  });
  writeFileSync(nodes, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [node('dns-1', 'dns', '17'), node('dns-2', 'dns', '20'), node('web-1', 'web', '45'), node('bad', 'web', 'soon')] }));
  const pinned = UDP_POD.replace('spec:\n', 'spec:\n  nodeSelector:\n    pool: dns\n');
  const onDns = await runCli('inject', ['-f', '-', '--from-node-annotations', nodes, '-v'], { stdin: pinned });
  t.equal(onDns.code, 0);
  t.same(record(onDns.stdout).conntrack, { 'udp-timeout': { value: 20, source: 'nodes' } }, 'max over the dns pool');
  t.match(onDns.stderr, /note: read 4 nodes from .*nodes\.yaml/);
  t.match(onDns.stderr, /node bad: annotation conntrack\.safe-termination\.io\/udp-timeout "soon" is not whole seconds; ignored/);
  const anywhere = await runCli('inject', ['-f', '-', '--from-node-annotations', nodes], { stdin: UDP_POD });
  t.same(record(anywhere.stdout).conntrack, { 'udp-timeout': { value: 45, source: 'nodes' } }, 'no constraint: all nodes');
  // A node without the annotation may receive the pod too: it counts with its fallback (static 30).
  const onWeb = await runCli('inject', ['-f', '-', '--from-node-annotations', nodes, '--static-udp-timeout', '50'], { stdin: pinned.replace('pool: dns', 'pool: web') });
  t.same(record(onWeb.stdout).conntrack, { 'udp-timeout': { value: 50, source: 'static' } });

  const explained = await runCli('explain', ['-f', '-', '--from-node-annotations', nodes], { stdin: pinned });
  t.match(explained.stdout, /udp-timeout +20s {2}nodes: max over 2 candidate nodes, 2 annotated, in .*nodes\.yaml {2}← used/);
  t.match(explained.stdout, /\+ 20s udp-timeout \(nodes\) = 25s/);

  const missing = await runCli('inject', ['-f', '-', '--from-node-annotations', join(dir, 'none.yaml')], { stdin: UDP_POD });
  t.equal(missing.code, 1);
  t.match(missing.stderr, /none\.yaml: no such file \(--from-node-annotations\)/);
  writeFileSync(join(dir, 'pods.yaml'), UDP_POD);
  const notNodes = await runCli('inject', ['-f', '-', '--from-node-annotations', join(dir, 'pods.yaml')], { stdin: UDP_POD });
  t.equal(notNodes.code, 1);
  t.match(notNodes.stderr, /no Node objects found/);
});

t.test('the model flags are serve\'s, from flags or the same environment variables; CLI flags are not read from it', async (t) => {
  const env = { SAFE_TERMINATION_PROPAGATION_DELAY: '10s', SAFE_TERMINATION_OUTPUT: '/nonexistent/out.yaml', SAFE_TERMINATION_IN_PLACE: 'true' };
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: fixture('pod.yaml'), env });
  t.equal(res.code, 0);
  t.equal(record(res.stdout).sleepSeconds, 10);
  const flag = await runCli('inject', ['-f', '-', '--propagation-delay', '7', '--kube-version', '1.29', ...noProc(t)], { stdin: fixture('pod.yaml'), env });
  t.equal(record(flag.stdout).sleepSeconds, 7, 'a flag beats the environment');
  t.equal(record(flag.stdout).mode, 'exec', '--kube-version is --kubernetes-version');
  t.match(flag.stdout, /command:\n +- sleep\n +- "7"/);
});

t.test('invalid annotations: denied by default, ignored with a warning under --invalid-annotations ignore', async (t) => {
  const path = join(FIXTURES, 'invalid-annotation.yaml');
  const res = await runCli('inject', ['-f', path, '--invalid-annotations', 'ignore', ...noProc(t)]);
  t.equal(res.code, 0);
  t.match(res.stderr, /Deployment shop\/broken: warning: safe-termination\.io\/prestop-sleep invalid, default used/);
  t.equal(record(res.stdout, 1).sleepSeconds, 5);
  const quiet = await runCli('inject', ['-f', path, '--invalid-annotations', 'ignore', '-q', ...noProc(t)]);
  t.equal(quiet.stderr, '', '--quiet silences warnings');
  t.equal(quiet.stdout, res.stdout);
});

t.test('Job pods are skipped unless --inject-job-pods, as the webhook skips pods owned by a Job', async (t) => {
  const job = fixture('job.yaml');
  const skipped = await runCli('inject', ['-f', '-', '-v', ...noProc(t)], { stdin: job });
  t.equal(skipped.stdout, job);
  t.match(skipped.stderr, /Job shop\/migrate: skipped \(job-pod\): owned by Job migrate/);
  const injected = await runCli('inject', ['-f', '-', '--inject-job-pods', ...noProc(t)], { stdin: job });
  t.equal(record(injected.stdout).sleepSeconds, 5);
});

t.test('formatting: CRLF line endings, typed lists, other API groups and comment-only input', async (t) => {
  const crlf = fixture('pod.yaml').replaceAll('\n', '\r\n');
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: crlf });
  t.equal(res.stdout, fixture('pod.injected.yaml').replaceAll('\n', '\r\n'), 'CRLF kept, injected lines too');

  const typedList = `apiVersion: apps/v1
kind: DeploymentList
items:
- metadata:
    name: a
  spec:
    template:
      spec:
        containers:
        - name: a
          image: a:1
`;
  const listed = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: typedList });
  t.match(listed.stdout, /seconds: 5/, 'items of a DeploymentList are Deployments');

  // A kind of another API group with a pod template at spec.template is a workload
  // like any: injected exactly as the apps/v1 Deployment is.
  const apps = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: fixture('deployment.yaml') });
  const crd = fixture('deployment.yaml').replace('apiVersion: apps/v1', 'apiVersion: example.com/v1');
  const other = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: crd });
  t.equal(other.stdout, apps.stdout.replace('apiVersion: apps/v1', 'apiVersion: example.com/v1'), 'a pod template at spec.template of another API group is injected');
  t.not(other.stdout, crd);
  // Kubernetes' own groups are not guessed at: a Deployment under batch/v1 is no workload.
  const misplaced = fixture('deployment.yaml').replace('apiVersion: apps/v1', 'apiVersion: batch/v1');
  const kept = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: misplaced });
  t.equal(kept.stdout, misplaced, 'a Deployment of a Kubernetes group that has none passes through');
  t.equal(kept.stderr, '');

  const comments = '# nothing here yet\n';
  const empty = await runCli('inject', ['-f', '-'], { stdin: comments });
  t.equal(empty.code, 0);
  t.equal(empty.stdout, comments);
});

t.test('formatting: two list indentation styles in one file and helm\'s `key:\\n  {}` keep every untouched line', async (t) => {
  const mixed = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports:
      - containerPort: 80
    args:
      - --port=80
`;
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: mixed });
  t.equal(res.stderr, '', 'not printed anew');
  t.equal(
    res.stdout,
    `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    safe-termination.io/injected: '${JSON.stringify(record(res.stdout))}'
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports:
      - containerPort: 80
    args:
      - --port=80
    lifecycle:
      preStop:
        sleep:
          seconds: 5
  terminationGracePeriodSeconds: 35
`,
  );

  const helm = `apiVersion: v1
kind: Pod
metadata:
  name: chart
  annotations:
    {}
spec:
  containers:
    - name: chart
      image: "nginx:1.16.0"
      resources:
        {}
`;
  const res2 = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: helm });
  t.equal(res2.stderr, '', 'not printed anew');
  t.equal(
    res2.stdout,
    `apiVersion: v1
kind: Pod
metadata:
  name: chart
  annotations:
    safe-termination.io/injected: '${JSON.stringify(record(res2.stdout))}'
spec:
  containers:
    - name: chart
      image: "nginx:1.16.0"
      resources:
        {}
      lifecycle:
        preStop:
          sleep:
            seconds: 5
  terminationGracePeriodSeconds: 35
`,
    'the empty flow map that gains a key becomes a block mapping; the others stay',
  );
});

t.test('a flow collection spread over lines that gains a key is written on one line; the other lines are kept', async (t) => {
  const flow = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: [\n    {name: a, image: b}\n  ]\n';
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: flow });
  t.equal(res.code, 0);
  t.equal(res.stderr, '');
  const lines = res.stdout.split('\n');
  t.same(lines.slice(0, 4), ['apiVersion: v1', 'kind: Pod', 'metadata:', '  name: p']);
  t.same(lines.slice(6), ['spec:', '  containers: [ { name: a, image: b, lifecycle: { preStop: { sleep: { seconds: 5 } } } } ]', '  terminationGracePeriodSeconds: 35', '']);
});

t.test('a document whose formatting cannot be kept around the change is printed anew, with a warning', async (t) => {
  // A comment inside a flow mapping: the printer moves it, so the lines around the change are not recognisable.
  const flow = 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: a\n    image: b\n    lifecycle: {postStart: {exec: {command: [x]}},\n      # c\n    }\n';
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: flow });
  t.equal(res.code, 0);
  t.equal(res.stderr, '<stdin>: warning: document 1 was printed anew: its original formatting could not be kept around the change\n');
  t.match(res.stdout, /lifecycle: \{ postStart: \{ exec: \{ command: \[ x \] \} \}, preStop: \{ sleep: \{ seconds: 5 \} \} \} # c/);
  const again = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: res.stdout });
  t.equal(again.stdout, res.stdout);
  t.equal(again.stderr, '', 'nothing to reprint the second time');
  t.equal((await runCli('inject', ['-f', '-', '-o', '-', ...noProc(t)], { stdin: flow })).stdout, res.stdout, '-o - is stdout');
});

t.test('a pod template reached through a YAML alias is refused, not half-edited', async (t) => {
  const aliased = `x-containers: &containers
- name: app
  image: app:1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: a
spec:
  template:
    spec:
      containers:
      - name: app
        image: app:1
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: b
spec:
  template:
    spec:
      containers: &c
      - name: app
        image: app:1
      initContainers: *c
`;
  const res = await runCli('inject', ['-f', '-', ...noProc(t)], { stdin: aliased });
  t.equal(res.code, 1);
  t.match(res.stderr, /cannot inject: the edit would also change other parts of the document/);
  t.equal(res.stdout, '');
});

t.test('--kubeconfig with a kubeconfig that cannot be loaded is a usage error', async (t) => {
  const res = await runCli('inject', ['-f', '-', '--kubeconfig', join(tempDir(t), 'missing')], { stdin: UDP_POD });
  t.equal(res.code, 2);
  t.match(res.stderr, /--kubeconfig: cannot load/);
  const both = await runCli('inject', ['-f', '-', '--kubeconfig', 'x', '--from-node-annotations', 'y'], { stdin: UDP_POD });
  t.equal(both.code, 2);
  t.match(both.stderr, /exclude each other/);
});
