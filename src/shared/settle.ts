/** A promise that failed, by its place in the list. */
export interface Failure {
  readonly index: number;
  readonly error: unknown;
}

/**
 * Every promise's value, in order; when any fails, one Error whose message
 * `describe` builds from every failure (not only the first to settle, so the
 * message is the same on every run), caused by the first failure in the list.
 */
export async function allOrEveryFailure<const T extends readonly unknown[]>(
  promises: { readonly [K in keyof T]: Promise<T[K]> },
  describe: (failures: readonly Failure[]) => string,
): Promise<T> {
  const results = await Promise.allSettled(promises);
  const failures = results.flatMap((r, index) => (r.status === 'rejected' ? [{ index, error: r.reason as unknown }] : []));
  if (failures.length > 0) throw new Error(describe(failures), { cause: failures[0]?.error });
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
