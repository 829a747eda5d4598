/**
 * The shared cache (`--cache`): what the relay asks before and after a plain-HTTP exchange.
 * `lookup` picks the stored response a request may use (by key and Vary) and says how
 * (`rules.ts`); `keep` starts keeping a response the rules allow; `invalidate` forgets what an
 * unsafe method changed (RFC 9111 §4.4); `purge` is the admin's; `lead` and `following` share a
 * response in flight (collapsed forwarding); `track` keeps its background work. The metrics and
 * the summary count the results from the log records. Sockets are the relay's
 * (`relay/cached.ts`); files and the index are the store's (`store.ts`).
 *
 * @module
 */

import { addVia, fieldValue } from "../http1/headers.ts";
import type { Field, RequestHead, ResponseHead } from "../http1/parse.ts";
import type { Route } from "../exchange.ts";
import { type BodyWriter, CacheStore, type Entry, type StoreOptions } from "./store.ts";
import {
  cacheControl,
  cacheKey,
  freshen,
  initialAge,
  notStorable,
  type NotStored,
  storedFields,
  type Timing,
  urlKey,
  usable,
  type Use,
  varyNames,
  varySignature,
} from "./rules.ts";

/** Options of {@linkcode Cache}: the store's, and its directory. */
export interface CacheOptions extends StoreOptions {
  /** The directory of the store. */
  dir: string;
}

/** What the cache holds for a request. */
export type Lookup =
  /** Not a request the cache answers (method, a body, …): relayed as if there were no cache. */
  | { kind: "bypass"; key?: string }
  /** Nothing stored matches. */
  | { kind: "miss"; key: string; fwd: "uri-miss" | "vary-miss" }
  /** A stored response, and how it may be used. */
  | { kind: "stored"; key: string; entry: Entry; use: Use };

/** Background work (validations, fetches, commits) under way at most before validations wait. */
export const MAX_BACKGROUND = 64;

/** Methods whose success invalidates what is stored for their target (RFC 9111 §4.4). */
const SAFE = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

/** The cache; see the module doc. */
export class Cache {
  readonly store: CacheStore;
  /** Commits in flight (flushing and renaming a body), awaited at close. */
  #pending = new Set<Promise<unknown>>();
  /** How to end each tracked piece of work that can be ended early. */
  #stops = new Set<() => void>();
  /**
   * Misses being fetched, by key (collapsed forwarding): the response's body writer once its
   * head came (null when it is not kept), so other requests for the key wait for it instead
   * of asking the origin too. One per key, and a key leaves once its body is indexed.
   */
  #inflight = new Map<string, Promise<BodyWriter | null>>();

  /**
   * Opens the store.
   *
   * @param options Where and how large.
   * @throws {Error} when the store cannot be opened.
   */
  constructor(options: CacheOptions) {
    this.store = new CacheStore(options.dir, options);
  }

  /**
   * What the cache holds for a request to `route` (RFC 9111 §4): GET and HEAD without a body;
   * the stored response whose Vary-selected fields match, the most recent first.
   *
   * @param head The request head.
   * @param route Where it goes.
   * @param now Now, epoch ms.
   * @returns The lookup.
   */
  lookup(head: RequestHead, route: Route, now: number): Lookup {
    if (route.framing.kind !== "none") return { kind: "bypass" };
    const key = cacheKey(route.host, route.port, route.path);
    if (head.method !== "GET" && head.method !== "HEAD") return { kind: "bypass", key };
    const entries = this.store.lookup(key);
    if (entries.length === 0) return { kind: "miss", key, fwd: "uri-miss" };
    const entry = entries.find((e) => e.variant === varySignature(e.vary, head.fields));
    if (!entry) return { kind: "miss", key, fwd: "vary-miss" };
    return { kind: "stored", key, entry, use: usable(entry, head.fields, now) };
  }

  /**
   * Decides whether a response is kept and, when it is, starts its body file.
   *
   * @param key The cache key.
   * @param request The request head.
   * @param response The response head.
   * @param timing When the request went and the response came.
   * @param length The body's length when the framing says it (undefined: chunked).
   * @param viaName This proxy's Via name: the stored response is the one forwarded, Via and all.
   * @returns The writer, or why the response is not kept.
   */
  keep(
    key: string,
    request: RequestHead,
    response: ResponseHead,
    timing: Timing,
    length: number | undefined,
    viaName: string,
  ): BodyWriter | NotStored | "too-large" {
    const no = notStorable(request.method, request.fields, response.status, response.fields);
    if (no) return no;
    const vary = varyNames(response.fields);
    const fields = storedFields(response.fields, timing.responseTime);
    addVia(fields, response.minor, viaName);
    const writer = this.store.begin({
      key,
      variant: varySignature(vary, request.fields),
      vary,
      status: response.status,
      reason: response.reason,
      fields,
      initialAge: initialAge(response.fields, timing),
      ...timing,
    }, length);
    return writer ?? "too-large";
  }

  /**
   * Updates a stored response from the 304 that validated it (RFC 9111 §4.3.4): the 304's
   * fields replace the stored ones (this proxy's Via put back when the 304 brought its own),
   * and its timing becomes the entry's.
   *
   * @param entry The stored response.
   * @param response The 304.
   * @param timing When the validation went and came back.
   * @param viaName This proxy's Via name.
   * @returns The updated entry.
   */
  refresh(
    entry: Entry,
    response: ResponseHead,
    timing: Timing,
    viaName: string,
  ): Entry {
    const fields = freshen(entry.fields, response.fields);
    if (response.fields.some(([n]) => n.toLowerCase() === "via")) {
      addVia(fields, response.minor, viaName);
    }
    const updated: Entry = {
      ...entry,
      fields,
      initialAge: initialAge(response.fields, timing),
      ...timing,
    };
    this.store.update(updated);
    return updated;
  }

  /**
   * RFC 9111 §4.3.5: a 200 to HEAD updates the stored GET it describes (the same entity-tag, or
   * without one the same Last-Modified, and the same length) as a 304 would; a stored GET it
   * contradicts is forgotten.
   *
   * @param entry The stored response for the same URL and Vary.
   * @param response The HEAD's response.
   * @param timing When the HEAD went and came back.
   * @param viaName This proxy's Via name.
   */
  headed(
    entry: Entry,
    response: ResponseHead,
    timing: Timing,
    viaName: string,
  ): void {
    if (response.status !== 200) return;
    const etag = fieldValue(response.fields, "etag");
    const length = fieldValue(response.fields, "content-length");
    const same = etag === fieldValue(entry.fields, "etag") &&
      (etag !== undefined ||
        fieldValue(response.fields, "last-modified") ===
          fieldValue(entry.fields, "last-modified")) &&
      (length === undefined || Number(length) === entry.size);
    if (same) this.refresh(entry, response, timing, viaName);
    else this.store.remove(entry.id);
  }

  /**
   * Finishes a body in the background (its last bytes, flush, rename, index); `close` waits
   * for it.
   *
   * @param writer The writer whose body is complete (but for `last`).
   * @param last The whole body, or its last piece, not yet written (copied here: the caller's
   *   buffer may be reused).
   */
  commit(writer: BodyWriter, last?: Uint8Array): void {
    const tail = last?.slice();
    const p = (tail ? writer.write(tail) : Promise.resolve())
      .then(() => writer.commit())
      .catch(() => null)
      .finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  /**
   * RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI and the
   * URIs in its Location and Content-Location, when they have the same origin.
   *
   * @param method The request method.
   * @param status The response status.
   * @param route Where the request went.
   * @param fields The response's fields.
   */
  invalidate(method: string, status: number, route: Route, fields: readonly Field[]): void {
    if (SAFE.has(method) || status < 200 || status >= 400) return;
    const key = cacheKey(route.host, route.port, route.path);
    this.store.removeKey(key);
    const origin = cacheKey(route.host, route.port, "/");
    for (const name of ["location", "content-location"]) {
      const value = fieldValue(fields, name);
      if (value === undefined) continue;
      let other: string | undefined;
      try {
        other = urlKey(new URL(value, key));
      } catch {
        continue; // not a URL
      }
      if (other?.startsWith(origin)) this.store.removeKey(other);
    }
  }

  /**
   * Forgets a URL (every variant), or everything.
   *
   * @param url The absolute URL, or undefined for everything.
   * @returns How many stored responses went.
   */
  purge(url?: string): number {
    if (url === undefined) return this.store.clear();
    const key = urlKey(new URL(url));
    return key === undefined ? 0 : this.store.removeKey(key);
  }

  /**
   * Takes the lead for a key nobody is fetching: later requests for it wait for this one's
   * response (see {@linkcode following}).
   *
   * @param key The cache key.
   * @returns The function to call with the body writer once the head came (null: not kept,
   *   or failed), or undefined when someone else leads.
   */
  lead(key: string): ((writer: BodyWriter | null) => void) | undefined {
    if (this.#inflight.has(key)) return undefined;
    const { promise, resolve } = Promise.withResolvers<BodyWriter | null>();
    this.#inflight.set(key, promise);
    let done = false;
    return (writer) => {
      if (done) return;
      done = true;
      resolve(writer);
      const leave = () => {
        if (this.#inflight.get(key) === promise) this.#inflight.delete(key);
      };
      if (writer) void writer.ended.then(leave);
      else leave();
    };
  }

  /**
   * The response being fetched for a key, if any.
   *
   * @param key The cache key.
   * @returns Its body writer once its head came (null: not kept), or undefined.
   */
  following(key: string): Promise<BodyWriter | null> | undefined {
    return this.#inflight.get(key);
  }

  /** Whether the request says `only-if-cached` (RFC 9111 §5.2.1.7). */
  static onlyIfCached(fields: readonly Field[]): boolean {
    return cacheControl(fields).has("only-if-cached");
  }

  /**
   * Whether more background work may start: a validation for `stale-while-revalidate` is
   * skipped (the stale response still answers) while {@linkcode MAX_BACKGROUND} pieces of
   * background work are under way, so a client asking for thousands of stale URLs cannot make
   * the proxy fetch thousands at once.
   */
  get idleEnough(): boolean {
    return this.#pending.size < MAX_BACKGROUND;
  }

  /**
   * Keeps track of work in the background (a validation, a body being fetched), so `close`
   * stops it and waits for it.
   *
   * @param work The work.
   * @param stop Ends it early (at close).
   */
  track(work: Promise<void>, stop?: () => void): void {
    const p = work.finally(() => {
      this.#pending.delete(p);
      if (stop) this.#stops.delete(stop);
    });
    this.#pending.add(p);
    if (stop) this.#stops.add(stop);
  }

  /** Stops the fetches under way, waits for bodies being committed, then closes the store. */
  async close(): Promise<void> {
    for (const stop of this.#stops) stop();
    await Promise.all(this.#pending);
    this.store.close();
  }
}
