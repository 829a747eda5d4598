/**
 * Plain-HTTP forwarding: one absolute-form request sent on as origin-form (path and query byte
 * for byte), its body streamed up, the response streamed back re-framed for the client
 * (chunked for HTTP/1.1, raw then close for HTTP/1.0). Failures are thrown as ProxyError
 * (nothing sent yet) or Aborted (response started); `handle_conn.ts` catches them. The upstream
 * socket it opens is recorded on the exchange so the caller closes it in every case.
 *
 * @module
 */

import type { Config } from "./config.ts";
import type { Authenticator } from "./auth.ts";
import type { RateLimiter } from "./limits.ts";
import { closeQuietly, type ConnectFn, dial, type ResolveFn } from "./dial.ts";
import { Deadline } from "./deadline.ts";
import { Aborted, BadGateway, BadRequest, GatewayTimeout, RequestTimeout } from "./errors.ts";
import {
  BodyError,
  copyChunked,
  copyLength,
  copyUntilClose,
  joinBytes,
  writeAll,
} from "./http1/body.ts";
import { BufferedReader, HeadReadError } from "./http1/head.ts";
import {
  clientWantsKeepAlive,
  connectionFields,
  encodeHead,
  endToEnd,
  type Framing,
} from "./http1/headers.ts";
import { parseResponseHead, type RequestHead, type ResponseHead } from "./http1/parse.ts";
import type { Exchange, Logger, Route, UpstreamUse } from "./exchange.ts";
import { planRequest, planResponse } from "./http1/plan.ts";
import { checkDestination, type LocalView } from "./policy.ts";
import type { HeldUpstream, Upstream, UpstreamPool } from "./pool.ts";

/** Shared settings of every exchange. */
export interface ExchangeContext {
  /** The configuration. */
  config: Config;
  /** The logger. */
  logger: Logger;
  /** How upstream connections are opened. @default Deno.connect */
  connect?: ConnectFn;
  /** How host names are resolved. @default systemResolve */
  resolve?: ResolveFn;
  /** Proxy authentication, when configured. */
  auth?: Authenticator;
  /** The per-client request rate limit, when configured. */
  rate?: RateLimiter;
  /** Idle upstream connections for reuse; without one, each request gets a new connection. */
  pool?: UpstreamPool;
  /** This client connection's hold on its last upstream connection (comes with `pool`). */
  held?: HeldUpstream;
  /** Gives each exchange its id. @default 1, 2, 3, … per process */
  nextId?: () => number;
  /** Aborted when the proxy shuts down: no more keep-alive. */
  signal: AbortSignal;
  /** The host's own addresses and listeners, and whether this client is local (per connection). */
  local?: LocalView;
}

const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
/** Bodies up to this size that arrived with their head are written together with it. */
const SMALL_BODY = 16 * 1024;

/**
 * Opens a new upstream connection and records where it went (the IP read from the socket).
 *
 * @param ex The exchange; `upstream`, `connectMs` and the upstream address are set.
 * @param ctx Settings, logger and connect function.
 * @param hostname Target host, normalised (see normalizeHost).
 * @param port Target port.
 * @param retry Whether this replaces a reused connection that turned out closed.
 * @returns The connection.
 */
export async function openUpstream(
  ex: Exchange,
  ctx: ExchangeContext,
  hostname: string,
  port: number,
  retry = false,
): Promise<Deno.TcpConn> {
  const conn = await dial(hostname, port, {
    timeoutMs: ctx.config.connectTimeoutMs,
    onResolved: (ms) => (ex.record.dnsMs = ms),
    check: (address) => checkDestination(ctx.config, hostname, address, port, ctx.local),
    ...(ctx.connect ? { connect: ctx.connect } : {}),
    ...(ctx.resolve ? { resolve: ctx.resolve } : {}),
  });
  ex.upstream = conn;
  try {
    conn.setNoDelay(true);
  } catch {
    // not a TCP socket (an injected test connection): nothing to tune
  }
  ex.record.connectMs = performance.now() - ex.t0;
  opened(ex, ctx, conn, retry ? "retry" : "new");
  return conn;
}

/** Records the upstream address actually used and writes the log's first line. */
function opened(ex: Exchange, ctx: ExchangeContext, conn: Deno.TcpConn, how: UpstreamUse): void {
  const remote = conn.remoteAddr;
  ex.record.upstreamIp = remote.hostname;
  ex.record.upstreamPort = remote.port;
  ex.record.upstreamUse = how;
  ctx.logger.opened(ex.record);
}

/**
 * A reused connection turned out closed before any byte of the response: the stale keep-alive
 * race (RFC 9112 §9.3.1). Retried once on a new connection when the request allows it.
 */
class StaleConnection extends BadGateway {}

/**
 * Takes an idle connection to the target: this client's held one, or one from the pool.
 *
 * @returns The upstream (marked reused), or undefined.
 */
function reuse(ex: Exchange, ctx: ExchangeContext, key: string): Upstream | undefined {
  const pooled = ctx.held ? ctx.held.take(key) : ctx.pool?.take(key);
  if (pooled) {
    ex.upstream = pooled.conn;
    ex.record.connectMs = performance.now() - ex.t0;
    opened(ex, ctx, pooled.conn, "reused");
  }
  return pooled;
}

/** Dials a new upstream connection (after {@linkcode reuse} found none). */
async function fresh(
  ex: Exchange,
  ctx: ExchangeContext,
  hostname: string,
  port: number,
  key: string,
  retry = false,
): Promise<Upstream> {
  const conn = await openUpstream(ex, ctx, hostname, port, retry);
  return { conn, reader: new BufferedReader(conn), key, reused: false };
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
  const { config } = ctx;
  const { framing } = route;
  const plan = planRequest(head, {
    authority: route.authority,
    path: route.path,
    framing,
    viaName: config.viaName,
    allowTrace: config.allowTrace,
    pooled: ctx.pool !== undefined,
  });
  if (plan.kind === "answer") return await answerHere(ex, ctx, head, framing);
  const { head: requestHead, sendContinue, retryable } = plan;
  const { host, port } = route;
  // A pooled connection passed the destination check for the client that opened it; the host's
  // own addresses are allowed for clients on it only, so the others never share its pool.
  const key = ctx.local?.loopbackClient === false
    ? `${host}:${port} (remote clients)`
    : `${host}:${port}`;
  let up = reuse(ex, ctx, key) ?? await fresh(ex, ctx, host, port, key);
  let upstreamBroke = false;
  let response: ResponseHead;
  // A small body that already arrived with the head goes up in the same write. (Not with
  // Expect: the client waits for our 100 Continue before sending it.)
  const smallBody = framing.kind === "length" && framing.length <= SMALL_BODY && !sendContinue
    ? ex.reader.takeBuffered(framing.length)
    : null;
  if (smallBody) {
    ex.record.bytesUp = smallBody.length;
    ex.requestConsumed = true;
  }
  let watching = false;
  for (;;) {
    try {
      try {
        await writeAll(up.conn, smallBody ? joinBytes(requestHead, smallBody) : requestHead);
      } catch (err) {
        throw new StaleConnection(`upstream closed before the request was sent`, {
          kind: "http_protocol_error",
          cause: err,
        });
      }
      if (sendContinue) await toClient(ex, CONTINUE, config);
      if (framing.kind !== "none" && !smallBody) {
        upstreamBroke = await sendBody(ex, framing, config, up.conn);
      }
      if (!watching && ex.requestConsumed && ex.reader.buffered === 0) {
        watching = true;
        watchClient(ex);
      }
      response = await readFinalResponse(ex, up, config, route.authority, head.minor);
      break;
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
      if (!(err instanceof StaleConnection && up.reused && retryable)) throw err;
      closeQuietly(up.conn);
      ex.upstream = undefined;
      up = await fresh(ex, ctx, host, port, key, true);
    }
  }
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
  const type = response.fields.find(([n]) => n.length === 12 && n.toLowerCase() === "content-type");
  if (type) ex.record.contentType = type[1];
  ex.responseStarted = true;
  // A small body already read with the head goes to the client in the same write.
  const { framing: body } = answer;
  const small = body.kind === "length" && body.length <= SMALL_BODY
    ? up.reader.takeBuffered(body.length)
    : null;
  if (small) {
    await toClient(ex, joinBytes(answer.head, small), config);
    ex.record.bytesDown = small.length;
  } else {
    await toClient(ex, answer.head, config);
    await receiveBody(ex, body, answer.out, up.reader, config);
  }
  // Bytes already past the response were sent unasked: that connection is never trusted again.
  if (answer.reusable && up.reader.buffered === 0) {
    ex.upstream = undefined; // the pool (or this client's hold) owns it now
    if (ctx.held) ctx.held.hold(up);
    else ctx.pool!.release(up);
  }
  return answer.keep;
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
  await toClient(ex, joinBytes(encodeHead("HTTP/1.1 200 OK", fields), body), ctx.config);
  ex.record.bytesDown = body.length;
  return keep;
}

/** Interim (1xx) responses relayed per exchange before the final one; more is a 502. */
const MAX_INTERIM = 8;

/**
 * Reads response heads until a final one, relaying interim ones; maps failures to 502/504. The
 * response timeout covers them all (an interim response does not restart it), and interim
 * heads are limited in number and, together, to the head size limit.
 */
async function readFinalResponse(
  ex: Exchange,
  up: Upstream,
  config: Config,
  authority: string,
  clientMinor: 0 | 1,
): Promise<ResponseHead> {
  const until = performance.now() + config.responseTimeoutMs;
  let interimBytes = 0;
  for (let count = 0;; count++) {
    const response = await readResponseHead(ex, up, config, authority, count === 0, until);
    if (response.status === 101) {
      throw new BadGateway("upstream switched protocols without being asked", {
        kind: "http_protocol_error",
      });
    }
    if (response.status >= 200) return response;
    interimBytes += response.size;
    if (count >= MAX_INTERIM || interimBytes > config.maxHeaderBytes) {
      throw new BadGateway(
        `upstream sent more than ${MAX_INTERIM} interim responses or ${config.maxHeaderBytes} ` +
          `bytes of them`,
        { kind: "http_protocol_error" },
      );
    }
    // RFC 9110 §15.2: forward interim responses to HTTP/1.1 clients; 100 is ours to send.
    if (response.status !== 100 && clientMinor === 1) {
      const interim = endToEnd(response.fields);
      await toClient(
        ex,
        encodeHead(`HTTP/1.1 ${response.status} ${response.reason}`, interim),
        config,
      );
    }
  }
}

/**
 * Writes to the client; a failure means the client left, and a client that takes no byte for
 * `--write-timeout` is given up on (the caller closes the socket, which ends the write).
 */
async function toClient(ex: Exchange, bytes: Uint8Array, config: Config): Promise<void> {
  const ms = config.writeTimeoutMs;
  const write = writeAll(ex.client, bytes);
  const limit = new Deadline(
    ms,
    () => new Aborted(`client took no byte for ${ms} ms`, "client_timeout"),
  );
  try {
    await Promise.race([write, limit.promise]);
  } catch (err) {
    if (err instanceof Aborted) {
      write.catch(() => {
        // abandoned: the socket is closed after this exchange
      });
      throw err;
    }
    throw new Aborted("client closed the connection", "client_closed", { cause: err });
  } finally {
    limit.cancel();
  }
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
  const options = {
    out: framing.kind === "chunked" ? "chunked" as const : "raw" as const,
    maxLineBytes: config.maxHeaderBytes,
    onBytes: (n: number) => (ex.record.bytesUp += n),
    readTimeoutMs: config.readTimeoutMs,
    writeTimeoutMs: config.writeTimeoutMs,
  };
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

/**
 * Reads the upstream's response head, mapping every failure to 502 or 504; on a reused
 * connection, a close before any byte of the first head is a StaleConnection.
 */
async function readResponseHead(
  ex: Exchange,
  up: Upstream,
  config: Config,
  authority: string,
  first: boolean,
  until: number,
): Promise<ResponseHead & { size: number }> {
  let bytes: Uint8Array | null;
  const stale = first && up.reused;
  try {
    bytes = await up.reader.readHead({
      maxBytes: config.maxHeaderBytes,
      timeoutMs: Math.max(0, until - performance.now()),
    });
  } catch (err) {
    if (err instanceof HeadReadError && err.reason === "timeout") {
      throw new GatewayTimeout(
        `no response from upstream "${authority}" within ${config.responseTimeoutMs} ms`,
        { kind: "http_response_timeout" },
      );
    }
    if (err instanceof HeadReadError && err.reason === "too-large") {
      throw new BadGateway(
        `response head from upstream larger than ${config.maxHeaderBytes} bytes`,
        {
          kind: "http_response_header_section_size",
        },
      );
    }
    const partial = err instanceof HeadReadError && err.partial;
    throw new (stale && !partial ? StaleConnection : BadGateway)(
      `upstream "${authority}" closed the connection ${
        partial ? "mid-head" : "without a response"
      }`,
      { kind: "http_response_incomplete", cause: err },
    );
  }
  if (bytes === null) {
    throw new (stale ? StaleConnection : BadGateway)(
      `upstream "${authority}" closed the connection without a response`,
      { kind: "http_response_incomplete" },
    );
  }
  ex.record.firstByteMs ??= performance.now() - ex.t0;
  try {
    return { ...parseResponseHead(bytes), size: bytes.length };
  } catch (err) {
    throw new BadGateway(`malformed response from upstream: ${(err as Error).message}`, {
      kind: "http_protocol_error",
    });
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
  const options = {
    out,
    maxLineBytes: config.maxHeaderBytes,
    onBytes: (n: number) => (ex.record.bytesDown += n),
    readTimeoutMs: config.readTimeoutMs,
    writeTimeoutMs: config.writeTimeoutMs,
  };
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
