/**
 * A buffered reader over a connection: it reads message heads with a size cap and a deadline,
 * CRLF lines for chunked framing, and body bytes, always serving bytes it already holds (a
 * pipelined request, a TLS ClientHello sent right after CONNECT) before reading the socket.
 * It owns no socket: it only calls `read` on what it is given, and never closes it.
 *
 * @module
 */

import { Deadline } from "../deadline.ts";

/** What the reader reads from: anything with Deno.Conn's `read` (Deno.Reader is gone). */
export type Source = Pick<Deno.Conn, "read">;

/** Why a head could not be read. */
export type HeadFailure = "eof" | "too-large" | "timeout";

/** A head could not be read: the peer closed, the head is too big, or it came too slowly. */
export class HeadReadError extends Error {
  /** Which of the three failures it was. */
  readonly reason: HeadFailure;
  /** Whether any byte of the head had arrived. */
  readonly partial: boolean;

  /**
   * @param reason Which failure.
   * @param partial Whether any byte had arrived.
   */
  constructor(reason: HeadFailure, partial: boolean) {
    super(`head read failed: ${reason}`);
    this.name = "HeadReadError";
    this.reason = reason;
    this.partial = partial;
  }
}

/** Options of {@linkcode BufferedReader.readHead}. */
export interface ReadHeadOptions {
  /** Largest head accepted, in bytes, including the blank line. */
  maxBytes: number;
  /** Deadline for the whole head, in ms; starts at the call, or at the first byte if `idleMs`. */
  timeoutMs: number;
  /**
   * Wait this long for the first byte before the head deadline starts (keep-alive idle time);
   * if it passes with nothing received, the failure is a non-partial `timeout`.
   */
  idleMs?: number;
}

const FALSE = Promise.resolve(false);
/** A head deadline's error (one function, not a closure a read). */
const timedOut = () => new HeadReadError("timeout", false);
const ignore = () => {};
const LF = 10;
const CR = 13;
/**
 * A reader's first buffer, and what an idle keep-alive connection keeps: most request heads fit
 * (curl's and wrk's are under 200 bytes, a browser's about 0.5–1.5 KiB); a bigger one grows the
 * buffer once, page-mapped (see #begin). 2 KiB rather than 4 took about 3 KiB off each idle
 * client (`deno task connections`: 20.6 → 17.5 KiB after a collection).
 */
const INITIAL_SIZE = 2 * 1024;
/** Held bytes are moved to the front before a read that would have less room than this. */
const MIN_READ = 1024;

/** A read buffer over one connection; see the module doc. */
export class BufferedReader {
  #src: Source;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;
  /** A read left running by a timeout; the reader cannot be used after that. */
  #dead = false;
  /** The read in flight, if any (see #begin). */
  #pending: Promise<boolean> | undefined;
  /** Settle #pending (see #begin); undefined when no read is in flight. */
  #resolve: ((more: boolean) => void) | undefined;
  #reject: ((err: unknown) => void) | undefined;

  /**
   * @param src The connection to read from.
   * @param size Initial buffer size in bytes. @default 2048
   */
  constructor(src: Source, size = INITIAL_SIZE) {
    this.#src = src;
    this.#buf = new Uint8Array(size);
  }

  /** Bytes held but not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Whether the peer has closed its sending side and every held byte was consumed. */
  get done(): boolean {
    return this.#eof && this.#start === this.#end;
  }

  /**
   * Starts one read into the free end of the buffer (growing or compacting it first, up to
   * `limit`). The read applies its own result, so whoever awaits it — `#fill` or a `watch` —
   * sees the same outcome, and no second read is ever started while one is in flight (the
   * buffer must not move under a read either).
   *
   * @param limit Largest the buffer may grow to.
   * @param own Whether the read's promise is the reader's own (see #hold): for a read that a
   *   head deadline may cut short. A body read's is the read's `then`, one promise fewer.
   */
  #begin(limit: number, own: boolean): Promise<boolean> {
    // Nothing held: read at the front. (Reading into whatever was left of the buffer's end cut
    // a keep-alive connection's reads short: a 1,264-byte response came in two `recv`s once
    // 1,024 bytes were left, one system call and one op more a request, seen with strace.)
    if (this.#start === this.#end) this.#start = this.#end = 0;
    else if (this.#start > 0 && this.#buf.length - this.#end < MIN_READ) this.#compact();
    if (this.#end === this.#buf.length) {
      if (this.#start > 0) {
        this.#compact();
      } else {
        // Straight to the limit: growing step by step left every smaller buffer behind as garbage
        // (a 60 KiB slow head cost 72 KiB beyond its bytes, measured by `deno task
        // connections`). A resizable ArrayBuffer is mapped page by page by V8, not taken from
        // malloc: pages not yet written are not resident, and once the buffer is collected its
        // pages go back to the system (malloc kept 2,000 freed 64 KiB buffers: +140 MiB after
        // the clients had gone). readHead shrinks it back once the head is consumed.
        const size = Math.max(limit, 1);
        const grown = new Uint8Array(new ArrayBuffer(size, { maxByteLength: size }));
        if (grown.length <= this.#buf.length) throw new RangeError("buffer limit reached");
        grown.set(this.#buf.subarray(0, this.#end));
        this.#buf = grown;
      }
    }
    // (The whole buffer when reading at its front, as most reads now do: no view to make.)
    const into = this.#end === 0 ? this.#buf : this.#buf.subarray(this.#end);
    const read = this.#src.read(into);
    if (!own) {
      const pending = read.then(this.#got, this.#lost);
      this.#pending = pending;
      return pending;
    }
    // The reader's own promise, settled when the read completes or rejected early by a head
    // deadline (#expire): a wait under a deadline makes no promise or closures to race the two.
    const pending = new Promise<boolean>(this.#hold);
    this.#pending = pending;
    read.then(this.#settle, this.#fail);
    return pending;
  }

  /** Applies a read's result (made once per reader, not a closure per read). */
  #got = (n: number | null): boolean => {
    this.#pending = undefined;
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  };

  /** Applies a read's failure. */
  #lost = (err: unknown): never => {
    this.#pending = undefined;
    throw err;
  };

  /** Keeps the settling functions of a read of the reader's own promise (see #begin). */
  #hold = (resolve: (more: boolean) => void, reject: (err: unknown) => void): void => {
    this.#resolve = resolve;
    this.#reject = reject;
  };

  /** Settles the reader's own promise with the read's result. */
  #settle = (n: number | null): void => {
    const resolve = this.#resolve;
    if (!resolve) return; // rejected by its deadline already: the reader is dead
    this.#resolve = this.#reject = undefined;
    resolve(this.#got(n));
  };

  /** Rejects the reader's own promise with the read's failure. */
  #fail = (err: unknown): void => {
    const reject = this.#reject;
    if (!reject) return; // rejected by its deadline already
    this.#pending = this.#resolve = this.#reject = undefined;
    reject(err);
  };

  /**
   * A head deadline passed: the read in flight fails with its error now, and the reader is dead
   * (the caller closes the socket, which ends the read).
   */
  #expire = (err: Error): void => {
    const reject = this.#reject;
    if (!reject) return; // the read completed: its result stands
    this.#dead = true;
    this.#pending = this.#resolve = this.#reject = undefined;
    reject(err);
  };

  /** Moves the held bytes to the front of the buffer. */
  #compact(): void {
    this.#buf.copyWithin(0, this.#start, this.#end);
    this.#end -= this.#start;
    this.#start = 0;
  }

  /**
   * Reads more bytes from the source into the buffer (or waits for the read already in flight).
   *
   * @returns false at end of stream.
   */
  #fill(limit: number, deadline?: Deadline): Promise<boolean> {
    // Not async: on the hot path every async frame costs (profiled), so promises pass through.
    if (this.#eof) return FALSE;
    if (this.#dead) return Promise.reject(new Error("reader used after a timed-out read"));
    const read = this.#pending ?? this.#begin(limit, deadline !== undefined);
    if (!deadline) return read;
    if (deadline.expired) {
      this.#dead = true;
      read.catch(ignore);
      return deadline.promise;
    }
    if (this.#reject) {
      deadline.onExpire(this.#expire); // (the read is the reader's own promise: see #begin)
      return read;
    }
    // A read started without a promise of the reader's own (a body read's, left in flight).
    return deadline.bound(read).catch((err) => {
      if (deadline.expired) this.#dead = true;
      throw err;
    });
  }

  /**
   * Starts a read (if none is in flight) and calls `done` when it completes: bytes arrived, the
   * peer closed, or the read failed. The bytes stay buffered for the next caller. The upstream
   * pool uses this to notice an idle connection closing or sending unasked-for bytes, and an
   * exchange to notice its client leaving while it waits for the upstream.
   *
   * @param done Called once the read completes, with `true` when the peer closed or the read
   *   failed (the peer is gone) and `false` when bytes arrived.
   */
  watch(done: (gone: boolean) => void): void {
    if (this.#eof || this.#dead) {
      queueMicrotask(() => done(true));
      return;
    }
    // (The reader's own promise: the next head read, under its deadline, will join this read.)
    const read = this.#pending ?? this.#begin(this.#buf.length, true);
    read.then((more) => done(!more), () => done(true));
  }

  /**
   * Reads one message head, up to and including its blank line, skipping empty lines before it
   * (RFC 9112 §2.2). Lines may end in CRLF or a bare LF; the parser rejects a bare CR.
   *
   * @param options Size cap and deadlines.
   * @returns The head bytes (a view, valid until the next call on this reader), or null if the
   *   peer closed before sending any byte.
   * @throws {HeadReadError} when the head is too large, too slow, or cut short.
   */
  async readHead(options: ReadHeadOptions): Promise<Uint8Array | null> {
    const { maxBytes } = options;
    let deadline: Deadline | undefined;
    let armedForHead = options.idleMs === undefined;
    if (this.#start === this.#end && !this.#pending && this.#buf.length > INITIAL_SIZE) {
      // A big head (or body piece) grew the buffer; an idle keep-alive client does not keep it.
      this.#buf = new Uint8Array(INITIAL_SIZE);
      this.#start = this.#end = 0;
    }
    try {
      let scan = 0;
      for (;;) {
        // Skip leading empty lines (a stray CRLF after a previous body).
        while (scan === 0 && this.#start < this.#end) {
          const b = this.#buf[this.#start];
          if (b === LF) this.#start++;
          else if (b === CR && this.#start + 1 < this.#end && this.#buf[this.#start + 1] === LF) {
            this.#start += 2;
          } else break;
        }
        if (!armedForHead && this.#start < this.#end) {
          deadline?.reset(options.timeoutMs);
          armedForHead = true;
        }
        const end = findHeadEnd(this.#buf, this.#start + scan, this.#end);
        if (end >= 0) {
          if (end - this.#start > maxBytes) throw new HeadReadError("too-large", true);
          const head = this.#buf.subarray(this.#start, end);
          this.#start = end;
          return head;
        }
        const held = this.#end - this.#start;
        if (held >= maxBytes) throw new HeadReadError("too-large", true);
        scan = Math.max(0, held - 3);
        const cap = Math.max(this.#buf.length, Math.min(maxBytes + 4, maxBytes * 2));
        // The deadline starts with the first read that has to wait.
        deadline ??= new Deadline(armedForHead ? options.timeoutMs : options.idleMs!, timedOut);
        if (!(await this.#fill(cap, deadline))) {
          if (this.#end - this.#start === 0) return null;
          throw new HeadReadError("eof", true);
        }
      }
    } catch (err) {
      if (err instanceof HeadReadError && err.reason === "timeout") {
        throw new HeadReadError("timeout", this.#end > this.#start);
      }
      throw err;
    } finally {
      deadline?.cancel();
    }
  }

  /**
   * Returns up to `max` held bytes, reading the source once if none are held. The view is only
   * valid until the next call on this reader (or the next use of `scratch`).
   *
   * @param max Largest number of bytes wanted.
   * @param scratch When nothing is held, read straight into this (bigger) buffer instead of the
   *   reader's own: bulk body copies then move large pieces without growing every reader.
   * @returns A view of the bytes, or null at end of stream.
   */
  async read(max: number, scratch?: Uint8Array): Promise<Uint8Array | null> {
    if (this.#start === this.#end) {
      if (scratch && !this.#pending && !this.#eof && !this.#dead) {
        const n = await this.#src.read(scratch.subarray(0, Math.min(max, scratch.length)));
        if (n !== null) return scratch.subarray(0, n);
        this.#eof = true;
        return null;
      }
      if (!this.#pending) this.#start = this.#end = 0;
      if (!(await this.#fill(this.#buf.length))) return null;
    }
    const n = Math.min(max, this.#end - this.#start);
    const view = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return view;
  }

  /**
   * Reads one line ending in CRLF (chunked framing, RFC 9112 §7.1); a bare LF is an error.
   *
   * @param maxBytes Longest line accepted, CRLF included.
   * @returns The line without its CRLF (a copy), or null at end of stream before any byte.
   * @throws {SyntaxError} for a bare LF, a line too long, or a stream cut mid-line.
   */
  async readLine(maxBytes: number): Promise<Uint8Array | null> {
    let scan = this.#start;
    for (;;) {
      const lf = indexOfLf(this.#buf, scan, this.#end);
      if (lf >= 0) {
        if (lf === this.#start || this.#buf[lf - 1] !== CR) {
          throw new SyntaxError("line ends in a bare LF");
        }
        if (lf + 1 - this.#start > maxBytes) throw new SyntaxError("line too long");
        const line = this.#buf.slice(this.#start, lf - 1);
        this.#start = lf + 1;
        return line;
      }
      if (this.#end - this.#start >= maxBytes) throw new SyntaxError("line too long");
      scan = this.#end;
      const before = this.#start;
      if (!(await this.#fill(Math.max(this.#buf.length, maxBytes)))) {
        if (this.#end === this.#start) return null;
        throw new SyntaxError("stream ended mid-line");
      }
      scan -= before - this.#start; // the buffer may have been compacted
    }
  }

  /**
   * Reads until at least `n` bytes are held (the buffer grows to hold them), the peer closes,
   * or `waitMs` passes. Running out of time is not a failure: a read left in flight stays the
   * reader's, and the next call picks it up.
   *
   * @param n Bytes wanted in the buffer.
   * @param waitMs How long to wait (coarse: see Deadline).
   * @returns true once `n` bytes are held; false when the peer closed first or time ran out.
   */
  async fillTo(n: number, waitMs: number): Promise<boolean> {
    if (this.#end - this.#start >= n) return true;
    const wait = new Deadline(waitMs, () => new Error("fillTo: time ran out"));
    try {
      while (this.#end - this.#start < n) {
        if (this.#eof || this.#dead) return false;
        const read = this.#pending ?? this.#begin(Math.max(this.#buf.length, n), true);
        if (!(await Promise.race([read, wait.promise]))) return false;
      }
      return true;
    } catch (err) {
      if (wait.expired) return false;
      throw err;
    } finally {
      wait.cancel();
    }
  }

  /**
   * Takes exactly `n` bytes if they are all held already, without reading the source.
   *
   * @param n Bytes wanted.
   * @returns A view of them (valid until the next call on this reader), or null.
   */
  takeBuffered(n: number): Uint8Array | null {
    if (this.#end - this.#start < n) return null;
    const view = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    return view;
  }

  /**
   * Takes every held byte out of the reader and lets its buffer go: the connection is handed
   * over whole (a CONNECT tunnel, whose early bytes go upstream first) and never read through
   * this reader again, so a long tunnel does not keep a head buffer.
   *
   * @returns A copy of the held bytes, possibly empty.
   */
  drain(): Uint8Array {
    const rest = this.#buf.slice(this.#start, this.#end);
    this.#buf = new Uint8Array(0);
    this.#start = this.#end = 0;
    return rest;
  }
}

/**
 * Finds the end of a head: the index just past an LF followed by LF or CRLF.
 *
 * @returns That index, or -1 if the blank line is not in `buf[from, to)`.
 */
function findHeadEnd(buf: Uint8Array, from: number, to: number): number {
  let i = from;
  for (;;) {
    const lf = indexOfLf(buf, i, to);
    if (lf < 0) return -1;
    if (lf + 1 < to && buf[lf + 1] === LF) return lf + 2;
    if (lf + 2 < to && buf[lf + 1] === CR && buf[lf + 2] === LF) return lf + 3;
    if (lf + 2 >= to && lf + 1 < to && buf[lf + 1] === CR) return -1; // wait for the next byte
    i = lf + 1;
  }
}

/**
 * The index of the first LF in `buf[from, to)`, or -1. A loop, not `indexOf`: on a subarray it
 * made an object a line, and from a position it would scan past `to`, through a grown buffer's
 * stale bytes, at every read of a slow head.
 */
function indexOfLf(buf: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) if (buf[i] === LF) return i;
  return -1;
}
