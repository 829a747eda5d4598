/**
 * The upstream transport (the `Transport` half of Go's `ReverseProxy`): `roundTrip` sends a
 * request head on a pooled connection or a new one, lets the relay send the body, reads the
 * response head (interim ones handed back), retries once on a new connection when a reused one
 * turns out closed, and maps every failure to 502 or 504. `openUpstream` dials with the
 * destination check on the address (CONNECT uses it too). It decides nothing about what is
 * sent: that is `http1/plan.ts`.
 *
 * @module
 */

import type { Authenticator } from "../policy/auth.ts";
import type { Cache } from "../cache/cache.ts";
import type { Config } from "../cli/config.ts";
import type { Deadline } from "../deadline.ts";
import { closeQuietly, type ConnectFn, dial, type ResolveFn } from "./dial.ts";
import { BadGateway, GatewayTimeout, ProxyError } from "../errors.ts";
import type { Exchange, Logger, Route, UpstreamUse } from "../exchange.ts";
import { writeAll } from "../http1/body.ts";
import { BufferedReader, HeadReadError } from "../http1/head.ts";
import { parseResponseHead, type ResponseHead } from "../http1/parse.ts";
import type { RateLimiter } from "../policy/limits.ts";
import { checkDestination, type LocalView } from "../policy/policy.ts";
import type { ParentProxy } from "./parent.ts";
import type { HeldUpstream, Peer, Upstream, UpstreamPool } from "./pool.ts";
import { type HostGate, MAX_WAITING } from "./gate.ts";

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
  auth?: Authenticator | undefined;
  /** The per-client request rate limit, when configured. */
  rate?: RateLimiter | undefined;
  /** Idle upstream connections for reuse; without one, each request gets a new connection. */
  pool?: UpstreamPool;
  /** Dial slots per destination (`--max-dials-per-host`), shared by every connection. */
  dials?: HostGate;
  /** Slots for requests in flight per destination (`--max-active-per-host`), likewise. */
  active?: HostGate;
  /** The shared cache (`--cache`), when on. */
  cache?: Cache;
  /** This client connection's hold on its last upstream connection (comes with `pool`). */
  held?: HeldUpstream;
  /** Gives each exchange its id. @default 1, 2, 3, … per process */
  nextId?: () => number;
  /**
   * This client connection's write deadline (comes with a connection): moved to
   * `--write-timeout` before each write to the client and parked after; when it passes, the
   * connection is closed, which ends the write.
   */
  clientWrite?: Deadline;
  /** Aborted when the proxy shuts down: no more keep-alive. */
  signal: AbortSignal;
  /** The host's own addresses and listeners, and whether this client is local (per connection). */
  local?: LocalView;
  /** The local address upstream connections leave from (`--outgoing-address`), if chosen. */
  sourceAddress?: string;
  /** The listener this client came in on (`host:port`) and whether it speaks TLS. */
  listener?: { addr: string; tls: boolean };
  /** The names of this connection's last route (comes with a connection; see RouteNames). */
  lastRoute?: { names: RouteNames | undefined };
}

/**
 * The strings a route is known by, worked out from the request's host and port. A connection
 * keeps its last request's and reuses them when the next request names the same host and port
 * (the usual case): the same strings each time, so the Maps they key (the pool's, the gates',
 * the policy's address cache, the summary's) find their hash already computed, where a fresh
 * string each request made each lookup compute it, outside the JIT's code.
 */
export interface RouteNames {
  /** The host as the request wrote it. */
  hostname: string;
  /** The port. */
  port: number;
  /** The parent proxy the route goes through, if any. */
  via: ParentProxy | undefined;
  /** The host normalised (see normalizeHost). */
  host: string;
  /** `host:port`, for the log and the summary. */
  destination: string;
  /** The pool's and the gates' key (see upstreamKey). */
  key: string;
}

/**
 * Opens a new upstream connection and records where it went (the IP read from the socket).
 *
 * @param ex The exchange; `upstream`, `connectMs` and the upstream address are set.
 * @param ctx Settings, logger and connect function.
 * @param hostname Target host, normalised (see normalizeHost).
 * @param port Target port.
 * @param retry Whether this replaces a reused connection that turned out closed.
 * @param parent Dial this parent proxy instead (the operator named it: no destination check).
 * @returns The connection.
 */
export async function openUpstream(
  ex: Exchange,
  ctx: ExchangeContext,
  hostname: string,
  port: number,
  retry = false,
  parent?: ParentProxy,
): Promise<Deno.TcpConn> {
  const conn = await dial(parent?.host ?? hostname, parent?.port ?? port, {
    timeoutMs: ctx.config.connectTimeoutMs,
    onResolved: (ms) => (ex.record.dnsMs = ms),
    ...(parent ? { what: "parent proxy" } : {
      check: (address: string) => checkDestination(ctx.config, hostname, address, port, ctx.local),
    }),
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
  opened(ex, ctx, peerOf(conn), retry ? "retry" : "new");
  return conn;
}

/** The address a socket is connected to, as a plain object (see Upstream.peer). */
function peerOf(conn: Deno.TcpConn): Peer {
  const remote = conn.remoteAddr;
  return { ip: remote.hostname, port: remote.port };
}

/** Records the upstream address actually used and writes the log's first line. */
function opened(
  ex: Exchange,
  ctx: ExchangeContext,
  peer: Peer,
  how: UpstreamUse,
): void {
  ex.record.upstreamIp = peer.ip;
  ex.record.upstreamPort = peer.port;
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
    opened(ex, ctx, pooled.peer, "reused");
  }
  return pooled;
}

/**
 * Dials a new upstream connection (after {@linkcode reuse} found none), once the destination has
 * a dial slot free (`--max-dials-per-host`; see gate.ts). An idle connection released while this
 * waited is taken instead.
 */
async function fresh(
  ex: Exchange,
  ctx: ExchangeContext,
  route: Route,
  retry = false,
): Promise<Upstream> {
  const { key } = route;
  const { maxDialsPerHost, connectTimeoutMs } = ctx.config;
  let release = () => {};
  if (ctx.dials && maxDialsPerHost > 0) {
    const slot = await ctx.dials.enter(key, maxDialsPerHost, connectTimeoutMs);
    if (slot === "full") {
      throw new ProxyError(
        503,
        `too many requests waiting to connect to ${route.authority} (${MAX_WAITING})`,
        { kind: "connection_limit_reached" },
      );
    }
    if (slot === "timeout") {
      throw new GatewayTimeout(
        `Cannot connect to ${route.authority}: no dial slot within ${connectTimeoutMs} ms ` +
          `(--max-dials-per-host ${maxDialsPerHost})`,
      );
    }
    release = slot.release;
    const idle = retry ? undefined : reuse(ex, ctx, key);
    if (idle) {
      release();
      return idle;
    }
  }
  try {
    const conn = await openUpstream(ex, ctx, route.host, route.port, retry, route.parent);
    return { conn, reader: new BufferedReader(conn), key, reused: false, peer: peerOf(conn) };
  } finally {
    release();
  }
}

/**
 * Takes this exchange's slot among the requests in flight to its route
 * (`--max-active-per-host`), if it has none yet. It is taken before the relay starts
 * (`turnFirst`), or else before the relay prepares the request (its head's bytes, a lent
 * buffer): with a thousand clients queued for 64 slots, what a waiting request holds outlives
 * V8's young collections and is promoted, so it should hold as little as it can while it waits.
 * Whoever ends the exchange calls `ex.active` (handle_conn.ts at its end, the relay when the
 * connection becomes a tunnel).
 *
 * @param ex The exchange; `active` is set to the slot's release.
 * @param ctx Settings and the gate.
 * @param route Where to, with its key (through a parent, requests for every origin share one
 *   key: they are not bounded together, and take no slot).
 * @returns undefined when the slot was free (no promise), else the wait for it.
 * @throws {ProxyError} 503 when too many wait already, 504 when none frees up in time (the
 *   promise rejects).
 */
export function takeSlot(
  ex: Exchange,
  ctx: ExchangeContext,
  route: Route,
): Promise<void> | undefined {
  if (!ctx.active || ex.active || route.parent) return undefined;
  const now = ctx.active.tryEnter(route.key, ctx.config.maxActivePerHost);
  if (now) {
    ex.active = now;
    return undefined;
  }
  return waitForSlot(ex, ctx, route);
}

/** The wait of takeSlot: a `then`, not an async function, for the same reason as the gate's. */
function waitForSlot(ex: Exchange, ctx: ExchangeContext, route: Route): Promise<void> {
  const { maxActivePerHost, connectTimeoutMs } = ctx.config;
  // A request that waits its turn has no use for its client's held upstream connection
  // meanwhile: it goes to the pool, where the next request given a slot takes it (the most
  // recently released first). A thousand clients waiting for 64 slots then leave the pool's
  // few idle connections, not a thousand, each with a read in flight.
  ctx.held?.release();
  return ctx.active!.enter(route.key, maxActivePerHost, connectTimeoutMs).then((slot) => {
    if (slot === "full") {
      throw new ProxyError(
        503,
        `too many requests waiting for a connection to ${route.authority} (${MAX_WAITING})`,
        { kind: "connection_limit_reached" },
      );
    }
    if (slot === "timeout") {
      throw new GatewayTimeout(
        `Cannot connect to ${route.authority}: no connection free within ${connectTimeoutMs} ms ` +
          `(--max-active-per-host ${maxActivePerHost})`,
      );
    }
    ex.active = slot.release;
  });
}

/**
 * The pool's key for a route, and the gates' (worked out once, with the route: its `key`). A
 * pooled connection passed the destination check for the client that opened it; the host's own
 * addresses are allowed for clients on it only, so the others never share its pool. Every
 * request through the parent may share a connection to it.
 *
 * @param ctx Settings: whether the client is on this host, the outgoing address.
 * @param host The target host, normalised.
 * @param port The target port.
 * @param parent The parent proxy the route goes through, if any.
 * @returns The key.
 */
export function upstreamKey(
  ctx: ExchangeContext,
  host: string,
  port: number,
  parent: ParentProxy | undefined,
): string {
  return (parent
    ? `parent ${parent.text}`
    : ctx.local?.loopbackClient === false
    ? `${host}:${port} (remote clients)`
    : `${host}:${port}`) + (ctx.sourceAddress ? ` from ${ctx.sourceAddress}` : "");
}

/** What {@linkcode roundTrip} sends, and the relay's part in it. */
export interface TripRequest {
  /** The request head (and a small body that came with it), as one write. */
  bytes: Uint8Array;
  /** Whether it may be sent again on a new connection. */
  retryable: boolean;
  /**
   * Called once the head is sent: the relay sends the body here. Returns nothing when there is
   * nothing to wait for (most requests), so no promise is made for them.
   */
  sent(up: Upstream): Promise<void> | void;
  /** Called with each interim (1xx) response. */
  interim(response: ResponseHead): Promise<void>;
  /** The request asks to upgrade: a 101 is then a final response. */
  upgrade?: boolean;
}

/**
 * Sends a request upstream and reads its final response head: on this client's held
 * connection or a pooled one to the route (else a new one), retrying once on a new connection
 * when a reused one turns out closed before any byte of the response and the request allows it.
 *
 * @param ex The exchange; its `upstream` is the connection in use (the caller closes it).
 * @param ctx Settings, pool, connect and resolve functions.
 * @param route Where to.
 * @param request What to send, and the relay's hooks.
 * @returns The connection and the final response head.
 * @throws {ProxyError} 502 or 504.
 */
export async function roundTrip(
  ex: Exchange,
  ctx: ExchangeContext,
  route: Route,
  request: TripRequest,
): Promise<{ up: Upstream; response: ResponseHead }> {
  const slot = takeSlot(ex, ctx, route); // (taken already when the relay called it first)
  if (slot) await slot;
  let up = reuse(ex, ctx, route.key) ?? await fresh(ex, ctx, route);
  for (;;) {
    try {
      try {
        await writeAll(up.conn, request.bytes);
      } catch (err) {
        throw new StaleConnection(`upstream closed before the request was sent`, {
          kind: "http_protocol_error",
          cause: err,
        });
      }
      const sending = request.sent(up);
      if (sending) await sending;
      const response = await readFinalResponse(
        ex,
        up,
        ctx.config,
        route.authority,
        request.interim,
        request.upgrade ?? false,
      );
      return { up, response };
    } catch (err) {
      if (!(err instanceof StaleConnection && up.reused && request.retryable)) throw err;
      closeQuietly(up.conn);
      ex.upstream = undefined;
      up = await fresh(ex, ctx, route, true);
    }
  }
}

/** Interim (1xx) responses relayed per exchange before the final one; more is a 502. */
const MAX_INTERIM = 8;

/**
 * Reads response heads until a final one, handing interim ones to `onInterim`; maps failures
 * to 502/504. The response timeout covers them all (an interim response does not restart it),
 * and interim heads are limited in number and, together, to the head size limit. (One async
 * function for the loop and each head's read: a frame fewer a request than a function per
 * head.)
 */
async function readFinalResponse(
  ex: Exchange,
  up: Upstream,
  config: Config,
  authority: string,
  onInterim: (response: ResponseHead) => Promise<void>,
  upgrade: boolean,
): Promise<ResponseHead> {
  const until = performance.now() + config.responseTimeoutMs;
  let interimBytes = 0;
  for (let count = 0;; count++) {
    // On a reused connection, a close before any byte of the first head is a StaleConnection.
    const stale = count === 0 && up.reused;
    let bytes: Uint8Array | null;
    try {
      bytes = await up.reader.readHead({
        maxBytes: config.maxHeaderBytes,
        timeoutMs: Math.max(0, until - performance.now()),
      });
    } catch (err) {
      throw headFailure(err, config, authority, stale);
    }
    const response = parsedResponse(ex, bytes, authority, stale);
    if (response.status === 101) {
      if (upgrade) return response;
      throw new BadGateway("upstream switched protocols without being asked", {
        kind: "http_protocol_error",
      });
    }
    if (response.status >= 200) return response;
    interimBytes += bytes!.length;
    if (count >= MAX_INTERIM || interimBytes > config.maxHeaderBytes) {
      throw new BadGateway(
        `upstream sent more than ${MAX_INTERIM} interim responses or ${config.maxHeaderBytes} ` +
          `bytes of them`,
        { kind: "http_protocol_error" },
      );
    }
    await onInterim(response);
  }
}

/** Why a response head could not be read, as the 502 or 504 to answer. */
function headFailure(err: unknown, config: Config, authority: string, stale: boolean): Error {
  if (err instanceof HeadReadError && err.reason === "timeout") {
    return new GatewayTimeout(
      `no response from upstream "${authority}" within ${config.responseTimeoutMs} ms`,
      { kind: "http_response_timeout" },
    );
  }
  if (err instanceof HeadReadError && err.reason === "too-large") {
    return new BadGateway(
      `response head from upstream larger than ${config.maxHeaderBytes} bytes`,
      { kind: "http_response_header_section_size" },
    );
  }
  const partial = err instanceof HeadReadError && err.partial;
  return new (stale && !partial ? StaleConnection : BadGateway)(
    `upstream "${authority}" closed the connection ${partial ? "mid-head" : "without a response"}`,
    { kind: "http_response_incomplete", cause: err },
  );
}

/** A response head's bytes, parsed (a close before them is a 502, or a StaleConnection). */
function parsedResponse(
  ex: Exchange,
  bytes: Uint8Array | null,
  authority: string,
  stale: boolean,
): ResponseHead {
  if (bytes === null) {
    throw new (stale ? StaleConnection : BadGateway)(
      `upstream "${authority}" closed the connection without a response`,
      { kind: "http_response_incomplete" },
    );
  }
  ex.record.firstByteMs ??= performance.now() - ex.t0;
  try {
    return parseResponseHead(bytes);
  } catch (err) {
    throw new BadGateway(`malformed response from upstream: ${(err as Error).message}`, {
      kind: "http_protocol_error",
    });
  }
}

/**
 * Hands an upstream connection whose response was read to its end back for reuse: to this
 * client's hold, or to the pool. Bytes already past the response were sent unasked: such a
 * connection is never trusted again, and stays on the exchange for the caller to close.
 *
 * @param ex The exchange (its upstream is cleared when the connection goes back).
 * @param ctx Settings: the client's hold, the pool.
 * @param up The connection.
 * @param reusable Whether the response plan allows reuse.
 */
export function giveBack(
  ex: Exchange,
  ctx: ExchangeContext,
  up: Upstream,
  reusable: boolean,
): void {
  if (!reusable || up.reader.buffered !== 0) return;
  ex.upstream = undefined; // the pool (or this client's hold) owns it now
  if (ctx.held) ctx.held.hold(up);
  else ctx.pool!.release(up);
}
