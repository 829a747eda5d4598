/**
 * Header rules for a proxy: which fields are hop-by-hop (RFC 9110 §7.6.1), how Via is extended
 * (§7.6.3), and how a message's body is framed (RFC 9112 §6). Pure functions over field lists.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Field, RequestHead, ResponseHead } from "./parse.ts";

/** Fields that describe one connection, never forwarded (plus any the Connection field lists). */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "proxy-authorization",
  "proxy-authenticate",
]);

/** This proxy's pseudonym in Via (RFC 9110 §7.6.3). */
export const VIA_NAME = "http-proxy";

/**
 * Returns every value of field `name` (case-insensitive), comma lists split and trimmed.
 *
 * @param fields The fields.
 * @param name Lower-case field name.
 * @returns The list members in order.
 */
export function listValues(fields: readonly Field[], name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of fields) {
    if (n.length === name.length && n.toLowerCase() === name) {
      for (const part of v.split(",")) {
        const t = part.trim();
        if (t !== "") out.push(t);
      }
    }
  }
  return out;
}

/**
 * Returns the first value of field `name` (case-insensitive), whole.
 *
 * @param fields The fields.
 * @param name Lower-case field name.
 * @returns The value, or undefined when the field is absent.
 */
export function fieldValue(fields: readonly Field[], name: string): string | undefined {
  for (const [n, v] of fields) {
    if (n.length === name.length && n.toLowerCase() === name) return v;
  }
  return undefined;
}

/**
 * Tells whether a list field (Connection, Proxy-Connection) holds `token`.
 *
 * @param fields The fields.
 * @param name Lower-case field name.
 * @param token Lower-case token.
 * @returns True if present.
 */
export function hasToken(fields: readonly Field[], name: string, token: string): boolean {
  return listValues(fields, name).some((v) => v.toLowerCase() === token);
}

/**
 * Removes hop-by-hop fields, the fields named in Connection, and any extra names given.
 *
 * @param fields The received fields.
 * @param extra More lower-case names to drop (e.g. `host`, `expect`).
 * @returns A new list, order and case kept.
 */
export function endToEnd(fields: readonly Field[], extra: readonly string[] = []): Field[] {
  const listed = listValues(fields, "connection").map((t) => t.toLowerCase());
  const out: Field[] = [];
  for (const field of fields) {
    const n = field[0].toLowerCase();
    if (HOP_BY_HOP.has(n) || extra.includes(n) || (listed.length > 0 && listed.includes(n))) {
      continue;
    }
    out.push(field);
  }
  return out;
}

/**
 * Adds this proxy to Via: extends the last Via line, or appends one.
 *
 * @param fields Fields to change in place.
 * @param minor Minor version of the message as received (RFC 9110 §7.6.3 received-protocol).
 * @param name This proxy's pseudonym (`--via-name`). @default "http-proxy"
 */
export function addVia(fields: Field[], minor: 0 | 1, name = VIA_NAME): void {
  const entry = `1.${minor} ${name}`;
  for (let i = fields.length - 1; i >= 0; i--) {
    const f = fields[i]!;
    if (f[0].toLowerCase() === "via") {
      // A new tuple: the received field stays as it was (the HAR log shows it).
      fields[i] = [f[0], f[1] === "" ? entry : `${f[1]}, ${entry}`];
      return;
    }
  }
  fields.push(["Via", entry]);
}

/**
 * Tells whether the client wants its connection kept after this exchange (RFC 9112 §9.3).
 *
 * @param head The request head.
 * @returns True for keep-alive.
 */
export function clientWantsKeepAlive(head: RequestHead): boolean {
  const close = hasToken(head.fields, "connection", "close") ||
    hasToken(head.fields, "proxy-connection", "close");
  if (close) return false;
  if (head.minor === 1) return true;
  return hasToken(head.fields, "connection", "keep-alive") ||
    hasToken(head.fields, "proxy-connection", "keep-alive");
}

/**
 * The Connection field an answer carries (RFC 9112 §9.3, §9.6): `close` when the connection
 * ends after it, `keep-alive` for an HTTP/1.0 client whose connection stays (1.1 keeps by
 * default), nothing otherwise.
 *
 * @param keep Whether the connection stays open after this answer.
 * @param minor The client's HTTP minor version.
 * @returns The fields to add (none or one).
 */
export function connectionFields(keep: boolean, minor: 0 | 1): Field[] {
  if (!keep) return [["Connection", "close"]];
  return minor === 0 ? [["Connection", "keep-alive"]] : [];
}

/** How a body is delimited. */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/**
 * Reads Content-Length, accepting repeats only when all values are equal (RFC 9112 §6.3 item 5).
 *
 * @returns The length, or undefined when absent.
 * @throws {SyntaxError} for a malformed or conflicting value.
 */
function contentLength(fields: readonly Field[]): number | undefined {
  let length: number | undefined;
  for (const [n, v] of fields) {
    if (n.toLowerCase() !== "content-length") continue;
    for (const part of v.split(",")) {
      const t = part.trim();
      if (!/^\d{1,15}$/.test(t)) throw new SyntaxError(`malformed Content-Length "${v}"`);
      const n2 = Number(t);
      if (length !== undefined && length !== n2) {
        throw new SyntaxError("conflicting Content-Length values");
      }
      length = n2;
    }
  }
  return length;
}

/**
 * Folds a Content-Length list (`5, 5`) or repeated equal fields into one field with one value,
 * in place of the first, so a receiver that reads lists differently never sees one. The values
 * must already have been checked equal (see requestFraming, responseFraming).
 *
 * @param fields The fields to forward; returned as they are when there is nothing to fold.
 * @returns The fields with at most one Content-Length.
 */
export function foldContentLength(fields: Field[]): Field[] {
  let seen = 0;
  let list = false;
  for (const [n, v] of fields) {
    if (n.length === 14 && n.toLowerCase() === "content-length") {
      seen++;
      if (v.includes(",")) list = true;
    }
  }
  if (seen === 0 || (seen === 1 && !list)) return fields;
  const length = contentLength(fields)!;
  const out: Field[] = [];
  let done = false;
  for (const f of fields) {
    if (f[0].toLowerCase() !== "content-length") out.push(f);
    else if (!done) {
      out.push([f[0], String(length)]);
      done = true;
    }
  }
  return out;
}

/**
 * Reads Transfer-Encoding: only a lone final `chunked` is accepted, since any other coding
 * would have to be forwarded as is and could be read differently downstream.
 *
 * @returns True when chunked, false when absent.
 * @throws {SyntaxError} for any other coding or for chunked twice.
 */
function isChunked(fields: readonly Field[], minor: 0 | 1): boolean {
  const codings = listValues(fields, "transfer-encoding");
  const present = fields.some(([n]) => n.toLowerCase() === "transfer-encoding");
  if (!present) return false;
  if (minor === 0) {
    // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
    throw new SyntaxError("Transfer-Encoding in an HTTP/1.0 message");
  }
  if (codings.length !== 1 || codings[0]!.toLowerCase() !== "chunked") {
    throw new SyntaxError(`unsupported Transfer-Encoding "${codings.join(", ")}"`);
  }
  return true;
}

/**
 * Frames a request body (RFC 9112 §6.3): chunked, Content-Length, or none.
 *
 * @param head The request head.
 * @returns The framing.
 * @throws {SyntaxError} for framing that could smuggle a request (CL with TE, bad CL, …).
 */
export function requestFraming(head: RequestHead): Framing {
  const chunked = isChunked(head.fields, head.minor);
  const length = contentLength(head.fields);
  if (chunked && length !== undefined) {
    throw new SyntaxError("both Content-Length and Transfer-Encoding");
  }
  if (chunked) return { kind: "chunked" };
  if (length !== undefined && length > 0) return { kind: "length", length };
  return { kind: "none" };
}

/**
 * Frames a response body (RFC 9112 §6.3).
 *
 * @param head The response head.
 * @param method The request method (a HEAD response has no body).
 * @returns The framing.
 * @throws {SyntaxError} for ambiguous framing (CL with TE, conflicting CL, …).
 */
export function responseFraming(head: ResponseHead, method: string): Framing {
  const chunked = isChunked(head.fields, head.minor);
  const length = contentLength(head.fields);
  if (chunked && length !== undefined) {
    throw new SyntaxError("both Content-Length and Transfer-Encoding");
  }
  if (method === "HEAD" || head.status < 200 || head.status === 204 || head.status === 304) {
    return { kind: "none" };
  }
  if (chunked) return { kind: "chunked" };
  if (length !== undefined) return length === 0 ? { kind: "none" } : { kind: "length", length };
  return { kind: "close" };
}

/**
 * Serialises a head: the start line, the fields, and the blank line, byte for byte (ISO-8859-1,
 * so obs-text in values goes out as it came in).
 *
 * @param startLine Request line or status line, without CRLF.
 * @param fields The fields.
 * @returns The head bytes.
 */
export function encodeHead(startLine: string, fields: readonly Field[]): Uint8Array {
  let text = startLine + "\r\n";
  for (const [n, v] of fields) text += n + ": " + v + "\r\n";
  text += "\r\n";
  // UTF-8 and ISO-8859-1 agree on ASCII, and the native encoder is the faster of the two.
  return ASCII.test(text) ? encoder.encode(text) : new Uint8Array(Buffer.from(text, "latin1"));
}

// deno-lint-ignore no-control-regex -- the whole ASCII range, controls included
const ASCII = /^[\x00-\x7f]*$/;
const encoder = new TextEncoder();
