/**
 * At most N dials at once to one destination (`--max-dials-per-host`); the rest wait their turn,
 * first come first served, within the connect timeout. A thousand new clients asking one origin
 * at once used to become a thousand SYNs at once: the origin's accept queue overflowed and
 * requests failed with "Cannot connect … timed out" while others were served in milliseconds.
 * Waiting for a slot, a request may find an idle connection someone released meanwhile, and
 * takes that instead of dialling. The queue per destination is bounded too.
 *
 * @module
 */

import { Deadline } from "../deadline.ts";

/** Requests waiting for a dial slot to one destination, at most; more are refused. */
export const MAX_WAITING = 4096;

/** Dials in flight to one destination, and who waits for a slot. */
interface Entry {
  n: number;
  waiting: ((got: boolean) => void)[];
}

/** How a wait for a dial slot ended. */
export type GateResult = { release: () => void } | "timeout" | "full";

/** See the module doc. */
export class DialGate {
  #busy = new Map<string, Entry>();

  /** Destinations with dials in flight (bounded by the dials themselves). */
  get size(): number {
    return this.#busy.size;
  }

  /**
   * Waits for a dial slot to `key`.
   *
   * @param key The destination (`host:port`, as the pool keys it).
   * @param limit Dials at once; 0: no limit.
   * @param waitMs How long to wait for a slot.
   * @returns A release function (call it once the dial has ended, however it ended), or why
   *   there is none: the wait timed out, or too many wait already.
   */
  async enter(key: string, limit: number, waitMs: number): Promise<GateResult> {
    if (limit <= 0) return { release: () => {} };
    let entry = this.#busy.get(key);
    if (!entry) this.#busy.set(key, entry = { n: 0, waiting: [] });
    if (entry.n < limit) {
      entry.n++;
      return { release: this.#releaser(key, entry) };
    }
    if (entry.waiting.length >= MAX_WAITING) return "full";
    const { promise, resolve } = Promise.withResolvers<boolean>();
    entry.waiting.push(resolve);
    const wait = new Deadline(waitMs, () => new Error("no dial slot"));
    wait.promise.catch(() => {
      // Out of the queue at once, so a release never hands its slot to a waiter that left.
      const i = entry.waiting.indexOf(resolve);
      if (i < 0) return; // handed a slot first
      entry.waiting.splice(i, 1);
      resolve(false);
    });
    const got = await promise;
    wait.cancel();
    if (!got) return "timeout";
    // The slot was handed over by a dial that ended: the count did not change.
    return { release: this.#releaser(key, entry) };
  }

  /** A slot's release: hands it to the first waiter, or gives it back. Idempotent. */
  #releaser(key: string, entry: Entry): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = entry.waiting.shift();
      if (next) next(true);
      else if (--entry.n === 0) this.#busy.delete(key);
    };
  }
}
