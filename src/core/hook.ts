/** The preStop hook this product writes, and how to recognise it in a pod. */

export type PrestopMode = 'sleep' | 'exec';

export type PrestopHook =
  | { readonly sleep: { readonly seconds: number } }
  | { readonly exec: { readonly command: readonly string[] } };

export function sleepHook(mode: PrestopMode, seconds: number): PrestopHook {
  return mode === 'sleep' ? { sleep: { seconds } } : { exec: { command: ['sleep', String(seconds)] } };
}

/** Whether `current` (a container's lifecycle.preStop as found) is exactly sleepHook(mode, seconds). */
export function isSleepHook(current: unknown, mode: PrestopMode, seconds: number): boolean {
  if (typeof current !== 'object' || current === null) return false;
  const keys = Object.keys(current);
  if (keys.length !== 1) return false;
  const h = current as Record<string, unknown>;
  if (mode === 'sleep') {
    const sleep = h['sleep'] as { seconds?: unknown } | undefined;
    return typeof sleep === 'object' && sleep !== null && Object.keys(sleep).length === 1 && sleep.seconds === seconds;
  }
  const exec = h['exec'] as { command?: unknown } | undefined;
  if (typeof exec !== 'object' || exec === null || Object.keys(exec).length !== 1 || !Array.isArray(exec.command)) return false;
  const cmd = exec.command as unknown[];
  return cmd.length === 2 && cmd[0] === 'sleep' && cmd[1] === String(seconds);
}
