/**
 * `--history FILE`: every exchange's metadata (never a body, never a credential) in an SQLite
 * database (`node:sqlite`, built into Deno), so "what did this machine fetch yesterday" has an
 * answer after the ring buffer and after a restart. Rows are written in batches, one transaction
 * a second (or every 5,000 rows), so the request path never waits on the disk; the
 * journal is WAL, so a `kill -9` loses at most the batch not yet written and never the file.
 * Rows older than the retention age are deleted, and when the file passes its size limit the
 * oldest rows go until it is back under it (their pages are reused, so it stops growing).
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { ExchangeObserver, ExchangeRecord } from "../exchange.ts";

/** Rows held in memory before a batch is written at once. */
const BATCH_ROWS = 5000;
/** Most rows held when the disk cannot keep up (then the oldest pending are dropped, counted). */
const MAX_PENDING = 50_000;
/** How often pending rows are written, ms. */
const FLUSH_MS = 1000;
/** How often retention runs, ms. */
const RETAIN_MS = 60_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS exchanges (
  time INTEGER NOT NULL,       -- epoch ms when the request head was read
  id INTEGER NOT NULL,         -- the log's #id (unique within one run)
  client TEXT NOT NULL,        -- client ip:port
  client_ip TEXT NOT NULL,
  user TEXT,
  method TEXT NOT NULL,
  url TEXT NOT NULL,
  host TEXT,                   -- host:port of the destination, once parsed
  status INTEGER,
  bytes_up INTEGER NOT NULL,
  bytes_down INTEGER NOT NULL,
  total_ms REAL,
  error_kind TEXT,
  error TEXT,
  upstream TEXT,
  parent TEXT,
  tls INTEGER NOT NULL DEFAULT 0,
  cache TEXT                   -- the cache's result (--cache): HIT, MISS, …
);
CREATE INDEX IF NOT EXISTS exchanges_time ON exchanges(time);
CREATE INDEX IF NOT EXISTS exchanges_client ON exchanges(client_ip, time);
CREATE INDEX IF NOT EXISTS exchanges_host ON exchanges(host, time);
`;

/**
 * Opens (or creates) a history database with the settings every user of it needs.
 *
 * @param path The file.
 * @returns The open database.
 */
export function openHistory(path: string): DatabaseSync {
  const db = new DatabaseSync(path);
  // WAL: readers (the history subcommand) never block the writer, and a crash mid-write
  // leaves the last committed state. NORMAL: no fsync per batch, only at checkpoints.
  db.exec(
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; " +
      "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=20000;",
  );
  db.exec(SCHEMA);
  // A database made before the cache existed gets its column.
  const columns = db.prepare("PRAGMA table_info(exchanges)").all() as { name: string }[];
  if (!columns.some((c) => c.name === "cache")) {
    db.exec("ALTER TABLE exchanges ADD COLUMN cache TEXT");
  }
  return db;
}

/** Options of {@linkcode History}. */
export interface HistoryOptions {
  /** Rows older than this many ms are deleted. */
  maxAgeMs: number;
  /** The file is kept near at most this many bytes. */
  maxBytes: number;
  /** Where failures are reported (one line each). */
  diag: (line: string) => void;
}

/** The history writer: an observer of every exchange. */
export class History implements ExchangeObserver {
  #db: DatabaseSync;
  #insert: StatementSync;
  #pending: ExchangeRecord[] = [];
  #timer: ReturnType<typeof setInterval>;
  #retainTimer: ReturnType<typeof setInterval>;
  #options: HistoryOptions;
  #failed = false;
  /** Rows dropped because the disk did not keep up (or writing failed). */
  dropped = 0;

  /**
   * @param path The database file (created if missing).
   * @param options Retention and the diagnostic sink.
   */
  constructor(path: string, options: HistoryOptions) {
    this.#options = options;
    this.#db = openHistory(path);
    this.#insert = this.#db.prepare(
      "INSERT INTO exchanges (time, id, client, client_ip, user, method, url, host, status, " +
        "bytes_up, bytes_down, total_ms, error_kind, error, upstream, parent, tls, cache) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    this.#timer = setInterval(() => this.flush(), FLUSH_MS);
    Deno.unrefTimer(this.#timer as unknown as number);
    this.#retainTimer = setInterval(() => this.retain(), RETAIN_MS);
    Deno.unrefTimer(this.#retainTimer as unknown as number);
    this.retain();
  }

  /** Queues one finished exchange for the next batch. */
  closed(ex: ExchangeRecord): void {
    if (this.#pending.length >= MAX_PENDING) {
      this.#pending.shift();
      this.dropped++;
    }
    this.#pending.push(ex);
    if (this.#pending.length >= BATCH_ROWS) this.flush();
  }

  /** Writes the pending rows in one transaction. */
  flush(): void {
    if (this.#pending.length === 0 || this.#failed) return;
    const rows = this.#pending;
    this.#pending = [];
    try {
      this.#db.exec("BEGIN");
      for (const ex of rows) {
        this.#insert.run(
          ex.start,
          ex.id,
          `${ex.clientIp.includes(":") ? `[${ex.clientIp}]` : ex.clientIp}:${ex.clientPort}`,
          ex.clientIp,
          ex.user ?? null,
          ex.method,
          ex.target,
          ex.destination ?? null,
          ex.status ?? null,
          ex.bytesUp,
          ex.bytesDown,
          ex.totalMs === undefined ? null : Math.round(ex.totalMs * 10) / 10,
          ex.errorKind ?? null,
          ex.error ?? null,
          ex.upstreamIp === undefined ? null : `${ex.upstreamIp}:${ex.upstreamPort}`,
          ex.parent ?? null,
          ex.tls ? 1 : 0,
          ex.cache ?? null,
        );
      }
      this.#db.exec("COMMIT");
    } catch (err) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // no transaction left to roll back
      }
      this.dropped += rows.length;
      // Once: a disk that is full or gone would say so on every batch.
      this.#failed = true;
      this.#options.diag(
        `--history: cannot write (${(err as Error).message}); history stops, the proxy goes on`,
      );
    }
  }

  /** Deletes what is past the retention age, then the oldest rows while the file is too big. */
  retain(): void {
    if (this.#failed) return;
    try {
      this.#db.prepare("DELETE FROM exchanges WHERE time < ?").run(
        Date.now() - this.#options.maxAgeMs,
      );
      const size = () => {
        const pages = this.#db.prepare("PRAGMA page_count").get() as { page_count: number };
        const free = this.#db.prepare("PRAGMA freelist_count").get() as { freelist_count: number };
        const page = this.#db.prepare("PRAGMA page_size").get() as { page_size: number };
        return (pages.page_count - free.freelist_count) * page.page_size;
      };
      for (let i = 0; i < 20 && size() > this.#options.maxBytes; i++) {
        // The oldest tenth of the rows, by time.
        this.#db.prepare(
          "DELETE FROM exchanges WHERE rowid IN (SELECT rowid FROM exchanges ORDER BY time " +
            "LIMIT (SELECT count(*) / 10 + 1 FROM exchanges))",
        ).run();
      }
    } catch (err) {
      this.#options.diag(`--history: retention failed: ${(err as Error).message}`);
    }
  }

  /** Writes what is pending and closes the database (at shutdown). */
  close(): void {
    clearInterval(this.#timer);
    clearInterval(this.#retainTimer);
    this.flush();
    try {
      this.#db.close();
    } catch {
      // already closed
    }
  }
}

/** What to look for in a history database: a time range and the filters. */
export interface HistoryQuery {
  /** From this time, epoch ms (inclusive). */
  since: number;
  /** Until this time, epoch ms (exclusive). */
  until?: number;
  /** The client's address. */
  client?: string;
  /** The user name. */
  user?: string;
  /** The destination: `host:port`, or a name alone for every port of it. */
  host?: string;
  /** A status (`404`), a class (`4xx`), or `none` (no answer). */
  status?: string;
  /** Group by hosts, clients or users instead of listing exchanges. */
  top?: string;
  /** Most rows returned. */
  limit: number;
}

/** A query that cannot be run: `field` names what is wrong (a flag or a URL parameter). */
export class HistoryQueryError extends Error {
  /** The query field at fault. */
  readonly field: string;

  /**
   * @param field The query field at fault.
   * @param message What is wrong with it.
   */
  constructor(field: string, message: string) {
    super(message);
    this.name = "HistoryQueryError";
    this.field = field;
  }
}

/** What `top` groups by, and the column it names. */
const TOPS = { hosts: "host", clients: "client_ip", users: "user" } as const;

/**
 * Runs a query on a history database: the exchanges that match, newest first, or the top hosts,
 * clients or users among them by traffic. Every filter is a bound parameter; the time, client
 * and host filters use the indexes.
 *
 * @param db An open history database.
 * @param q The query.
 * @returns Rows as objects, times as ISO text.
 * @throws {HistoryQueryError} for a status or a grouping it does not know.
 */
export function queryHistory(db: DatabaseSync, q: HistoryQuery): Record<string, unknown>[] {
  const where = ["time >= ?"];
  const params: (string | number)[] = [q.since];
  if (q.until !== undefined) where.push("time < ?"), params.push(q.until);
  if (q.client) where.push("client_ip = ?"), params.push(q.client.replace(/^\[|\]$/g, ""));
  if (q.user) where.push("user = ?"), params.push(q.user);
  if (q.host) {
    // A name alone matches every port of it: host:0 to host:99999 as a range of the index
    // (";" sorts right after ":").
    const host = q.host.toLowerCase();
    where.push("(host = ? OR (host >= ? AND host < ?))");
    params.push(host, `${host}:`, `${host};`);
  }
  if (q.status) {
    const cls = /^([1-5])xx$/i.exec(q.status);
    if (cls) {
      where.push("status >= ? AND status < ?");
      params.push(Number(cls[1]) * 100, Number(cls[1]) * 100 + 100);
    } else if (/^\d{3}$/.test(q.status)) {
      where.push("status = ?"), params.push(Number(q.status));
    } else if (q.status === "none") {
      where.push("status IS NULL");
    } else {
      throw new HistoryQueryError(
        "status",
        `"${q.status}" is not a status (404), a class (4xx) or none`,
      );
    }
  }
  let sql: string;
  if (q.top !== undefined) {
    const column = TOPS[q.top as keyof typeof TOPS];
    if (!column) throw new HistoryQueryError("top", `"${q.top}" is not hosts, clients or users`);
    sql = `SELECT ${column} AS ${q.top.slice(0, -1)}, count(*) AS requests, ` +
      "sum(bytes_up) AS bytes_up, sum(bytes_down) AS bytes_down, " +
      "sum(error IS NOT NULL) AS errors FROM exchanges WHERE " + where.join(" AND ") +
      ` AND ${column} IS NOT NULL GROUP BY ${column} ` +
      "ORDER BY bytes_up + bytes_down DESC, requests DESC LIMIT ?";
  } else {
    sql = "SELECT time, client, user, method, url, status, bytes_up, bytes_down, total_ms, " +
      "error, cache FROM exchanges WHERE " + where.join(" AND ") + " ORDER BY time DESC LIMIT ?";
  }
  params.push(q.limit);
  const rows = db.prepare(sql).all(...params) as Record<string, unknown>[];
  for (const row of rows) {
    if (typeof row.time === "number") row.time = new Date(row.time).toISOString();
  }
  return rows;
}
