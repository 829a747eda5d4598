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
const NO_SLOT = () => new Error("no slot");

/** Requests waiting for a slot to one destination, at most; more are refused. */
export const MAX_WAITING = 4096;

/** One request waiting for a slot: a node of its destination's queue. */
interface Waiter {
  resolve: (got: GateResult) => void;
  prev: Waiter | undefined;
  next: Waiter | undefined;
  /** Still in the queue (not handed a slot, not timed out). */
  queued: boolean;
  /** How long it may wait; cancelled when it is handed a slot. */
  wait: Deadline;
}

/**
 * Slots taken for one destination, and who waits for one, oldest first: a linked list, so a wait
 * that times out leaves it at once (an array had to be scanned for it, with up to 4,096 waiting).
 */
interface Entry {
  n: number;
  first: Waiter | undefined;
  last: Waiter | undefined;
  waiting: number;
}

/** How a wait for a slot ended. */
export type GateResult = { release: () => void } | "timeout" | "full";

/** Takes `w` out of its queue; does nothing when it already left. */
function unlink(entry: Entry, w: Waiter): void {
  if (!w.queued) return;
  w.queued = false;
  if (w.prev) w.prev.next = w.next;
  else entry.first = w.next;
  if (w.next) w.next.prev = w.prev;
  else entry.last = w.prev;
  w.prev = w.next = undefined;
  entry.waiting--;
}

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
    if (!entry) {
      this.#busy.set(key, entry = { n: 0, first: undefined, last: undefined, waiting: 0 });
    }
    if (entry.n >= limit || entry.waiting > 0) return undefined;
    entry.n++;
    return this.#releaser(key, entry);
  }

  /**
   * Waits for a slot to `key`. Not an async function: a request waiting behind a thousand others
   * holds its queue node, one promise and its deadline, and no suspended frame of its own (at
   * 1000 clients, what the waiting requests hold is what V8's young collections copy).
   *
   * @param key The destination (`host:port`, as the pool keys it).
   * @param limit Slots at once; 0: no limit.
   * @param waitMs How long to wait for a slot.
   * @returns A release function (call it once done, however it ended), or why there is none:
   *   the wait timed out, or too many wait already.
   */
  enter(key: string, limit: number, waitMs: number): Promise<GateResult> {
    const now = this.tryEnter(key, limit);
    if (now) return Promise.resolve({ release: now });
    const entry = this.#busy.get(key)!;
    if (entry.waiting >= MAX_WAITING) return Promise.resolve("full");
    const { promise, resolve } = Promise.withResolvers<GateResult>();
    const waiter: Waiter = {
      resolve,
      prev: entry.last,
      next: undefined,
      queued: true,
      wait: new Deadline(waitMs, NO_SLOT),
    };
    if (entry.last) entry.last.next = waiter;
    else entry.first = waiter;
    entry.last = waiter;
    entry.waiting++;
    // A callback rather than the deadline's promise: no promise and reaction a waiting request.
    // Out of the queue at once, so a release never hands its slot to a waiter that left; one
    // handed a slot has left the queue and had its deadline cancelled first.
    waiter.wait.onExpire(() => {
      unlink(entry, waiter);
      resolve("timeout");
    });
    return promise;
  }

  /** A slot's release: hands it to the first waiter, or gives it back. Idempotent. */
  #releaser(key: string, entry: Entry): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = entry.first;
      if (next) {
        // Handed over: the count does not change.
        unlink(entry, next);
        next.wait.cancel();
        next.resolve({ release: this.#releaser(key, entry) });
      } else if (--entry.n === 0) this.#busy.delete(key);
    };
  }
}
