/**
 * One client connection, read top to bottom like a checklist: client check → head (size cap,
 * deadline) → parse → rate limit and auth → target and policy, once for CONNECT and plain HTTP
 * ({@linkcode target}) → tunnel, or forward (its turn among the requests in flight to the
 * destination first) → answer → next request or close. This is the one
 * catch site: a ProxyError is answered with its status if no response byte went out yet,
 * anything else is logged with its stack and answered 500, and every path closes the upstream
 * socket. Sockets are owned here and in `server.ts`, `relay/` and `upstream/` (see
 * docs/architecture.md).
 *
 * @module
 */

import { closeQuietly, hostPort } from "./upstream/dial.ts";
import {
  Aborted,
  BadGateway,
  BadRequest,
  HeadTooLarge,
  ProxyError,
  reasonPhrase,
  RequestTimeout,
} from "./errors.ts";
import type { Exchange, ExchangeRecord, Route } from "./exchange.ts";
import { forward, turnFirst } from "./relay/forward.ts";
import { type ExchangeContext, openUpstream, upstreamKey } from "./upstream/transport.ts";
import { writeAll } from "./http1/body.ts";
import { BufferedReader, HeadReadError } from "./http1/head.ts";
import {
  clientWantsKeepAlive,
  connectionFields,
  type Framing,
  lowerName,
  requestFraming,
} from "./http1/headers.ts";
import {
  parseConnectTarget,
  parseHttpTarget,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
} from "./http1/parse.ts";
import { Deadline } from "./deadline.ts";
import {
  checkClient,
  checkConnectPort,
  checkDestination,
  checkLoop,
  normalizeHost,
} from "./policy/policy.ts";
import { isLoopback } from "./policy/ip.ts";
import { HeldUpstream, type Peer } from "./upstream/pool.ts";
import { basic, goesDirect } from "./upstream/parent.ts";
import { tunnel } from "./relay/tunnel.ts";

/** What the server sees of a connection: whether it sits between requests, and a way to end it. */
export interface ConnState {
  /** True while waiting for the next request head. */
  idle: boolean;
  /** Closes the client socket and the current upstream socket (set by handleConn). */
  abort?: () => void;
  /** Set by the server when the connection is over a limit: answered, then closed. */
  refusal?: ProxyError;
  /** The connection's context (set by handleConn): a reload replaces its config and users. */
  ctx?: ExchangeContext;
  /**
   * Set when a TLS client did not finish its handshake within --header-timeout: Deno 2.9.6
   * cannot close such a socket (its close waits for the handshake), so it is left to settle when
   * the client leaves, and the server counts it against --max-connections until then.
   */
  stuck?: Promise<unknown>;
}

let lastId = 0;

/** The default id sequence: 1, 2, 3, … for the whole process. */
function nextId(): number {
  return ++lastId;
}

/**
 * Serves one client connection until it closes, then closes it.
 *
 * @param conn The client socket.
 * @param ctx Settings, logger, connect function, shutdown signal.
 * @param state Updated with the idle flag, which the server reads at shutdown.
 */
export function handleConn(
  conn: Deno.TcpConn,
  ctx: ExchangeContext,
  state: ConnState = { idle: true },
): Promise<void> {
  // The connection's own context is made here and the server's left behind: this frame ends at
  // once, serve()'s lasts as long as the connection (a heap snapshot of idle clients found the
  // server's copy kept for each connection's life when one async function did both).
  return serve(conn, connectionContext(conn, ctx), state);
}

/** The pieces of a connection's context that its loop uses directly. */
interface Connection {
  ctx: ExchangeContext;
  held: HeldUpstream | undefined;
  clientWrite: Deadline;
  tls: boolean;
  /**
   * The client's address, read from the socket once: each read of a Deno address object's
   * fields was a megamorphic load (V8's `--log-ic`), and every request read it again.
   */
  client: Peer;
}

/** A connection's context: the server's, plus what belongs to this connection. */
function connectionContext(conn: Deno.TcpConn, ctx: ExchangeContext): Connection {
  const held = ctx.pool ? new HeldUpstream(ctx.pool, ctx.config.upstreamIdleTimeoutMs) : undefined;
  const remote = conn.remoteAddr;
  const client = { ip: remote.hostname, port: remote.port };
  // The rules about this host itself depend on whether the client is on it.
  const local = ctx.local && { ...ctx.local, loopbackClient: isLoopback(client.ip) };
  // One write deadline for the connection's life, parked between writes (see toClient).
  const clientWrite = new Deadline(
    ctx.config.writeTimeoutMs,
    () => new Error("client write stalled"),
  );
  clientWrite.park();
  const tls = typeof (conn as unknown as Deno.TlsConn).handshake === "function";
  const here = conn.localAddr;
  const listener = { addr: hostPort(here.hostname, here.port), tls };
  // One object, made whole at once (adding properties later slowed every access to it); the
  // server keeps it to hand a reload's config and users to the next request.
  return {
    ctx: {
      ...ctx,
      clientWrite,
      listener,
      lastRoute: { names: undefined },
      ...(held ? { held } : {}),
      ...(local ? { local } : {}),
    },
    held,
    clientWrite,
    tls,
    client,
  };
}

async function serve(
  conn: Deno.TcpConn,
  { ctx, held, clientWrite, tls, client }: Connection,
  state: ConnState,
): Promise<void> {
  const reader = new BufferedReader(conn);
  state.ctx = ctx;
  let first = true;
  let current: Exchange | undefined;
  // Closing only the client would leave an exchange blocked on an upstream read.
  state.abort = () => {
    closeQuietly(conn);
    closeQuietly(current?.upstream);
    held?.close();
  };
  clientWrite.onExpire(() => state.abort?.()); // (no promise a connection)
  try {
    conn.setNoDelay(true);
  } catch {
    // the socket may already be gone
  }
  try {
    // A TLS client first completes its handshake, within the head timeout: one that stalls or
    // speaks plain HTTP to this port is closed (the TLS library sends it an alert).
    if (tls) {
      const shook = await handshake(conn as unknown as Deno.TlsConn, ctx.config.headerTimeoutMs);
      if (typeof shook !== "string") state.stuck = shook.settled;
      if (shook !== "done") return;
    }
    // The checklist starts with the client: a denied one (or one too many) is answered before
    // a byte is read.
    try {
      if (state.refusal) throw state.refusal;
      checkClient(client.ip, ctx.config);
    } catch (err) {
      state.idle = false;
      await exchange(newExchange(ctx, conn, client, reader, now()), ctx, null, err as ProxyError);
      await drainBriefly(conn, reader);
      return;
    }
    // Each request is served by a call of its own: what it made (the exchange, its heads) is
    // garbage once it returns, not kept by this frame while the connection waits for the next
    // (a heap snapshot of idle clients found the last exchange still held here).
    const setCurrent = (ex: Exchange | undefined) => (current = ex);
    for (;;) {
      state.idle = true;
      if (ctx.signal.aborted) return;
      if (!(await serveNext(conn, client, reader, ctx, state, first, setCurrent))) return;
      first = false;
    }
  } finally {
    clientWrite.cancel();
    // A stuck handshake's socket is closed once it settles (see ConnState.stuck).
    if (state.stuck) void state.stuck.then(() => closeQuietly(conn));
    else closeQuietly(conn);
    held?.release();
  }
}

/**
 * Waits for the connection's next request head and serves it (or answers why it could not be
 * read).
 *
 * @returns Whether the connection stays open for another request.
 */
async function serveNext(
  conn: Deno.TcpConn,
  client: Peer,
  reader: BufferedReader,
  ctx: ExchangeContext,
  state: ConnState,
  first: boolean,
  setCurrent: (ex: Exchange | undefined) => void,
): Promise<boolean> {
  const { config } = ctx; // as of this request (a reload may change it between requests)
  let bytes: Uint8Array | null = null;
  let failure: ProxyError | undefined;
  const waitStart = now();
  try {
    // (One object either way: a conditional spread made two a request.)
    bytes = await reader.readHead(
      first ? { maxBytes: config.maxHeaderBytes, timeoutMs: config.headerTimeoutMs } : {
        maxBytes: config.maxHeaderBytes,
        timeoutMs: config.headerTimeoutMs,
        idleMs: config.idleTimeoutMs,
      },
    );
  } catch (err) {
    if (!(err instanceof HeadReadError)) return false; // reset, or closed by shutdown
    if (err.reason === "eof") return false; // the client gave up mid-head: nobody to answer
    if (err.reason === "timeout" && !first && !err.partial) return false; // idle keep-alive
    failure = err.reason === "timeout"
      ? new RequestTimeout(`request head not received within ${config.headerTimeoutMs} ms`)
      : new HeadTooLarge(`request head larger than ${config.maxHeaderBytes} bytes`);
  }
  if (bytes === null && failure === undefined) return false; // clean close between requests
  state.idle = false;
  // A failed head is timed from when the wait began; a good one from its arrival.
  const ex = newExchange(ctx, conn, client, reader, failure ? waitStart : now());
  setCurrent(ex);
  const keep = await exchange(ex, ctx, bytes, failure);
  setCurrent(undefined);
  return keep;
}

/** Whether a request carries no body (malformed framing counts as a body: close after). */
function hasNoBody(head: RequestHead): boolean {
  try {
    return requestFraming(head).kind === "none";
  } catch {
    return false;
  }
}

/** A point in time, by wall clock (for the log) and monotonic clock (for durations). */
function now(): { wall: number; mono: number } {
  return { wall: Date.now(), mono: performance.now() };
}

/** A fresh exchange on this connection, started at `begin`. */
function newExchange(
  ctx: ExchangeContext,
  conn: Deno.TcpConn,
  client: Peer,
  reader: BufferedReader,
  begin: { wall: number; mono: number },
): Exchange {
  const record: ExchangeRecord = {
    id: (ctx.nextId ?? nextId)(),
    start: begin.wall,
    clientIp: client.ip,
    clientPort: client.port,
    method: "-",
    target: "-",
    bytesUp: 0,
    bytesDown: 0,
    tunnel: false,
    opened: false,
  };
  // (Set after, not spread in: a conditional spread copied an object on every request.)
  if (ctx.listener) {
    record.listener = ctx.listener.addr;
    record.tls = ctx.listener.tls;
  }
  return {
    record,
    t0: begin.mono,
    client: conn,
    reader,
    responseStarted: false,
    requestConsumed: false,
    minor: 1,
    head: false,
    active: undefined,
  };
}

/** Completes a TLS handshake within `timeoutMs`. */
async function handshake(
  conn: Deno.TlsConn,
  timeoutMs: number,
): Promise<"done" | "failed" | { settled: Promise<unknown> }> {
  const deadline = new Deadline(timeoutMs, () => new Error("TLS handshake timed out"));
  const done = conn.handshake();
  const settled = done.catch(() => {}); // when the client finally sends or leaves
  try {
    await Promise.race([done, deadline.promise]);
    return "done";
  } catch {
    return deadline.expired ? { settled } : "failed";
  } finally {
    deadline.cancel();
  }
}

/**
 * After answering without reading the request: shut our side, then read and drop what the
 * client sends for a moment, so closing does not reset the connection before the answer lands.
 */
async function drainBriefly(conn: Deno.TcpConn, reader: BufferedReader): Promise<void> {
  try {
    await conn.closeWrite();
  } catch {
    return; // already gone
  }
  const deadline = new Deadline(500, () => new Error("drain time is up"));
  try {
    for (let drained = 0; drained < 256 * 1024;) {
      const piece = await Promise.race([reader.read(64 * 1024), deadline.promise]);
      if (piece === null) return;
      drained += piece.length;
    }
  } catch {
    // time is up, or the client reset: close either way
  } finally {
    deadline.cancel();
  }
}

/** Runs one exchange and answers its failure; returns whether the connection lives on. */
async function exchange(
  ex: Exchange,
  ctx: ExchangeContext,
  bytes: Uint8Array | null,
  failure: ProxyError | undefined,
): Promise<boolean> {
  let keep = false;
  let head: RequestHead | undefined;
  try {
    if (failure) throw failure;
    const lineEnd = bytes!.indexOf(10);
    if (lineEnd > ctx.config.maxRequestLine) {
      throw new ProxyError(414, `request line longer than ${ctx.config.maxRequestLine} bytes`, {
        kind: "http_request_error",
        close: true,
      });
    }
    try {
      head = parseRequestHead(bytes!, ctx.config.maxHeaderFields);
    } catch (err) {
      if (err instanceof RangeError) throw new HeadTooLarge(err.message);
      throw err instanceof SyntaxError ? new BadRequest(err.message) : err;
    }
    ex.record.method = head.method;
    ex.record.target = head.target;
    ex.record.version = head.minor === 1 ? "HTTP/1.1" : "HTTP/1.0"; // (no new string a request)
    ex.record.requestFields = head.fields;
    for (const [n, v] of head.fields) {
      if (n.length === 7 && lowerName(n) === "referer") ex.record.referer ??= v;
      else if (n.length === 10 && lowerName(n) === "user-agent") ex.record.userAgent ??= v;
    }
    ex.minor = head.minor;
    ex.head = head.method === "HEAD";
    if (ctx.rate || ctx.auth) {
      // A 429 or 407 to a request without a body keeps the connection (for the retry).
      ex.requestConsumed = head.method !== "CONNECT" && hasNoBody(head);
      ctx.rate?.take(ex.record.clientIp);
      if (ctx.auth) ex.record.user = await ctx.auth.check(head.fields, ex.record.clientIp);
    }
    const route = target(ex, ctx, head);
    if (route.tunnel) {
      await connect(ex, ctx, route);
      return false;
    }
    // Its turn among the requests in flight to the destination, before the relay starts.
    const turn = turnFirst(ex, ctx, head, route);
    if (turn) await turn;
    keep = await forward(ex, ctx, head, route);
    return keep;
  } catch (err) {
    keep = await answerFailure(ex, ctx, err, head);
    return keep;
  } finally {
    closeQuietly(ex.upstream);
    ex.active?.();
    ex.record.totalMs = performance.now() - ex.t0;
    ctx.logger.closed(ex.record);
  }
}

/**
 * The target and the policy, once, for CONNECT and plain HTTP alike (tinyproxy's
 * `process_request()`): parse the target (400), frame the body (400), refuse a loop (508), a
 * CONNECT port outside `--connect-ports` (403) and a denied destination (403, by name and port
 * here; by address when dialed).
 *
 * @returns Where the request goes.
 */
function target(ex: Exchange, ctx: ExchangeContext, head: RequestHead): Route {
  const tunnel = head.method === "CONNECT";
  ex.record.tunnel = tunnel;
  let parsed: { hostname: string; port: number; authority?: string; path?: string };
  let framing: Framing = { kind: "none" };
  try {
    parsed = tunnel ? parseConnectTarget(head.target) : parseHttpTarget(head.target);
    if (!tunnel) framing = requestFraming(head);
  } catch (err) {
    throw err instanceof SyntaxError ? new BadRequest(err.message) : err;
  }
  if (tunnel) ex.record.target = hostPort(parsed.hostname, parsed.port);
  // A 4xx to a request whose whole body is in (or that has none) may keep the connection.
  else ex.requestConsumed = framing.kind === "none";
  // The same host and port as this connection's last request: the same strings (RouteNames).
  const last = ctx.lastRoute?.names;
  const same = last !== undefined && last.hostname === parsed.hostname &&
    last.port === parsed.port;
  const host = same ? last.host : normalizeHost(parsed.hostname);
  // Known as soon as parsed, so a refusal below is counted against where it was going.
  ex.record.destination = same ? last.destination : hostPort(host, parsed.port);
  checkLoop(head.fields, ctx.config.viaName);
  if (tunnel) checkConnectPort(parsed.port, ctx.config.connectPorts);
  // Names and ports are judged before reuse or DNS; addresses when dialed (see openUpstream).
  // Through a parent, a name is the parent's to resolve: an address written in the request is
  // judged here in full, a name by name only.
  checkDestination(ctx.config, host, undefined, parsed.port, ctx.local);
  const { parent, noParent } = ctx.config;
  const via = parent && !goesDirect(noParent, host, parsed.port) ? parent : undefined;
  if (via) ex.record.parent = via.text;
  let key: string;
  if (same && last.via === via) key = last.key;
  else {
    key = upstreamKey(ctx, host, parsed.port, via);
    if (ctx.lastRoute) {
      ctx.lastRoute.names = {
        hostname: parsed.hostname,
        port: parsed.port,
        via,
        host,
        destination: ex.record.destination,
        key,
      };
    }
  }
  return {
    host,
    port: parsed.port,
    key,
    tunnel,
    authority: parsed.authority ?? "",
    path: parsed.path ?? "",
    framing,
    ...(via ? { parent: via } : {}),
  };
}

/** CONNECT: dial (or ask the parent to), answer 200, relay bytes until both sides are done. */
async function connect(ex: Exchange, ctx: ExchangeContext, route: Route): Promise<void> {
  const upstream = await openUpstream(ex, ctx, route.host, route.port, false, route.parent);
  // Bytes the parent sent after its 200 (a server that speaks first) go to the client first.
  const early = route.parent ? await connectThrough(ex, ctx, route, upstream) : undefined;
  ex.record.status = 200;
  ex.record.reason = "Connection established";
  ex.responseStarted = true;
  try {
    await writeAll(ex.client, ESTABLISHED);
    if (early && early.length > 0) await writeAll(ex.client, early);
  } catch (err) {
    throw new Aborted("client closed the connection", "client_closed", { cause: err });
  }
  const result = await tunnel(ex.client, upstream, ex.reader.drain(), {
    live: ex.record,
    idleTimeoutMs: ctx.config.tunnelIdleTimeoutMs,
    halfClosedTimeoutMs: ctx.config.halfClosedTimeoutMs,
    writeTimeoutMs: ctx.config.writeTimeoutMs,
  });
  ex.record.bytesUp = result.up;
  ex.record.bytesDown = result.down;
  if (result.error !== undefined) {
    ex.record.error = result.error;
    ex.record.errorKind = "tunnel_error";
  }
}

const ESTABLISHED = new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n");

/**
 * Asks the parent proxy for a tunnel (CONNECT host:port, with its credentials) on a connection
 * to it, and waits for its answer: a 2xx opens the tunnel; anything else is a 502 naming the
 * parent's status (a 407: this proxy's --parent-auth-file is missing or wrong).
 *
 * @returns Bytes the parent sent past its answer.
 */
async function connectThrough(
  ex: Exchange,
  ctx: ExchangeContext,
  route: Route,
  conn: Deno.TcpConn,
): Promise<Uint8Array> {
  const parent = route.parent!;
  const target = hostPort(route.host, route.port);
  const auth = ctx.config.parentAuth;
  await writeAll(
    conn,
    encoder.encode(
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n` +
        (auth === undefined ? "" : `Proxy-Authorization: Basic ${basic(auth)}\r\n`) + "\r\n",
    ),
  );
  const reader = new BufferedReader(conn);
  let head;
  try {
    const bytes = await reader.readHead({
      maxBytes: ctx.config.maxHeaderBytes,
      timeoutMs: ctx.config.responseTimeoutMs,
    });
    if (bytes === null) throw new Error("it closed the connection");
    head = parseResponseHead(bytes);
  } catch (err) {
    const why = err instanceof HeadReadError && err.reason === "timeout"
      ? `no answer within ${ctx.config.responseTimeoutMs} ms`
      : (err as Error).message;
    throw new BadGateway(`parent proxy "${parent.text}" did not open a tunnel: ${why}`, {
      kind: "http_response_incomplete",
      cause: err,
    });
  }
  ex.record.firstByteMs ??= performance.now() - ex.t0;
  if (head.status < 200 || head.status > 299) {
    const hint = head.status === 407 ? " (it wants credentials: see --parent-auth-file)" : "";
    throw new BadGateway(
      `parent proxy "${parent.text}" refused CONNECT ${target}: ${head.status} ${head.reason}${hint}`,
      { kind: head.status === 407 ? "proxy_configuration_error" : "destination_unavailable" },
    );
  }
  return reader.drain();
}
const encoder = new TextEncoder();

/**
 * The one catch site: answers a ProxyError with its status if nothing was sent, logs anything
 * else with its stack and answers 500.
 *
 * @returns Whether the client connection may carry another request.
 */
async function answerFailure(
  ex: Exchange,
  ctx: ExchangeContext,
  err: unknown,
  head: RequestHead | undefined,
): Promise<boolean> {
  let proxyError: ProxyError;
  if (err instanceof ProxyError) {
    proxyError = err;
  } else if (err instanceof Aborted) {
    ex.record.error = err.message;
    ex.record.errorKind = err.kind;
    return false;
  } else {
    ctx.logger.info(`internal error in exchange #${ex.record.id}: ${(err as Error)?.stack ?? err}`);
    proxyError = new ProxyError(500, "internal error (see the proxy's log)", { close: true });
  }
  ex.record.error = proxyError.message;
  ex.record.errorKind = proxyError.kind;
  if (ex.responseStarted) return false;
  const keep = !proxyError.close && ex.requestConsumed && head !== undefined &&
    !ctx.signal.aborted && clientWantsKeepAlive(head);
  ex.record.status = proxyError.status;
  ex.record.reason = reasonPhrase(proxyError.status);
  ex.responseStarted = true;
  try {
    await writeAll(ex.client, errorResponse(proxyError, keep, ex.minor, ex.head));
  } catch {
    // the client already left: nothing more to do
    return false;
  }
  return keep;
}

/**
 * Builds an error answer: a one-line plain-text body naming the cause, and an RFC 9209
 * Proxy-Status field with the error kind.
 *
 * @param err The error.
 * @param keep Whether the connection stays open.
 * @param minor The client's HTTP minor version.
 * @param headRequest Whether the request was HEAD (no body then).
 * @returns The response bytes.
 */
export function errorResponse(
  err: ProxyError,
  keep: boolean,
  minor: 0 | 1,
  headRequest: boolean,
): Uint8Array {
  const reason = reasonPhrase(err.status);
  const body = encoder.encode(`${err.status} ${reason}: ${err.message}\n`);
  const details = err.message.replace(/[^\x20-\x7e]/g, "?").replace(/["\\]/g, "\\$&");
  const connection = connectionFields(keep, minor).map(([n, v]) => `${n}: ${v}\r\n`).join("");
  const headText = `HTTP/1.1 ${err.status} ${reason}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${body.length}\r\n` +
    `Proxy-Status: http-proxy; error=${err.kind}; details="${details}"\r\n` +
    err.headers.map(([n, v]) => `${n}: ${v}\r\n`).join("") +
    connection + "\r\n";
  const headBytes = encoder.encode(headText);
  if (headRequest) return headBytes;
  const out = new Uint8Array(headBytes.length + body.length);
  out.set(headBytes);
  out.set(body, headBytes.length);
  return out;
}
