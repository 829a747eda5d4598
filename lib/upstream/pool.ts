/**
 * Idle upstream connections kept for reuse, per (host, port). A connection comes back only after
 * a response whose framing was certain and complete; while idle, a read is kept in flight on it,
 * so a connection the origin closes (or one that sends bytes nobody asked for) is dropped at
 * once. Per host at most `maxIdlePerHost` are kept (the least recently used go first), each at
 * most `idleTimeoutMs`. The pool closes what it drops; a connection taken out is the taker's.
 *
 * @module
 */

import { Deadline } from "../deadline.ts";
import { closeQuietly } from "./dial.ts";
import type { BufferedReader } from "../http1/head.ts";
import { type Listed, Roster } from "../roster.ts";

/** A socket's peer address, copied out of Deno's address object once (see Upstream.peer). */
export interface Peer {
  /** The IP address. */
  ip: string;
  /** The port. */
  port: number;
}

/** An upstream connection with its reader (bytes already read from it live there). */
export interface Upstream {
  /** The socket. */
  conn: Deno.TcpConn;
  /** Its buffered reader. */
  reader: BufferedReader;
  /** Pool key: `host:port` as dialed. */
  key: string;
  /** Whether this connection carried an earlier exchange. */
  reused: boolean;
  /**
   * The address it is connected to, read from the socket once: each read of a Deno address
   * object's fields was a megamorphic load (V8's `--log-ic`), and this one was read every
   * request the connection carried.
   */
  peer: Peer;
}

interface Idle extends Listed {
  upstream: Upstream;
  /** Its place in release order, for the one idle longest. */
  seq: number;
  /** When it has been idle too long (the shared coarse ticker: no timer per release). */
  expiry: Deadline;
}

/** Options of {@linkcode UpstreamPool}. */
export interface PoolOptions {
  /** Idle connections kept per (host, port); 0 turns reuse off. @default 256 */
  maxIdlePerHost?: number;
  /** How long a connection may stay idle. @default 15000 */
  idleTimeoutMs?: number;
}

/**
 * Idle connections held in all, whatever their destinations: past it the one idle longest goes
 * (each destination's own limit is `maxIdlePerHost`; without this, a client naming thousands of
 * hosts would leave the proxy thousands of idle sockets for the idle timeout).
 */
export const MAX_IDLE_TOTAL = 1024;

/** An idle connection's expiry error (one function, not a closure a release). */
const idleTooLong = () => new Error("idle too long");

/** The pool; see the module doc. */
export class UpstreamPool {
  #idle = new Map<string, Idle[]>();
  /**
   * Every idle entry: a roster, not a Set (a Set that churns this often kept the entries it had
   * alive through young collections; see lib/roster.ts).
   */
  #all = new Roster<Idle>();
  #released = 0;
  #max: number;
  #idleTimeoutMs: number;

  /**
   * @param options Limits.
   */
  constructor(options: PoolOptions = {}) {
    this.#max = options.maxIdlePerHost ?? 256;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 15_000;
  }

  /** Idle connections held now. */
  get idle(): number {
    return this.#all.size;
  }

  /**
   * Takes the most recently used idle connection to `key`, if any.
   *
   * @param key `host:port`.
   * @returns The connection (marked reused), or undefined.
   */
  take(key: string): Upstream | undefined {
    const list = this.#idle.get(key);
    const entry = list?.pop();
    if (!entry) return undefined;
    if (list!.length === 0) this.#idle.delete(key);
    this.#all.delete(entry);
    entry.expiry.cancel();
    entry.upstream.reused = true;
    return entry.upstream;
  }

  /**
   * Keeps a connection for reuse (the caller vouches that its last exchange ended cleanly).
   *
   * @param upstream The connection; the pool owns it from now on.
   */
  release(upstream: Upstream): void {
    if (this.#max <= 0 || upstream.reader.buffered > 0) {
      closeQuietly(upstream.conn);
      return;
    }
    // Room first: a drop that empties a destination's list takes the list out of the map, so
    // the list is looked up again after it (pushed onto the one dropped, a connection was lost
    // to the pool: never taken, never closed, and counted against MAX_IDLE_TOTAL for good).
    const before = this.#idle.get(upstream.key);
    if (before && before.length >= this.#max) this.#drop(before[0]!);
    else if (this.#all.size >= MAX_IDLE_TOTAL) this.#drop(this.#oldest());
    let list = this.#idle.get(upstream.key);
    if (!list) this.#idle.set(upstream.key, list = []);
    const entry: Idle = {
      upstream,
      seq: this.#released++,
      slot: -1,
      expiry: new Deadline(this.#idleTimeoutMs, idleTooLong),
    };
    entry.expiry.onExpire(() => this.#drop(entry)); // (no promise: most entries are taken)
    list.push(entry);
    this.#all.add(entry);
    // Whatever completes this read while idle — EOF, bytes, an error — ends the connection.
    upstream.reader.watch(() => this.#drop(entry));
  }

  /** The entry idle longest (a scan: only a full pool, at most MAX_IDLE_TOTAL, needs it). */
  #oldest(): Idle {
    let oldest: Idle | undefined;
    this.#all.forEach((e) => {
      if (!oldest || e.seq < oldest.seq) oldest = e;
    });
    return oldest!;
  }

  #drop(entry: Idle): void {
    const list = this.#idle.get(entry.upstream.key);
    const i = list?.indexOf(entry) ?? -1;
    if (i < 0) return; // taken before the read completed: the taker owns it
    list!.splice(i, 1);
    if (list!.length === 0) this.#idle.delete(entry.upstream.key);
    this.#all.delete(entry);
    entry.expiry.cancel();
    closeQuietly(entry.upstream.conn);
  }

  /** Closes every idle connection. */
  closeAll(): void {
    for (const list of [...this.#idle.values()]) {
      for (const entry of [...list]) this.#drop(entry);
    }
  }
}

/**
 * One client connection's hold on the upstream connection its last exchange used. A keep-alive
 * client that asks the same host:port again gets the same upstream connection without a trip
 * through the shared pool, so N busy clients keep N upstream connections instead of churning
 * through the pool's idle cap. While held, a read stays in flight, so an upstream close drops it;
 * a held connection older than the idle timeout is not used. Asking another host, the client
 * leaving, or its request waiting for a `--max-active-per-host` slot (see transport.ts
 * `waitForSlot`) hands the held connection to the pool.
 */
export class HeldUpstream {
  #pool: UpstreamPool;
  #idleTimeoutMs: number;
  #held: { upstream: Upstream; since: number } | undefined;

  /**
   * @param pool Where a connection goes when this client no longer wants it.
   * @param idleTimeoutMs How long a held connection may sit unused. @default 15000
   */
  constructor(pool: UpstreamPool, idleTimeoutMs = 15_000) {
    this.#pool = pool;
    this.#idleTimeoutMs = idleTimeoutMs;
  }

  /**
   * Takes a live connection to `key`: the held one if it matches, else one from the pool.
   *
   * @param key `host:port`.
   * @returns The connection (marked reused), or undefined.
   */
  take(key: string): Upstream | undefined {
    const held = this.#held;
    if (held) {
      this.#held = undefined;
      if (held.upstream.key !== key) {
        this.#pool.release(held.upstream);
      } else if (performance.now() - held.since <= this.#idleTimeoutMs) {
        held.upstream.reused = true;
        return held.upstream;
      } else {
        closeQuietly(held.upstream.conn);
      }
    }
    return this.#pool.take(key);
  }

  /**
   * Holds a connection whose last exchange ended cleanly; one held before goes to the pool.
   *
   * @param upstream The connection; held from now on.
   */
  hold(upstream: Upstream): void {
    if (this.#held) this.#pool.release(this.#held.upstream);
    const held = { upstream, since: performance.now() };
    this.#held = held;
    upstream.reader.watch(() => {
      if (this.#held !== held) return; // taken for an exchange: the read was its response
      this.#held = undefined;
      closeQuietly(upstream.conn);
    });
  }

  /** Hands the held connection to the pool (the client connection is ending). */
  release(): void {
    if (this.#held) this.#pool.release(this.#held.upstream);
    this.#held = undefined;
  }

  /** Closes the held connection (forced shutdown). */
  close(): void {
    if (this.#held) closeQuietly(this.#held.upstream.conn);
    this.#held = undefined;
  }
}
