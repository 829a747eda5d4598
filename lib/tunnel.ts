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

import { closeQuietly } from "./dial.ts";
import { writeAll } from "./http1/body.ts";

/** Bytes relayed each way, and why the tunnel ended if not by both sides closing. */
export interface TunnelResult {
  /** Client → upstream bytes, including the early bytes. */
  up: number;
  /** Upstream → client bytes. */
  down: number;
  /** Set when a direction failed (reset, write error) instead of ending cleanly. */
  error?: string;
}

const PIECE = 64 * 1024;

/** A pull-based stream over `conn.read` that counts bytes and never closes the socket. */
function readableOf(conn: Deno.Conn, count: (n: number) => void): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buf = new Uint8Array(PIECE);
      const n = await conn.read(buf);
      if (n === null) {
        controller.close();
        return;
      }
      count(n);
      controller.enqueue(buf.subarray(0, n));
    },
  }, { highWaterMark: 0 });
}

/** A stream over `conn.write` whose close and abort leave the socket alone. */
function writableOf(conn: Deno.Conn): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({ write: (chunk) => writeAll(conn, chunk) });
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
): Promise<TunnelResult> {
  const result: TunnelResult = { up: early.length, down: 0 };
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
    try {
      await readableOf(from, count).pipeTo(writableOf(to), { preventClose: true });
      to.closeWrite();
    } catch (err) {
      fail(err);
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
  await Promise.all([
    relay(client, upstream, (n) => (result.up += n)),
    relay(upstream, client, (n) => (result.down += n)),
  ]);
  return result;
}
