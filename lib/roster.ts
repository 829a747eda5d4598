/**
 * A set for members that come and go all the time (live deadlines, open connections, idle
 * upstream connections): an array in no order, each member keeping its own slot, so one leaves
 * by a swap with the last. It owns no member and knows nothing of what they are.
 *
 * Why not a `Set` or a `Map`: V8 rehashes a hash table that keeps gaining and losing members
 * every few dozen changes, and links each replaced table to its successor (for live iterators)
 * while the replaced one keeps the members it had. Once one such table reaches the old
 * generation, a young collection cannot tell it is dead: every later table, and each member
 * they held with all it refers to, survives the young collections in a chain until the next
 * full one. Measured on Deno 2.9.6 under wrk (`--v8-flags=--trace-gc-nvp`): the deadlines'
 * `Set` alone made every scavenge promote about 1.7 MB (the exchanges their callbacks held) and
 * pause 5.5 ms; as a roster, 32 KB and 0.9 ms. An array's store is only replaced as it grows,
 * and a member that leaves is cleared from it.
 *
 * @module
 */

/** A member of one roster at a time: where it stands, -1 when in none. */
export interface Listed {
  /** The member's index in its roster (the roster's to set). */
  slot: number;
}

/** The set; see the module doc. */
export class Roster<T extends Listed> {
  #items: T[] = [];

  /** Members now. */
  get size(): number {
    return this.#items.length;
  }

  /**
   * Adds a member that is in no roster.
   *
   * @param item The member; its `slot` is set.
   */
  add(item: T): void {
    item.slot = this.#items.push(item) - 1;
  }

  /**
   * Removes a member; one already removed (slot -1) is left alone.
   *
   * @param item The member; its `slot` becomes -1.
   */
  delete(item: T): void {
    const i = item.slot;
    if (i < 0 || this.#items[i] !== item) return;
    item.slot = -1;
    const last = this.#items.pop()!;
    if (last !== item) {
      this.#items[i] = last;
      last.slot = i;
    }
  }

  /**
   * Calls `fn` once for each member there at the call, in no order, except one removed before
   * its turn. `fn` may add and remove members (one it adds is not visited).
   *
   * @param fn Called once per member.
   */
  forEach(fn: (item: T) => void): void {
    // Over a copy: a removal moves the last member into the gap.
    for (const item of [...this.#items]) if (item.slot >= 0) fn(item);
  }

  /**
   * A copy of the members, in no order.
   *
   * @returns The members now.
   */
  values(): T[] {
    return [...this.#items];
  }
}
