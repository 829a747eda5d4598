/**
 * Streaming body relay (RFC 9112 §6, §7): Content-Length, chunked (with trailers, strictly
 * parsed and re-framed) and read-until-close bodies, copied piece by piece so no body is ever
 * held whole in memory. It reads from a {@linkcode BufferedReader} and writes to anything with
 * `write`; it opens and closes nothing.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { BufferedReader } from "./head.ts";
import { endToEnd } from "./headers.ts";
import { type Field, latin1, parseFields } from "./parse.ts";

/** Where body bytes go: Deno.Conn's `write`. */
export type Sink = Pick<Deno.Conn, "write">;

/** A body copy failed on one side: `read` (source ended, broke or is malformed) or `write`. */
export class BodyError extends Error {
  /** Which side failed. */
  readonly side: "read" | "write";
  /** True when the source sent malformed framing (rather than just stopping). */
  readonly malformed: boolean;

  /**
   * @param side Which side failed.
   * @param message What happened.
   * @param options Malformed flag and cause.
   */
  constructor(
    side: "read" | "write",
    message: string,
    options: { malformed?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "BodyError";
    this.side = side;
    this.malformed = options.malformed ?? false;
  }
}

/** How the copied body is framed on the way out. */
export type OutFraming = "raw" | "chunked";

/** Options of the copy functions. */
export interface CopyOptions {
  /** Framing written to the sink: the bytes as they are, or chunked. @default "raw" */
  out?: OutFraming;
  /** Largest chunk-size line and trailer section accepted, in bytes. @default 65536 */
  maxLineBytes?: number;
  /** Called with the number of payload bytes after each piece is written. */
  onBytes?: (n: number) => void;
}

const PIECE = 256 * 1024;
const encoder = new TextEncoder();
const CRLF = encoder.encode("\r\n");
const LAST_CHUNK = encoder.encode("0\r\n\r\n");

/**
 * Writes every byte of `bytes` to `sink`.
 *
 * @param sink The destination.
 * @param bytes The bytes.
 */
export function writeAll(sink: Sink, bytes: Uint8Array): Promise<void> {
  // Not async: one write usually takes everything, and an extra async frame per write costs.
  return sink.write(bytes).then((n) =>
    n < bytes.length ? writeAll(sink, bytes.subarray(n)) : undefined
  );
}

/**
 * Joins a head and a small body into one buffer, so they go out in one write.
 *
 * @param head Head bytes.
 * @param body Body bytes.
 * @returns Both, in one array.
 */
export function joinBytes(head: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** Writes to the sink, turning any failure into a write-side BodyError. */
async function put(sink: Sink, bytes: Uint8Array): Promise<void> {
  try {
    await writeAll(sink, bytes);
  } catch (err) {
    throw new BodyError("write", "the receiving side closed", { cause: err });
  }
}

/** Past this many bytes, a copy reads into a large buffer of its own (a bulk transfer). */
const BULK_AFTER = 64 * 1024;
/** That buffer's size: big reads for big bodies, allocated only while one is copied. */
const BULK_PIECE = 256 * 1024;

/**
 * Reads from the source, turning any failure into a read-side BodyError. A copy passes the
 * bytes it moved so far: past {@linkcode BULK_AFTER} it reads into its own large buffer.
 */
class Taker {
  #src: BufferedReader;
  #scratch: Uint8Array | undefined;
  #moved = 0;

  constructor(src: BufferedReader) {
    this.#src = src;
  }

  async take(max: number): Promise<Uint8Array | null> {
    if (this.#moved > BULK_AFTER) this.#scratch ??= new Uint8Array(BULK_PIECE);
    try {
      const piece = await this.#src.read(max, this.#scratch);
      if (piece) this.#moved += piece.length;
      return piece;
    } catch (err) {
      throw new BodyError("read", "the sending side broke off", { cause: err });
    }
  }
}

/** Writes one piece of payload, framed as a chunk when `out` is chunked. */
function emit(sink: Sink, piece: Uint8Array, out: OutFraming): Promise<void> {
  if (out === "raw") return put(sink, piece);
  const size = encoder.encode(piece.length.toString(16) + "\r\n");
  const framed = new Uint8Array(size.length + piece.length + 2);
  framed.set(size);
  framed.set(piece, size.length);
  framed.set(CRLF, size.length + piece.length);
  return put(sink, framed);
}

/**
 * Copies exactly `length` bytes.
 *
 * @param src The source reader.
 * @param sink The destination.
 * @param length Bytes to copy.
 * @param options Output framing and progress callback.
 * @returns The number of payload bytes copied (equals `length`).
 * @throws {BodyError} when the source ends early or either side fails.
 */
export async function copyLength(
  src: BufferedReader,
  sink: Sink,
  length: number,
  options: CopyOptions = {},
): Promise<number> {
  const out = options.out ?? "raw";
  const taker = new Taker(src);
  let left = length;
  while (left > 0) {
    const piece = await taker.take(Math.min(left, PIECE));
    if (piece === null) {
      throw new BodyError("read", `ended after ${length - left} of ${length} bytes`);
    }
    await emit(sink, piece, out);
    left -= piece.length;
    options.onBytes?.(piece.length);
  }
  if (out === "chunked") await put(sink, LAST_CHUNK);
  return length;
}

/**
 * Copies until the source closes (a response without length, RFC 9112 §6.3 item 8).
 *
 * @param src The source reader.
 * @param sink The destination.
 * @param options Output framing and progress callback.
 * @returns The number of payload bytes copied.
 * @throws {BodyError} when either side fails.
 */
export async function copyUntilClose(
  src: BufferedReader,
  sink: Sink,
  options: CopyOptions = {},
): Promise<number> {
  const out = options.out ?? "raw";
  const taker = new Taker(src);
  let total = 0;
  for (;;) {
    const piece = await taker.take(PIECE);
    if (piece === null) break;
    await emit(sink, piece, out);
    total += piece.length;
    options.onBytes?.(piece.length);
  }
  if (out === "chunked") await put(sink, LAST_CHUNK);
  return total;
}

/**
 * Fields a trailer must not carry (RFC 9110 §6.5.1): framing, routing, authentication,
 * request modifiers, response control and content metadata. A recipient that merged them into
 * the head could be steered by them, so they are dropped, never forwarded.
 */
const NOT_IN_TRAILERS = [
  "content-length",
  "content-encoding",
  "content-type",
  "content-range",
  "host",
  "authorization",
  "proxy-authorization",
  "cookie",
  "set-cookie",
  "www-authenticate",
  "authentication-info",
  "cache-control",
  "expect",
  "max-forwards",
  "pragma",
  "range",
  "if-match",
  "if-none-match",
  "if-modified-since",
  "if-unmodified-since",
  "if-range",
  "age",
  "expires",
  "date",
  "location",
  "retry-after",
  "vary",
  "warning",
];

const CHUNK_SIZE_LINE = /^([0-9A-Fa-f]{1,15})[ \t]*(;[\t\x20-\x7e\x80-\xff]*)?$/;

/** Reads a CRLF line of chunked framing, mapping failures to read-side BodyErrors. */
async function line(src: BufferedReader, max: number): Promise<string> {
  let bytes: Uint8Array | null;
  try {
    bytes = await src.readLine(max);
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new BodyError("read", `malformed chunked body: ${err.message}`, { malformed: true });
    }
    throw new BodyError("read", "the sending side broke off", { cause: err });
  }
  if (bytes === null) throw new BodyError("read", "ended inside chunked framing");
  return latin1(bytes);
}

/**
 * Decodes a chunked body (RFC 9112 §7.1) and writes it re-framed: as chunks (trailers kept,
 * minus hop-by-hop fields) or as raw bytes (trailers dropped, for an HTTP/1.0 receiver).
 *
 * @param src The source reader.
 * @param sink The destination.
 * @param options Output framing, line cap and progress callback.
 * @returns The number of payload bytes copied.
 * @throws {BodyError} malformed (bad size, bad line ending, bad trailer) or either side failing.
 */
export async function copyChunked(
  src: BufferedReader,
  sink: Sink,
  options: CopyOptions = {},
): Promise<number> {
  const out = options.out ?? "raw";
  const maxLine = options.maxLineBytes ?? 65536;
  const taker = new Taker(src);
  let total = 0;
  for (;;) {
    const sizeLine = await line(src, maxLine);
    const m = CHUNK_SIZE_LINE.exec(sizeLine);
    if (!m) {
      throw new BodyError("read", `malformed chunk size line ${JSON.stringify(sizeLine)}`, {
        malformed: true,
      });
    }
    let left = parseInt(m[1]!, 16);
    if (left === 0) break;
    while (left > 0) {
      const piece = await taker.take(Math.min(left, PIECE));
      if (piece === null) throw new BodyError("read", "ended inside a chunk");
      await emit(sink, piece, out);
      left -= piece.length;
      total += piece.length;
      options.onBytes?.(piece.length);
    }
    if ((await line(src, 2)) !== "") {
      throw new BodyError("read", "chunk data not followed by CRLF", { malformed: true });
    }
  }
  const trailerLines: string[] = [];
  let trailerBytes = 0;
  for (;;) {
    const l = await line(src, maxLine);
    if (l === "") break;
    trailerBytes += l.length + 2;
    if (trailerBytes > maxLine) {
      throw new BodyError("read", "trailer section too large", { malformed: true });
    }
    trailerLines.push(l);
  }
  let trailers: Field[];
  try {
    trailers = endToEnd(parseFields(trailerLines), NOT_IN_TRAILERS);
  } catch (err) {
    throw new BodyError("read", `malformed trailer: ${(err as Error).message}`, {
      malformed: true,
    });
  }
  if (out === "chunked") {
    const text = "0\r\n" + trailers.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\n";
    await put(sink, Buffer.from(text, "latin1"));
  }
  return total;
}
