/**
 * Durations as annotations and flags take them: whole seconds ("35") or Go-style integer units in
 * descending order ("1h", "2m", "1m30s", "35s"). No fractions, signs or other units.
 */

/** Largest accepted duration: int32 seconds, far beyond any sane sleep. */
export const MAX_DURATION_SECONDS = 2_147_483_647;

export const DURATION_FORM = 'whole seconds ("35") or h/m/s units in that order ("35s", "2m", "1m30s")';

const PATTERN = /^(?:(\d+)|(?=\d)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?)$/;

/** Seconds, or undefined when the text is not a duration of this form. */
export function parseDuration(text: string): number | undefined {
  if (text.length === 0 || text.length > 32) return undefined;
  const m = PATTERN.exec(text);
  if (m === null) return undefined;
  const [, plain, h, min, s] = m;
  const seconds =
    plain !== undefined
      ? Number(plain)
      : Number(h ?? 0) * 3600 + Number(min ?? 0) * 60 + Number(s ?? 0);
  if (!Number.isSafeInteger(seconds) || seconds > MAX_DURATION_SECONDS) return undefined;
  return seconds;
}

/** Compact human form: 35 → "35s", 90 → "1m30s", 3600 → "1h". */
export function formatDuration(seconds: number): string {
  if (seconds === 0) return '0s';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h > 0 ? `${h}h` : ''}${m > 0 ? `${m}m` : ''}${s > 0 ? `${s}s` : ''}`;
}
