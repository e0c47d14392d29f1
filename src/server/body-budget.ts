/**
 * A bound on the bytes of request bodies being read and handled at once, so that
 * memory stays under the pod's limit whatever clients send (a parsed review takes
 * several times its text). A request takes its share before its body is read; one
 * that does not fit waits in line (its bytes stay in the kernel's socket buffers)
 * and is refused if room does not come within the wait.
 */
export class BodyBudget {
  readonly capacity: number;
  #used = 0;
  readonly #line: Array<{ bytes: number; grant: (granted: boolean) => void }> = [];

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get used(): number {
    return this.#used;
  }

  get waiting(): number {
    return this.#line.length;
  }

  /**
   * Take `bytes` (at most the capacity): `then(true)` at once or when room comes, in
   * arrival order; `then(false)` after `waitMs` without room.
   */
  take(bytes: number, waitMs: number, then: (granted: boolean) => void): void {
    const share = Math.min(bytes, this.capacity);
    if (this.#line.length === 0 && this.#used + share <= this.capacity) {
      this.#used += share;
      then(true);
      return;
    }
    const entry = {
      bytes: share,
      grant: (granted: boolean): void => {
        clearTimeout(timer);
        then(granted);
      },
    };
    const timer = setTimeout(() => {
      const at = this.#line.indexOf(entry);
      if (at === -1) return;
      this.#line.splice(at, 1);
      entry.grant(false);
      this.#drain();
    }, waitMs);
    this.#line.push(entry);
  }

  release(bytes: number): void {
    this.#used = Math.max(0, this.#used - Math.min(bytes, this.capacity));
    this.#drain();
  }

  #drain(): void {
    for (;;) {
      const next = this.#line[0];
      if (next === undefined || this.#used + next.bytes > this.capacity) return;
      this.#line.shift();
      this.#used += next.bytes;
      next.grant(true);
    }
  }
}
