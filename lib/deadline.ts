/**
 * Coarse deadlines for the hot path. A `setTimeout` plus `clearTimeout` costs about 3.7 µs on
 * Deno 2.9.6 (measured: 200k pairs in a loop), and every request needs two deadlines (its head,
 * the upstream's response head), so instead one shared ticker checks all live deadlines every
 * {@linkcode TICK_MS}. A deadline may fire up to that much late, which suits timeouts of
 * seconds. The ticker runs only while a deadline is live, so an idle proxy (and a finished test)
 * has no timer pending.
 *
 * @module
 */

import { type Listed, Roster } from "./roster.ts";

/** How often live deadlines are checked, in ms; also the most a deadline fires late. */
export const TICK_MS = 50;

/** The live deadlines: a roster, not a Set (see lib/roster.ts for what a Set cost here). */
const live = new Roster<Deadline>();
let ticker: ReturnType<typeof setInterval> | undefined;

function tick(): void {
  const now = performance.now();
  live.forEach((d) => {
    if (d.at <= now) d.expire();
  });
  stopWhenIdle();
}

function stopWhenIdle(): void {
  if (live.size === 0 && ticker !== undefined) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

/** A point in time after which `promise` rejects with the given error. */
export class Deadline implements Listed {
  /** performance.now() value at which it expires. */
  at: number;
  /** Its place among the live deadlines (the roster's). */
  slot = -1;
  #error: () => Error;
  #reject: ((err: Error) => void) | undefined;
  #promise: Promise<never> | undefined;
  #onExpire: ((err: Error) => void) | undefined;
  #expired = false;

  /**
   * Starts a deadline `ms` from now.
   *
   * @param ms Time allowed.
   * @param error Makes the rejection reason.
   */
  constructor(ms: number, error: () => Error) {
    this.at = performance.now() + ms;
    this.#error = error;
    live.add(this);
    ticker ??= setInterval(tick, TICK_MS);
  }

  /** Whether it has expired. */
  get expired(): boolean {
    return this.#expired;
  }

  /**
   * A promise that rejects when the deadline passes (made on first use; never resolves). Race it
   * once, not at every step of a loop: each race leaves a reaction on it until it settles, so a
   * deadline that guards many waits uses {@linkcode bound} instead.
   */
  get promise(): Promise<never> {
    if (!this.#promise) {
      this.#promise = this.#expired
        ? Promise.reject(this.#error())
        : new Promise<never>((_, reject) => (this.#reject = reject));
      this.#promise.catch(() => {
        // observed by whoever races it
      });
    }
    return this.#promise;
  }

  /**
   * `work`, or this deadline's error if the deadline passes first: one promise, and nothing left
   * on the deadline once `work` settles (a race against {@linkcode promise} left a reaction on it
   * each time: a body copy and a tunnel, which guard every read or write with one deadline, kept
   * 7.4 MB over 4,097 writes and 3.3 MB over 10,000). It takes the deadline's callback (see
   * {@linkcode onExpire}): one wait at a time. `work` is handled either way: one abandoned by the
   * deadline and failing later (its socket closed) is no unhandled rejection.
   *
   * @param work What to wait for.
   * @returns A promise that settles as `work` does, or rejects when the deadline passes first.
   */
  bound<T>(work: Promise<T>): Promise<T> {
    if (this.#expired) return Promise.race([work, this.promise]); // rejects at once
    return new Promise<T>((resolve, reject) => {
      this.#onExpire = reject;
      work.then(resolve, reject);
    });
  }

  /**
   * Calls `fn` when the deadline passes, instead of a rejection to catch: no promise is made,
   * for a deadline most requests cancel long before it passes. A later call replaces `fn`.
   *
   * @param fn Called once, from the ticker, with the deadline's error.
   */
  onExpire(fn: (err: Error) => void): void {
    this.#onExpire = fn;
  }

  /**
   * Moves the deadline to `ms` from now (if it has not expired).
   *
   * @param ms Time allowed from now.
   */
  reset(ms: number): void {
    if (!this.#expired) this.at = performance.now() + ms;
  }

  /**
   * Moves it out of reach until the next reset (it stays live, so the ticker keeps running).
   * No clock read: a connection parks its write deadline after every write.
   */
  park(): void {
    if (!this.#expired) this.at = Infinity;
  }

  /** Expires it now (the ticker calls this). */
  expire(): void {
    live.delete(this);
    if (this.#expired) return;
    this.#expired = true;
    if (this.#reject || this.#onExpire) {
      const err = this.#error();
      this.#reject?.(err);
      this.#onExpire?.(err);
    }
  }

  /** Stops it; it will never fire. */
  cancel(): void {
    live.delete(this);
    // It will never call them, so it does not keep what they hold (an exchange, a read).
    this.#onExpire = undefined;
    this.#reject = undefined;
    stopWhenIdle();
  }
}
