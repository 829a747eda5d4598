/**
 * Traffic summary per destination host: requests, status classes, bytes each way, latency
 * percentiles (from a bounded sample) and errors by kind, sorted by traffic. Clients choose the
 * destinations, so the table is bounded: it is keyed only on targets the proxy parsed, holds at
 * most {@linkcode MAX_HOSTS} hosts (when a new one arrives, the one with the least traffic is
 * folded into an {@linkcode OTHER} row), and the text table shows the top rows, each cell of
 * bounded width. It only counts what the logger sees end; printing and writing are the caller's.
 *
 * @module
 */

import { FROM_STORE } from "../cache/rules.ts";
import type { ExchangeObserver, ExchangeRecord } from "../exchange.ts";
import { escapeText } from "./log.ts";

/** Most hosts counted one by one; the rest are counted together as {@linkcode OTHER}. */
export const MAX_HOSTS = 1000;
/** The row every host without a row of its own is counted in. */
export const OTHER = "(other)";
/** Rows the text table shows; the JSON has them all. */
const TABLE_ROWS = 50;
/** Widest host cell in the text table. */
const HOST_WIDTH = 60;

/** Latencies kept per host for percentiles: a uniform sample of at most this many. */
const SAMPLE = 1000;

/** One host's figures. */
export interface HostStats {
  /** `host:port` of the destination, or `-` when the request never named one. */
  host: string;
  /** Exchanges. */
  requests: number;
  /** Count per status class: `1xx` … `5xx`, and `none` when nothing could be answered. */
  status: Record<string, number>;
  /** Request body bytes sent up (tunnels: client → upstream). */
  bytesUp: number;
  /** Response body bytes sent down (tunnels: upstream → client). */
  bytesDown: number;
  /** Median total time, ms. */
  p50Ms: number;
  /** 95th percentile total time, ms. */
  p95Ms: number;
  /** Longest total time, ms. */
  maxMs: number;
  /** Count per error kind (Proxy-Status kinds, e.g. `dns_error`). */
  errors: Record<string, number>;
}

interface Acc {
  requests: number;
  status: Record<string, number>;
  bytesUp: number;
  bytesDown: number;
  maxMs: number;
  seen: number;
  sample: number[];
  errors: Record<string, number>;
}

/** An empty accumulator. */
function emptyAcc(): Acc {
  return {
    requests: 0,
    status: {},
    bytesUp: 0,
    bytesDown: 0,
    maxMs: 0,
    seen: 0,
    sample: [],
    errors: {},
  };
}

/** Adds `b`'s counts to `a`. */
function mergeAcc(a: Acc, b: Acc): void {
  a.requests += b.requests;
  a.bytesUp += b.bytesUp;
  a.bytesDown += b.bytesDown;
  a.maxMs = Math.max(a.maxMs, b.maxMs);
  for (const [k, n] of Object.entries(b.status)) a.status[k] = (a.status[k] ?? 0) + n;
  for (const [k, n] of Object.entries(b.errors)) a.errors[k] = (a.errors[k] ?? 0) + n;
  // Both samples stand for their counts; keep a proportional share of each.
  const total = a.seen + b.seen;
  if (total === 0) return;
  const fromB = Math.round((SAMPLE * b.seen) / total);
  a.sample = [
    ...a.sample.slice(0, SAMPLE - Math.min(fromB, b.sample.length)),
    ...b.sample.slice(0, fromB),
  ];
  a.seen = total;
}

/** Traffic of a row, for ranking: bytes, then requests. */
function weight(a: { bytesUp: number; bytesDown: number; requests: number }): number {
  return (a.bytesUp + a.bytesDown) * 1024 + a.requests;
}

/** Most traffic first: the order of every table here. */
function byTraffic<T extends { bytesUp: number; bytesDown: number; requests: number }>(
  x: T,
  y: T,
): number {
  return y.bytesUp + y.bytesDown - (x.bytesUp + x.bytesDown) || y.requests - x.requests;
}

/**
 * A text table: the first and last columns left-aligned, the numbers between right-aligned, two
 * spaces apart.
 */
function textTable(head: string[], rows: string[][]): string[] {
  const widths = head.map((t, i) => Math.max(t.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) =>
      i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)
    ).join("  ").trimEnd();
  return [head, ...rows].map(line);
}

/** A host cell: printable, and at most {@linkcode HOST_WIDTH} wide. */
function cell(host: string): string {
  const text = escapeText(host);
  return text.length > HOST_WIDTH ? text.slice(0, HOST_WIDTH - 3) + "..." : text;
}

/** The nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** A summary's counts as plain data, to send from a worker and merge in the main thread. */
export interface RawSummary {
  /** Epoch ms of the first count. */
  since: number;
  /** Accumulators by host. */
  hosts: [string, Acc][];
  /** Accumulators by client address. */
  clients: [string, PartyAcc][];
  /** Accumulators by user name. */
  users: [string, PartyAcc][];
  /** The cache's counts (`--cache`). */
  cache: CacheAcc;
}

/** What the cache did: requests it looked up, those answered from its store, their bytes. */
export interface CacheAcc {
  /** Requests with a cache result. */
  lookups: number;
  /** Of those, answered from the store. */
  hits: number;
  /** Body bytes sent from the store. */
  servedBytes: number;
}

/** How a {@linkcode BoundedTable} makes, merges and ranks its rows. */
interface RowKind<A> {
  empty(): A;
  merge(into: A, from: A): void;
  weight(a: A): number;
}

/**
 * Rows by a client-chosen key, at most `cap` of them: when a new key arrives in a full table,
 * the row with the least traffic is folded into the {@linkcode OTHER} row, so no count is lost
 * and the busiest keys keep their rows whatever clients invent.
 */
class BoundedTable<A> {
  rows = new Map<string, A>();
  #kind: RowKind<A>;
  #cap: number;

  constructor(kind: RowKind<A>, cap: number) {
    this.#kind = kind;
    this.#cap = cap;
  }

  /** Keys with a row of their own (every row but the other row). */
  #own(): number {
    return this.rows.size - (this.rows.has(OTHER) ? 1 : 0);
  }

  /** Moves one key's counts into the other row. */
  #fold(key: string, acc: A): void {
    this.rows.delete(key);
    let other = this.rows.get(OTHER);
    if (!other) this.rows.set(OTHER, other = this.#kind.empty());
    this.#kind.merge(other, acc);
  }

  /** The row for a key: its own, a new one (making room), or the other row. */
  row(key: string): A {
    const acc = this.rows.get(key);
    if (acc) return acc;
    if (this.#own() >= this.#cap) {
      let least: [string, A] | undefined;
      for (const entry of this.rows) {
        if (
          entry[0] !== OTHER &&
          (!least || this.#kind.weight(entry[1]) < this.#kind.weight(least[1]))
        ) least = entry;
      }
      this.#fold(least![0], least![1]);
    }
    const fresh = this.#kind.empty();
    this.rows.set(key, fresh);
    return fresh;
  }

  /** Adds another table's rows (a worker's), keeping the cap. */
  merge(rows: [string, A][]): void {
    for (const [key, b] of rows) {
      const a = this.rows.get(key);
      if (a) this.#kind.merge(a, b);
      else this.rows.set(key, structuredClone(b));
    }
    if (this.#own() > this.#cap) {
      const ranked = [...this.rows].filter(([k]) => k !== OTHER).sort((x, y) =>
        this.#kind.weight(y[1]) - this.#kind.weight(x[1])
      );
      for (const [key, acc] of ranked.slice(this.#cap)) this.#fold(key, acc);
    }
  }
}

/** Most destinations remembered per client or user, for its top destinations. */
const TOP_DESTINATIONS = 8;

/** A client's or a user's counts. */
interface PartyAcc {
  requests: number;
  bytesUp: number;
  bytesDown: number;
  errors: number;
  /** Requests per destination, for the few with most (see countTop). */
  top: Map<string, number>;
}

const PARTY: RowKind<PartyAcc> = {
  empty: () => ({ requests: 0, bytesUp: 0, bytesDown: 0, errors: 0, top: new Map() }),
  merge(a, b) {
    a.requests += b.requests;
    a.bytesUp += b.bytesUp;
    a.bytesDown += b.bytesDown;
    a.errors += b.errors;
    for (const [d, n] of b.top) countTop(a.top, d, n);
  },
  weight,
};

/** Counts one exchange for a client or a user. */
function countParty(p: PartyAcc, ex: ExchangeRecord, destination: string): void {
  p.requests++;
  p.bytesUp += ex.bytesUp;
  p.bytesDown += ex.bytesDown;
  if (ex.error !== undefined) p.errors++;
  countTop(p.top, destination, 1);
}

/**
 * Counts `n` requests to `destination` in a bounded top list: when it is full, the entry with
 * the fewest requests gives its place and the newcomer inherits that count (so a busy
 * destination that arrives late still rises; the counts are an upper bound, as in the
 * Space-Saving algorithm).
 */
function countTop(top: Map<string, number>, destination: string, n: number): void {
  const held = top.get(destination);
  if (held !== undefined || top.size < TOP_DESTINATIONS) {
    top.set(destination, (held ?? 0) + n);
    return;
  }
  let least: string | undefined;
  for (const [d, count] of top) if (least === undefined || count < top.get(least)!) least = d;
  const floor = top.get(least!)!;
  top.delete(least!);
  top.set(destination, floor + n);
}

/** A client's or a user's figures. */
export interface PartyStats {
  /** The client address or user name. */
  key: string;
  /** Exchanges. */
  requests: number;
  /** Request body bytes sent up. */
  bytesUp: number;
  /** Response body bytes sent down. */
  bytesDown: number;
  /** Exchanges that failed. */
  errors: number;
  /** Its destinations with most requests, most first (at most 3). */
  top: { host: string; requests: number }[];
}

function partyStats(rows: Map<string, PartyAcc>): PartyStats[] {
  return [...rows].map(([key, a]) => ({
    key,
    requests: a.requests,
    bytesUp: a.bytesUp,
    bytesDown: a.bytesDown,
    errors: a.errors,
    top: [...a.top].sort((x, y) => y[1] - x[1]).slice(0, 3)
      .map(([host, requests]) => ({ host, requests })),
  })).sort(byTraffic);
}

/** Counts exchanges per destination, and per client and user; see the module doc. */
export class Summary implements ExchangeObserver {
  #hosts = new BoundedTable<Acc>(
    { empty: emptyAcc, merge: mergeAcc, weight },
    MAX_HOSTS,
  );
  #clients = new BoundedTable(PARTY, MAX_HOSTS);
  #users = new BoundedTable(PARTY, MAX_HOSTS);
  #since = Date.now();
  #cache: CacheAcc = { lookups: 0, hits: 0, servedBytes: 0 };

  /**
   * The counts as plain data (structured-clone safe).
   *
   * @returns The raw counts.
   */
  raw(): RawSummary {
    return {
      since: this.#since,
      hosts: [...this.#hosts.rows],
      clients: [...this.#clients.rows],
      users: [...this.#users.rows],
      cache: { ...this.#cache },
    };
  }

  /**
   * Adds another summary's counts (a worker's) to this one.
   *
   * @param other The raw counts.
   */
  merge(other: RawSummary): void {
    this.#since = Math.min(this.#since, other.since);
    this.#hosts.merge(other.hosts);
    this.#clients.merge(other.clients);
    this.#users.merge(other.users);
    this.#cache.lookups += other.cache.lookups;
    this.#cache.hits += other.cache.hits;
    this.#cache.servedBytes += other.cache.servedBytes;
  }

  /**
   * The cache's counts so far (`--cache`).
   *
   * @returns Requests with a cache result, those answered from the store, and their bytes.
   */
  cacheCounts(): CacheAcc {
    return { ...this.#cache };
  }

  /**
   * Counts one finished exchange.
   *
   * @param ex The exchange, as logged.
   */
  closed(ex: ExchangeRecord): void {
    const destination = ex.destination ?? "-";
    if (ex.cache !== undefined) {
      this.#cache.lookups++;
      if (FROM_STORE.has(ex.cache)) {
        this.#cache.hits++;
        this.#cache.servedBytes += ex.bytesDown;
      }
    }
    countParty(this.#clients.row(ex.clientIp), ex, destination);
    if (ex.user !== undefined) countParty(this.#users.row(ex.user), ex, destination);
    const acc = this.#hosts.row(destination);
    acc.requests++;
    const cls = ex.status === undefined ? "none" : `${Math.floor(ex.status / 100)}xx`;
    acc.status[cls] = (acc.status[cls] ?? 0) + 1;
    acc.bytesUp += ex.bytesUp;
    acc.bytesDown += ex.bytesDown;
    const ms = ex.totalMs ?? 0;
    acc.maxMs = Math.max(acc.maxMs, ms);
    // Reservoir sampling keeps a uniform sample of every latency seen.
    acc.seen++;
    if (acc.sample.length < SAMPLE) acc.sample.push(ms);
    else {
      const j = Math.floor(Math.random() * acc.seen);
      if (j < SAMPLE) acc.sample[j] = ms;
    }
    if (ex.error !== undefined) {
      // Kinds are the proxy's own (ERROR_KINDS), so this table is bounded by its type.
      const kind = ex.errorKind ?? "error";
      acc.errors[kind] = (acc.errors[kind] ?? 0) + 1;
    }
  }

  /**
   * The figures per host, most traffic first.
   *
   * @returns One entry per destination.
   */
  hosts(): HostStats[] {
    return [...this.#hosts.rows].map(([host, a]) => {
      const sorted = [...a.sample].sort((x, y) => x - y);
      return {
        host,
        requests: a.requests,
        status: { ...a.status },
        bytesUp: a.bytesUp,
        bytesDown: a.bytesDown,
        p50Ms: round(percentile(sorted, 50)),
        p95Ms: round(percentile(sorted, 95)),
        maxMs: round(a.maxMs),
        errors: { ...a.errors },
      };
    }).sort(byTraffic);
  }

  /**
   * The figures per client address, most traffic first.
   *
   * @returns One entry per client (at most MAX_HOSTS, the rest in the other row).
   */
  clients(): PartyStats[] {
    return partyStats(this.#clients.rows);
  }

  /**
   * The figures per proxy user, most traffic first (none without authentication).
   *
   * @returns One entry per user name.
   */
  users(): PartyStats[] {
    return partyStats(this.#users.rows);
  }

  /**
   * The summary as JSON-ready data.
   *
   * @returns Time span, hosts, clients and users.
   */
  toJSON(): {
    since: string;
    until: string;
    hosts: HostStats[];
    clients: PartyStats[];
    users: PartyStats[];
    cache?: CacheAcc;
  } {
    return {
      since: new Date(this.#since).toISOString(),
      until: new Date().toISOString(),
      hosts: this.hosts(),
      clients: this.clients(),
      users: this.users(),
      ...(this.#cache.lookups > 0 ? { cache: this.cacheCounts() } : {}),
    };
  }

  /**
   * The summary as a text table.
   *
   * @returns The lines.
   */
  table(): string {
    const all = this.hosts();
    const hosts = all.slice(0, TABLE_ROWS);
    const secs = Math.round((Date.now() - this.#since) / 1000);
    const total = all.reduce((n, h) => n + h.requests, 0);
    const head = [
      "host",
      "requests",
      "1xx",
      "2xx",
      "3xx",
      "4xx",
      "5xx",
      "none",
      "bytes up",
      "bytes down",
      "p50 ms",
      "p95 ms",
      "max ms",
      "errors",
    ];
    const rows = hosts.map((h) => [
      cell(h.host),
      String(h.requests),
      ...["1xx", "2xx", "3xx", "4xx", "5xx", "none"].map((c) => String(h.status[c] ?? 0)),
      String(h.bytesUp),
      String(h.bytesDown),
      String(h.p50Ms),
      String(h.p95Ms),
      String(h.maxMs),
      Object.entries(h.errors).map(([k, n]) => `${k}=${n}`).join(" ") || "-",
    ]);
    return [
      `summary: ${total} exchange(s) in ${secs} s, by destination, most traffic first`,
      ...textTable(head, rows),
      ...(all.length > hosts.length
        ? [`... ${all.length - hosts.length} more host(s) (all of them: --summary-json)`]
        : []),
      ...cacheLine(this.#cache),
      ...partyTable("client", this.clients()),
      ...partyTable("user", this.users()),
    ].join("\n");
  }
}

/** The cache's line of the summary (none when nothing was looked up). */
function cacheLine(c: CacheAcc): string[] {
  if (c.lookups === 0) return [];
  const pct = ((100 * c.hits) / c.lookups).toFixed(1);
  return [
    `cache: ${c.hits} of ${c.lookups} cacheable request(s) answered from the cache (${pct}%), ` +
    `${c.servedBytes} bytes not fetched again`,
  ];
}

/** Rows the client and user tables show. */
const PARTY_ROWS = 20;

/** The text table of clients or users (nothing when there are none). */
function partyTable(what: "client" | "user", all: PartyStats[]): string[] {
  if (all.length === 0) return [];
  const shown = all.slice(0, PARTY_ROWS);
  const head = [what, "requests", "bytes up", "bytes down", "errors", "top destinations"];
  const rows = shown.map((p) => [
    cell(p.key),
    String(p.requests),
    String(p.bytesUp),
    String(p.bytesDown),
    String(p.errors),
    p.top.map((t) => `${cell(t.host)} ${t.requests}`).join(", "),
  ]);
  return [
    `by ${what}, most traffic first`,
    ...textTable(head, rows),
    ...(all.length > shown.length
      ? [`... ${all.length - shown.length} more ${what}(s) (all of them: --summary-json)`]
      : []),
  ];
}
