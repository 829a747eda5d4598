/**
 * At most N of something at once per destination, the rest waiting their turn, first come first
 * served, within a time limit; the queue per destination is bounded too. Two gates use it:
 *
 * - dials (`--max-dials-per-host`): a thousand new clients asking one origin at once used to
 *   become a thousand SYNs at once: the origin's accept queue overflowed and requests failed
 *   with "Cannot connect … timed out" while others were served in milliseconds. Waiting for a
 *   slot, a request may find an idle connection someone released meanwhile, and takes that.
 * - requests in flight (`--max-active-per-host`), each on an upstream connection of its own:
 *   past the limit, requests queue here in order instead of at the origin, which served a
 *   thousand busy connections unevenly (wrk, 1000 keep-alive clients through the proxy to one
 *   nginx worker: p99 2.5–3.5 s with no limit, 185 ms with 64).
 *
 * @module
 */

import { Deadline } from "../deadline.ts";

const NOTHING = () => {};

/** Requests waiting for a slot to one destination, at most; more are refused. */
export const MAX_WAITING = 4096;

/** Slots taken for one destination, and who waits for one. */
interface Entry {
  n: number;
  waiting: ((got: boolean) => void)[];
}

/** How a wait for a slot ended. */
export type GateResult = { release: () => void } | "timeout" | "full";

/** See the module doc. */
export class HostGate {
  #busy = new Map<string, Entry>();

  /** Destinations with slots taken (bounded by what holds the slots). */
  get size(): number {
    return this.#busy.size;
  }

  /**
   * Takes a slot to `key` if one is free now, without waiting (nor a promise).
   *
   * @param key The destination (`host:port`, as the pool keys it).
   * @param limit Slots at once; 0: no limit.
   * @returns A release function (call it once, when done), or undefined when none is free.
   */
  tryEnter(key: string, limit: number): (() => void) | undefined {
    if (limit <= 0) return NOTHING;
    let entry = this.#busy.get(key);
    if (!entry) this.#busy.set(key, entry = { n: 0, waiting: [] });
    if (entry.n >= limit || entry.waiting.length > 0) return undefined;
    entry.n++;
    return this.#releaser(key, entry);
  }

  /**
   * Waits for a slot to `key`.
   *
   * @param key The destination (`host:port`, as the pool keys it).
   * @param limit Slots at once; 0: no limit.
   * @param waitMs How long to wait for a slot.
   * @returns A release function (call it once done, however it ended), or why there is none:
   *   the wait timed out, or too many wait already.
   */
  async enter(key: string, limit: number, waitMs: number): Promise<GateResult> {
    const now = this.tryEnter(key, limit);
    if (now) return { release: now };
    const entry = this.#busy.get(key)!;
    if (entry.waiting.length >= MAX_WAITING) return "full";
    const { promise, resolve } = Promise.withResolvers<boolean>();
    entry.waiting.push(resolve);
    const wait = new Deadline(waitMs, () => new Error("no slot"));
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
    // The slot was handed over by a holder that ended: the count did not change.
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
