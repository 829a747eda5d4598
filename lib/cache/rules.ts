/**
 * The rules of a shared HTTP cache (RFC 9111), as pure functions over heads and clock values:
 * Cache-Control parsing, whether a response may be stored (§3), its freshness lifetime and
 * current age (§4.2), whether a stored response may answer a request (§4, §5.2.1 request
 * directives), how a 304 updates what is stored (§3.2, §4.3.4), how a client's own conditional
 * request is answered from storage (RFC 9110 §13.2.2), and the Cache-Status value (RFC 9211). No
 * I/O: the store and the relay (`store.ts`, `relay/cached.ts`) act on what these decide.
 *
 * @module
 */

import type { Field } from "../http1/parse.ts";
import { endToEnd, fieldValue, listValues } from "../http1/headers.ts";

/** Cache-Control directives as a map: lower-case name → argument (`""` when it had none). */
export type Directives = Map<string, string>;

/**
 * Parses every Cache-Control line of `fields` (RFC 9111 §5.2): comma-separated directives,
 * `name` or `name=token` or `name="quoted"`. Names are case-insensitive; a repeated directive
 * keeps its first value (§4.2.1 allows either the first or treating the response as stale).
 *
 * @param fields The fields.
 * @returns The directives.
 */
export function cacheControl(fields: readonly Field[]): Directives {
  const out: Directives = new Map();
  for (const [n, v] of fields) {
    if (n.length !== 13 || n.toLowerCase() !== "cache-control") continue;
    // Split on commas outside quotes.
    const re = /\s*([^=,\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*(?:,|$)/gy;
    let m: RegExpExecArray | null;
    while (re.lastIndex < v.length && (m = re.exec(v)) !== null) {
      const name = m[1]!.toLowerCase();
      let arg = (m[2] ?? "").trim();
      if (arg.startsWith('"')) arg = arg.slice(1, -1).replace(/\\(.)/g, "$1");
      if (!out.has(name)) out.set(name, arg);
      if (m[0] === "") break;
    }
  }
  return out;
}

/**
 * A delta-seconds argument (RFC 9111 §1.2.2): digits; a value too large is the largest
 * (2^31), anything else is undefined (the directive is then treated as invalid).
 */
export function deltaSeconds(arg: string | undefined): number | undefined {
  if (arg === undefined || !/^\d+$/.test(arg)) return undefined;
  return Math.min(Number(arg), 2 ** 31);
}

const MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/**
 * Parses an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, and the obsolete RFC 850 and asctime
 * forms a recipient must accept.
 *
 * @param text The field value.
 * @returns Epoch ms, or undefined when it is not a date.
 */
export function parseHttpDate(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  let m = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t);
  let day: string, mon: string, year: number, hh: string, mm: string, ss: string;
  if (m) {
    day = m[1]!, mon = m[2]!, hh = m[4]!, mm = m[5]!, ss = m[6]!;
    year = Number(m[3]);
  } else if (
    (m = /^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t))
  ) {
    day = m[1]!, mon = m[2]!, hh = m[4]!, mm = m[5]!, ss = m[6]!;
    // RFC 9110 §5.6.7: a two-digit year more than 50 years ahead is in the past century.
    year = 2000 + Number(m[3]);
    if (year > new Date().getUTCFullYear() + 50) year -= 100;
  } else if (
    (m = /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/.exec(t))
  ) {
    mon = m[1]!, day = m[2]!.trim(), hh = m[3]!, mm = m[4]!, ss = m[5]!;
    year = Number(m[6]);
  } else {
    return undefined;
  }
  const month = MONTHS.indexOf(mon.toLowerCase());
  if (month < 0) return undefined;
  const ms = Date.UTC(year, month, Number(day), Number(hh), Number(mm), Number(ss));
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * Formats an IMF-fixdate (RFC 9110 §5.6.7).
 *
 * @param ms Epoch ms.
 * @returns `Sun, 06 Nov 1994 08:49:37 GMT`.
 */
export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** Whether a field is present. */
function has(fields: readonly Field[], name: string): boolean {
  return fieldValue(fields, name) !== undefined;
}

/**
 * Statuses a cache may give a heuristic freshness to (RFC 9110 §15.1: "heuristically cacheable"),
 * and so may store without explicit freshness. 206 is among them, but this cache keeps only
 * complete responses.
 */
const HEURISTIC = new Set([200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]);

/** Statuses whose meaning this cache understands (for `must-understand`, RFC 9111 §5.2.2.3). */
const UNDERSTOOD = new Set([
  200,
  203,
  204,
  300,
  301,
  302,
  303,
  307,
  308,
  404,
  405,
  410,
  414,
  501,
]);

/** Why a response is not stored (for Cache-Status `detail` and the tests), or null if it may be. */
export type NotStored =
  | "method"
  | "status"
  | "no-store"
  | "private"
  | "authorization"
  | "vary-star"
  | "no-freshness"
  | "framing";

/**
 * Decides whether a shared cache may store a response (RFC 9111 §3, §3.5): a GET; a final status
 * other than 206 and 304; no `no-store` in the request or response (unless `must-understand`
 * with a status understood here); not `private`; a request with Authorization only when the
 * response says `public`, `must-revalidate` or `s-maxage`; and either explicit freshness
 * (`Expires`, `max-age`, `s-maxage`), `public`, or a heuristically cacheable status. A response
 * whose `Vary` is `*` never matches a later request (§4.1), so it is not stored either.
 *
 * @param method The request method.
 * @param request The request's fields.
 * @param status The response status.
 * @param response The response's fields.
 * @returns Null when it may be stored, else why not.
 */
export function notStorable(
  method: string,
  request: readonly Field[],
  status: number,
  response: readonly Field[],
): NotStored | null {
  if (method !== "GET") return "method";
  if (status < 200 || status === 206 || status === 304) return "status";
  const req = cacheControl(request);
  const res = cacheControl(response);
  const understood = res.has("must-understand") && UNDERSTOOD.has(status);
  if (res.has("must-understand") && !understood) return "status";
  if (!understood && (res.has("no-store") || req.has("no-store"))) return "no-store";
  if (res.has("private")) return "private";
  if (
    has(request, "authorization") &&
    !(res.has("public") || res.has("must-revalidate") || res.has("s-maxage"))
  ) {
    return "authorization";
  }
  if (listValues(response, "vary").includes("*")) return "vary-star";
  const explicit = has(response, "expires") || res.has("max-age") || res.has("s-maxage");
  if (!explicit && !res.has("public") && !HEURISTIC.has(status)) return "no-freshness";
  return null;
}

/** How old and how fresh a stored response is, from what was recorded when it arrived. */
export interface Timing {
  /** When the request that fetched (or last validated) it was sent, epoch ms. */
  requestTime: number;
  /** When its response arrived, epoch ms. */
  responseTime: number;
}

/** The largest heuristic freshness given to a response with only Last-Modified (one day). */
export const HEURISTIC_MAX_S = 86_400;

/**
 * The freshness lifetime of a response for a shared cache, in seconds (RFC 9111 §4.2.1):
 * `s-maxage`, else `max-age`, else `Expires` minus `Date` (an invalid Expires means already
 * expired, §5.3), else a heuristic (§4.2.2): a tenth of the time since Last-Modified, at most a
 * day, for a heuristically cacheable status or `public`.
 *
 * @param status The response status.
 * @param fields The stored response's fields.
 * @param responseTime When it arrived (for a missing Date).
 * @returns Seconds (0 when it must be validated before every use).
 */
export function freshnessLifetime(
  status: number,
  fields: readonly Field[],
  responseTime: number,
): number {
  const cc = cacheControl(fields);
  const s = deltaSeconds(cc.get("s-maxage"));
  if (cc.has("s-maxage")) return s ?? 0;
  const maxAge = deltaSeconds(cc.get("max-age"));
  if (cc.has("max-age")) return maxAge ?? 0;
  const date = parseHttpDate(fieldValue(fields, "date")) ?? responseTime;
  const expiresText = fieldValue(fields, "expires");
  if (expiresText !== undefined) {
    const expires = parseHttpDate(expiresText);
    return expires === undefined ? 0 : Math.max(0, Math.floor((expires - date) / 1000));
  }
  const lastModified = parseHttpDate(fieldValue(fields, "last-modified"));
  if (lastModified !== undefined && (HEURISTIC.has(status) || cc.has("public"))) {
    return Math.min(HEURISTIC_MAX_S, Math.max(0, Math.floor((date - lastModified) / 10_000)));
  }
  return 0;
}

/**
 * The corrected initial age of a response as it arrived, in seconds (RFC 9111 §4.2.3): the
 * larger of its apparent age (arrival minus Date) and its Age field plus the request's round
 * trip.
 *
 * @param fields The response's fields.
 * @param timing When the request went and the response came.
 * @returns Seconds.
 */
export function initialAge(fields: readonly Field[], timing: Timing): number {
  const date = parseHttpDate(fieldValue(fields, "date")) ?? timing.responseTime;
  const apparent = Math.max(0, (timing.responseTime - date) / 1000);
  const ageValue = deltaSeconds(fieldValue(fields, "age")?.trim()) ?? 0;
  const delay = Math.max(0, (timing.responseTime - timing.requestTime) / 1000);
  return Math.max(apparent, ageValue + delay);
}

/**
 * The current age of a stored response, in seconds (RFC 9111 §4.2.3).
 *
 * @param initial Its corrected initial age.
 * @param responseTime When it arrived, epoch ms.
 * @param now Now, epoch ms.
 * @returns Seconds.
 */
export function currentAge(initial: number, responseTime: number, now: number): number {
  return initial + Math.max(0, (now - responseTime) / 1000);
}

/** What a stored response is, for deciding whether it may answer a request. */
export interface Stored {
  /** Its status. */
  status: number;
  /** Its fields as stored (end-to-end, Date added when it had none). */
  fields: Field[];
  /** Its corrected initial age, seconds. */
  initialAge: number;
  /** When it arrived (or was last validated), epoch ms. */
  responseTime: number;
}

/** How a stored response may be used for a request. */
export type Use =
  /** Fresh enough for the request: served as it is. */
  | { kind: "fresh"; age: number; ttl: number }
  /** Stale, but the request accepts that (`max-stale`): served with its age. */
  | { kind: "stale-ok"; age: number; ttl: number }
  /** Must be validated with the origin first. */
  | { kind: "validate"; age: number; ttl: number; why: "stale" | "no-cache" | "request" };

/**
 * Decides how a stored response may answer a request (RFC 9111 §4.2, §4.3, §5.2): fresh (its
 * age within its lifetime, and within the request's `max-age` and `min-fresh`); stale but
 * accepted by the request's `max-stale` (never when the response says `must-revalidate`,
 * `proxy-revalidate`, `s-maxage` or `no-cache`); otherwise validated first. The request's
 * `no-cache` (or `Pragma: no-cache` without Cache-Control, §5.4) and the response's
 * `no-cache` always validate.
 *
 * @param stored The stored response.
 * @param request The request's fields.
 * @param now Now, epoch ms.
 * @returns How it may be used.
 */
export function usable(stored: Stored, request: readonly Field[], now: number): Use {
  const age = currentAge(stored.initialAge, stored.responseTime, now);
  const { lifetime, res } = derived(stored);
  const ttl = lifetime - age;
  const req = cacheControl(request);
  const pragmaNoCache = !has(request, "cache-control") &&
    listValues(request, "pragma").some((p) => p.toLowerCase() === "no-cache");
  if (req.has("no-cache") || pragmaNoCache) return { kind: "validate", age, ttl, why: "request" };
  if (res.has("no-cache")) return { kind: "validate", age, ttl, why: "no-cache" };
  const reqMaxAge = deltaSeconds(req.get("max-age"));
  const minFresh = deltaSeconds(req.get("min-fresh")) ?? 0;
  if (ttl > 0 && ttl >= minFresh && (reqMaxAge === undefined || age <= reqMaxAge)) {
    return { kind: "fresh", age, ttl };
  }
  if (ttl <= 0 && req.has("max-stale") && !neverStale(res)) {
    // `max-stale` without a value accepts any staleness.
    const maxStale = req.get("max-stale") === "" ? Infinity : deltaSeconds(req.get("max-stale"));
    if (maxStale !== undefined && -ttl <= maxStale) return { kind: "stale-ok", age, ttl };
  }
  return { kind: "validate", age, ttl, why: "stale" };
}

/**
 * Whether a response's directives forbid serving it stale for any reason (`max-stale`,
 * `stale-if-error`, `stale-while-revalidate`): `must-revalidate`, `proxy-revalidate`, or
 * `s-maxage`, which implies `proxy-revalidate` for a shared cache (RFC 9111 §5.2.2.10).
 */
function neverStale(res: Directives): boolean {
  return res.has("must-revalidate") || res.has("proxy-revalidate") || res.has("s-maxage");
}

/** What a stored response's fields say about it, worked out once per field list. */
const DERIVED = new WeakMap<
  readonly Field[],
  { status: number; lifetime: number; res: Directives }
>();

/**
 * A stored response's freshness lifetime and Cache-Control directives, parsed once for its
 * field list (a stored list is never changed: a 304 makes a new one) rather than at every hit.
 */
function derived(stored: Stored): { lifetime: number; res: Directives } {
  const known = DERIVED.get(stored.fields);
  if (known && known.status === stored.status) return known;
  const d = {
    status: stored.status,
    lifetime: freshnessLifetime(stored.status, stored.fields, stored.responseTime),
    res: cacheControl(stored.fields),
  };
  DERIVED.set(stored.fields, d);
  return d;
}

/**
 * Whether a stale response may be served when the origin fails or cannot be reached
 * (RFC 5861 §4 `stale-if-error`, from the response or the request), never past
 * `must-revalidate`/`proxy-revalidate`/`s-maxage`.
 *
 * @param stored The stored response.
 * @param request The request's fields.
 * @param staleFor How long it has been stale, seconds.
 * @returns True when the stale response may answer.
 */
export function staleIfError(stored: Stored, request: readonly Field[], staleFor: number): boolean {
  const { res } = derived(stored);
  if (neverStale(res)) return false;
  const limit = Math.max(
    deltaSeconds(res.get("stale-if-error")) ?? -1,
    deltaSeconds(cacheControl(request).get("stale-if-error")) ?? -1,
  );
  return limit >= 0 && staleFor <= limit;
}

/**
 * Whether a stale response may be served while it is validated in the background (RFC 5861 §3
 * `stale-while-revalidate`), never past `must-revalidate`/`proxy-revalidate`/`s-maxage`.
 *
 * @param stored The stored response.
 * @param staleFor How long it has been stale, seconds.
 * @returns True when it may answer now.
 */
export function staleWhileRevalidate(stored: Stored, staleFor: number): boolean {
  const { res } = derived(stored);
  if (neverStale(res)) return false;
  const limit = deltaSeconds(res.get("stale-while-revalidate"));
  return limit !== undefined && staleFor <= limit;
}

/**
 * The conditional fields a cache adds to validate a stored response (RFC 9111 §4.3.1):
 * If-None-Match with its ETag, and If-Modified-Since with its Last-Modified.
 *
 * @param stored The stored response's fields.
 * @returns The fields to add (none when it has no validator).
 */
export function validators(stored: readonly Field[]): Field[] {
  const out: Field[] = [];
  const etag = fieldValue(stored, "etag");
  if (etag !== undefined) out.push(["If-None-Match", etag]);
  const lastModified = fieldValue(stored, "last-modified");
  if (lastModified !== undefined) out.push(["If-Modified-Since", lastModified]);
  return out;
}

/** Request fields that make a request conditional (RFC 9110 §13.1). */
const CONDITIONALS = new Set([
  "if-match",
  "if-none-match",
  "if-modified-since",
  "if-unmodified-since",
  "if-range",
]);

/**
 * Whether a request carries conditionals of its own.
 *
 * @param fields The request's fields.
 * @returns True when it does.
 */
export function isConditional(fields: readonly Field[]): boolean {
  return fields.some(([n]) => CONDITIONALS.has(n.toLowerCase()));
}

/**
 * Whether a request field is the client's own condition or Range: what makes an answer other
 * than the stored response as it is, keeps a request from sharing another's response, and is
 * left out of a validation the cache makes for itself.
 *
 * @param name The field name.
 * @returns True for a conditional field or Range.
 */
export function isConditionOrRange(name: string): boolean {
  const n = name.toLowerCase();
  return n === "range" || CONDITIONALS.has(n);
}

/**
 * The stored fields after a 304 validated them (RFC 9111 §3.2, §4.3.4): each field the 304
 * carries replaces the stored ones of that name, except Content-Length (and hop-by-hop fields,
 * which are never stored).
 *
 * @param stored The stored fields.
 * @param update The 304's fields.
 * @returns The new stored fields.
 */
export function freshen(stored: readonly Field[], update: readonly Field[]): Field[] {
  const incoming = endToEnd(update).filter(([n]) => n.toLowerCase() !== "content-length");
  const replaced = new Set(incoming.map(([n]) => n.toLowerCase()));
  return [...stored.filter(([n]) => !replaced.has(n.toLowerCase())), ...incoming];
}

/** Fields a stored response keeps: end-to-end ones, minus those the cache sets itself. */
export function storedFields(fields: readonly Field[], responseTime: number): Field[] {
  const out = endToEnd(fields, ["age", "content-length"]);
  // RFC 9110 §6.6.1: a cache that stores a response without Date adds one.
  if (!has(out, "date")) out.push(["Date", httpDate(responseTime)]);
  return out;
}

/**
 * Splits an entity-tag list (If-None-Match) into its tags, or "*".
 *
 * @param value The field value.
 * @returns The tags as sent (with their W/ prefix), or "*".
 */
function etagList(value: string): string[] | "*" {
  if (value.trim() === "*") return "*";
  return value.match(/(?:W\/)?"[^"]*"/g) ?? [];
}

/** Weak comparison of two entity-tags (RFC 9110 §8.8.3.2): opaque parts equal. */
function weakMatch(a: string, b: string): boolean {
  return a.replace(/^W\//, "") === b.replace(/^W\//, "");
}

/**
 * Evaluates a client's If-None-Match / If-Modified-Since against a stored response, as a cache
 * may (RFC 9110 §13.2.2): If-None-Match wins when present (weak comparison); If-Modified-Since
 * is used only without it, for GET and HEAD.
 *
 * @param request The request's fields.
 * @param stored The stored response's fields.
 * @returns True when the answer is 304 Not Modified.
 */
export function notModified(request: readonly Field[], stored: readonly Field[]): boolean {
  const inm = fieldValue(request, "if-none-match");
  if (inm !== undefined) {
    const etag = fieldValue(stored, "etag");
    if (etag === undefined) return false;
    const tags = etagList(listValues(request, "if-none-match").join(", "));
    return tags === "*" || tags.some((t) => weakMatch(t, etag));
  }
  const since = parseHttpDate(fieldValue(request, "if-modified-since"));
  const modified = parseHttpDate(fieldValue(stored, "last-modified"));
  return since !== undefined && modified !== undefined && modified <= since;
}

/** The fields a 304 answered from storage carries (RFC 9110 §15.4.5). */
export function notModifiedFields(stored: readonly Field[]): Field[] {
  const keep = ["cache-control", "content-location", "date", "etag", "expires", "vary"];
  return stored.filter(([n]) => keep.includes(n.toLowerCase()));
}

/**
 * The request's values of the fields a response's Vary names (RFC 9111 §4.1), normalised
 * (lines joined with ", ", whitespace around commas dropped, names lower-cased), as one string
 * that two requests share exactly when the stored response matches both.
 *
 * @param varyNames The Vary field names, lower case.
 * @param request The request's fields.
 * @returns The signature ("" when nothing varies).
 */
export function varySignature(varyNames: readonly string[], request: readonly Field[]): string {
  if (varyNames.length === 0) return "";
  return varyNames
    .map((name) => `${name}:${listValues(request, name).join(",")}`)
    .join("\n");
}

/**
 * The names a response's Vary lists, lower case, sorted and without repeats.
 *
 * @param fields The response's fields.
 * @returns The names.
 */
export function varyNames(fields: readonly Field[]): string[] {
  return [...new Set(listValues(fields, "vary").map((n) => n.toLowerCase()))].sort();
}

/** One Range the cache answers from a complete stored response: first and last byte. */
export interface ByteRange {
  /** First byte offset. */
  start: number;
  /** Last byte offset (inclusive). */
  end: number;
}

/**
 * Reads a Range request against a stored body of `size` bytes (RFC 9110 §14.2): a single
 * `bytes=a-b`, `bytes=a-` or `bytes=-n`. More than one range, another unit, or a malformed
 * field is ignored (the whole response answers, as §14.2 allows); a range wholly past the end is
 * unsatisfiable (416).
 *
 * @param value The Range field value.
 * @param size The stored body's length.
 * @returns The range, "unsatisfiable", or null to send the whole body.
 */
export function parseRange(
  value: string | undefined,
  size: number,
): ByteRange | "unsatisfiable" | null {
  if (value === undefined) return null;
  const m = /^bytes=\s*(\d*)-(\d*)\s*$/i.exec(value.trim());
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) return "unsatisfiable";
    return size === 0 ? "unsatisfiable" : { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

/**
 * Whether an If-Range lets a Range apply (RFC 9110 §13.1.5): its entity-tag equals the stored
 * strong ETag, or its date equals the stored Last-Modified exactly.
 *
 * @param value The If-Range value (undefined: no If-Range, the range applies).
 * @param stored The stored response's fields.
 * @returns True when the range applies.
 */
export function ifRangeHolds(value: string | undefined, stored: readonly Field[]): boolean {
  if (value === undefined) return true;
  const v = value.trim();
  if (v.startsWith('"') || v.startsWith("W/")) {
    const etag = fieldValue(stored, "etag");
    return etag !== undefined && !v.startsWith("W/") && !etag.startsWith("W/") && etag === v;
  }
  const lastModified = fieldValue(stored, "last-modified");
  return lastModified !== undefined && parseHttpDate(v) !== undefined &&
    parseHttpDate(v) === parseHttpDate(lastModified);
}

/** What the cache did for a response (squid's result codes, and Cache-Status). */
export type CacheResult =
  | "HIT"
  | "MISS"
  | "REFRESH_UNMODIFIED"
  | "REFRESH_MODIFIED"
  | "REFRESH_FAIL_OLD"
  | "STALE_HIT"
  | "CF_HIT";

/** Results whose body came from the store: bytes the origin did not send again. */
export const FROM_STORE: ReadonlySet<string> = new Set<CacheResult>([
  "HIT",
  "STALE_HIT",
  "CF_HIT",
  "REFRESH_UNMODIFIED",
  "REFRESH_FAIL_OLD",
]);

/**
 * The Cache-Status member this cache adds (RFC 9211 §2): `hit`, or `fwd=` with why it went to
 * the origin, `fwd-status`, `stored`, `ttl` and `detail` as they apply.
 *
 * @param name This cache's name (the Via pseudonym).
 * @param parts What happened.
 * @returns The member.
 */
export function cacheStatus(
  name: string,
  parts: {
    hit?: boolean;
    fwd?: "uri-miss" | "vary-miss" | "request" | "stale" | "method";
    fwdStatus?: number;
    stored?: boolean;
    collapsed?: boolean;
    ttl?: number;
    detail?: string;
  },
): string {
  const params: string[] = [];
  if (parts.hit) params.push("hit");
  if (parts.fwd) params.push(`fwd=${parts.fwd}`);
  if (parts.fwdStatus !== undefined) params.push(`fwd-status=${parts.fwdStatus}`);
  if (parts.stored) params.push("stored");
  if (parts.collapsed) params.push("collapsed");
  if (parts.ttl !== undefined) params.push(`ttl=${Math.floor(parts.ttl)}`);
  if (parts.detail) params.push(`detail=${parts.detail}`);
  return [/^[A-Za-z][\w.-]*$/.test(name) ? name : `"${name.replace(/["\\]/g, "")}"`, ...params]
    .join("; ");
}

/**
 * The cache key of a request to `host:port` for `path` (RFC 9111 §2): the target URI, with the
 * scheme and host in lower case and the default port left out.
 *
 * @param host The host, normalised.
 * @param port The port.
 * @param path Path and query as sent.
 * @returns The URI.
 */
export function cacheKey(host: string, port: number, path: string): string {
  const h = host.includes(":") ? `[${host}]` : host;
  return `http://${h}${port === 80 ? "" : `:${port}`}${path}`;
}

/**
 * The cache key of an absolute `http:` URL (a Location, an admin's purge).
 *
 * @param url The URL.
 * @returns The key, or undefined for another scheme.
 */
export function urlKey(url: URL): string | undefined {
  if (url.protocol !== "http:") return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return cacheKey(host, Number(url.port || 80), url.pathname + url.search);
}
