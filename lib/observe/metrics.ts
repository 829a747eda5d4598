/**
 * Live counters for the admin listener: Prometheus text-format metrics and the most recent
 * exchanges. Fed by the logger (every exchange opens and closes there), so it sees exactly
 * what the access log sees. No sockets.
 *
 * @module
 */

import { FROM_STORE } from "../cache/rules.ts";
import type { ExchangeObserver, ExchangeRecord } from "../exchange.ts";
import { collections } from "../reclaim.ts";

/** Methods with a series of their own (RFC 9110 §9, PATCH, and "-" for an unparsed request). */
const KNOWN_METHODS = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
  "-",
]);
/** Request duration histogram buckets, in seconds. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Gauges read when metrics are rendered. */
export interface Gauges {
  /** Client connections open now. */
  connections(): number;
  /** Idle upstream connections held for reuse. */
  idleUpstreams(): number;
  /** The cache's store (`--cache`), when on. */
  cache?(): { entries: number; bytes: number; memBytes: number } | undefined;
}

/** Escapes a Prometheus label value. */
function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** An exchange under way, for the live view. */
export interface InFlight {
  /** Exchange id. */
  id: number;
  /** Client address. */
  client: string;
  /** Proxy user, if any. */
  user: string | null;
  /** Method. */
  method: string;
  /** Target as sent. */
  url: string;
  /** Time since its request head was read, ms. */
  age_ms: number;
  /** Request body bytes so far (tunnel: client → upstream). */
  bytes_up: number;
  /** Response body bytes so far (tunnel: upstream → client). */
  bytes_down: number;
  /** Bytes either way in the last second. */
  bytes_per_s: number;
}

/** Counts exchanges for /metrics and keeps the latest for /api/recent. */
export class Metrics implements ExchangeObserver {
  #requests = new Map<string, number>();
  #errors = new Map<string, number>();
  #bytesUp = 0;
  #bytesDown = 0;
  #buckets = new Array<number>(BUCKETS.length).fill(0);
  #count = 0;
  #sum = 0;
  #tunnels = 0;
  #inUse = 0;
  #recent: ExchangeRecord[] = [];
  #next = 0;
  #keep: number;
  #listeners = new Set<(ex: ExchangeRecord) => void>();
  #dropped = 0;
  /** Exchanges by cache result (`--cache`). */
  #cacheResults = new Map<string, number>();
  /** Body bytes sent from the cache's store. */
  #cacheBytes = 0;
  /** Ids of exchanges counted as holding an upstream (a retry opens twice; it counts once). */
  #holding = new Set<number>();
  /**
   * Exchanges under way, with the bytes of theirs already counted: bodies and tunnels add to
   * their records as bytes flow, and {@linkcode tick} counts the difference once a second.
   */
  #flowing = new Map<number, { ex: ExchangeRecord; up: number; down: number; rate: number }>();
  #lastTotal = 0;

  /**
   * @param keep How many recent exchanges to keep. @default 200
   */
  constructor(keep = 200) {
    this.#keep = keep;
  }

  /**
   * An exchange's upstream connection opened.
   *
   * @param ex The exchange.
   */
  opened(ex: ExchangeRecord): void {
    if (this.#holding.has(ex.id)) return;
    this.#holding.add(ex.id);
    this.#flowing.set(ex.id, { ex, up: 0, down: 0, rate: 0 });
    if (ex.tunnel) this.#tunnels++;
    else this.#inUse++;
  }

  /**
   * An exchange ended.
   *
   * @param ex The exchange.
   */
  closed(ex: ExchangeRecord): void {
    if (this.#holding.delete(ex.id)) {
      if (ex.tunnel) this.#tunnels--;
      else this.#inUse--;
    }
    const cls = ex.status === undefined ? "none" : `${Math.floor(ex.status / 100)}xx`;
    // A client picks the method: only the known ones get a series of their own.
    const method = KNOWN_METHODS.has(ex.method) ? ex.method : "OTHER";
    const key = `${method}\u0000${cls}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    if (ex.errorKind !== undefined) {
      this.#errors.set(ex.errorKind, (this.#errors.get(ex.errorKind) ?? 0) + 1);
    }
    if (ex.cache !== undefined) {
      this.#cacheResults.set(ex.cache, (this.#cacheResults.get(ex.cache) ?? 0) + 1);
      if (FROM_STORE.has(ex.cache)) this.#cacheBytes += ex.bytesDown;
    }
    // What a tick already counted of it is not counted again.
    const flowing = this.#flowing.get(ex.id);
    this.#flowing.delete(ex.id);
    this.#bytesUp += ex.bytesUp - (flowing?.up ?? 0);
    this.#bytesDown += ex.bytesDown - (flowing?.down ?? 0);
    const secs = (ex.totalMs ?? 0) / 1000;
    this.#count++;
    this.#sum += secs;
    for (let i = 0; i < BUCKETS.length; i++) if (secs <= BUCKETS[i]!) this.#buckets[i]!++;
    // A ring: the slot of the oldest is overwritten.
    this.#recent[this.#next % this.#keep] = { ...ex };
    this.#next++;
    for (const l of this.#listeners) l(ex);
  }

  /**
   * The bytes so far of an exchange under way that another thread serves (a worker's): its
   * record here is a copy made when it opened, so the next tick counts what moved since.
   *
   * @param id The exchange's id.
   * @param bytesUp Request body or tunnel bytes so far.
   * @param bytesDown Response body or tunnel bytes so far.
   */
  progress(id: number, bytesUp: number, bytesDown: number): void {
    const f = this.#flowing.get(id);
    if (!f) return;
    f.ex.bytesUp = bytesUp;
    f.ex.bytesDown = bytesDown;
  }

  /**
   * Counts the bytes that flowed in exchanges under way since the last tick (call it once a
   * second), so the byte counters and the bytes/s chart move while a transfer lasts, not when
   * it ends.
   *
   * @param limit How many of the exchanges under way to return.
   * @returns Bytes counted since the last tick (under way and ended), and the exchanges under
   *   way, fastest first, with their bytes so far and bytes in the last tick.
   */
  tick(limit = 50): { bytes: number; inflight: InFlight[] } {
    for (const f of this.#flowing.values()) {
      const up = f.ex.bytesUp - f.up;
      const down = f.ex.bytesDown - f.down;
      this.#bytesUp += up;
      this.#bytesDown += down;
      f.up = f.ex.bytesUp;
      f.down = f.ex.bytesDown;
      f.rate = up + down;
    }
    const total = this.#bytesUp + this.#bytesDown;
    const bytes = total - this.#lastTotal;
    this.#lastTotal = total;
    const now = Date.now();
    const inflight = [...this.#flowing.values()].sort((a, b) => b.rate - a.rate).slice(0, limit)
      .map(({ ex, rate }) => ({
        id: ex.id,
        client: ex.clientIp,
        user: ex.user ?? null,
        method: ex.method,
        url: ex.target,
        age_ms: now - ex.start,
        bytes_up: ex.bytesUp,
        bytes_down: ex.bytesDown,
        bytes_per_s: rate,
      }));
    return { bytes, inflight };
  }

  /**
   * The most recent exchanges, newest last.
   *
   * @returns Copies of their records.
   */
  recent(): ExchangeRecord[] {
    const start = this.#next > this.#keep ? this.#next % this.#keep : 0;
    return [...this.#recent.slice(start), ...this.#recent.slice(0, start)];
  }

  /**
   * Calls `listener` with every exchange that ends from now on (the live dashboard).
   *
   * @param listener The callback.
   * @returns A function that stops the calls.
   */
  subscribe(listener: (ex: ExchangeRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A live event subscriber fell too far behind and was dropped. */
  droppedSubscriber(): void {
    this.#dropped++;
  }

  /**
   * Renders the Prometheus text exposition format (version 0.0.4).
   *
   * @param gauges Live gauges.
   * @returns The metrics text.
   */
  render(gauges: Gauges): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    metric("http_proxy_requests_total", "counter", "Exchanges ended, by method and status class.");
    for (const [key, n] of [...this.#requests].sort()) {
      const [method, cls] = key.split("\u0000");
      out.push(`http_proxy_requests_total{method="${label(method!)}",status_class="${cls}"} ${n}`);
    }
    metric("http_proxy_body_bytes_total", "counter", "Body bytes relayed, by direction.");
    out.push(`http_proxy_body_bytes_total{direction="up"} ${this.#bytesUp}`);
    out.push(`http_proxy_body_bytes_total{direction="down"} ${this.#bytesDown}`);
    metric("http_proxy_errors_total", "counter", "Failed exchanges, by error kind.");
    for (const [kind, n] of [...this.#errors].sort()) {
      out.push(`http_proxy_errors_total{kind="${label(kind)}"} ${n}`);
    }
    const stored = gauges.cache?.();
    if (stored) {
      metric("http_proxy_cache_requests_total", "counter", "Cacheable requests, by cache result.");
      for (const [result, n] of [...this.#cacheResults].sort()) {
        out.push(`http_proxy_cache_requests_total{result="${result}"} ${n}`);
      }
      metric(
        "http_proxy_cache_served_bytes_total",
        "counter",
        "Body bytes sent from the cache, not fetched again.",
      );
      out.push(`http_proxy_cache_served_bytes_total ${this.#cacheBytes}`);
      metric("http_proxy_cache_entries", "gauge", "Responses stored.");
      out.push(`http_proxy_cache_entries ${stored.entries}`);
      metric("http_proxy_cache_bytes", "gauge", "Body bytes stored, by tier.");
      out.push(`http_proxy_cache_bytes{tier="disk"} ${stored.bytes}`);
      out.push(`http_proxy_cache_bytes{tier="memory"} ${stored.memBytes}`);
    }
    metric("http_proxy_client_connections", "gauge", "Client connections open.");
    out.push(`http_proxy_client_connections ${gauges.connections()}`);
    metric("http_proxy_tunnels_open", "gauge", "CONNECT tunnels open.");
    out.push(`http_proxy_tunnels_open ${this.#tunnels}`);
    metric("http_proxy_upstream_connections", "gauge", "Upstream connections, by state.");
    out.push(`http_proxy_upstream_connections{state="in_use"} ${this.#inUse}`);
    out.push(`http_proxy_upstream_connections{state="idle"} ${gauges.idleUpstreams()}`);
    metric(
      "http_proxy_event_subscribers_dropped_total",
      "counter",
      "Live event streams (/api/events) dropped for reading too slowly.",
    );
    out.push(`http_proxy_event_subscribers_dropped_total ${this.#dropped}`);
    metric("http_proxy_event_subscribers", "gauge", "Live event streams open.");
    out.push(`http_proxy_event_subscribers ${this.#listeners.size}`);
    const memory = Deno.memoryUsage();
    metric("process_resident_memory_bytes", "gauge", "Resident memory of the whole process.");
    out.push(`process_resident_memory_bytes ${memory.rss}`);
    metric("http_proxy_heap_bytes", "gauge", "The main thread's JavaScript heap, used and total.");
    out.push(`http_proxy_heap_bytes{state="used"} ${memory.heapUsed}`);
    out.push(`http_proxy_heap_bytes{state="total"} ${memory.heapTotal}`);
    metric(
      "http_proxy_external_memory_bytes",
      "gauge",
      "Memory the main thread's buffers hold outside its heap.",
    );
    out.push(`http_proxy_external_memory_bytes ${memory.external}`);
    metric(
      "http_proxy_memory_reclaims_total",
      "counter",
      "Garbage collections asked for after a crowd of connections had gone (main thread).",
    );
    out.push(`http_proxy_memory_reclaims_total ${collections()}`);
    metric("http_proxy_request_duration_seconds", "histogram", "Exchange duration.");
    BUCKETS.forEach((le, i) => {
      out.push(`http_proxy_request_duration_seconds_bucket{le="${le}"} ${this.#buckets[i]}`);
    });
    out.push(`http_proxy_request_duration_seconds_bucket{le="+Inf"} ${this.#count}`);
    out.push(`http_proxy_request_duration_seconds_sum ${this.#sum}`);
    out.push(`http_proxy_request_duration_seconds_count ${this.#count}`);
    return out.join("\n") + "\n";
  }
}
