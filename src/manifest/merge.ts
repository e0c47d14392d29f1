/**
 * Keeping the user's formatting: the `yaml` Document API keeps comments and key
 * order but re-renders every line of a document it prints (spacing inside flow
 * collections, before comments, in document markers…). So an edited document is
 * printed twice with the same options — before (`base`) and after (`edited`) the
 * edit — and only the lines that differ between the two are carried into the
 * original text (`ours`), a line-based three-way merge. Lines the printer
 * formats otherwise than the original (another indentation or spacing, `key:
 * {}` written as `key:` and `{}` on two lines) are recognised by their text
 * without whitespace, and lines the edit adds take the original's indentation
 * of their place. The caller verifies the merged text parses to the edited data
 * and falls back to `edited` when not.
 */

/** For each line of `a`, the index of the line of `b` it is paired with, or -1. */
export function matchLines(a: readonly string[], b: readonly string[], budget = 20_000_000): Int32Array | undefined {
  const out = new Int32Array(a.length).fill(-1);
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) {
    out[pre] = pre;
    pre++;
  }
  let suf = 0;
  while (suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]) {
    out[a.length - 1 - suf] = b.length - 1 - suf;
    suf++;
  }
  const n = a.length - pre - suf;
  const m = b.length - pre - suf;
  if (n === 0 || m === 0) return out;
  const pairs = myers(a, b, pre, n, m, budget);
  if (pairs === undefined) return undefined;
  for (const [x, y] of pairs) out[pre + x] = pre + y;
  return out;
}

/**
 * Myers' O(ND) shortest edit script over a[pre, pre+n) and b[pre, pre+m);
 * returns the matched pairs relative to `pre`. Undefined when the trace would
 * exceed `budget` cells (inputs too different to be worth merging).
 */
function myers(a: readonly string[], b: readonly string[], pre: number, n: number, m: number, budget: number): Array<[number, number]> | undefined {
  const max = n + m;
  const off = max + 1;
  const width = 2 * max + 3;
  let v = new Int32Array(width);
  const trace: Int32Array[] = [];
  let found = false;
  for (let d = 0; d <= max && !found; d++) {
    if ((d + 1) * width > budget) return undefined;
    trace.push(v);
    v = v.slice();
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && (v[off + k - 1] as number) < (v[off + k + 1] as number)) ? (v[off + k + 1] as number) : (v[off + k - 1] as number) + 1;
      let y = x - k;
      while (x < n && y < m && a[pre + x] === b[pre + y]) {
        x++;
        y++;
      }
      v[off + k] = x;
      if (x >= n && y >= m) {
        found = true;
        break;
      }
    }
  }
  const pairs: Array<[number, number]> = [];
  let x = n;
  let y = m;
  for (let d = trace.length - 1; d >= 0; d--) {
    const prev = trace[d] as Int32Array;
    const k = x - y;
    let prevK: number;
    if (d === 0) prevK = 0;
    else prevK = k === -d || (k !== d && (prev[off + k - 1] as number) < (prev[off + k + 1] as number)) ? k + 1 : k - 1;
    const prevX = d === 0 ? 0 : (prev[off + prevK] as number);
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) {
      x--;
      y--;
      pairs.push([x, y]);
    }
    x = prevX;
    y = prevY;
  }
  return pairs.reverse();
}

/**
 * Like matchLines, then pairs the unmatched lines between two matched ones
 * one-to-one when both sides have the same number of them (a line whose
 * formatting alone differs).
 */
export function alignLines(a: readonly string[], b: readonly string[]): Int32Array | undefined {
  const map = matchLines(a, b);
  if (map === undefined) return undefined;
  let lastA = -1;
  let lastB = -1;
  for (let i = 0; i <= a.length; i++) {
    const j = i === a.length ? b.length : (map[i] as number);
    if (j < 0) continue;
    const gapA = i - lastA - 1;
    const gapB = j - lastB - 1;
    if (gapA > 0 && gapA === gapB) for (let g = 1; g <= gapA; g++) map[lastA + g] = lastB + g;
    lastA = i;
    lastB = j;
  }
  return map;
}

/** For each line of `a`, the lines of `b` it stands for: [start, end), start -1 when none. */
export interface LineRanges {
  readonly start: Int32Array;
  readonly end: Int32Array;
}

const squeeze = (line: string): string => line.replace(/\s+/g, '');

/**
 * Like alignLines, on the lines' text without whitespace (a line indented or
 * spaced otherwise is the same line); then, between two paired lines, pairs a
 * line with the run of lines that spell it out (`key: {}` and `key:` / `{}`).
 */
export function alignRanges(a: readonly string[], b: readonly string[]): LineRanges | undefined {
  const sa = a.map(squeeze);
  const sb = b.map(squeeze);
  const map = alignLines(sa, sb);
  if (map === undefined) return undefined;
  const start = new Int32Array(a.length).fill(-1);
  const end = new Int32Array(a.length).fill(-1);
  for (let i = 0; i < a.length; i++) {
    if ((map[i] as number) < 0) continue;
    start[i] = map[i] as number;
    end[i] = (map[i] as number) + 1;
  }
  let lastA = -1;
  let lastB = -1;
  for (let i = 0; i <= a.length; i++) {
    const j = i === a.length ? b.length : (map[i] as number);
    if (j < 0) continue;
    if (i > lastA + 1 && j > lastB + 1) spelledOut(sa, sb, lastA + 1, i, lastB + 1, j, start, end);
    lastA = i;
    lastB = j;
  }
  return { start, end };
}

/** Each line of a[x0, x1), in order, spelt out by the next lines of b[y0, y1): all of both, or nothing. */
function spelledOut(sa: readonly string[], sb: readonly string[], x0: number, x1: number, y0: number, y1: number, start: Int32Array, end: Int32Array): void {
  const found: Array<[number, number]> = [];
  let y = y0;
  for (let x = x0; x < x1; x++) {
    const want = sa[x] as string;
    let have = '';
    const from = y;
    while (y < y1 && have.length < want.length && want.startsWith(have + (sb[y] as string))) have += sb[y++] as string;
    if (have !== want || y === from) return;
    found.push([from, y]);
  }
  if (y !== y1) return;
  found.forEach(([from, to], k) => {
    start[x0 + k] = from;
    end[x0 + k] = to;
  });
}

/** Where a line's key or scalar begins: after its indentation and any `- `. */
function keyColumn(line: string): number {
  return (/^[ \t]*(?:-[ \t]+)*/.exec(line) as RegExpExecArray)[0].length;
}

function isBlankOrComment(line: string): boolean {
  const t = line.trim();
  return t === '' || t.startsWith('#');
}

function leading(line: string): number {
  return line.length - line.trimStart().length;
}

function shift(line: string, delta: number): string {
  if (delta > 0) return ' '.repeat(delta) + line;
  if (delta < 0 && leading(line) >= -delta && /^ *$/.test(line.slice(0, -delta))) return line.slice(-delta);
  return line;
}

/** How far `base[i]` moved to its line in ours, or undefined when it has none. */
function moved(base: readonly string[], ours: readonly string[], toOurs: LineRanges, i: number): number | undefined {
  const j = toOurs.start[i] as number;
  return j < 0 ? undefined : keyColumn(ours[j] as string) - keyColumn(base[i] as string);
}

/**
 * Lines the edit brings (`edited[from, to)`, in place of `base[aStart, aEnd)`),
 * indented as the original indents their place: each line moves by as much as
 * its nearest sibling (a line at its column before the hunk, or the first
 * line from `aStart` on), else its parent, moved from `base` to `ours`.
 */
function reindent(base: readonly string[], ours: readonly string[], toOurs: LineRanges, aStart: number, edited: readonly string[], from: number, to: number): string[] {
  const deltas: number[] = [];
  const out: string[] = [];
  let after = aStart;
  while (after < base.length && isBlankOrComment(base[after] as string)) after++;
  for (let k = from; k < to; k++) {
    const line = edited[k] as string;
    const column = keyColumn(line);
    let delta: number | undefined;
    for (let m = k - 1; m >= from && delta === undefined; m--) {
      if (!isBlankOrComment(edited[m] as string) && keyColumn(edited[m] as string) <= column) delta = deltas[m - from];
    }
    for (let i = aStart - 1; i >= 0 && delta === undefined; i--) {
      const b = base[i] as string;
      if (isBlankOrComment(b) || keyColumn(b) > column) continue;
      const sibling = keyColumn(b) === column ? i : after < base.length && keyColumn(base[after] as string) === column ? after : i;
      delta = moved(base, ours, toOurs, sibling) ?? 0;
    }
    deltas.push(delta ?? 0);
    out.push(shift(line, delta ?? 0));
  }
  return out;
}

const KEY = /^\s*(?:-\s+)*[^\s#'"{[][^#]*?:(?=\s|$)/;

/**
 * A hunk whose line counts differ: lines of `edited` that keep the key of a
 * line of `base` (a changed value next to added lines) are patched into our
 * line; the others are added, reindented.
 */
function hunkLines(base: readonly string[], ours: readonly string[], toOurs: LineRanges, h: Hunk, edited: readonly string[]): string[] {
  const out = reindent(base, ours, toOurs, h.aStart, edited, h.bStart, h.bEnd);
  const keys = (lines: readonly string[], from: number, to: number, side: string): string[] =>
    lines.slice(from, to).map((line, i) => KEY.exec(line)?.[0] ?? `\0${side}${i}`);
  const pairs = matchLines(keys(base, h.aStart, h.aEnd, 'a'), keys(edited, h.bStart, h.bEnd, 'b'));
  if (pairs === undefined) return out;
  pairs.forEach((k, i) => {
    const j = toOurs.start[h.aStart + i] as number;
    if (k >= 0 && toOurs.end[h.aStart + i] === j + 1) out[k] = patchLine(base[h.aStart + i] as string, ours[j] as string, edited[h.bStart + k] as string);
  });
  return out;
}

interface Hunk {
  readonly aStart: number;
  readonly aEnd: number;
  readonly bStart: number;
  readonly bEnd: number;
}

function hunks(map: Int32Array, aLength: number, bLength: number): Hunk[] {
  const out: Hunk[] = [];
  let lastA = -1;
  let lastB = -1;
  for (let i = 0; i <= aLength; i++) {
    const j = i === aLength ? bLength : (map[i] as number);
    if (j < 0) continue;
    if (i > lastA + 1 || j > lastB + 1) out.push({ aStart: lastA + 1, aEnd: i, bStart: lastB + 1, bEnd: j });
    lastA = i;
    lastB = j;
  }
  return out;
}

/**
 * Three-way line merge: the changes from `base` to `edited`, applied to
 * `ours` (which is `base` in another formatting). Undefined when a change
 * falls on lines `ours` does not have in recognisable form.
 */
export function mergeLines(base: readonly string[], ours: readonly string[], edited: readonly string[]): string[] | undefined {
  const toEdited = matchLines(base, edited);
  const toOurs = alignRanges(base, ours);
  if (toEdited === undefined || toOurs === undefined) return undefined;
  const out: string[] = [];
  let next = 0;
  for (const h of hunks(toEdited, base.length, edited.length)) {
    let start: number;
    let end: number;
    // Every changed line of base stands for exactly one line of ours.
    let single = true;
    if (h.aEnd > h.aStart) {
      start = toOurs.start[h.aStart] as number;
      if (start < 0) return undefined;
      end = start;
      for (let i = h.aStart; i < h.aEnd; i++) {
        if (toOurs.start[i] !== end) return undefined;
        end = toOurs.end[i] as number;
        if (end - (toOurs.start[i] as number) !== 1) single = false;
      }
    } else {
      const before = h.aStart > 0 && (toOurs.start[h.aStart - 1] as number) >= 0 ? (toOurs.end[h.aStart - 1] as number) : -1;
      const after = h.aStart < base.length ? (toOurs.start[h.aStart] as number) : ours.length;
      if (before >= 0) start = before;
      else if (after >= 0) start = after;
      else if (h.aStart === 0) start = 0;
      else return undefined;
      end = start;
    }
    if (start < next) return undefined;
    out.push(...ours.slice(next, start));
    if (single && h.aEnd - h.aStart === h.bEnd - h.bStart) {
      // Line for line: carry each change into our line, keeping its own spacing and comment.
      for (let i = 0; i < h.aEnd - h.aStart; i++) {
        out.push(patchLine(base[h.aStart + i] as string, ours[start + i] as string, edited[h.bStart + i] as string));
      }
    } else out.push(...hunkLines(base, ours, toOurs, h, edited));
    next = end;
  }
  out.push(...ours.slice(next));
  return out;
}

/**
 * `base` → `edited` changed one stretch of a line; make the same change in
 * `ours` (the same line formatted otherwise) when that stretch is recognisable
 * there, else take `edited`; our own indentation is kept.
 * ("a: 45 # c", "a: 45   # c", "a: 65 # c") → "a: 65   # c".
 */
export function patchLine(base: string, ours: string, edited: string): string {
  if (base === ours) return edited;
  const indent = leading(ours);
  if (leading(base) !== indent && leading(base) === leading(edited)) {
    // Our line is indented otherwise: patch the rest, keep our indentation.
    return ours.slice(0, indent) + patchLine(base.trimStart(), ours.slice(indent), edited.trimStart());
  }
  let p = 0;
  while (p < base.length && p < edited.length && base[p] === edited[p]) p++;
  let s = 0;
  while (s < base.length - p && s < edited.length - p && base[base.length - 1 - s] === edited[edited.length - 1 - s]) s++;
  const head = base.slice(0, p);
  const middle = base.slice(p, base.length - s);
  if (!ours.startsWith(head + middle)) return edited;
  return head + edited.slice(p, edited.length - s) + ours.slice(p + middle.length);
}

/** mergeLines over texts; line endings of `ours` (LF or CRLF) are kept. */
export function mergeText(base: string, ours: string, edited: string): string | undefined {
  const crlf = ours.includes('\r\n');
  const o = crlf ? ours.replaceAll('\r\n', '\n') : ours;
  const merged = mergeLines(base.split('\n'), o.split('\n'), edited.split('\n'));
  if (merged === undefined) return undefined;
  const text = merged.join('\n');
  return crlf ? text.replaceAll('\n', '\r\n') : text;
}
