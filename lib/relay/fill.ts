/**
 * Reads a response body from upstream into the cache's store, on its own: no client's pace
 * decides it. The clients of that response (the one whose request fetched it, and any that
 * collapsed onto it) read the store's file as it grows (`cached.ts` followBody), so a slow
 * client never slows the others or the store, and a client that leaves never cuts the others
 * off. When every client has left with more than {@linkcode QUICK_ABORT_BYTES} still to come,
 * the fetch gives up (squid's `quick_abort`); less than that is finished for the store. Once
 * the body is complete it is committed, and the upstream connection goes back to the pool.
 *
 * @module
 */

import { BodyError, copyChunked, copyLength, type Sink } from "../http1/body.ts";
import type { Framing } from "../http1/headers.ts";
import type { BodyWriter } from "../cache/store.ts";
import { closeQuietly } from "../upstream/dial.ts";
import type { Upstream } from "../upstream/pool.ts";
import type { ExchangeContext } from "../upstream/transport.ts";

/** With no client left, a body with more than this still to come is given up. */
export const QUICK_ABORT_BYTES = 1024 * 1024;

/** Where the fetched body goes besides the store: nowhere. */
const NOWHERE: Sink = { write: (bytes) => Promise.resolve(bytes.length) };

/**
 * Starts reading `framing`'s body from `up` into `writer`, in the background (the cache waits
 * for it, or stops it, at close). The upstream connection is the fetch's from now on.
 *
 * @param ctx Settings; `ctx.cache` is set.
 * @param up The upstream connection, its response head read.
 * @param framing The body's framing: a length, or chunked (a response without a body has
 *   nothing to fetch).
 * @param writer Where the body goes.
 * @param reusable Whether the connection may serve another request after the body.
 */
export function fillStore(
  ctx: ExchangeContext,
  up: Upstream,
  framing: Extract<Framing, { kind: "length" | "chunked" }>,
  writer: BodyWriter,
  reusable: boolean,
): void {
  let stopped = false;
  const stop = (why: string) => {
    if (stopped) return;
    stopped = true;
    writer.abort(why);
    closeQuietly(up.conn);
  };
  writer.onUnread(() => {
    const left = writer.remaining;
    if (left === undefined || left > QUICK_ABORT_BYTES) stop("every client left");
  });
  const work = (async () => {
    const options = {
      tee: (piece: Uint8Array) => writer.write(piece),
      readTimeoutMs: ctx.config.readTimeoutMs,
      maxLineBytes: ctx.config.maxHeaderBytes,
    };
    try {
      if (framing.kind === "length") await copyLength(up.reader, NOWHERE, framing.length, options);
      else await copyChunked(up.reader, NOWHERE, options);
    } catch (err) {
      stop(
        err instanceof BodyError
          ? `${err.malformed ? "malformed body" : "upstream body"}: ${err.message}`
          : String(err),
      );
      return;
    }
    if (stopped || writer.failed) {
      closeQuietly(up.conn);
      return;
    }
    await writer.commit();
    if (reusable && up.reader.buffered === 0 && ctx.pool) ctx.pool.release(up);
    else closeQuietly(up.conn);
  })();
  ctx.cache!.track(work, () => stop("the proxy is stopping"));
}
