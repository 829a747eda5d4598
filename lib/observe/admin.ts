/**
 * The admin listener (`--admin`): `/metrics` in Prometheus text format, `/api/recent`,
 * `/api/summary`, `/api/inflight` and `/api/history` (a `--history` query) as JSON,
 * `/api/events` as a server-sent event stream of finished exchanges,
 * and `/`, a live dashboard page whose every asset is served from here (no CDN). It is the
 * operator's: a request whose Host is not this listener's own address (or an `--admin-host`
 * name) gets 421, so a page whose name rebinds to this address reads nothing; with admin
 * credentials every path asks for them (401); every response forbids caching, sniffing,
 * referrers and framing, and the page runs under a CSP with no inline script. It is an ordinary
 * HTTP server (Deno.serve): the proxy path itself stays on raw sockets.
 *
 * @module
 */

import type { Authenticator } from "../policy/auth.ts";
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS, FAVICON_SVG } from "./dashboard.ts";
import { hostPort } from "../upstream/dial.ts";
import type { HostAddresses } from "../policy/host_addresses.ts";
import { isLoopback, isUnspecified, parseIp, sameIp } from "../policy/ip.ts";
import type { ExchangeRecord } from "../exchange.ts";
import { asciiJson, jsonRecord } from "./log.ts";
import type { Gauges, Metrics } from "./metrics.ts";
import { normalizeHost } from "../policy/policy.ts";
import type { Summary } from "./summary.ts";
import type { Cache } from "../cache/cache.ts";
import { DatabaseSync } from "node:sqlite";
import { type HistoryQuery, HistoryQueryError, queryHistory } from "./history.ts";

/** A running admin server. */
export interface AdminServer {
  /** Its address. */
  addr: string;
  /** Its bound address and port. */
  bound: { hostname: string; port: number };
  /** Stops it, ending every event stream. */
  shutdown(): Promise<void>;
}

/** What the admin listener serves, and to whom. */
export interface AdminOptions {
  /** Metrics (and the recent exchanges). */
  metrics: Metrics;
  /** The traffic summary. */
  summary: Summary;
  /** Live gauges. */
  gauges: Gauges;
  /** Admin credentials: every path asks for them when given. */
  auth?: Authenticator | undefined;
  /** Host names answered to besides the listener's own address. @default [] */
  hosts?: readonly string[];
  /** The host's addresses, for a listener on 0.0.0.0 or ::. */
  hostAddresses: HostAddresses;
  /** The `--history` database, which `/api/history` reads. */
  history?: string | undefined;
  /** The cache (`--cache`), which `/api/cache` shows and purges. */
  cache?: Cache | undefined;
}

/** Rows `/api/history` returns at most (its `limit` parameter; 100 when absent). */
const MAX_HISTORY_ROWS = 1000;

/**
 * A time in a query: epoch ms, or a date and time `Date.parse` reads (ISO 8601).
 *
 * @returns Epoch ms, or undefined when the text is neither.
 */
function timeParam(text: string): number | undefined {
  const at = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  return Number.isFinite(at) ? at : undefined;
}

/**
 * `/api/history`'s query from its URL parameters: `since` and `until` (ISO 8601 or epoch ms;
 * the last 24 hours by default), `client`, `user`, `host`, `status`, `top`, `limit`.
 *
 * @returns The query, or what is wrong with a parameter.
 */
export function historyQuery(params: URLSearchParams): HistoryQuery | string {
  const query: HistoryQuery = { since: Date.now() - 86_400_000, limit: 100 };
  for (const [name, value] of params) {
    switch (name) {
      case "since":
      case "until": {
        const at = timeParam(value);
        if (at === undefined) return `${name}: "${value}" is not a time (ISO 8601 or epoch ms)`;
        query[name] = at;
        break;
      }
      case "limit":
        if (!/^\d{1,4}$/.test(value) || +value < 1 || +value > MAX_HISTORY_ROWS) {
          return `limit: "${value}" is not 1 to ${MAX_HISTORY_ROWS}`;
        }
        query.limit = Number(value);
        break;
      case "client":
      case "user":
      case "host":
      case "status":
      case "top":
        if (value !== "") query[name] = value;
        break;
      default:
        return `unknown parameter "${name}": since, until, client, user, host, status, top, limit`;
    }
  }
  return query;
}

/** Live event streams at once; more get 503. */
const MAX_SUBSCRIBERS = 64;
/** Bytes of events queued for one stream whose reader does not keep up before it is dropped. */
const MAX_QUEUED = 1024 * 1024;

/** Headers on every admin response. */
const SECURITY_HEADERS: Record<string, string> = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; " +
    "frame-ancestors 'none'",
  "x-frame-options": "DENY",
};

/**
 * Splits a Host header value into a normalised host and a port.
 *
 * @param value The Host value.
 * @returns Host (IPv6 without brackets) and port (80 when absent), or undefined when malformed.
 */
export function splitHost(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+))(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m) return undefined;
  return { host: normalizeHost(m[1] ?? m[2]!), port: m[3] === undefined ? 80 : Number(m[3]) };
}

/**
 * Tells whether a Host names this admin listener: its own address and port, `localhost` when
 * it listens on loopback or everywhere, any of the host's addresses when it listens
 * everywhere, or a configured name. Anything else may be a rebinding page's own name.
 *
 * @param value The Host value (null when absent).
 * @param bound The listener's address.
 * @param hosts Configured names.
 * @param hostAddresses The host's addresses.
 * @returns True when it names us.
 */
export function hostAllowed(
  value: string | null,
  bound: { hostname: string; port: number },
  hosts: readonly string[],
  hostAddresses: HostAddresses,
): boolean {
  const parts = value === null ? undefined : splitHost(value);
  if (!parts || parts.port !== bound.port) return false;
  const { host } = parts;
  if (hosts.includes(host)) return true;
  const mine = parseIp(bound.hostname);
  const wildcard = mine !== undefined && isUnspecified(mine);
  if (host === "localhost") return wildcard || isLoopback(bound.hostname);
  const ip = parseIp(host);
  if (!ip || !mine) return false;
  return wildcard ? hostAddresses.has(ip) : sameIp(mine, ip);
}

/**
 * Starts the admin listener.
 *
 * @param addr Where to listen.
 * @param options Metrics, summary, live gauges, credentials and host names.
 * @returns The server.
 */
export function startAdmin(
  addr: { hostname: string; port: number },
  options: AdminOptions,
): AdminServer {
  const { metrics, summary, gauges, auth, hostAddresses } = options;
  const hosts = options.hosts ?? [];
  const streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const enc = new TextEncoder();
  const respond = (body: BodyInit | null, type: string, status = 200, extra = {}) =>
    new Response(body, {
      status,
      headers: { ...SECURITY_HEADERS, "content-type": type, ...extra },
    });
  const text = (body: string, status: number, extra = {}) =>
    respond(body, "text/plain; charset=utf-8", status, extra);
  const json = (data: unknown, status = 200) =>
    respond(asciiJson(data, 1), "application/json; charset=utf-8", status);
  // A read-only connection of its own to the history database, opened on first use: the
  // writer's batches and these reads do not wait for each other (WAL).
  let historyDb: DatabaseSync | undefined;
  const history = (params: URLSearchParams): Response => {
    if (!options.history) {
      return json({ error: "the history is off: start the proxy with --history FILE" }, 404);
    }
    const query = historyQuery(params);
    if (typeof query === "string") return json({ error: query }, 400);
    try {
      historyDb ??= new DatabaseSync(options.history, { readOnly: true });
      return json({ rows: queryHistory(historyDb, query) });
    } catch (err) {
      if (err instanceof HistoryQueryError) {
        return json({ error: `${err.field}: ${err.message}` }, 400);
      }
      return json({ error: `the history cannot be read: ${(err as Error).message}` }, 503);
    }
  };
  // GET: the cache's size and hit ratio. DELETE ?url=U forgets one URL (every variant), DELETE
  // ?all=1 everything. DELETE, not POST: a page elsewhere cannot send it without a CORS
  // preflight, which this listener never grants, so it cannot purge through a browser.
  const cacheApi = (method: string, params: URLSearchParams): Response => {
    const cache = options.cache;
    if (!cache) return json({ error: "the cache is off: start the proxy with --cache" }, 404);
    if (method === "GET") {
      const counts = options.summary.cacheCounts();
      return json({
        ...cache.store.stats,
        hits: counts.hits,
        lookups: counts.lookups,
        servedBytes: counts.servedBytes,
        hitRatio: counts.lookups === 0 ? null : counts.hits / counts.lookups,
      });
    }
    if (method !== "DELETE") return text("only GET or DELETE\n", 405, { allow: "GET, DELETE" });
    const target = params.get("url");
    if (params.get("all") === "1") return json({ purged: cache.purge() });
    if (target === null) return json({ error: "url: give the URL to purge (or all=1)" }, 400);
    let u: URL;
    try {
      u = new URL(target);
    } catch {
      return json({ error: `url: "${target}" is not an absolute URL` }, 400);
    }
    if (u.protocol !== "http:") {
      return json({ error: `url: only http:// URLs are cached (HTTPS is tunnelled)` }, 400);
    }
    return json({ purged: cache.purge(target) });
  };
  // Once a second: the bytes that flowed (transfers under way included) and what is under way,
  // to /api/inflight and to every event stream as a "tick" event.
  let last: ReturnType<Metrics["tick"]> = { bytes: 0, inflight: [] };
  const ticker = setInterval(() => {
    last = metrics.tick();
    if (streams.size === 0) return;
    const event = enc.encode(`event: tick\ndata: ${asciiJson(last)}\n\n`);
    for (const c of streams) {
      if ((c.desiredSize ?? 0) < -MAX_QUEUED) continue; // the exchange events drop it
      try {
        c.enqueue(event);
      } catch {
        // closed meanwhile
      }
    }
  }, 1000);
  Deno.unrefTimer(ticker as unknown as number);
  const route = (req: Request): Response => {
    const url = new URL(req.url);
    const path = url.pathname;
    if (path === "/api/cache") return cacheApi(req.method, url.searchParams);
    if (req.method !== "GET") return text("only GET\n", 405, { allow: "GET" });
    switch (path) {
      case "/metrics":
        return respond(metrics.render(gauges), "text/plain; version=0.0.4; charset=utf-8");
      case "/api/recent":
        return json(metrics.recent().map(jsonRecord));
      case "/api/inflight":
        return json(last);
      case "/api/history":
        return history(url.searchParams);
      case "/api/summary":
        return json({
          ...summary.toJSON(),
          connections: gauges.connections(),
          idle_upstreams: gauges.idleUpstreams(),
        });
      case "/api/events": {
        if (streams.size >= MAX_SUBSCRIBERS) {
          return text(`too many live event streams (${MAX_SUBSCRIBERS})\n`, 503);
        }
        let stop = () => {};
        let mine: ReadableStreamDefaultController<Uint8Array> | undefined;
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            mine = controller;
            streams.add(controller);
            controller.enqueue(enc.encode(": live exchanges\n\n"));
            stop = metrics.subscribe((ex: ExchangeRecord) => {
              try {
                // A reader that fell this far behind is dropped, not buffered for: it can
                // reconnect (EventSource does) and read /api/recent.
                if ((controller.desiredSize ?? 0) < -MAX_QUEUED) {
                  stop();
                  streams.delete(controller);
                  metrics.droppedSubscriber();
                  controller.error(new Error("event stream reader too slow"));
                  return;
                }
                controller.enqueue(enc.encode(`data: ${asciiJson(jsonRecord(ex))}\n\n`));
              } catch {
                stop(); // the stream was closed (shutdown)
              }
            });
          },
          cancel() {
            stop();
            if (mine) streams.delete(mine);
          },
        }, new ByteLengthQueuingStrategy({ highWaterMark: 0 }));
        return respond(body, "text/event-stream");
      }
      case "/":
        return respond(DASHBOARD_HTML, "text/html; charset=utf-8");
      case "/dashboard.js":
        return respond(DASHBOARD_JS, "text/javascript; charset=utf-8");
      case "/dashboard.css":
        return respond(DASHBOARD_CSS, "text/css; charset=utf-8");
      // Browsers ask for /favicon.ico whatever the page links: both get the SVG.
      case "/favicon.svg":
      case "/favicon.ico":
        return respond(FAVICON_SVG, "image/svg+xml");
      default:
        return text(
          "not found: try /, /metrics, /api/recent, /api/summary, /api/inflight, /api/history\n",
          404,
        );
    }
  };
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
    { hostname: addr.hostname, port: addr.port, onListen() {} },
    async (req, info): Promise<Response> => {
      // RFC 9110 §15.5.20: 421 for a request this server is not configured to answer.
      if (!hostAllowed(req.headers.get("host"), server.addr, hosts, hostAddresses)) {
        return text(
          `misdirected request: this admin listener answers to ${
            hostPort(server.addr.hostname, server.addr.port)
          }${hosts.length ? ` and ${hosts.join(", ")}` : ""} (see --admin-host)\n`,
          421,
        );
      }
      const client = info.remoteAddr.hostname;
      if (auth && await auth.verify(req.headers.get("authorization"), client) === undefined) {
        return text("admin credentials required\n", 401, {
          "www-authenticate": 'Basic realm="http-proxy admin", charset="UTF-8"',
        });
      }
      return route(req);
    },
  );
  return {
    addr: hostPort(server.addr.hostname, server.addr.port),
    bound: { hostname: server.addr.hostname, port: server.addr.port },
    async shutdown() {
      clearInterval(ticker);
      historyDb?.close();
      for (const c of streams) {
        try {
          c.close();
        } catch {
          // already closed by the client leaving
        }
      }
      streams.clear();
      await server.shutdown();
    },
  };
}
