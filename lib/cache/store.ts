/**
 * The cache's store (`--cache`): response bodies as files, their heads and timing in an SQLite
 * index (`node:sqlite`), small bodies also in memory (`--cache-mem`), and the whole kept under
 * `--cache-size` by evicting the least recently used. It decides nothing about HTTP (that is
 * `rules.ts`): it keeps, finds, updates and forgets entries.
 *
 * Crash safety: a body is written under `tmp/` and renamed into `objects/` only once complete
 * and flushed to disk; only then is its row inserted. So after a `kill -9` (or a power cut) a
 * row always names a whole file: a file without a row (renamed, row not yet written) and
 * anything left in `tmp/` are deleted at startup, a row whose file is missing or of another size
 * is dropped when it is next used.
 *
 * With `--workers`, every thread opens the store (`shared`): SQLite's WAL journal lets them all
 * write, and a thread that changes a key tells the others over a BroadcastChannel, so they drop
 * the parsed rows and memory bodies they hold of it.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { Field } from "../http1/parse.ts";

/** One stored response. */
export interface Entry {
  /** Row id. */
  id: number;
  /** The cache key (the target URI). */
  key: string;
  /** The request's values of the fields its Vary names (see rules.ts varySignature). */
  variant: string;
  /** The Vary field names, lower case. */
  vary: string[];
  /** Status code. */
  status: number;
  /** Reason phrase. */
  reason: string;
  /** The stored fields (end-to-end, no Content-Length: the size is `size`). */
  fields: Field[];
  /** Corrected initial age, seconds. */
  initialAge: number;
  /** When the request that fetched or last validated it was sent, epoch ms. */
  requestTime: number;
  /** When that response arrived, epoch ms. */
  responseTime: number;
  /** Body length in bytes. */
  size: number;
  /** The body file's name under `objects/`. */
  file: string;
}

/** What an entry is made from (everything but its row id and file). */
export type EntryHead = Omit<Entry, "id" | "file" | "size">;

/** Options of {@linkcode CacheStore}. */
export interface StoreOptions {
  /** Bodies on disk are kept under this many bytes. */
  maxBytes: number;
  /** Bodies in memory are kept under this many bytes (0: none). */
  memBytes: number;
  /** Where failures are reported. */
  diag: (line: string) => void;
  /**
   * Other threads (`--workers`) use the same store: each change to a key is announced to them
   * (they drop what they hold of it), and the byte total is read from the index. @default false
   */
  shared?: boolean;
  /** Clear what a crash left (only the first thread to open the store does). @default true */
  recover?: boolean;
}

/** A body in memory is at most this large (or an eighth of the memory budget). */
const MEM_OBJECT_MAX = 1024 * 1024;
/** How often the recency of used entries is written, ms. */
const TOUCH_MS = 1000;
/** Keys whose index rows are kept parsed in memory. */
const HOT_KEYS = 10_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS entries (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL,
  variant TEXT NOT NULL,
  vary TEXT NOT NULL,            -- JSON list of lower-case names
  status INTEGER NOT NULL,
  reason TEXT NOT NULL,
  fields TEXT NOT NULL,          -- JSON list of [name, value]
  initial_age REAL NOT NULL,
  request_time INTEGER NOT NULL,
  response_time INTEGER NOT NULL,
  size INTEGER NOT NULL,
  file TEXT NOT NULL,
  used INTEGER NOT NULL,         -- epoch ms of the last use, for LRU eviction
  UNIQUE (key, variant)
);
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
`;

interface Row {
  id: number;
  key: string;
  variant: string;
  vary: string;
  status: number;
  reason: string;
  fields: string;
  initial_age: number;
  request_time: number;
  response_time: number;
  size: number;
  file: string;
}

function entryOf(row: Row): Entry {
  return {
    id: row.id,
    key: row.key,
    variant: row.variant,
    vary: JSON.parse(row.vary),
    status: row.status,
    reason: row.reason,
    fields: JSON.parse(row.fields),
    initialAge: row.initial_age,
    requestTime: row.request_time,
    responseTime: row.response_time,
    size: row.size,
    file: row.file,
  };
}

/** A stored body, open for reading: whole in memory, or a file of the right size. */
export type Body = { mem: Uint8Array; file?: undefined } | { file: Deno.FsFile; mem?: undefined };

/** The store; see the module doc. */
export class CacheStore {
  #dir: string;
  #db: DatabaseSync;
  #options: StoreOptions;
  #byKey: StatementSync;
  #insert: StatementSync;
  #deleteId: StatementSync;
  #byKeyAll: StatementSync;
  #byVariant: StatementSync;
  #oldest: StatementSync;
  #update: StatementSync;
  #touch: StatementSync;
  /**
   * The index rows of recently asked keys (an empty list for a key with none), least recently
   * used first, so a hit reads no row and parses no JSON: every change to a key drops it here.
   */
  #hot = new Map<string, Entry[]>();
  /** Bodies held in memory, least recently used first. */
  #mem = new Map<string, Uint8Array>();
  #memUsed = 0;
  /** Entries used since the last recency write. */
  #touched = new Set<number>();
  #timer: ReturnType<typeof setInterval>;
  /** Bytes of bodies on disk. */
  #bytes = 0;
  #entries = 0;
  #countedAt = 0;
  #closed = false;
  /** Announces changes to the other threads sharing the store (`shared`). */
  #channel: BroadcastChannel | undefined;

  /**
   * Opens (or creates) the store in `dir`, and clears what a crash left.
   *
   * @param dir The cache directory.
   * @param options Size limits and the diagnostic sink.
   * @throws {Error} when the directory or the index cannot be opened.
   */
  constructor(dir: string, options: StoreOptions) {
    this.#dir = dir;
    this.#options = options;
    Deno.mkdirSync(`${dir}/objects`, { recursive: true });
    Deno.mkdirSync(`${dir}/tmp`, { recursive: true });
    this.#db = new DatabaseSync(`${dir}/index.sqlite`);
    this.#db.exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
    );
    this.#db.exec(SCHEMA);
    this.#byKey = this.#db.prepare(
      "SELECT * FROM entries WHERE key = ? ORDER BY response_time DESC",
    );
    this.#byKeyAll = this.#db.prepare("SELECT id FROM entries WHERE key = ?");
    this.#byVariant = this.#db.prepare(
      "SELECT id, file, size FROM entries WHERE key = ? AND variant = ?",
    );
    this.#insert = this.#db.prepare(
      "INSERT INTO entries (key, variant, vary, status, reason, fields, initial_age, " +
        "request_time, response_time, size, file, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) " +
        "ON CONFLICT (key, variant) DO UPDATE SET vary = excluded.vary, status = excluded.status, " +
        "reason = excluded.reason, fields = excluded.fields, initial_age = excluded.initial_age, " +
        "request_time = excluded.request_time, response_time = excluded.response_time, " +
        "size = excluded.size, file = excluded.file, used = excluded.used " +
        "RETURNING id",
    );
    this.#deleteId = this.#db.prepare("DELETE FROM entries WHERE id = ? RETURNING key, file, size");
    this.#oldest = this.#db.prepare("SELECT id FROM entries ORDER BY used LIMIT 64");
    this.#update = this.#db.prepare(
      "UPDATE entries SET fields = ?, initial_age = ?, request_time = ?, response_time = ?, " +
        "used = ? WHERE id = ?",
    );
    this.#touch = this.#db.prepare("UPDATE entries SET used = ? WHERE id = ?");
    if (options.recover ?? true) this.#recover();
    else this.#recount();
    if (options.shared) {
      this.#channel = new BroadcastChannel(`http-proxy-cache ${dir}`);
      this.#channel.onmessage = (e: MessageEvent<string>) => this.#forget(e.data);
    }
    this.#timer = setInterval(() => this.#writeTouches(), TOUCH_MS);
    Deno.unrefTimer(this.#timer as unknown as number);
  }

  /** What a crash may have left: partial bodies in tmp/, bodies whose row was never written. */
  #recover(): void {
    for (const f of Deno.readDirSync(`${this.#dir}/tmp`)) {
      Deno.removeSync(`${this.#dir}/tmp/${f.name}`, { recursive: true });
    }
    const known = new Set<string>();
    const rows = this.#db.prepare("SELECT file, size FROM entries").all() as unknown as {
      file: string;
      size: number;
    }[];
    for (const r of rows) {
      known.add(r.file);
      this.#bytes += r.size;
    }
    this.#entries = rows.length;
    for (const f of Deno.readDirSync(`${this.#dir}/objects`)) {
      if (!known.has(f.name)) Deno.removeSync(`${this.#dir}/objects/${f.name}`);
    }
    this.#evict();
  }

  /** Entries and bytes now (this thread's memory tier). */
  get stats(): { entries: number; bytes: number; memBytes: number } {
    if (this.#channel) this.#recount();
    return { entries: this.#entries, bytes: this.#bytes, memBytes: this.#memUsed };
  }

  /** Reads the entry count and byte total from the index (other threads change them too). */
  #recount(): void {
    const r = this.#db.prepare(
      "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM entries",
    ).get() as { n: number; b: number };
    this.#entries = r.n;
    this.#bytes = r.b;
    this.#countedAt = Date.now();
  }

  /**
   * A key's rows changed in the index (called after the write): its parsed rows here go, and
   * the other threads are told to drop theirs. Telling them before the write could let one read
   * the old row again and keep it.
   */
  #changed(key: string): void {
    this.#hot.delete(key);
    this.#channel?.postMessage(key);
  }

  /** Another thread changed a key: what this one holds of it goes. */
  #forget(key: string): void {
    for (const e of this.#hot.get(key) ?? []) this.#dropFromMemory(e.file);
    this.#hot.delete(key);
  }

  /**
   * Every stored response for a key, most recent first.
   *
   * @param key The cache key.
   * @returns The entries.
   */
  lookup(key: string): Entry[] {
    let entries = this.#hot.get(key);
    if (entries) {
      this.#hot.delete(key);
    } else {
      entries = (this.#byKey.all(key) as unknown as Row[]).map(entryOf);
      if (this.#hot.size >= HOT_KEYS) this.#hot.delete(this.#hot.keys().next().value!);
    }
    this.#hot.set(key, entries);
    return entries;
  }

  /**
   * Opens an entry's body, and counts it as used. A file that is gone or of another size than
   * recorded drops the entry (a crash, or someone else's hands in the directory).
   *
   * @param entry The entry.
   * @returns The body, or null when it cannot be read.
   */
  async open(entry: Entry): Promise<Body | null> {
    this.#touched.add(entry.id);
    const mem = this.#mem.get(entry.file);
    if (mem) {
      this.#mem.delete(entry.file);
      this.#mem.set(entry.file, mem);
      return { mem };
    }
    let file: Deno.FsFile;
    try {
      file = await Deno.open(`${this.#dir}/objects/${entry.file}`, { read: true });
    } catch {
      this.remove(entry.id);
      return null;
    }
    const { size } = await file.stat();
    if (size !== entry.size) {
      file.close();
      this.#options.diag(`--cache: dropped "${entry.key}": its body file has the wrong size`);
      this.remove(entry.id);
      return null;
    }
    if (this.#memFits(entry.size)) {
      const bytes = new Uint8Array(entry.size);
      let off = 0;
      while (off < bytes.length) {
        const n = await file.read(bytes.subarray(off));
        if (n === null) break;
        off += n;
      }
      file.close();
      if (off !== bytes.length) {
        this.remove(entry.id);
        return null;
      }
      this.#keepInMemory(entry.file, bytes);
      return { mem: bytes };
    }
    return { file };
  }

  #memFits(size: number): boolean {
    return size <= Math.min(MEM_OBJECT_MAX, this.#options.memBytes / 8);
  }

  /** Bodies in memory are keyed by their file: a new body for the same entry is a new file. */
  #keepInMemory(file: string, bytes: Uint8Array): void {
    if (!this.#memFits(bytes.length)) return;
    this.#mem.set(file, bytes);
    this.#memUsed += bytes.length;
    for (const [old, b] of this.#mem) {
      if (this.#memUsed <= this.#options.memBytes) break;
      this.#mem.delete(old);
      this.#memUsed -= b.length;
    }
  }

  #dropFromMemory(file: string): void {
    const b = this.#mem.get(file);
    if (b) {
      this.#mem.delete(file);
      this.#memUsed -= b.length;
    }
  }

  /**
   * Starts writing a new body. Nothing is visible until {@linkcode BodyWriter.commit}.
   *
   * @param head The entry's head (key, variant, status, fields, timing).
   * @param expected Its length when known (a body that outgrows it is not kept).
   * @returns The writer, or null when the body cannot be kept (too large for the store).
   */
  begin(head: EntryHead, expected?: number): BodyWriter | null {
    const limit = this.maxObjectBytes;
    if (expected !== undefined && expected > limit) return null;
    try {
      return new BodyWriter(this, this.#dir, head, { limit, expected });
    } catch (err) {
      this.#options.diag(`--cache: cannot create a body file: ${(err as Error).message}`);
      return null;
    }
  }

  /** The largest body kept: an eighth of the store. */
  get maxObjectBytes(): number {
    return Math.floor(this.#options.maxBytes / 8);
  }

  /** Called by a writer whose body is complete, renamed and flushed: the row goes in. */
  commitRow(head: EntryHead, file: string, size: number, mem: Uint8Array | undefined): Entry {
    // The same key and variant stored before is replaced, and its body file deleted.
    const old = this.#byVariant.get(head.key, head.variant) as
      | { id: number; file: string; size: number }
      | undefined;
    const row = this.#insert.get(
      head.key,
      head.variant,
      JSON.stringify(head.vary),
      head.status,
      head.reason,
      JSON.stringify(head.fields),
      head.initialAge,
      head.requestTime,
      head.responseTime,
      size,
      file,
      Date.now(),
    ) as { id: number };
    if (old) {
      this.#dropFromMemory(old.file);
      this.#unlink(old.file);
      this.#bytes -= old.size;
    } else {
      this.#entries++;
    }
    this.#bytes += size;
    if (mem) this.#keepInMemory(file, mem);
    this.#changed(head.key);
    this.#evict();
    return { ...head, id: row.id, file, size };
  }

  /**
   * Replaces an entry's fields and timing after a 304 validated it (RFC 9111 §4.3.4).
   *
   * @param entry The entry, with its new fields and timing.
   */
  update(entry: Entry): void {
    this.#update.run(
      JSON.stringify(entry.fields),
      entry.initialAge,
      entry.requestTime,
      entry.responseTime,
      Date.now(),
      entry.id,
    );
    this.#changed(entry.key);
  }

  /**
   * Forgets one entry and deletes its body.
   *
   * @param id The entry's row id.
   */
  remove(id: number): void {
    const r = this.#deleteId.get(id) as { key: string; file: string; size: number } | undefined;
    if (!r) return;
    this.#dropFromMemory(r.file);
    this.#changed(r.key);
    this.#bytes -= r.size;
    this.#entries--;
    this.#unlink(r.file);
  }

  /**
   * Forgets every variant stored for a key (invalidation, RFC 9111 §4.4; a purge).
   *
   * @param key The cache key.
   * @returns How many entries went.
   */
  removeKey(key: string): number {
    const rows = this.#byKeyAll.all(key) as unknown as { id: number }[];
    for (const r of rows) this.remove(r.id);
    return rows.length;
  }

  /**
   * Forgets everything.
   *
   * @returns How many entries went.
   */
  clear(): number {
    const rows = this.#db.prepare("SELECT id FROM entries").all() as unknown as { id: number }[];
    for (const r of rows) this.remove(r.id);
    return rows.length;
  }

  #unlink(file: string): void {
    try {
      Deno.removeSync(`${this.#dir}/objects/${file}`);
    } catch {
      // already gone: an open reader keeps reading what it opened
    }
  }

  /** Evicts the least recently used entries until the bodies fit the size limit. */
  #evict(): void {
    // Shared with other threads: the total is theirs too, read again at most once a second.
    if (this.#channel && Date.now() - this.#countedAt > 1000) this.#recount();
    this.#writeTouches();
    while (this.#bytes > this.#options.maxBytes) {
      const rows = this.#oldest.all() as unknown as { id: number }[];
      if (rows.length === 0) break;
      for (const r of rows) {
        this.remove(r.id);
        if (this.#bytes <= this.#options.maxBytes) break;
      }
    }
  }

  #writeTouches(): void {
    if (this.#touched.size === 0 || this.#closed) return;
    const now = Date.now();
    try {
      this.#db.exec("BEGIN");
      for (const id of this.#touched) this.#touch.run(now, id);
      this.#db.exec("COMMIT");
    } catch (err) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // no transaction left to roll back
      }
      this.#options.diag(`--cache: cannot record use: ${(err as Error).message}`);
    }
    this.#touched.clear();
  }

  /** Writes what is pending and closes the index. */
  close(): void {
    if (this.#closed) return;
    this.#writeTouches();
    this.#closed = true;
    clearInterval(this.#timer);
    this.#channel?.close();
    this.#db.close();
  }
}

/**
 * One body being written: pieces go to a file under `tmp/`; `commit` flushes it to disk,
 * renames it into `objects/` and inserts its row; `abort` deletes it. A write failure (disk
 * full) abandons the body quietly: the client's response goes on without it. Other readers
 * may follow it as it grows (collapsed forwarding): `written` counts the bytes already in the
 * file, `changed` settles at each new piece and at the end, `openReader` opens the file
 * wherever it is by then.
 */
export class BodyWriter {
  #store: CacheStore;
  #dir: string;
  #limit: number;
  #name = crypto.randomUUID().replaceAll("-", "");
  #file: Deno.FsFile | undefined;
  #size = 0;
  #written = 0;
  #state: "writing" | "done" | "failed" = "writing";
  #changed = Promise.withResolvers<void>();
  #ended = Promise.withResolvers<void>();
  /** The body kept whole while it is small enough for the memory tier. */
  #mem: Uint8Array[] | undefined = [];
  /** The entry's head. */
  readonly head: EntryHead;
  /** The body's length, when the response said it. */
  readonly expected: number | undefined;
  /** Why the body was abandoned, when it was. */
  failure: string | undefined;
  /** Clients reading the body as it is written (see join). */
  #readers = 0;
  /** Called when the last reader leaves while the body is still being written. */
  #whenUnread: (() => void) | undefined;

  /**
   * Creates the body file (at once, so a follower can open it).
   *
   * @throws {Error} when it cannot be created.
   */
  constructor(
    store: CacheStore,
    dir: string,
    head: EntryHead,
    options: { limit: number; expected: number | undefined },
  ) {
    this.#store = store;
    this.#dir = dir;
    this.head = head;
    this.#limit = options.limit;
    this.expected = options.expected;
    this.#file = Deno.openSync(`${dir}/tmp/${this.#name}`, { write: true, createNew: true });
  }

  /** Whether the body was abandoned. */
  get failed(): boolean {
    return this.#state === "failed";
  }

  /** Whether the body is complete (committed, or being committed). */
  get complete(): boolean {
    return this.#state === "done";
  }

  /** Bytes already in the file. */
  get written(): number {
    return this.#written;
  }

  /**
   * Counts a client reading the body as it is written.
   *
   * @returns What the reader calls when it stops reading (done, or gone).
   */
  join(): () => void {
    this.#readers++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      if (--this.#readers === 0 && this.#state === "writing") this.#whenUnread?.();
    };
  }

  /**
   * What to do when the last reader leaves before the body is complete (the fetch decides
   * whether to finish it for the store or give up).
   *
   * @param then The callback.
   */
  onUnread(then: () => void): void {
    this.#whenUnread = then;
  }

  /** Bytes still to come, when the length is known. */
  get remaining(): number | undefined {
    return this.expected === undefined ? undefined : this.expected - this.#size;
  }

  /** Settles once the body is indexed (or abandoned): nobody needs to follow it after. */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  /** Settles when more is written, or the body is complete or abandoned. */
  changed(): Promise<void> {
    return this.#changed.promise;
  }

  #wake(): void {
    this.#changed.resolve();
    this.#changed = Promise.withResolvers<void>();
  }

  /**
   * Opens the body file for reading, under `tmp/` while it is written or `objects/` after.
   *
   * @returns The file, or null when it is gone (abandoned, or evicted since).
   */
  openReader(): Deno.FsFile | null {
    for (const where of ["tmp", "objects"]) {
      try {
        return Deno.openSync(`${this.#dir}/${where}/${this.#name}`, { read: true });
      } catch {
        // renamed meanwhile, or gone
      }
    }
    return null;
  }

  /**
   * Appends a piece (copied or written before it returns: the caller may reuse its buffer).
   *
   * @param piece Payload bytes.
   */
  async write(piece: Uint8Array): Promise<void> {
    if (this.#state !== "writing" || !this.#file) return;
    this.#size += piece.length;
    if (this.#size > this.#limit) {
      this.abort();
      return;
    }
    if (this.#mem) {
      if (this.#size <= MEM_OBJECT_MAX) this.#mem.push(piece.slice());
      else this.#mem = undefined;
    }
    try {
      let off = 0;
      while (off < piece.length) off += await this.#file.write(piece.subarray(off));
      this.#written += piece.length;
      this.#wake();
    } catch {
      this.abort();
    }
  }

  /**
   * Makes the body visible: flushed, renamed, indexed.
   *
   * @returns The entry, or null when the body was abandoned.
   */
  async commit(): Promise<Entry | null> {
    if (this.#state !== "writing" || !this.#file) return null;
    if (this.expected !== undefined && this.#size !== this.expected) {
      this.abort();
      return null;
    }
    this.#state = "done";
    this.#wake();
    try {
      await this.#file.syncData();
      this.#file.close();
      this.#file = undefined;
      await Deno.rename(`${this.#dir}/tmp/${this.#name}`, `${this.#dir}/objects/${this.#name}`);
    } catch {
      this.#state = "writing";
      this.abort();
      return null;
    }
    const mem = this.#mem ? joinPieces(this.#mem, this.#size) : undefined;
    try {
      return this.#store.commitRow(this.head, this.#name, this.#size, mem);
    } finally {
      this.#ended.resolve();
    }
  }

  /**
   * Abandons the body and deletes its file, while it is being written. A complete body (being
   * committed, or committed) is kept: a late abort (the proxy stopping, an exchange ending) must
   * not delete the file its commit is renaming.
   *
   * @param why What happened, for the readers' log lines.
   */
  abort(why?: string): void {
    if (this.#state !== "writing") return;
    this.#state = "failed";
    this.failure = why;
    this.#mem = undefined;
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = undefined;
    try {
      Deno.removeSync(`${this.#dir}/tmp/${this.#name}`);
    } catch {
      // already gone
    }
    this.#wake();
    this.#ended.resolve();
  }
}

function joinPieces(pieces: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of pieces) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
