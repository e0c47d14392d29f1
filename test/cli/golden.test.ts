/**
 * Golden files, run through both doors (Istio's pkg/kube/inject testdata style).
 *
 * Every `test/fixtures/inject/NAME.yaml|json` is an input; `NAME.flags` (one
 * line) adds flags. Its goldens, written by `UPDATE_GOLDEN=1 npx tap test/cli/golden.test.ts`:
 *   NAME.injected.yaml|json   inject's output (exit 0)
 *   NAME.error.txt            inject's stderr (exit 1: invalid input)
 *   NAME.stderr.txt           inject's warnings on a success
 *   NAME.explain.txt          explain's table
 * A golden without its input, or of the wrong kind, fails the suite.
 *
 * For each input: the output equals its golden; inject on the output changes
 * nothing; the only lines of the input that changed are the injection's, also
 * when a YAML input is laid out otherwise (lists flush or indented, helm's
 * `key:` / `{}`, CRLF); and
 * every pod of the input, posted to a real TLS webhook started with the same
 * flags, patched with its answer, equals the pod of the CLI's output and is a
 * valid v1 Pod. Conntrack values are pinned by flags: nothing depends on this
 * machine's /proc.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import t from 'tap';
import type { Test } from 'tap';
import { parseAllDocuments } from 'yaml';
import { matchLines } from '../../src/manifest/merge.ts';
import { applyAnswer } from '../support/patch.ts';
import type { ReviewAnswer } from '../support/patch.ts';
import { podProblems } from '../support/pod-validation.ts';
import { reviewOf } from '../support/pods.ts';
import { makeCerts, startTestWebhook } from '../support/webhook.ts';
import type { TestWebhook } from '../support/webhook.ts';
import { trimService } from '../../src/cluster/service-informer.ts';
import { readService, ServiceIndex } from '../../src/core/services.ts';
import { localFactsWiring } from '../../src/host/local-facts.ts';
import { manifestPods, manifestServices } from './doors.ts';
import { runCli } from './run.ts';

const DIR = resolve(import.meta.dirname, '../fixtures/inject');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';
const INPUT = /^([a-z0-9-]+)\.(yaml|json)$/;
const GOLDEN = /^([a-z0-9-]+)\.(injected\.yaml|injected\.json|error\.txt|stderr\.txt|explain\.txt|flags)$/;

const emptyProc = mkdtempSync(join(tmpdir(), 'st-golden-proc-'));
t.teardown(() => rmSync(emptyProc, { recursive: true, force: true }));
/** Both doors get these: no /proc values (an empty dir), the Linux defaults as static values. */
const PIN = [
  '--conntrack-proc-dir', emptyProc,
  '--static-udp-timeout', '30',
  '--static-udp-timeout-stream', '120',
  '--static-tcp-timeout-time-wait', '120',
  '--static-tcp-timeout-close-wait', '60',
  '--static-tcp-timeout-established', '432000',
];

const files = readdirSync(DIR).sort();
const inputs = files.filter((f) => INPUT.test(f));

t.test('every file in the fixtures directory is an input or a golden of one', async (t) => {
  const names = new Set(inputs.map((f) => (INPUT.exec(f) as RegExpExecArray)[1]));
  t.equal(names.size, inputs.length, 'input names are unique across extensions (they name the goldens)');
  for (const f of files) {
    if (INPUT.test(f) || f === 'README.md') continue;
    const m = GOLDEN.exec(f);
    t.ok(m !== null && names.has(m[1]), `${f} belongs to an input`);
  }
  t.ok(inputs.length >= 15, `${inputs.length} fixtures found`);
});

const certs = makeCerts();
const webhooks = new Map<string, Promise<TestWebhook>>();
t.teardown(async () => {
  for (const w of webhooks.values()) await (await w).close();
  certs.remove();
});
/**
 * A webhook started with `flags`; given Services (those of the input), its facts
 * know them as its Service informer would: trimmed as the informer trims them, in
 * the same index.
 */
function webhookWith(flags: readonly string[], services: ReadonlyArray<Record<string, any>> = []): Promise<TestWebhook> {
  const key = `${flags.join(' ')}|${services.map((s) => `${s['metadata'].namespace}/${s['metadata'].name}`).join(',')}`;
  let w = webhooks.get(key);
  if (w === undefined) {
    const index = new ServiceIndex();
    for (const svc of services) {
      const reading = readService(trimService(svc));
      if (reading !== undefined) index.apply(reading);
    }
    w = startTestWebhook({
      args: [...PIN, ...flags],
      certs,
      ...(services.length === 0
        ? {}
        : {
            wireFacts: async (config, log) => {
              const local = await localFactsWiring(config, log);
              return { ...local, facts: { ...local.facts, servicesFor: (ns, labels) => index.match(ns, labels) } };
            },
          }),
    });
    webhooks.set(key, w);
  }
  return w;
}

/** Compare with the golden, or (UPDATE_GOLDEN=1) write it; a golden not produced is stale. */
function golden(t: Test, file: string, actual: string | undefined): void {
  const path = join(DIR, file);
  if (UPDATE) {
    if (actual === undefined) {
      if (existsSync(path)) unlinkSync(path);
    } else writeFileSync(path, actual);
    return;
  }
  if (actual === undefined) {
    t.notOk(existsSync(path), `${file} is stale (run UPDATE_GOLDEN=1)`);
    return;
  }
  t.ok(existsSync(path), `${file} exists (run UPDATE_GOLDEN=1 to create it)`);
  if (existsSync(path)) t.equal(actual, readFileSync(path, 'utf8'), `${file} matches`);
}

/** Lines of a preStop block (the line `preStop:` and everything indented under it). */
function preStopLines(lines: readonly string[]): Set<number> {
  const out = new Set<number>();
  let inside: number | undefined;
  lines.forEach((line, i) => {
    const indent = line.length - line.trimStart().length;
    if (inside !== undefined && line.trim() !== '' && indent <= inside) inside = undefined;
    if (/^\s*preStop:/.test(line)) inside = indent;
    if (inside !== undefined) out.add(i);
  });
  return out;
}

/**
 * The lines of `input` that `output` does not keep, except the injection's:
 * the grace period, the record, a replaced preStop hook (and a JSON comma), and
 * a flow mapping that gained a key (`{}` becomes a block; another is written on
 * its line anew).
 */
function changedLines(input: string, output: string): string[] {
  const inLines = input.split('\n');
  const outLines = output.split('\n');
  const kept = matchLines(inLines, outLines) as Int32Array;
  const hooks = preStopLines(inLines);
  const added = new Set(outLines.filter((_, j) => !kept.includes(j)));
  const flowGained = (line: string): boolean => {
    if (/^\s*(?:-\s+)?(?:[^\s#{][^#]*:\s*)?\{\}\s*$/.test(line)) return true;
    const head = /^[^{#]*\{/.exec(line)?.[0];
    return head !== undefined && [...added].some((a) => a.startsWith(head) && /preStop|safe-termination\.io\/injected/.test(a));
  };
  return inLines.filter(
    (line, i) =>
      kept[i] === -1 &&
      !hooks.has(i) &&
      !/terminationGracePeriodSeconds|safe-termination\.io\/injected/.test(line) &&
      !added.has(`${line},`) &&
      !flowGained(line),
  );
}

const indentOf = (line: string): number => line.length - line.trimStart().length;
const isContent = (line: string): boolean => line.trim() !== '' && !line.trimStart().startsWith('#');

/**
 * YAML texts that read as `text`, laid out otherwise: block lists under a key
 * flush with it or indented (each on its own), `key: {}` as helm writes it
 * (`key:` and `{}` on the next line), CRLF line endings.
 */
function relayout(text: string): fc.Arbitrary<string> {
  const lines = text.split('\n');
  // Lists that open under a key: the key's line, the list's column, the list's last line.
  const lists: Array<{ column: number; from: number; to: number; flush: boolean }> = [];
  lines.forEach((line, i) => {
    const key = /^\s*(?:-\s+)*[^\s#\-{[][^#]*:\s*(?:#.*)?$/.exec(line);
    if (key === null) return;
    const keyColumn = (/^\s*(?:-\s+)*/.exec(line) as RegExpExecArray)[0].length;
    const first = lines.findIndex((l, j) => j > i && isContent(l));
    if (first === -1 || !/^\s*- /.test(lines[first]!)) return;
    const column = indentOf(lines[first]!);
    if (column !== keyColumn && column !== keyColumn + 2) return;
    let to = first;
    for (let j = first + 1; j < lines.length; j++) {
      const l = lines[j]!;
      if (!isContent(l)) continue;
      if (indentOf(l) > column || (indentOf(l) === column && l.trimStart().startsWith('- '))) to = j;
      else break;
    }
    lists.push({ column, from: first, to, flush: column === keyColumn });
  });
  const empties = lines.flatMap((l, i) => (/^\s*(?:-\s+)*[^\s#\-{[][^#]*:\s+\{\}\s*$/.test(l) ? [i] : []));
  return fc
    .record({
      toggle: fc.array(fc.boolean(), { minLength: lists.length, maxLength: lists.length }),
      split: fc.array(fc.boolean(), { minLength: empties.length, maxLength: empties.length }),
      crlf: fc.boolean(),
    })
    .map(({ toggle, split, crlf }) => {
      const out = [...lines];
      // Inner lists first: an outer list's shift carries the inner one along.
      for (let k = lists.length - 1; k >= 0; k--) {
        if (!toggle[k]) continue;
        const { column, from, to, flush } = lists[k]!;
        for (let j = from; j <= to; j++) {
          const l = out[j]!;
          if (l.trim() === '' || indentOf(l) < column) continue;
          out[j] = flush ? `  ${l}` : l.slice(2);
        }
      }
      for (let k = empties.length - 1; k >= 0; k--) {
        if (!split[k]) continue;
        const i = empties[k]!;
        const l = out[i]!;
        const keyColumn = (/^\s*(?:-\s+)*/.exec(l) as RegExpExecArray)[0].length;
        out.splice(i, 1, l.replace(/:\s+\{\}(\s*)$/, ':$1'), `${' '.repeat(keyColumn + 2)}{}${l.endsWith('\r') ? '\r' : ''}`);
      }
      const joined = out.join('\n');
      return crlf && !joined.includes('\r\n') ? joined.replaceAll('\n', '\r\n') : joined;
    });
}

const normalize = (text: string): string => text.replaceAll(`${DIR}/`, '');

for (const file of inputs) {
  const [, name, ext] = INPUT.exec(file) as RegExpExecArray;
  const flagsFile = join(DIR, `${name}.flags`);
  const flags = existsSync(flagsFile) ? readFileSync(flagsFile, 'utf8').trim().split(/\s+/) : [];
  const path = join(DIR, file);
  const input = readFileSync(path, 'utf8');

  t.test(file, async (t) => {
    const run = await runCli('inject', ['-f', path, ...PIN, ...flags]);
    t.not(run.code, 2, `no usage error: ${run.stderr}`);
    const ok = run.code === 0;
    golden(t, `${name}.injected.${ext}`, ok ? run.stdout : undefined);
    golden(t, `${name}.error.txt`, ok ? undefined : normalize(run.stderr));
    golden(t, `${name}.stderr.txt`, ok && run.stderr !== '' ? normalize(run.stderr) : undefined);
    const explained = await runCli('explain', ['-f', path, ...PIN, ...flags]);
    golden(t, `${name}.explain.txt`, explained.stdout === '' ? undefined : normalize(explained.stdout));
    t.equal(explained.code, run.code, 'explain and inject agree on the exit code');

    if (!ok) {
      t.equal(run.stdout, '', 'nothing written on invalid input');
      // The webhook denies exactly the pods the CLI reports an invalid annotation for.
      const json = JSON.parse((await runCli('explain', ['-f', path, '-o', 'json', ...PIN, ...flags])).stdout);
      const denied = new Set(json.objects.filter((o: any) => o.decision === 'deny').map((o: any) => `${o.kind}/${o.name}`));
      const w = await webhookWith(flags, manifestServices(input));
      let readable = 0;
      for (const p of safePods(input)) {
        readable++;
        const answer = (await w.post(reviewOf(p.pod))).json<{ response: ReviewAnswer }>().response;
        t.equal(answer.allowed, !denied.has(`${p.target.kind}/${p.target.name}`), `${p.label}: webhook agrees (${answer.status?.message ?? 'allowed'})`);
      }
      t.comment(`${readable} pods through the webhook`);
      return;
    }

    const again = await runCli('inject', ['-f', '-', ...PIN, ...flags], { stdin: run.stdout });
    t.equal(again.code, 0);
    t.equal(again.stdout, run.stdout, 'a second run changes nothing');

    t.same(changedLines(input, run.stdout), [], 'no other line of the input changed');

    if (ext === 'yaml') {
      // The same manifests laid out otherwise keep their own lines just as well.
      const plain = await runCli('inject', ['-f', '-', ...PIN, ...flags], { stdin: input });
      const data = (text: string): unknown[] => parseAllDocuments(text).map((d) => d.toJS());
      const expected = data(run.stdout);
      await fc.assert(
        fc.asyncProperty(relayout(input), async (variant) => {
          t.same(data(variant), data(input), 'the variant reads as the input');
          const res = await runCli('inject', ['-f', '-', ...PIN, ...flags], { stdin: variant });
          return res.code === 0 && res.stderr === plain.stderr && changedLines(variant, res.stdout).length === 0 && isDeepStrictEqual(data(res.stdout), expected);
        }),
        { numRuns: 12, seed: 15 },
      );
    }

    // The webhook door (with the input's Services, as its Service informer would have them).
    const w = await webhookWith(flags, manifestServices(input));
    const before = manifestPods(input);
    const after = manifestPods(run.stdout);
    t.equal(after.length, before.length, 'same pods in and out');
    for (let i = 0; i < before.length; i++) {
      const p = before[i]!;
      const res = await w.post(reviewOf(p.pod));
      t.equal(res.status, 200, p.label);
      const answer = res.json<{ response: ReviewAnswer }>().response;
      t.ok(answer.allowed, `${p.label}: allowed`);
      const patched = applyAnswer(p.pod, answer);
      t.same(patched, after[i]!.pod, `${p.label}: the webhook's pod equals the CLI's`);
      t.same(podProblems(patched), [], `${p.label}: a valid v1 Pod`);
    }
  });
}

/** The pods of an input the API server would accept (annotation values are strings). */
function safePods(text: string): ReturnType<typeof manifestPods> {
  let pods: ReturnType<typeof manifestPods>;
  try {
    pods = manifestPods(text);
  } catch {
    return [];
  }
  return pods.filter((p) => {
    const a = p.pod['metadata']?.annotations ?? {};
    return Array.isArray(p.pod['spec']?.containers) && Object.values(a).every((v) => typeof v === 'string');
  });
}
