/**
 * Progress of long work (kube:build, the lab, the bench): a line per step on stderr,
 * `NAME [elapsed] text`, so a terminal shows what is being done and for how long.
 * Quiet in CI logs (CI set and stderr not a terminal), except the lines marked to
 * keep there (what was built or found, say).
 */
export interface Progress {
  /** Say what is being done now; `keep`: print it in CI logs too. */
  step(text: string, o?: { keep?: boolean }): void;
  /** Seconds since the start. */
  elapsed(): number;
}

export interface ProgressOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly stream?: { isTTY?: boolean; write(s: string): unknown };
  readonly now?: () => number;
}

/** Whether step lines are left out: in CI (the CI variable set), unless stderr is a terminal. */
export function quietProgress(env: NodeJS.ProcessEnv, stream: { isTTY?: boolean }): boolean {
  return env['CI'] !== undefined && env['CI'] !== '' && env['CI'] !== 'false' && stream.isTTY !== true;
}

/** Elapsed time as a person reads it: 4.2s, 1m05s. */
export function formatElapsed(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  return `${m}m${String(Math.floor(seconds - m * 60)).padStart(2, '0')}s`;
}

export function progress(name: string, o: ProgressOptions = {}): Progress {
  const now = o.now ?? Date.now;
  const stream = o.stream ?? process.stderr;
  const start = now();
  const quiet = quietProgress(o.env ?? process.env, stream);
  const elapsed = (): number => (now() - start) / 1000;
  return {
    elapsed,
    step(text, opts) {
      if (quiet && opts?.keep !== true) return;
      stream.write(`${name} [${formatElapsed(elapsed())}] ${text}\n`);
    },
  };
}
