/**
 * The CONNECT byte relay: two `ReadableStream.pipeTo` directions between the client and the
 * upstream, half-close aware. Deno's `conn.readable` closes the whole socket at EOF and closing
 * `conn.writable` does too (denoland/deno#22258), so each side is wrapped in a stream of our own:
 * when one direction ends, only the write side of its destination is shut (`closeWrite`), and
 * the sockets are closed once both directions are done, so a reply sent after the client
 * half-closes still arrives. Bytes the client sent right after the CONNECT head go upstream
 * first. The caller owns both sockets; this module only half-closes them.
 *
 * @module
 */

import { Deadline } from "../deadline.ts";
import { closeQuietly } from "../upstream/dial.ts";
import { writeAll } from "../http1/body.ts";

/** Bytes relayed each way, and why the tunnel ended if not by both sides closing. */
export interface TunnelResult {
  /** Client → upstream bytes, including the early bytes. */
  up: number;
  /** Upstream → client bytes. */
  down: number;
  /** Set when a direction failed (reset, write error) instead of ending cleanly. */
  error?: string;
}

/** First read size of each direction: an idle tunnel holds two buffers this big per side. */
const SMALL = 2 * 1024;
/** Largest read size, reached by a direction that keeps filling its buffer (bulk transfer). */
const LARGE = 256 * 1024;

/**
 * A pull-based stream over `conn.read` that counts bytes and never closes the socket.
 *
 * It reads into two buffers used in turn, not a new one per read: the source has
 * highWaterMark 0 and the sink 1, so pipeTo asks for the next chunk only once the write of the
 * previous one finished, and the second buffer is a margin on top of that (a test tunnels a
 * non-repeating pattern and checks every byte). The buffers grow ×4 each time a read fills them,
 * from 2 KiB to 256 KiB, so bulk transfers use big reads while idle tunnels stay small
 * (measured: an abandoned tunnel held 107 KiB with two 16 KiB buffers per direction from the
 * start; see `deno task connections`).
 * Measured on this 2-core machine, `curl -p` fetching 100 MiB from nginx on 127.0.0.1, MB/s of
 * three runs: a new 64 KiB buffer per read 498/646/850, a new 256 KiB one 811/839/1011, two
 * reused 64 KiB 682/807/1343, two reused 256 KiB 976/1095/1085, a `type: "bytes"` stream with
 * autoAllocateChunkSize 256 KiB 717/917/1094; a plain read/write loop without streams (the
 * ceiling) 1225/1413/1373.
 */
function readableOf(conn: Deno.Conn, count: (n: number) => void): ReadableStream<Uint8Array> {
  let size = SMALL;
  let bufs: Uint8Array[] = [];
  let turn = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      // Made on first use, so a direction that never carries a byte costs none.
      const buf = bufs[turn] ??= new Uint8Array(size);
      turn ^= 1;
      const n = await conn.read(buf);
      if (n === null) {
        bufs = []; // this direction is over: its buffers go back now, not with the tunnel
        controller.close();
        return;
      }
      count(n);
      controller.enqueue(buf.subarray(0, n));
      // The buffer in flight stays valid: only the next reads use the new size. A full read
      // grows the pair ×4 (bulk); a read that used an eighth or less of a big buffer brings it
      // back to the first size, so a tunnel that goes quiet after a download does not keep
      // 512 KiB waiting on its next read.
      const next = n === buf.length && size < LARGE
        ? Math.min(size * 4, LARGE)
        : n <= size / 8 && size > SMALL
        ? SMALL
        : size;
      if (next !== size) {
        size = next;
        bufs = [];
        turn = 0;
      }
    },
  }, { highWaterMark: 0 });
}

/**
 * A stream over `conn.write` whose close and abort leave the socket alone. A write that takes
 * no byte before `limit` passes fails (the peer does not read): the deadline is moved to
 * `writeMs` from now before each write and parked after it.
 */
function writableOf(conn: Deno.Conn, limit: Deadline, writeMs: number): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      const write = writeAll(conn, chunk);
      limit.reset(writeMs);
      try {
        // (Not a race against the deadline's promise, which lives as long as the tunnel: each
        // race left a reaction on it, 3.3 MB over 10,000 writes. See Deadline.bound, which also
        // handles a write abandoned after a timeout: both sockets are closed then.)
        await limit.bound(write);
      } finally {
        limit.park();
      }
    },
  }, { highWaterMark: 1 });
}

/**
 * Relays bytes both ways until both directions end or one fails.
 *
 * @param client The client's socket (after the 200 was sent).
 * @param upstream The upstream socket.
 * @param early Bytes read from the client past the CONNECT head.
 * @returns Byte counts and the failure, if any. Both sockets are still open; the caller closes.
 */
export async function tunnel(
  client: Deno.TcpConn,
  upstream: Deno.TcpConn,
  early: Uint8Array = new Uint8Array(0),
  options: {
    idleTimeoutMs?: number;
    halfClosedTimeoutMs?: number;
    writeTimeoutMs?: number;
    /** Counted into as bytes flow (the exchange's record), for the live view. */
    live?: { bytesUp: number; bytesDown: number };
  } = {},
): Promise<TunnelResult> {
  const result: TunnelResult = { up: early.length, down: 0 };
  const live = options.live;
  if (live) live.bytesUp = early.length;
  let idleMs = options.idleTimeoutMs ?? 900_000;
  const writeMs = options.writeTimeoutMs ?? 900_000;
  let failed = false;
  const fail = (err: unknown) => {
    if (failed) return;
    failed = true;
    result.error = err instanceof Error ? err.message : String(err);
    // Unblock the other direction: its pending read or write rejects on a closed socket.
    closeQuietly(client);
    closeQuietly(upstream);
  };
  const relay = async (from: Deno.Conn, to: Deno.TcpConn, count: (n: number) => void) => {
    const limit = new Deadline(writeMs, () => new Error(`took no byte for ${writeMs} ms`));
    limit.park();
    try {
      await readableOf(from, count).pipeTo(writableOf(to, limit, writeMs), { preventClose: true });
      await to.closeWrite();
      // One side has finished: what is left is a reply, or a peer that left without closing
      // (a client gone, an upstream that never shuts): it gets the shorter limit.
      idleMs = Math.min(idleMs, options.halfClosedTimeoutMs ?? 60_000);
      idle.reset(idleMs);
    } catch (err) {
      fail(err);
    } finally {
      limit.cancel();
    }
  };
  if (early.length > 0) {
    try {
      await writeAll(upstream, early);
    } catch (err) {
      fail(err);
      return result;
    }
  }
  // One deadline, pushed back by every byte either way; when it passes, both sides close.
  const idle = new Deadline(idleMs, () => new Error(`idle for ${idleMs} ms`));
  idle.promise.catch((err) => fail(err));
  const active = () => idle.reset(idleMs);
  try {
    await Promise.all([
      relay(client, upstream, (n) => {
        result.up += n;
        if (live) live.bytesUp += n;
        active();
      }),
      relay(upstream, client, (n) => {
        result.down += n;
        if (live) live.bytesDown += n;
        active();
      }),
    ]);
  } finally {
    idle.cancel();
  }
  return result;
}
