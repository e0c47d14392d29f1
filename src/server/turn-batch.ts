/**
 * Runs `fn` on each input submitted during one turn of the event loop, together,
 * once the turn's I/O callbacks are done (setImmediate), and settles each caller's
 * promise with its own result or error.
 */
export function batchPerTurn<I, O>(fn: (input: I) => O): (input: I) => Promise<O> {
  let pending: { input: I; resolve: (output: O) => void; reject: (error: unknown) => void }[] = [];
  const flush = (): void => {
    const jobs = pending;
    pending = [];
    for (const job of jobs) {
      try {
        job.resolve(fn(job.input));
      } catch (error) {
        job.reject(error);
      }
    }
  };
  return (input) =>
    new Promise<O>((resolve, reject) => {
      if (pending.push({ input, resolve, reject }) === 1) setImmediate(flush);
    });
}
