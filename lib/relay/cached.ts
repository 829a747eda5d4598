/**
 * Answers from the cache (`--cache`): a stored response written to the client with its Age and
 * Cache-Status (RFC 9111 §4, §5.1; RFC 9211), as a 304 when the client's own conditional holds
 * (RFC 9110 §13.2.2), as a 206 or 416 for a single byte range of a complete stored response
 * (RFC 9110 §14), and as head only for HEAD. Small bodies come from memory in the same write
 * as the head; larger ones stream from their file piece by piece. What may be served is decided
 * before (`cache/cache.ts`, `cache/rules.ts`).
 *
 * @module
 */

import { Aborted } from "../errors.ts";
import type { Exchange } from "../exchange.ts";
import { joinBytes } from "../http1/body.ts";
import { clientWantsKeepAlive, connectionFields, encodeHead } from "../http1/headers.ts";
import type { Field, RequestHead } from "../http1/parse.ts";
import type { BodyWriter, Entry } from "../cache/store.ts";
import {
  type CacheResult,
  cacheStatus,
  currentAge,
  fieldValue,
  ifRangeHolds,
  notModified,
  notModifiedFields,
  parseRange,
} from "../cache/rules.ts";
import type { ExchangeContext } from "../upstream/transport.ts";
import { toClient } from "./to_client.ts";

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
  let fields: Field[] = [...entry.fields];
  let start = 0;
  let length = entry.size;
  let sendBody = withBody;
  if (status === 200 && notModified(head.fields, entry.fields)) {
    status = 304;
    reason = "Not Modified";
    fields = notModifiedFields(entry.fields);
    sendBody = false;
    length = -1;
  } else if (status === 200 && ifRangeHolds(fieldValue(head.fields, "if-range"), entry.fields)) {
    const range = parseRange(fieldValue(head.fields, "range"), entry.size);
    if (range === "unsatisfiable") {
      status = 416;
      reason = "Range Not Satisfiable";
      fields = fields.filter(([n]) => !/^content-(type|encoding|language)$/i.test(n));
      fields.push(["Content-Range", `bytes */${entry.size}`]);
      sendBody = false;
      length = 0;
    } else if (range) {
      status = 206;
      reason = "Partial Content";
      fields.push(["Content-Range", `bytes ${range.start}-${range.end}/${entry.size}`]);
      start = range.start;
      length = range.end - range.start + 1;
    }
  }
  // RFC 9111 §5.1: Age on every response served from storage.
  fields.push(["Age", String(Math.floor(how.age))]);
  fields.push([
    "Cache-Status",
    cacheStatus(ctx.config.viaName, {
      hit: how.fwd === undefined,
      ...(how.fwd ? { fwd: how.fwd } : {}),
      ...(how.fwdStatus !== undefined ? { fwdStatus: how.fwdStatus } : {}),
      ttl: how.ttl,
    }),
  ]);
  if (length >= 0 && status !== 304 && status !== 204) {
    fields.push(["Content-Length", String(length)]);
  }
  const keep = clientWantsKeepAlive(head) && !ctx.signal.aborted;
  fields.push(...connectionFields(keep, head.minor));
  const headBytes = encodeHead(`HTTP/1.1 ${status} ${reason}`, fields);
  ex.record.status = status;
  ex.record.reason = reason;
  ex.record.responseFields = fields;
  ex.record.cache = how.result;
  const type = fieldValue(entry.fields, "content-type");
  if (type !== undefined) ex.record.contentType = type;
  ex.responseStarted = true;
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
  const buf = new Uint8Array(Math.min(FILE_PIECE, length));
  let left = length;
  while (left > 0) {
    const n = await file.read(buf.subarray(0, Math.min(buf.length, left)));
    if (n === null) {
      throw new Aborted(
        `the cache's file for "${entry.key}" ended early`,
        "http_response_incomplete",
      );
    }
    await toClient(ex, buf.subarray(0, n), ctx);
    left -= n;
    ex.record.bytesDown += n;
  }
  return keep;
}

/** The last chunk of a chunked body, without trailers. */
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

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
  ex.record.status = stored.status;
  ex.record.reason = stored.reason;
  ex.record.responseFields = fields;
  ex.record.cache = "CF_HIT";
  const type = fieldValue(stored.fields, "content-type");
  if (type !== undefined) ex.record.contentType = type;
  ex.responseStarted = true;
  await toClient(ex, encodeHead(`HTTP/1.1 ${stored.status} ${stored.reason}`, fields), ctx);
  const buf = new Uint8Array(FILE_PIECE);
  let pos = 0;
  for (;;) {
    if (pos < writer.written) {
      const n = await file.read(buf.subarray(0, Math.min(buf.length, writer.written - pos)));
      if (n === null) {
        throw new Aborted("the cache's file ended early", "http_response_incomplete");
      }
      const piece = buf.subarray(0, n);
      await toClient(
        ex,
        chunked
          ? joinBytes(joinBytes(new TextEncoder().encode(`${n.toString(16)}\r\n`), piece), CRLF)
          : piece,
        ctx,
      );
      pos += n;
      ex.record.bytesDown += n;
      continue;
    }
    if (writer.failed) {
      throw new Aborted(
        "the response this one was waiting on broke off",
        "http_response_incomplete",
      );
    }
    if (writer.complete) break;
    await writer.changed();
  }
  if (chunked) await toClient(ex, LAST_CHUNK, ctx);
  return keep;
}

const CRLF = new TextEncoder().encode("\r\n");
