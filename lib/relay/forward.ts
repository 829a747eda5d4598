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
} from "../http1/body.ts";
import type { BufferedReader } from "../http1/head.ts";
import {
  addVia,
  borrowOut,
  clientWantsKeepAlive,
  connectionFields,
  encodeHead,
  endToEnd,
  fieldValue,
  type Framing,
  headBytes,
  listValues,
  responseFraming,
  returnOut,
} from "../http1/headers.ts";
import type { Field, RequestHead, ResponseHead } from "../http1/parse.ts";
import type { Lookup } from "../cache/cache.ts";
import {
  cacheStatus,
  currentAge,
  freshnessLifetime,
  isConditional,
  staleIfError,
  type Timing,
  validators,
} from "../cache/rules.ts";
import type { BodyWriter, Entry } from "../cache/store.ts";
import { consult, followBody, serveStored } from "./cached.ts";
import { fillStore } from "./fill.ts";
import { toClient } from "./to_client.ts";
import { planRequest, planResponse, type RequestSettings } from "../http1/plan.ts";
import type { Upstream } from "../upstream/pool.ts";
import { type ExchangeContext, giveBack, roundTrip, takeSlot } from "../upstream/transport.ts";
import { basic } from "../upstream/parent.ts";
import { tunnel } from "./tunnel.ts";

const NO_FIELDS: readonly Field[] = [];
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
/** Bodies up to this size that arrived with their head are written together with it. */
const SMALL_BODY = 16 * 1024;
/**
 * How long a response head waits for a small body that did not come with it, ms (plus up to a
 * deadline tick): after that the head goes alone and the body follows as it comes.
 */
const SMALL_WAIT_MS = 20;

/**
 * Takes the request's slot among the requests in flight to its destination
 * (`--max-active-per-host`) before the relay starts, when nothing but the upstream can answer it:
 * without `--cache`, and for a method other than OPTIONS or TRACE (which may be answered here).
 * With a thousand clients queued for 64 slots, a waiting request is held for longer than V8's
 * young collections are apart, so what it holds is copied and then promoted: waiting here, it
 * holds no frame of the relay's and no plan yet. (wrk with 1000 connections, `--trace-gc-nvp`,
 * against taking the slot inside the relay: 2,700–2,800 bytes copied by the young collections a
 * request instead of 3,350–3,950.) Otherwise {@linkcode forward} takes it after the cache is
 * consulted.
 *
 * @param ex The exchange; `active` is set once the slot is taken.
 * @param ctx Settings, the gate, the cache.
 * @param head The request head.
 * @param route Where it goes.
 * @returns undefined when there is nothing to wait for (no promise), else the wait.
 */
export function turnFirst(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  route: Route,
): Promise<void> | undefined {
  if (ctx.cache || head.method === "OPTIONS" || head.method === "TRACE") return undefined;
  return takeSlot(ex, ctx, route);
}

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
  const { config, cache } = ctx;
  const { framing } = route;
  const settings = requestSettings(ctx, route, ex.record.clientIp);
  // The cache first (--cache): a stored response, or one on its way, may answer.
  const consulted = cache ? await consult(ex, ctx, head, route, settings) : undefined;
  if (consulted?.answered) return consulted.keep;
  const look = consulted?.look;
  const lead = consulted?.lead;
  // A stored response that must be validated: the request goes with its validators (RFC 9111
  // §4.3.1), unless the client sent conditionals of its own (their answer is the client's).
  const validating = look?.kind === "stored" && head.method === "GET" && !isConditional(head.fields)
    ? look.entry
    : undefined;
  const conditions = validating ? validators(validating.fields) : NO_FIELDS;
  const sent = conditions.length > 0 ? { ...head, fields: [...head.fields, ...conditions] } : head;
  const plan = planRequest(sent, settings);
  if (plan.kind === "answer") return await answerHere(ex, ctx, head, framing);
  const { head: requestHead, sendContinue, retryable, upgrade } = plan;
  // The client is watched only once an exchange has taken a while (see watchClient).
  let watchSoon: Deadline | undefined;
  // A body being stored that is neither committed nor handed to its fetch yet: abandoned if the
  // exchange ends early, so no tmp file stays and no collapsed client waits on it forever.
  let unsettled: BodyWriter | undefined;
  try {
    // Its turn among the requests in flight to this destination first, if not taken already
    // (see turnFirst): a request that waits for one holds as little as it can meanwhile.
    const slot = takeSlot(ex, ctx, route);
    if (slot) await slot;
    // A small body that already arrived with the head goes up in the same write. (Not with
    // Expect: the client waits for our 100 Continue before sending it.)
    const smallBody = framing.kind === "length" && framing.length <= SMALL_BODY && !sendContinue
      ? ex.reader.takeBuffered(framing.length)
      : null;
    if (smallBody) {
      ex.record.bytesUp = smallBody.length;
      ex.requestConsumed = true;
    }
    // The request head (with a small body) is written from a lent buffer, and then the response
    // head (with a small body) from the same one: the request's write is done by then.
    const out = borrowOut();
    const requestTime = Date.now();
    let upstreamBroke = false;
    let trip: { up: Upstream; response: ResponseHead };
    try {
      trip = await roundTrip(ex, ctx, route, {
        bytes: headBytes(requestHead, smallBody, out),
        retryable,
        upgrade: upgrade !== undefined,
        sent(up) {
          // Nothing to wait for on most requests: no promise then (see TripRequest.sent).
          if (sendContinue || (framing.kind !== "none" && !smallBody)) {
            return (async () => {
              if (sendContinue) await toClient(ex, CONTINUE, ctx);
              if (framing.kind !== "none" && !smallBody) {
                upstreamBroke = await sendBody(ex, framing, config, up.conn);
              }
              watchSoon ??= watchLater(ex);
            })();
          }
          watchSoon ??= watchLater(ex);
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
    const state = {
      consumed: ex.requestConsumed,
      upstreamBroke,
      stopping: ctx.signal.aborted,
      pooled: ctx.pool !== undefined,
      viaName: config.viaName,
      // Fields this proxy adds (Cache-Status), filled in by startStoring below.
      extra: [] as Field[],
    };
    const timing = { requestTime, responseTime: Date.now() };
    cache?.invalidate(head.method, response.status, route, response.fields);
    if (validating && look?.kind === "stored") {
      if (conditions.length > 0 && response.status === 304) {
        const reusable = planResponse(response, head, state).reusable;
        return await refreshed(ex, ctx, head, { up, response, timing, reusable }, validating);
      }
      const staleFor = -look.use.ttl + (timing.responseTime - requestTime) / 1000;
      if (response.status >= 500 && staleIfError(validating, head.fields, staleFor)) {
        // The origin failed: the stale response answers (RFC 5861 §4). The upstream's own body
        // is never read, so its connection is not reused (the caller closes it).
        const served = await serveStored(ex, ctx, head, validating, {
          result: "REFRESH_FAIL_OLD",
          age: look.use.age,
          ttl: look.use.ttl,
          fwd: "stale",
          fwdStatus: response.status,
        });
        if (served !== null) return false;
      }
    }
    const { extra } = state;
    const writer = look && look.kind !== "bypass"
      ? startStoring(ex, ctx, head, response, look, validating, timing, extra)
      : undefined;
    unsettled = writer;
    lead?.(writer ?? null);
    const answer = planResponse(response, head, state);
    ex.record.status = response.status;
    ex.record.reason = response.reason;
    ex.record.responseFields = response.fields;
    const type = fieldValue(response.fields, "content-type");
    if (type !== undefined) ex.record.contentType = type;
    ex.responseStarted = true;
    // A small body already read with the head goes to the client in the same write.
    const { framing: body } = answer;
    // (Origins often send the head, then the body in a packet of its own: nginx's sendfile
    // does. The body is waited for a moment so both still go in one write: one send fewer per
    // request, a third of the proxy's sends on small keep-alive requests.)
    const small = body.kind === "length" && body.length <= SMALL_BODY &&
        (up.reader.buffered >= body.length ||
          await up.reader.fillTo(body.length, SMALL_WAIT_MS).catch(() => false))
      ? up.reader.takeBuffered(body.length)
      : null;
    // A body being stored, of a length the store takes: fetched into the store on its own, and
    // this client reads it from there like every other client of it (see fill.ts). (A response
    // without a body, a 204, has nothing to fetch: it is committed below.)
    const fetched = !small && writer && body.kind === "length"
      ? { writer, framing: body, file: writer.openReader() }
      : undefined;
    if (small) {
      // Complete in hand: stored whatever becomes of this client.
      if (writer) cache!.commit(writer, small);
      unsettled = undefined;
      await toClient(ex, headBytes(answer.head, small, out), ctx);
      returnOut(out);
      ex.record.bytesDown = small.length;
    } else if (fetched?.file) {
      using reading = fetched.file;
      const leave = fetched.writer.join();
      ex.upstream = undefined; // the fetch owns it now
      fillStore(ctx, up, fetched.framing, fetched.writer, answer.reusable);
      unsettled = undefined;
      try {
        await toClient(ex, headBytes(answer.head, null, out), ctx);
        returnOut(out);
        await followBody(ex, ctx, reading, fetched.writer, answer.out === "chunked");
      } finally {
        leave();
      }
      return answer.keep;
    } else {
      await toClient(ex, headBytes(answer.head, null, out), ctx);
      returnOut(out);
      await receiveBody(ex, body, answer.out, up.reader, config, writer);
      if (writer) cache!.commit(writer);
      unsettled = undefined;
    }
    giveBack(ex, ctx, up, answer.reusable);
    return answer.keep;
  } finally {
    watchSoon?.cancel();
    unsettled?.abort("the exchange ended before the body did");
    lead?.(null);
  }
}

/**
 * How a request to `route` is planned: through a parent the request line keeps its absolute
 * form, and carries our credentials.
 *
 * @param ctx Settings.
 * @param route Where it goes.
 * @param clientIp The client, for Forwarded / X-Forwarded-For.
 * @returns The settings for planRequest.
 */
export function requestSettings(
  ctx: ExchangeContext,
  route: Route,
  clientIp: string,
): RequestSettings {
  const { config } = ctx;
  const parentAuth = route.parent && config.parentAuth;
  const settings: RequestSettings = {
    authority: route.authority,
    path: route.parent ? `http://${route.authority}${route.path}` : route.path,
    framing: route.framing,
    viaName: config.viaName,
    allowTrace: config.allowTrace,
    pooled: ctx.pool !== undefined,
    forwarded: config.forwarded,
    clientIp,
  };
  // (Set after, not spread in: a spread copied the object on every request.)
  if (parentAuth) settings.proxyAuthorization = `Basic ${basic(parentAuth)}`;
  return settings;
}

/**
 * Decides whether a response the cache saw go by is stored (RFC 9111 §3), starts its body file
 * when it is, and adds its Cache-Status (RFC 9211) to `extra`. A stored response that was
 * being validated and came back replaced by one that may not be stored is forgotten.
 *
 * @returns The body writer, when the response is kept.
 */
function startStoring(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  response: ResponseHead,
  look: Exclude<Lookup, { kind: "bypass" }>,
  validating: Entry | undefined,
  timing: Timing,
  extra: Field[],
): BodyWriter | undefined {
  const cache = ctx.cache!;
  // Only complete bodies are kept: Content-Length or chunked, not one that ends with a close.
  let length: number | undefined | null = null;
  try {
    const f = responseFraming(response, head.method);
    length = f.kind === "length"
      ? f.length
      : f.kind === "chunked"
      ? undefined
      : f.kind === "none"
      ? 0
      : null;
  } catch {
    // malformed: planResponse answers 502
  }
  const kept = head.method !== "GET"
    ? "method"
    : length === null
    ? "framing"
    : cache.keep(look.key, head, response, timing, length, ctx.config.viaName);
  const writer = typeof kept === "object" ? kept : undefined;
  if (validating && !writer && response.status < 500) cache.store.remove(validating.id);
  if (head.method === "HEAD" && look.kind === "stored") {
    cache.headed(look.entry, response, timing, ctx.config.viaName);
  }
  const fwd = look.kind === "miss"
    ? look.fwd
    : look.use.kind === "validate" && look.use.why === "request"
    ? "request"
    : "stale";
  extra.push([
    "Cache-Status",
    cacheStatus(ctx.config.viaName, {
      fwd: head.method === "GET" || head.method === "HEAD" ? fwd : "method",
      fwdStatus: response.status,
      stored: writer !== undefined,
      ...(typeof kept === "string" && kept !== "method" ? { detail: kept } : {}),
    }),
  ]);
  ex.record.cache = validating ? "REFRESH_MODIFIED" : "MISS";
  return writer;
}

/**
 * The origin said 304 to the cache's validation: the stored fields are updated from it
 * (RFC 9111 §4.3.4), its timing becomes the entry's, and the stored response answers.
 */
async function refreshed(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  trip: {
    up: Upstream;
    response: ResponseHead;
    timing: Timing;
    reusable: boolean;
  },
  entry: Entry,
): Promise<boolean> {
  const { up, response, timing } = trip;
  const updated = ctx.cache!.refresh(entry, response, timing, ctx.config.viaName);
  // A 304 has no body: its connection goes back at once.
  giveBack(ex, ctx, up, trip.reusable);
  const age = currentAge(updated.initialAge, updated.responseTime, Date.now());
  const served = await serveStored(ex, ctx, head, updated, {
    result: "REFRESH_UNMODIFIED",
    age,
    ttl: freshnessLifetime(updated.status, updated.fields, updated.responseTime) - age,
    fwd: "stale",
    fwdStatus: 304,
  });
  if (served === null) {
    throw new BadGateway("the cache lost the stored body it had just validated; try again", {
      kind: "proxy_internal_error",
    });
  }
  return served;
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
  // A tunnel may last for hours: it is not a request in flight (--max-active-per-host).
  ex.active?.();
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
 * An exchange still going after this long gets its client watched. A fast one never starts the
 * extra read (it cost about a tenth of `Connection: close` throughput when every exchange did),
 * and a client that leaves is still noticed within about half a second.
 */
const WATCH_AFTER_MS = 400;

/**
 * Starts watching the client once the exchange has taken {@linkcode WATCH_AFTER_MS} (see
 * {@linkcode watchClient}), if the whole request is in and nothing more of the client's is held.
 *
 * @returns The deadline to cancel when the exchange ends, or undefined when not watched.
 */
function watchLater(ex: Exchange): Deadline | undefined {
  if (!ex.requestConsumed || ex.reader.buffered !== 0) return undefined;
  const soon = new Deadline(WATCH_AFTER_MS, () => new Error("slow exchange"));
  soon.onExpire(() => {
    if (ex.reader.buffered === 0) watchClient(ex);
  });
  return soon;
}

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
  writer: BodyWriter | undefined,
): Promise<void> {
  const options = copyOptions(config, out, (n) => (ex.record.bytesDown += n));
  if (writer) options.tee = (piece) => writer.write(piece);
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
