/**
 * The cache's side of the relay (`--cache`): `consult` asks the cache before a request goes to
 * the origin, and answers it when it can. A stored response is written to the client with its
 * Age and Cache-Status (RFC 9111 §4, §5.1; RFC 9211), as a 304 when the client's own conditional
 * holds (RFC 9110 §13.2.2), as a 206 or 416 for a single byte range of a complete stored response
 * (RFC 9110 §14), and as head only for HEAD. Small bodies come from memory in the same write as
 * the head; larger ones stream from their file. A response another request is fetching is
 * followed as it reaches the store (collapsed forwarding). What may be served is decided in
 * `cache/cache.ts` and `cache/rules.ts`.
 *
 * @module
 */

import { Aborted, GatewayTimeout } from "../errors.ts";
import type { Exchange, Route } from "../exchange.ts";
import { Cache, type Lookup } from "../cache/cache.ts";
import type { RequestSettings } from "../http1/plan.ts";
import { revalidate } from "./revalidate.ts";
import { chunk, joinBytes, LAST_CHUNK } from "../http1/body.ts";
import {
  clientWantsKeepAlive,
  connectionFields,
  encodeHead,
  fieldValue,
} from "../http1/headers.ts";
import type { Field, RequestHead } from "../http1/parse.ts";
import type { BodyWriter, Entry } from "../cache/store.ts";
import {
  type CacheResult,
  cacheStatus,
  currentAge,
  ifRangeHolds,
  isConditionOrRange,
  notModified,
  notModifiedFields,
  parseRange,
  staleWhileRevalidate,
  varySignature,
} from "../cache/rules.ts";
import type { ExchangeContext } from "../upstream/transport.ts";
import { toClient } from "./to_client.ts";

/** What the cache made of a request before it goes to the origin. */
export type Consulted =
  /** Answered from the cache: whether the connection may carry another request. */
  | { answered: true; keep: boolean }
  /**
   * Not answered: what is stored (a response to validate, or nothing), and the lead on the key
   * when this request's response is the one others will wait for (called with its body writer
   * once its head came, or null).
   */
  | {
    answered: false;
    look: Lookup;
    lead: ((writer: BodyWriter | null) => void) | undefined;
  };

/**
 * Asks the cache about a request (`ctx.cache` is set): a stored response that may be used
 * answers it (RFC 9111 §4); within `stale-while-revalidate` a stale one answers while a
 * background request validates it (RFC 5861 §3); `only-if-cached` without a usable response is a
 * 504 (§5.2.1.7); a plain GET for a URL already being fetched waits for that response and is
 * answered from it as it arrives, when its Vary matches (collapsed forwarding).
 *
 * @param ex The exchange.
 * @param ctx Settings.
 * @param head The request head.
 * @param route Where it goes.
 * @param settings How a request to `route` is planned (for a background validation).
 * @returns Whether it was answered, and if not, what the relay needs.
 * @throws {GatewayTimeout} for `only-if-cached` without a usable response.
 */
export async function consult(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  route: Route,
  settings: RequestSettings,
): Promise<Consulted> {
  const cache = ctx.cache!;
  let look = cache.lookup(head, route, Date.now());
  if (look.kind === "stored") {
    const { use } = look;
    const stale = use.kind === "validate" && use.why === "stale";
    const swr = stale && staleWhileRevalidate(look.entry, -use.ttl);
    if (use.kind !== "validate" || swr) {
      const lead = swr && cache.idleEnough ? cache.lead(look.key) : undefined;
      if (lead) cache.track(revalidate(ctx, head, route, look.entry, lead, settings));
      const keep = await serveStored(ex, ctx, head, look.entry, {
        result: use.kind === "fresh" ? "HIT" : "STALE_HIT",
        age: use.age,
        ttl: use.ttl,
      });
      if (keep !== null) return { answered: true, keep };
      look = { kind: "miss", key: look.key, fwd: "uri-miss" }; // its body file was gone
    }
  }
  if (look.kind !== "bypass" && Cache.onlyIfCached(head.fields)) {
    throw new GatewayTimeout("only-if-cached: the cache holds no response it may use", {
      kind: "only_if_cached",
    });
  }
  if (look.kind !== "miss" || !plainGet(head)) return { answered: false, look, lead: undefined };
  const pending = cache.following(look.key);
  if (!pending) return { answered: false, look, lead: cache.lead(look.key) };
  const writer = await pending;
  if (
    writer && !writer.failed && writer.head.variant === varySignature(writer.head.vary, head.fields)
  ) {
    const keep = await serveFollowing(ex, ctx, head, writer);
    if (keep !== null) return { answered: true, keep };
  }
  return { answered: false, look, lead: undefined };
}

/** A GET that may share another's response: no conditionals of its own, no Range. */
function plainGet(head: RequestHead): boolean {
  return head.method === "GET" && !head.fields.some(([n]) => isConditionOrRange(n));
}

/** The status line and stored fields of an entry, as bytes (without the blank line). */
const STORED_HEADS = new WeakMap<readonly Field[], Uint8Array>();

/**
 * An entry's status line and fields as bytes, made once per stored field list (a 304 makes a
 * new list) rather than at every hit.
 */
function storedHead(entry: Entry): Uint8Array {
  let bytes = STORED_HEADS.get(entry.fields);
  if (!bytes) {
    const whole = encodeHead(`HTTP/1.1 ${entry.status} ${entry.reason}`, entry.fields);
    bytes = whole.subarray(0, whole.length - 2); // without the blank line
    STORED_HEADS.set(entry.fields, bytes);
  }
  return bytes;
}

/** Fields, then the blank line that ends a head, as bytes. */
function encodeFields(fields: readonly Field[]): Uint8Array {
  // encodeHead with an empty start line writes a lone CRLF first: skip it.
  return encodeHead("", fields).subarray(2);
}

/**
 * Records the answer the cache is about to send (status, fields, result, the stored type): from
 * here on a failure can only close the connection.
 */
function answering(
  ex: Exchange,
  answer: { status: number; reason: string; fields: Field[] },
  result: CacheResult,
  stored: readonly Field[],
): void {
  ex.record.status = answer.status;
  ex.record.reason = answer.reason;
  ex.record.responseFields = answer.fields;
  ex.record.cache = result;
  const type = fieldValue(stored, "content-type");
  if (type !== undefined) ex.record.contentType = type;
  ex.responseStarted = true;
}

/** Bodies are read from their file in pieces this large. */
const FILE_PIECE = 256 * 1024;

/** How a stored response is being served. */
export interface Serving {
  /** The result for the log. */
  result: CacheResult;
  /** Its current age, seconds. */
  age: number;
  /** Its remaining freshness, seconds (negative when stale). */
  ttl: number;
  /** Cache-Status: why the origin was asked, and what it answered (a validation). */
  fwd?: "stale" | "request";
  fwdStatus?: number;
}

/**
 * Writes a stored response to the client.
 *
 * @param ex The exchange.
 * @param ctx Settings; `ctx.cache` is set.
 * @param head The client's request head (GET or HEAD, without a body).
 * @param entry The stored response.
 * @param how The result, age and Cache-Status details.
 * @returns Whether the client connection may carry another request, or null when the body
 *   could not be read (the entry is then gone, and the caller relays the request instead).
 */
export async function serveStored(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  entry: Entry,
  how: Serving,
): Promise<boolean | null> {
  const withBody = head.method !== "HEAD";
  const body = withBody ? await ctx.cache!.store.open(entry) : null;
  if (withBody && body === null) return null;
  let status = entry.status;
  let reason = entry.reason;
  // The stored fields as they are, or changed for a 304 or a range.
  let fields: readonly Field[] = entry.fields;
  let start = 0;
  let length = entry.size;
  let sendBody = withBody;
  const special = status === 200 && head.fields.some(([n]) => isConditionOrRange(n));
  if (special && notModified(head.fields, entry.fields)) {
    status = 304;
    reason = "Not Modified";
    fields = notModifiedFields(entry.fields);
    sendBody = false;
    length = -1;
  } else if (special && ifRangeHolds(fieldValue(head.fields, "if-range"), entry.fields)) {
    const range = parseRange(fieldValue(head.fields, "range"), entry.size);
    if (range === "unsatisfiable") {
      status = 416;
      reason = "Range Not Satisfiable";
      fields = [
        ...fields.filter(([n]) => !/^content-(type|encoding|language)$/i.test(n)),
        ["Content-Range", `bytes */${entry.size}`],
      ];
      sendBody = false;
      length = 0;
    } else if (range) {
      status = 206;
      reason = "Partial Content";
      fields = [...fields, ["Content-Range", `bytes ${range.start}-${range.end}/${entry.size}`]];
      start = range.start;
      length = range.end - range.start + 1;
    }
  }
  // RFC 9111 §5.1: Age on every response served from storage.
  const extra: Field[] = [["Age", String(Math.floor(how.age))]];
  extra.push([
    "Cache-Status",
    cacheStatus(ctx.config.viaName, {
      hit: how.fwd === undefined,
      ...(how.fwd ? { fwd: how.fwd } : {}),
      ...(how.fwdStatus !== undefined ? { fwdStatus: how.fwdStatus } : {}),
      ttl: how.ttl,
    }),
  ]);
  if (length >= 0 && status !== 304 && status !== 204) {
    extra.push(["Content-Length", String(length)]);
  }
  const keep = clientWantsKeepAlive(head) && !ctx.signal.aborted;
  extra.push(...connectionFields(keep, head.minor));
  // The stored head as it is: its bytes were made once (see storedHead).
  const headBytes = fields === entry.fields && status === entry.status
    ? joinBytes(storedHead(entry), encodeFields(extra))
    : encodeHead(`HTTP/1.1 ${status} ${reason}`, [...fields, ...extra]);
  answering(ex, { status, reason, fields: [...fields, ...extra] }, how.result, entry.fields);
  if (!sendBody || !body || length === 0) {
    body?.file?.close();
    await toClient(ex, headBytes, ctx);
    return keep;
  }
  if (body.mem) {
    await toClient(ex, joinBytes(headBytes, body.mem.subarray(start, start + length)), ctx);
    ex.record.bytesDown = length;
    return keep;
  }
  using file = body.file;
  await toClient(ex, headBytes, ctx);
  if (start > 0) await file.seek(start, Deno.SeekMode.Start);
  await streamFile(ex, ctx, file, length, entry.key);
  return keep;
}

/**
 * Sends `length` bytes of a body file to the client, reading the next piece while the last one
 * is written (two buffers: the disk and the socket work at the same time).
 */
async function streamFile(
  ex: Exchange,
  ctx: ExchangeContext,
  file: Deno.FsFile,
  length: number,
  key: string,
): Promise<void> {
  const size = Math.min(FILE_PIECE, length);
  const bufs = [new Uint8Array(size), new Uint8Array(size)];
  let which = 0;
  let toRead = length;
  let asked = 0;
  const next = () => {
    asked = Math.min(size, toRead);
    toRead -= asked;
    return file.read(bufs[which]!.subarray(0, asked));
  };
  let reading: Promise<number | null> | undefined = next();
  try {
    while (reading) {
      const n = await reading;
      if (n === null || n === 0) {
        throw new Aborted(`the cache's file for "${key}" ended early`, "http_response_incomplete");
      }
      toRead += asked - n; // a short read: the rest comes with the next
      const piece = bufs[which]!.subarray(0, n);
      which ^= 1;
      reading = toRead > 0 ? next() : undefined;
      await toClient(ex, piece, ctx);
      ex.record.bytesDown += n;
    }
  } finally {
    reading?.catch(() => {
      // the file closes with the exchange: a read left behind fails quietly
    });
  }
}

/**
 * Answers a GET with a response another request is fetching (collapsed forwarding): its head
 * at once, then its body as it reaches the cache's file, so every waiting client gets the bytes
 * as they arrive and the origin is asked once. A body of unknown length goes chunked to an
 * HTTP/1.1 client (to an HTTP/1.0 one, raw, then the connection closes).
 *
 * @param ex The exchange.
 * @param ctx Settings; `ctx.cache` is set.
 * @param head The client's request head (a plain GET).
 * @param writer The body being written.
 * @returns Whether the client connection may carry another request, or null when the body
 *   file is gone (the caller relays the request instead).
 */
export async function serveFollowing(
  ex: Exchange,
  ctx: ExchangeContext,
  head: RequestHead,
  writer: BodyWriter,
): Promise<boolean | null> {
  const opened = writer.openReader();
  if (!opened) return null;
  using file = opened;
  const stored = writer.head;
  const fields: Field[] = [...stored.fields];
  fields.push([
    "Age",
    String(Math.floor(currentAge(stored.initialAge, stored.responseTime, Date.now()))),
  ]);
  fields.push([
    "Cache-Status",
    cacheStatus(ctx.config.viaName, { fwd: "uri-miss", collapsed: true }),
  ]);
  const known = writer.expected;
  const chunked = known === undefined && head.minor === 1;
  if (known !== undefined) fields.push(["Content-Length", String(known)]);
  else if (chunked) fields.push(["Transfer-Encoding", "chunked"]);
  const keep = clientWantsKeepAlive(head) && !ctx.signal.aborted &&
    (known !== undefined || chunked);
  fields.push(...connectionFields(keep, head.minor));
  answering(ex, { status: stored.status, reason: stored.reason, fields }, "CF_HIT", stored.fields);
  const leave = writer.join();
  try {
    await toClient(ex, encodeHead(`HTTP/1.1 ${stored.status} ${stored.reason}`, fields), ctx);
    await followBody(ex, ctx, file, writer, chunked);
  } finally {
    leave();
  }
  return keep;
}

/**
 * Sends a body to the client as it reaches the store's file: what is written so far, then more
 * as it comes, until the body is complete (or abandoned: the connection then closes, never a
 * short body presented as whole). Every client of a fetched response reads it this way, the one
 * whose request fetched it too, so each goes at its own pace and none holds the others back.
 *
 * @param ex The exchange.
 * @param ctx Settings.
 * @param file The body file, open for reading from its start.
 * @param writer The body being written.
 * @param chunked Frame the body as chunks (a body of unknown length to an HTTP/1.1 client).
 */
export async function followBody(
  ex: Exchange,
  ctx: ExchangeContext,
  file: Deno.FsFile,
  writer: BodyWriter,
  chunked: boolean,
): Promise<void> {
  const buf = new Uint8Array(FILE_PIECE);
  // Each chunk framed in the same buffer: the write of one is done before the next is read.
  const frame = chunked ? new Uint8Array(FILE_PIECE + 16) : undefined;
  let pos = 0;
  for (;;) {
    if (pos < writer.written) {
      const n = await file.read(buf.subarray(0, Math.min(buf.length, writer.written - pos)));
      if (n === null) {
        throw new Aborted("the cache's file ended early", "http_response_incomplete");
      }
      const piece = buf.subarray(0, n);
      await toClient(ex, chunked ? chunk(piece, frame) : piece, ctx);
      pos += n;
      ex.record.bytesDown += n;
      continue;
    }
    if (writer.failed) {
      throw new Aborted(
        `the response from upstream broke off: ${writer.failure ?? "not kept"}`,
        "http_response_incomplete",
      );
    }
    if (writer.complete) break;
    await writer.changed();
  }
  if (chunked) await toClient(ex, LAST_CHUNK, ctx);
}
