/** `safe-termination diagnose` as a user runs it: a real process, real files, a stand-in conntrack tool. */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIX = fileURLToPath(new URL('../fixtures/conntrack/', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}, input?: string): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [join(ROOT, 'src/cli/main.ts'), 'diagnose', ...args],
      { cwd: ROOT, timeout: 20_000, env: { PATH: process.env['PATH'] ?? '', ...env } },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

// Each case starts a few Node processes; the machine may be busy.
t.setTimeout(180_000);

const unprotected = ['--endpointslices', join(FIX, 'lab-unprotected-endpoints.json'), '--conntrack-file', join(FIX, 'lab-unprotected-at-removal.txt')];

t.test('text report: stale entries grouped by Service and protocol, with targets and states', async (t) => {
  const r = await cli(unprotected);
  t.equal(r.code, 3, 'exit 3: stale entries found');
  t.equal(r.stderr, '');
  t.match(r.stdout, /conntrack: 85 entries, 84 DNATed; for Services: 11 stale, 0 draining, 18 live, 55 closed/);
  t.match(r.stdout, /endpoints: 1 Services, 1 EndpointSlices/);
  t.match(r.stdout, /lab\/echo\s+udp\s+7\s+0\s+\d+\s+0\s+REPLIED 7\s+10\.244\.1\.2:53 \(gone\) ×7/);
  t.match(r.stdout, /lab\/echo\s+tcp\s+4\s+0\s+\d+\s+55\s+SYN_SENT 4\s+10\.244\.1\.2:8080 \(gone\) ×4/);
  t.match(r.stdout, /conntrack -D -p udp/);
});

t.test('--json: the full report, parseable', async (t) => {
  const r = await cli([...unprotected, '--json']);
  t.equal(r.code, 3, 'exit 3: stale entries found');
  const report = JSON.parse(r.stdout);
  t.match(report, { entries: 85, dnat: 84, stale: 11, draining: 0, endpoints: { services: 1, endpointSlices: 1 } });
  t.same(
    report.groups.map((g: { protocol: string; stale: number }) => [g.protocol, g.stale]),
    [
      ['udp', 7],
      ['tcp', 4],
    ],
  );
});

t.test('a protected pod: nothing stale; --all lists the draining entries', async (t) => {
  const args = ['--endpointslices', join(FIX, 'lab-protected-endpoints.json'), '--conntrack-file', join(FIX, 'lab-protected-at-removal.txt')];
  const plain = await cli(args);
  t.equal(plain.code, 0, 'exit 0: nothing stale (draining entries do not count)');
  t.match(plain.stdout, /No stale entries: every Service flow goes to a serving endpoint\./);
  const all = await cli([...args, '--all']);
  t.equal(all.code, 0);
  t.match(all.stdout, /lab\/echo\s+udp\s+0\s+5\s+/);
});

t.test('endpoints from stdin, Services from another file; env var for the conntrack file', async (t) => {
  const dump = JSON.parse(await readFile(join(FIX, 'lab-unprotected-endpoints.json'), 'utf8'));
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [svc, slice] = dump.items;
  await writeFile(join(dir, 'services.yaml'), JSON.stringify(svc));
  const r = await cli(['--endpointslices', '-', '--services', join(dir, 'services.yaml')], { SAFE_TERMINATION_CONNTRACK_FILE: join(FIX, 'lab-unprotected-at-removal.txt') }, JSON.stringify({ kind: 'List', items: [slice] }));
  t.equal(r.code, 3, r.stderr);
  t.match(r.stdout, /11 stale/);
  t.match(r.stdout, /stdin \+ .*services\.yaml/);
});

t.test('runs the conntrack tool when no file is given (a stand-in that records its arguments)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const fake = join(dir, 'conntrack');
  await writeFile(
    fake,
    `#!/bin/sh\necho "$@" >> ${join(dir, 'calls')}\ncase "$*" in *"-f ipv6"*) exit 0;; esac\ncat ${join(FIX, 'lab-unprotected-at-removal.txt')}\necho "conntrack v1.4.7 (conntrack-tools): 85 flow entries have been shown." >&2\n`,
  );
  await chmod(fake, 0o755);
  const r = await cli(['--endpointslices', join(FIX, 'lab-unprotected-endpoints.json'), '--conntrack-bin', fake, '--json']);
  t.equal(r.code, 3, r.stderr);
  t.equal(JSON.parse(r.stdout).stale, 11);
  t.same((await readFile(join(dir, 'calls'), 'utf8')).trim().split('\n'), ['-L -o extended', '-L -o extended -f ipv6'], 'asks for IPv6 separately only when the first listing had none');

  const denied = join(dir, 'denied');
  await writeFile(denied, '#!/bin/sh\necho "conntrack v1.4.7 (conntrack-tools): Operation not permitted" >&2\nexit 1\n');
  await chmod(denied, 0o755);
  const d = await cli(['--endpointslices', join(FIX, 'lab-unprotected-endpoints.json'), '--conntrack-bin', denied]);
  t.equal(d.code, 1);
  t.match(d.stderr, /Operation not permitted.*root or CAP_NET_ADMIN/);

  const missing = await cli(['--endpointslices', join(FIX, 'lab-unprotected-endpoints.json'), '--conntrack-bin', join(dir, 'nope')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /not found: install the conntrack tool.*--conntrack-file/);
});

t.test('usage errors name what is missing or wrong, exit 2', async (t) => {
  const none = await cli(['--conntrack-file', join(FIX, 'netns-extended.txt')]);
  t.equal(none.code, 2);
  t.match(none.stderr, /needs the current endpoints: --endpointslices FILE .* or --kubeconfig FILE/);
  const unreadable = await cli(['--endpointslices', '/nonexistent/x.yaml', '--conntrack-file', join(FIX, 'netns-extended.txt')]);
  t.equal(unreadable.code, 2);
  t.match(unreadable.stderr, /--endpointslices: cannot read \/nonexistent\/x\.yaml: ENOENT/);
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'bad.yaml'), 'items: [\n');
  const bad = await cli(['--endpointslices', join(dir, 'bad.yaml'), '--conntrack-file', join(FIX, 'netns-extended.txt')]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /is not YAML or JSON/);
  const flagTypo = await cli(['--endpointslice', 'x']);
  t.equal(flagTypo.code, 2);
  t.match(flagTypo.stderr, /unknown flag --endpointslice; did you mean --endpointslices\?/);
  const help = await cli(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /--conntrack-file/);
  t.match(help.stdout, /Exit status: 0 no stale entries, 3 stale entries found .* 1 error .* 2 usage/s);
});

t.test('warnings: no slices at all, Endpoints objects, lines that are not entries, unattributed DNAT', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'e.yaml'), 'kind: Endpoints\nmetadata: {name: x, namespace: y}\n');
  await writeFile(join(dir, 'ct.txt'), (await readFile(join(FIX, 'netns-extended.txt'), 'utf8')) + 'garbage line\n');
  const r = await cli(['--endpointslices', join(dir, 'e.yaml'), '--conntrack-file', join(dir, 'ct.txt')]);
  t.equal(r.code, 0);
  t.match(r.stderr, /no EndpointSlice in the input/);
  t.match(r.stderr, /v1 Endpoints objects are ignored/);
  t.match(r.stderr, /1 lines are not conntrack entries \(line 6:/);
  t.match(r.stdout, /4 DNATed entries go to destinations that match no Service in the input/);
});

t.test('exit status for scripts: 0 none stale, 3 stale found, 1 conntrack unreadable, 2 usage — never 3 without a report', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const endpoints = join(FIX, 'lab-unprotected-endpoints.json');
  const table = await readFile(join(FIX, 'lab-unprotected-at-removal.txt'), 'utf8');
  // Only the lines to live endpoints (10.244.1.3/.4) and closed TCP entries: nothing stale.
  const clean = table
    .split('\n')
    .filter((l) => l !== '' && (!/ src=10\.244\.1\.2 /.test(l) || /TIME_WAIT|CLOSE/.test(l)))
    .join('\n');
  await writeFile(join(dir, 'clean.txt'), clean + '\n');
  const none = await cli(['--endpointslices', endpoints, '--conntrack-file', join(dir, 'clean.txt')]);
  t.equal(none.code, 0, none.stderr);
  t.match(none.stdout, /0 stale/);
  // One stale UDP line added to the clean table: exit 3, with the report on stdout.
  const stale = table.split('\n').find((l) => / udp /.test(l) && / src=10\.244\.1\.2 /.test(l));
  t.ok(stale, 'the fixture has a stale UDP entry');
  await writeFile(join(dir, 'one.txt'), `${clean}\n${stale}\n`);
  const one = await cli(['--endpointslices', endpoints, '--conntrack-file', join(dir, 'one.txt'), '--json']);
  t.equal(one.code, 3);
  t.equal(JSON.parse(one.stdout).stale, 1);
  // An empty table is clean; a table that cannot be listed is an error, not "clean".
  await writeFile(join(dir, 'empty.txt'), '');
  t.equal((await cli(['--endpointslices', endpoints, '--conntrack-file', join(dir, 'empty.txt')])).code, 0);
  const failing = join(dir, 'conntrack');
  await writeFile(failing, '#!/bin/sh\necho "conntrack v1.4.7 (conntrack-tools): Operation not permitted" >&2\nexit 1\n');
  await chmod(failing, 0o755);
  const broken = await cli(['--endpointslices', endpoints, '--conntrack-bin', failing]);
  t.equal(broken.code, 1);
  t.equal(broken.stdout, '', 'no report when conntrack could not be read');
  const dirAsFile = await cli(['--endpointslices', endpoints, '--conntrack-file', dir]);
  t.equal(dirAsFile.code, 2);
  t.match(dirAsFile.stderr, /--conntrack-file: cannot read .*: EISDIR/);
  const missing = await cli(['--endpointslices', endpoints, '--conntrack-file', join(dir, 'nope.txt')]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /--conntrack-file: cannot read .*nope\.txt: ENOENT/);
});

t.test('--conntrack-file -: the listing streamed from stdin; event lines (conntrack -E) still understood', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const table = await readFile(join(FIX, 'lab-unprotected-at-removal.txt'), 'utf8');
  // A [NEW]-tagged copy of one stale line (conntrack -E output) counts once more.
  const stale = table.split('\n').find((l) => / udp /.test(l) && / src=10\.244\.1\.2 /.test(l)) ?? '';
  const input = `${table}[NEW] ${stale.replace(/^ipv4\s+2\s+/, '').replace(/ \d+ src=/, ' src=')}\n`;
  const r = await cli(['--endpointslices', join(FIX, 'lab-unprotected-endpoints.json'), '--conntrack-file', '-', '--json'], {}, input);
  t.equal(r.code, 3, r.stderr);
  t.equal(r.stderr, '');
  t.match(JSON.parse(r.stdout), { entries: 86, stale: 12 });
});

t.test("the node's conntrack timeouts next to the write-up's, with the sleep they cost (text and JSON)", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'st-diagnose-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const proc = join(dir, 'netfilter');
  await mkdir(proc);
  for (const [name, v] of Object.entries({ udp_timeout: 30, udp_timeout_stream: 120, tcp_timeout_time_wait: 120, tcp_timeout_close_wait: 60, tcp_timeout_established: 432000 })) {
    await writeFile(join(proc, `nf_conntrack_${name}`), `${v}\n`);
  }
  const text = await cli([...unprotected, '--conntrack-proc-dir', proc]);
  t.equal(text.code, 3, text.stderr);
  t.match(text.stdout, /Conntrack timeouts on this node \(.*netfilter\), the write-up's values/);
  t.match(text.stdout, /\nudp-timeout +30s +10s +UDP pods: 35s → 15s +20s per termination\n/);
  t.match(text.stdout, /\nudp-timeout-stream +120s +30s +UDP pods with udp-streams: 125s → 35s +90s per termination\n/);
  t.match(text.stdout, /\ntcp-timeout-established +432000s +3600s +no sleep +not advised/);
  t.match(text.stdout, /kube-proxy's conntrack\.\* fields/);
  const json = JSON.parse((await cli([...unprotected, '--json'], { SAFE_TERMINATION_CONNTRACK_PROC_DIR: proc })).stdout);
  t.match(json.timeouts, { from: proc, propagationDelaySeconds: 5, maxSleepSeconds: 300 });
  t.match(json.timeouts.values[0], { key: 'udp-timeout', current: 30, recommended: 10, savedSeconds: 20 });
  // A node tuned already: nothing to save.
  await writeFile(join(proc, 'nf_conntrack_udp_timeout'), '10\n');
  t.match((await cli([...unprotected, '--conntrack-proc-dir', proc])).stdout, /\nudp-timeout +10s +10s +UDP pods: 15s → 15s +nothing\n/);
  const none = await cli([...unprotected, '--conntrack-proc-dir', join(dir, 'absent')]);
  t.match(none.stdout, /Conntrack timeouts: none readable in .*absent/);
});
