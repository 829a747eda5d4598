/**
 * Background validation for `stale-while-revalidate` (RFC 5861 §3): the client already got the
 * stale response; this asks the origin with the stored validators, through the same transport
 * (policy, pool, parent) as any request, and updates the store with what comes back: a 304
 * freshens the stored fields, a response that may be stored replaces it (its body read into the
 * store, written nowhere else), one that may not be stored removes it, an error leaves it. No
 * client waits for it and nothing is logged as an exchange of its own.
 *
 * @module
 */

import type { Exchange, Route } from "../exchange.ts";
import { headBytes, responseFraming } from "../http1/headers.ts";
import type { RequestHead } from "../http1/parse.ts";
import { planRequest, planResponse, type RequestSettings } from "../http1/plan.ts";
import { isConditionOrRange, validators } from "../cache/rules.ts";
import type { BodyWriter, Entry } from "../cache/store.ts";
import { closeQuietly } from "../upstream/dial.ts";
import { type ExchangeContext, giveBack, roundTrip } from "../upstream/transport.ts";
import { fillStore } from "./fill.ts";

/**
 * Validates a stored response in the background. Never throws.
 *
 * @param ctx The settings of the exchange that served the stale response.
 * @param head Its request head.
 * @param route Where it went.
 * @param entry The stored response.
 * @param lead The cache's lead on the key (released when done).
 * @param settings How a request to `route` is planned (see forward.ts requestSettings).
 */
export async function revalidate(
  ctx: ExchangeContext,
  head: RequestHead,
  route: Route,
  entry: Entry,
  lead: (writer: BodyWriter | null) => void,
  settings: RequestSettings,
): Promise<void> {
  const cache = ctx.cache!;
  // No client of its own: no write deadline, no hold on a connection, no open log line.
  const { clientWrite: _w, held: _h, ...shared } = ctx;
  const bg: ExchangeContext = { ...shared, logger: { ...ctx.logger, opened() {} } };
  const ex = {
    record: {
      id: 0,
      start: Date.now(),
      clientIp: "",
      clientPort: 0,
      method: "GET",
      target: entry.key,
      bytesUp: 0,
      bytesDown: 0,
      tunnel: false,
      opened: false,
    },
    t0: performance.now(),
    responseStarted: false,
    requestConsumed: true,
    minor: 1,
    head: false,
  } as unknown as Exchange; // the transport never touches the client side
  try {
    // The client's conditionals and Range are its own: the background request drops them.
    const fields = head.fields.filter(([n]) => !isConditionOrRange(n));
    const request: RequestHead = { ...head, method: "GET", fields };
    const plan = planRequest(
      { ...request, fields: [...fields, ...validators(entry.fields)] },
      { ...settings, clientIp: "" },
    );
    if (plan.kind === "answer") return;
    const requestTime = Date.now();
    const { up, response } = await roundTrip(ex, bg, route, {
      bytes: headBytes(plan.head),
      retryable: true,
      upgrade: false,
      sent() {},
      async interim() {},
    });
    const timing = { requestTime, responseTime: Date.now() };
    const answer = planResponse(response, request, {
      consumed: true,
      upstreamBroke: false,
      stopping: ctx.signal.aborted,
      pooled: ctx.pool !== undefined,
      viaName: ctx.config.viaName,
    });
    if (response.status === 304) {
      cache.refresh(entry, response, timing, ctx.config.viaName);
    } else if (response.status < 500) {
      const framing = responseFraming(response, "GET");
      // Only a body to fetch is kept here: one of a length, or chunked.
      const body = framing.kind === "length" || framing.kind === "chunked" ? framing : undefined;
      const kept = body
        ? cache.keep(
          entry.key,
          request,
          response,
          timing,
          body.kind === "length" ? body.length : undefined,
          ctx.config.viaName,
        )
        : "framing";
      if (!body || typeof kept !== "object") {
        cache.store.remove(entry.id);
        return;
      }
      ex.upstream = undefined; // the fetch owns it now
      fillStore(bg, up, body, kept, answer.reusable);
      return;
    } else {
      return; // the origin failed: the stale response stays for the next try
    }
    giveBack(ex, bg, up, answer.reusable);
  } catch {
    // the origin could not be asked: the stored response stays as it was
  } finally {
    lead(null);
    closeQuietly(ex.upstream);
    ex.active?.();
  }
}
