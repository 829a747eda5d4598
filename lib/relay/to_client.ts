/**
 * Writing to the client, with the connection's write deadline: shared by the relay and by
 * answers from the cache.
 *
 * @module
 */

import { Aborted } from "../errors.ts";
import type { Exchange } from "../exchange.ts";
import { writeAll } from "../http1/body.ts";
import type { ExchangeContext } from "../upstream/transport.ts";

/**
 * Writes to the client; a failure means the client left. A client that takes no byte for
 * `--write-timeout` is given up on: the connection's write deadline (one per connection, moved
 * here and parked after, so a write costs no timer of its own) closes the socket, which ends
 * the write.
 *
 * @param ex The exchange.
 * @param bytes What to write.
 * @param ctx The connection's settings and write deadline.
 */
export async function toClient(
  ex: Exchange,
  bytes: Uint8Array,
  ctx: ExchangeContext,
): Promise<void> {
  const limit = ctx.clientWrite;
  limit?.reset(ctx.config.writeTimeoutMs);
  try {
    await writeAll(ex.client, bytes);
  } catch (err) {
    if (limit?.expired) {
      throw new Aborted(
        `client took no byte for ${ctx.config.writeTimeoutMs} ms`,
        "client_timeout",
      );
    }
    throw new Aborted("client closed the connection", "client_closed", { cause: err });
  } finally {
    limit?.park();
  }
}
