/**
 * The domain of the request path: an exchange (one request and its response, or one CONNECT
 * tunnel), the record it is logged with, and the one interface through which everything that
 * watches traffic (access log, summary, metrics, HAR, live events, workers' reports) hears of
 * exchanges opening and ending. Types and a fan-out only: the request path imports this, never
 * a log module, for them.
 *
 * @module
 */

import type { CacheResult } from "./cache/rules.ts";
import type { ErrorKind } from "./errors.ts";
import type { BufferedReader } from "./http1/head.ts";
import type { Framing } from "./http1/headers.ts";
import type { ParentProxy } from "./upstream/parent.ts";

/** What one exchange (a request and its response, or a CONNECT tunnel) is logged with. */
export interface ExchangeRecord {
  /** Short exchange id, unique in this process. */
  id: number;
  /** Epoch ms when the request head was read. */
  start: number;
  /** Client address. */
  clientIp: string;
  /** Client port. */
  clientPort: number;
  /** The listener the client came in on, `host:port`. */
  listener?: string;
  /** Whether the client spoke TLS to the proxy (`--listen-tls`). */
  tls?: boolean;
  /** The proxy-authenticated user name, if any. */
  user?: string;
  /** The request's protocol, `HTTP/1.1` or `HTTP/1.0`. */
  version?: string;
  /** The request's Referer, for the combined format. */
  referer?: string;
  /** The request's User-Agent, for the combined format. */
  userAgent?: string;
  /** The response's Content-Type, for the squid format. */
  contentType?: string;
  /** ms spent resolving the upstream host name (0 for an IP literal). */
  dnsMs?: number;
  /** The request's header fields as received (for HAR; never logged by the other formats). */
  requestFields?: readonly [string, string][];
  /** The response's header fields as received (for HAR). */
  responseFields?: readonly [string, string][];
  /** Method, or "-" when the request line could not be parsed. */
  method: string;
  /** Absolute URL or CONNECT authority as sent, or "-". */
  target: string;
  /** `host:port` of the target once parsed (host normalised), for the summary. */
  destination?: string;
  /** The upstream IP actually connected to (read from the socket): the parent's, via one. */
  upstreamIp?: string;
  /** `host:port` of the parent proxy the exchange went through (`--parent`), if any. */
  parent?: string;
  /** The protocol a 101 switched the exchange to (`websocket`), which then ran as a tunnel. */
  upgraded?: string;
  /** The upstream port. */
  upstreamPort?: number;
  /** Whether the upstream connection was new, reused from the pool, or a retry after a stale one. */
  upstreamUse?: UpstreamUse;
  /** Final status sent to the client. */
  status?: number;
  /** Its reason phrase. */
  reason?: string;
  /** Request body bytes relayed upstream (tunnel: client → upstream bytes). */
  bytesUp: number;
  /** Response body bytes relayed to the client (tunnel: upstream → client bytes). */
  bytesDown: number;
  /** ms from start until the upstream connection was open. */
  connectMs?: number;
  /** ms from start until the first byte of the response head arrived. */
  firstByteMs?: number;
  /** ms from start until the exchange ended. */
  totalMs?: number;
  /** One-line cause when the exchange failed. */
  error?: string;
  /** The failure's kind (RFC 9209 Proxy-Status error type, or e.g. `client_closed`). */
  errorKind?: ErrorKind;
  /** Whether this is a CONNECT tunnel. */
  tunnel: boolean;
  /** Whether the open line was already written. */
  opened: boolean;
  /** What the cache did (`--cache`): HIT, MISS, REFRESH_UNMODIFIED, … (see cache/rules.ts). */
  cache?: CacheResult;
}

/** How the upstream connection of an exchange came about. */
export type UpstreamUse = "new" | "reused" | "retry";

/** What an exchange needs from the connection that carries it. */
export interface Exchange {
  /** The log record, filled in as the exchange goes. */
  record: ExchangeRecord;
  /** performance.now() at the start, for durations. */
  t0: number;
  /** The client socket. */
  client: Deno.TcpConn;
  /** The reader over the client socket. */
  reader: BufferedReader;
  /** The upstream socket once dialed; the caller closes it. */
  upstream?: Deno.TcpConn | undefined;
  /** Whether any byte of the final response went to the client. */
  responseStarted: boolean;
  /** Whether the whole request (head and body) was read from the client. */
  requestConsumed: boolean;
  /** HTTP minor version of the client's request (0 or 1); 1 until parsed. */
  minor: 0 | 1;
  /** Whether the client asked for a HEAD (error answers then carry no body). */
  head: boolean;
  /** Set when the client closed (or reset) while its response was awaited or relayed. */
  clientGone?: boolean;
  /**
   * Gives back this exchange's slot among the requests in flight to its destination
   * (`--max-active-per-host`), once it has one; called when the exchange ends or its connection
   * becomes a tunnel (calling it again does nothing).
   */
  active?: (() => void) | undefined;
}

/** Where a request goes, once its target was parsed and passed the policy. */
export interface Route {
  /** The host, normalised (lower case, no trailing dot; IPv6 without brackets). */
  host: string;
  /** The port. */
  port: number;
  /** CONNECT: a tunnel to host:port. Otherwise an `http://` request. */
  tunnel: boolean;
  /** The authority as the client wrote it (the Host sent upstream); "" for a tunnel. */
  authority: string;
  /** Path and query exactly as sent; "" for a tunnel. */
  path: string;
  /** How the request's body is framed ("none" for a tunnel). */
  framing: Framing;
  /** The parent proxy it goes through (`--parent`), or undefined for a direct connection. */
  parent?: ParentProxy;
  /** Its key in the upstream pool and the gates (see upstream/transport.ts `upstreamKey`). */
  key: string;
}

/**
 * What watches traffic: told when an exchange's upstream connection opens (the text log's first
 * line, the in-use gauges) and when the exchange ends, however it ended (every exchange ends
 * exactly once).
 */
export interface ExchangeObserver {
  /** The exchange's upstream connection opened (a retry opens again). */
  opened?(ex: ExchangeRecord): void;
  /** The exchange ended. */
  closed(ex: ExchangeRecord): void;
}

/**
 * The logger the proxy writes through: the access log is one observer of exchanges (text: its
 * first line when the upstream opens, its second when the exchange ends; the other formats one
 * line at the end), plus diagnostic lines.
 */
export interface Logger extends ExchangeObserver {
  /** The upstream connection is open (text: the first line). */
  opened(ex: ExchangeRecord): void;
  /** A diagnostic line (startup, shutdown, internal errors), never part of the access log. */
  info(message: string): void;
}

/**
 * One observer that tells each of `observers`, in order.
 *
 * @param observers The observers (undefined entries are skipped).
 * @returns The fan-out.
 */
export function fanOut(...observers: (ExchangeObserver | undefined)[]): ExchangeObserver {
  const all = observers.filter((o): o is ExchangeObserver => o !== undefined);
  const opening = all.filter((o) => o.opened);
  return {
    opened(ex) {
      for (const o of opening) o.opened!(ex);
    },
    closed(ex) {
      for (const o of all) o.closed(ex);
    },
  };
}
