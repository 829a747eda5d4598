/**
 * Plain-HTTP relay: carries out what `http1/plan.ts` decides for one absolute-form request
 * (origin-form head, path and query byte for byte), with `transport.ts`'s `roundTrip` for the
 * upstream side: streams the request body up, the response back re-framed for the client
 * (chunked for HTTP/1.1, raw then close for HTTP/1.0), with the body and write timeouts and the
 * watch on a client that leaves. Failures are thrown as ProxyError (nothing sent yet) or
 * Aborted (response started); `handle_conn.ts` catches them. The upstream socket in use is
 * recorded on the exchange so the caller closes it in every case.
 *
 * @module
 */

import type { Config } from "../cli/config.ts";
import { closeQuietly } from "../upstream/dial.ts";
import { Deadline } from "../deadline.ts";
import { Aborted, BadGateway, BadRequest, RequestTimeout } from "../errors.ts";
import type { Exchange, Route } from "../exchange.ts";
import {
  BodyError,
  copyChunked,
  copyLength,
  type CopyOptions,
  copyUntilClose,
  joinBytes,
  writeAll,
} from "../http1/body.ts";
import type { BufferedReader } from "../http1/head.ts";
import {
  addVia,
  clientWantsKeepAlive,
  connectionFields,
  encodeHead,
  endToEnd,
  type Framing,
  listValues,
} from "../http1/headers.ts";
import type { RequestHead, ResponseHead } from "../http1/parse.ts";
import { planRequest, planResponse } from "../http1/plan.ts";
import type { Upstream } from "../upstream/pool.ts";
import { type ExchangeContext, roundTrip } from "../upstream/transport.ts";
import { basic } from "../upstream/parent.ts";
import { tunnel } from "./tunnel.ts";

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
/** Bodies up to this size that arrived with their head are written together with it. */
const SMALL_BODY = 16 * 1024;
/**
 * How long a response head waits for a small body that did not come with it, ms (plus up to a
 * deadline tick): after that the head goes alone and the body follows as it comes.
 */
const SMALL_WAIT_MS = 20;

/**
 * Relays one absolute-form request and its response.
 *
 * @param ex The exchange (client socket, reader, record).
 * @param ctx Settings, logger, connect function, pool, shutdown signal.
 * @param head The parsed request head.
 * @param route Where it goes: its target, parsed and past the policy (see handle_conn.ts).
 * @returns Whether the client connection may carry another request.
 */
export async function forward(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  route: Route,
): Promise<boolean> {
  const { config } = ctx;
  const { framing } = route;
  // Through a parent the request line keeps its absolute form, and carries our credentials.
  const parentAuth = route.parent && config.parentAuth;
  const plan = planRequest(head, {
    authority: route.authority,
    path: route.parent ? `http://${route.authority}${route.path}` : route.path,
    ...(parentAuth ? { proxyAuthorization: `Basic ${basic(parentAuth)}` } : {}),
    framing,
    viaName: config.viaName,
    allowTrace: config.allowTrace,
    pooled: ctx.pool !== undefined,
    forwarded: config.forwarded,
    clientIp: ex.record.clientIp,
  });
  if (plan.kind === "answer") return await answerHere(ex, ctx, head, framing);
  const { head: requestHead, sendContinue, retryable, upgrade } = plan;
  // A small body that already arrived with the head goes up in the same write. (Not with
  // Expect: the client waits for our 100 Continue before sending it.)
  const smallBody = framing.kind === "length" && framing.length <= SMALL_BODY && !sendContinue
    ? ex.reader.takeBuffered(framing.length)
    : null;
  if (smallBody) {
    ex.record.bytesUp = smallBody.length;
    ex.requestConsumed = true;
  }
  // The client is watched only once an exchange has taken a while (see watchClient).
  let watchSoon: Deadline | undefined;
  try {
    let upstreamBroke = false;
    let watching = false;
    let trip: { up: Upstream; response: ResponseHead };
    try {
      trip = await roundTrip(ex, ctx, route, {
        bytes: smallBody ? joinBytes(requestHead, smallBody) : requestHead,
        retryable,
        upgrade: upgrade !== undefined,
        async sent(up) {
          if (sendContinue) await toClient(ex, CONTINUE, ctx);
          if (framing.kind !== "none" && !smallBody) {
            upstreamBroke = await sendBody(ex, framing, config, up.conn);
          }
          if (!watching && ex.requestConsumed && ex.reader.buffered === 0) {
            watching = true;
            watchSoon = new Deadline(WATCH_AFTER_MS, () => new Error("slow exchange"));
            watchSoon.promise.catch(() => {
              if (ex.reader.buffered === 0) watchClient(ex);
            });
          }
        },
        async interim(response) {
          // RFC 9110 §15.2: forward interim responses to HTTP/1.1 clients; 100 is ours to send.
          if (response.status === 100 || head.minor !== 1) return;
          const fields = endToEnd(response.fields);
          await toClient(
            ex,
            encodeHead(`HTTP/1.1 ${response.status} ${response.reason}`, fields),
            ctx,
          );
        },
      });
    } catch (err) {
      if (ex.clientGone) {
        throw new Aborted(
          "client closed the connection before the response came",
          "client_closed",
          {
            cause: err,
          },
        );
      }
      throw err;
    }
    const { up, response } = trip;
    if (route.parent && response.status === 407) {
      // The client's credentials are for us, not for the parent: its challenge is ours to fix.
      throw new BadGateway(
        `parent proxy "${route.parent.text}" wants credentials (407): see --parent-auth-file`,
        { kind: "proxy_configuration_error" },
      );
    }
    if (response.status === 101) return await switchProtocols(ex, ctx, up, response);
    const answer = planResponse(response, head, {
      consumed: ex.requestConsumed,
      upstreamBroke,
      stopping: ctx.signal.aborted,
      pooled: ctx.pool !== undefined,
      viaName: config.viaName,
    });
    ex.record.status = response.status;
    ex.record.reason = response.reason;
    ex.record.responseFields = response.fields;
    const type = response.fields.find(([n]) =>
      n.length === 12 && n.toLowerCase() === "content-type"
    );
    if (type) ex.record.contentType = type[1];
    ex.responseStarted = true;
    // A small body already read with the head goes to the client in the same write.
    const { framing: body } = answer;
    // (Origins often send the head, then the body in a packet of its own: nginx's sendfile
    // does. The body is waited for a moment so both still go in one write: one send fewer per
    // request, a third of the proxy's sends on small keep-alive requests.)
    const small = body.kind === "length" && body.length <= SMALL_BODY &&
        await up.reader.fillTo(body.length, SMALL_WAIT_MS).catch(() => false)
      ? up.reader.takeBuffered(body.length)
      : null;
    if (small) {
      await toClient(ex, joinBytes(answer.head, small), ctx);
      ex.record.bytesDown = small.length;
    } else {
      await toClient(ex, answer.head, ctx);
      await receiveBody(ex, body, answer.out, up.reader, config);
    }
    // Bytes already past the response were sent unasked: that connection is never trusted again.
    if (answer.reusable && up.reader.buffered === 0) {
      ex.upstream = undefined; // the pool (or this client's hold) owns it now
      if (ctx.held) ctx.held.hold(up);
      else ctx.pool!.release(up);
    }
    return answer.keep;
  } finally {
    watchSoon?.cancel();
  }
}

/**
 * The upstream agreed to switch protocols (a WebSocket, say): its 101 goes to the client with
 * the Upgrade it names, and from then on the exchange is a tunnel of bytes both ways, with the
 * tunnel's timeouts, logged with its bytes each way. The connection carries nothing else after.
 *
 * @returns false: neither connection serves another request.
 */
async function switchProtocols(
  ex: Exchange,
  ctx: ExchangeContext,
  up: Upstream,
  response: ResponseHead,
): Promise<boolean> {
  const to = listValues(response.fields, "upgrade").join(", ");
  if (to === "") {
    throw new BadGateway("upstream answered 101 without naming a protocol in Upgrade", {
      kind: "http_upgrade_failed",
    });
  }
  const fields = endToEnd(response.fields);
  addVia(fields, response.minor, ctx.config.viaName);
  fields.push(["Connection", "Upgrade"], ["Upgrade", to]);
  ex.record.status = 101;
  ex.record.reason = response.reason;
  ex.record.responseFields = response.fields;
  ex.record.upgraded = to;
  ex.responseStarted = true;
  // Bytes the upstream sent right after its 101 (its first frames) go first.
  const early = up.reader.drain();
  await toClient(ex, joinBytes(encodeHead(`HTTP/1.1 101 ${response.reason}`, fields), early), ctx);
  const result = await tunnel(ex.client, up.conn, ex.reader.drain(), {
    live: ex.record,
    idleTimeoutMs: ctx.config.tunnelIdleTimeoutMs,
    halfClosedTimeoutMs: ctx.config.halfClosedTimeoutMs,
    writeTimeoutMs: ctx.config.writeTimeoutMs,
  });
  ex.record.bytesUp = result.up;
  ex.record.bytesDown = result.down + early.length;
  if (result.error !== undefined) {
    ex.record.error = result.error;
    ex.record.errorKind = "tunnel_error";
  }
  return false;
}

/** Methods this proxy relays, for the Allow field of its own OPTIONS answer. */
const RELAYED = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT";

/**
 * Answers OPTIONS or TRACE with Max-Forwards: 0 here, as the last recipient (RFC 9110 §7.6.2):
 * OPTIONS with what the proxy relays, TRACE with the request head it received, minus
 * credentials and cookies.
 */
async function answerHere(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  framing: Framing,
): Promise<boolean> {
  let body: Uint8Array = new Uint8Array(0);
  const fields: [string, string][] = [];
  if (head.method === "TRACE") {
    const shown = head.fields.filter(([n]) =>
      !/^(proxy-authorization|authorization|cookie)$/i.test(n)
    );
    body = encodeHead(`${head.method} ${head.target} HTTP/1.${head.minor}`, shown);
    fields.push(["Content-Type", "message/http"]);
  } else {
    fields.push(["Allow", RELAYED + (ctx.config.allowTrace ? ", TRACE" : "")]);
  }
  // A body sent along is not read: the connection closes after the answer.
  const keep = framing.kind === "none" && clientWantsKeepAlive(head) && !ctx.signal.aborted;
  fields.push(["Content-Length", String(body.length)]);
  fields.push(...connectionFields(keep, head.minor));
  ex.record.status = 200;
  ex.record.reason = "OK";
  ex.responseStarted = true;
  await toClient(ex, joinBytes(encodeHead("HTTP/1.1 200 OK", fields), body), ctx);
  ex.record.bytesDown = body.length;
  return keep;
}

/**
 * Writes to the client; a failure means the client left. A client that takes no byte for
 * `--write-timeout` is given up on: the connection's write deadline (one per connection, moved
 * here and parked after, so a write costs no timer of its own) closes the socket, which ends
 * the write.
 */
async function toClient(ex: Exchange, bytes: Uint8Array, ctx: ExchangeContext): Promise<void> {
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

/**
 * An exchange still going after this long gets its client watched. A fast one never starts the
 * extra read (it cost about a tenth of `Connection: close` throughput when every exchange did),
 * and a client that leaves is still noticed within about half a second.
 */
const WATCH_AFTER_MS = 400;

/**
 * Watches the client while its response is awaited and relayed: if it closes or resets, the
 * upstream connection is closed at once (so a slow upstream is not held for the whole response
 * timeout) and the exchange is logged as the client's leaving, not as a 504 nobody got. Like
 * squid (`half_closed_clients off`), a client that shuts its sending side counts as gone. Bytes
 * that arrive instead (a pipelined request) stay buffered for the next exchange.
 */
function watchClient(ex: Exchange): void {
  ex.reader.watch((gone) => {
    if (!gone) return;
    ex.clientGone = true;
    closeQuietly(ex.upstream);
  });
}

/** A body copy's options: output framing, line cap, byte count and the stall timeouts. */
function copyOptions(
  config: Config,
  out: "raw" | "chunked",
  onBytes: (n: number) => void,
): CopyOptions {
  return {
    out,
    maxLineBytes: config.maxHeaderBytes,
    onBytes,
    readTimeoutMs: config.readTimeoutMs,
    writeTimeoutMs: config.writeTimeoutMs,
  };
}

/**
 * Streams the request body upstream.
 *
 * @returns true when the upstream stopped taking the body (it may still have answered).
 */
async function sendBody(
  ex: Exchange,
  framing: Framing,
  config: Config,
  upstream: Deno.TcpConn,
): Promise<boolean> {
  const options = copyOptions(
    config,
    framing.kind === "chunked" ? "chunked" : "raw",
    (n) => (ex.record.bytesUp += n),
  );
  try {
    if (framing.kind === "length") await copyLength(ex.reader, upstream, framing.length, options);
    else await copyChunked(ex.reader, upstream, options);
    ex.requestConsumed = true;
    return false;
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    if (err.side === "write") return true;
    if (err.timeout) throw new RequestTimeout(`request body stalled: ${err.message}`);
    if (err.malformed) throw new BadRequest(err.message);
    throw new Aborted(`client closed mid-upload: ${err.message}`, "client_closed");
  }
}

/** Streams the response body to the client; once started, failures can only close. */
async function receiveBody(
  ex: Exchange,
  framing: Framing,
  out: "raw" | "chunked",
  reader: BufferedReader,
  config: Config,
): Promise<void> {
  const options = copyOptions(config, out, (n) => (ex.record.bytesDown += n));
  try {
    switch (framing.kind) {
      case "none":
        return;
      case "length":
        await copyLength(reader, ex.client, framing.length, options);
        return;
      case "chunked":
        await copyChunked(reader, ex.client, options);
        return;
      case "close":
        await copyUntilClose(reader, ex.client, options);
        return;
    }
  } catch (err) {
    if (!(err instanceof BodyError)) throw err;
    if (ex.clientGone || (err.side === "write" && !err.timeout)) {
      throw new Aborted("client closed the connection", "client_closed", { cause: err });
    }
    if (err.timeout) {
      throw err.side === "write"
        ? new Aborted(`client ${err.message}`, "client_timeout")
        : new Aborted(`upstream body stalled: ${err.message}`, "http_response_timeout");
    }
    throw new Aborted(
      err.malformed
        ? `malformed body from upstream: ${err.message}`
        : `upstream closed mid-body: ${err.message}`,
      "http_response_incomplete",
    );
  }
}
