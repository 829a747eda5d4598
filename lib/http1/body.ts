/**
 * Streaming body relay (RFC 9112 §6, §7): Content-Length, chunked (with trailers, strictly
 * parsed and re-framed) and read-until-close bodies, copied piece by piece so no body is ever
 * held whole in memory. It reads from a {@linkcode BufferedReader} and writes to anything with
 * `write`; it opens and closes nothing.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { Deadline } from "../deadline.ts";
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
  /** True when the side stalled past its timeout (rather than failing). */
  readonly timeout: boolean;

  /**
   * @param side Which side failed.
   * @param message What happened.
   * @param options Malformed flag and cause.
   */
  constructor(
    side: "read" | "write",
    message: string,
    options: { malformed?: boolean; timeout?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "BodyError";
    this.side = side;
    this.malformed = options.malformed ?? false;
    this.timeout = options.timeout ?? false;
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
  /** Fail (a timeout BodyError) when the source sends no byte for this long, in ms. */
  readTimeoutMs?: number;
  /** Fail (a timeout BodyError) when the sink takes no byte for this long, in ms. */
  writeTimeoutMs?: number;
  /**
   * Also given each payload piece (the cache's copy), while the piece goes to the sink. It must
   * not fail, and must be done with the piece when its promise settles (the buffer is reused).
   */
  tee?: (piece: Uint8Array) => Promise<void>;
}

/**
 * The stall timeouts of one copy: a single deadline, moved before every read and every write
 * to that side's limit, so a copy costs one timer however many pieces it moves. A read or
 * write left behind by a timeout is abandoned: the caller closes both sockets.
 */
class Stall {
  #readMs: number | undefined;
  #writeMs: number | undefined;
  /** The side being waited on, and its limit, for the error. */
  #side: "read" | "write" = "read";
  #ms = 0;
  #deadline: Deadline | undefined;

  constructor(options: CopyOptions) {
    this.#readMs = options.readTimeoutMs;
    this.#writeMs = options.writeTimeoutMs;
  }

  /**
   * `work`, failed by the side's timeout if it takes longer (or as is when that side has none).
   * (A race against the deadline's promise, which lives as long as the copy, left a reaction on
   * it each time: a 1 GiB chunked upload kept 39 MB of them and ran four times slower.)
   */
  guard<T>(side: "read" | "write", work: Promise<T>): Promise<T> {
    const ms = side === "read" ? this.#readMs : this.#writeMs;
    if (ms === undefined) return work;
    this.#side = side;
    this.#ms = ms;
    const deadline = this.#deadline ??= new Deadline(ms, () =>
      new BodyError(
        this.#side,
        this.#side === "read" ? `no byte for ${this.#ms} ms` : `took no byte for ${this.#ms} ms`,
        { timeout: true },
      ));
    deadline.reset(ms);
    // (A work abandoned after a timeout fails once the caller closes its socket: bound handles it.)
    return deadline.bound(work);
  }

  /** Stops the timer. */
  done(): void {
    this.#deadline?.cancel();
  }
}

const PIECE = 256 * 1024;
/** A buffer that frames any piece as a chunk: the piece, its size line and CRLF. */
const FRAME_SIZE = PIECE + 16;
const CR = 13;
const LF = 10;
const encoder = new TextEncoder();
/** The last chunk of a chunked body, without trailers. */
export const LAST_CHUNK = encoder.encode("0\r\n\r\n");

/**
 * Frames one piece of payload as a chunk (RFC 9112 §7.1): its size in hex, CRLF, the bytes,
 * CRLF.
 *
 * @param piece The payload bytes (not empty: an empty chunk is the last one).
 * @param into A buffer to frame it in, when big enough: a bulk copy reuses one, as a new array
 *   a piece is garbage outside V8's heap, which it collects late (a 256 MiB chunked upload took
 *   the proxy 90 MiB above idle).
 * @returns The chunk: a view of `into`, or a new array.
 */
export function chunk(piece: Uint8Array, into?: Uint8Array): Uint8Array {
  const size = piece.length.toString(16);
  const total = size.length + 2 + piece.length + 2;
  const framed = into && into.length >= total ? into.subarray(0, total) : new Uint8Array(total);
  let i = 0;
  for (; i < size.length; i++) framed[i] = size.charCodeAt(i);
  framed[i++] = CR;
  framed[i++] = LF;
  framed.set(piece, i);
  framed[total - 2] = CR;
  framed[total - 1] = LF;
  return framed;
}

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
async function put(sink: Sink, bytes: Uint8Array, stall?: Stall): Promise<void> {
  try {
    await (stall ? stall.guard("write", writeAll(sink, bytes)) : writeAll(sink, bytes));
  } catch (err) {
    if (err instanceof BodyError) throw err;
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
  /** Where a bulk copy frames its chunks (see chunk). */
  #frame: Uint8Array | undefined;
  #moved = 0;
  /** The copy's stall timeouts. */
  readonly stall: Stall;

  constructor(src: BufferedReader, options: CopyOptions) {
    this.#src = src;
    this.stall = new Stall(options);
  }

  async take(max: number): Promise<Uint8Array | null> {
    if (this.#moved > BULK_AFTER) this.#scratch ??= new Uint8Array(BULK_PIECE);
    try {
      const piece = await this.stall.guard("read", this.#src.read(max, this.#scratch));
      if (piece) this.#moved += piece.length;
      return piece;
    } catch (err) {
      if (err instanceof BodyError) throw err;
      throw new BodyError("read", "the sending side broke off", { cause: err });
    }
  }

  /**
   * Frames a piece as a chunk: past {@linkcode BULK_AFTER}, in a buffer of the copy's own, which
   * the next piece reuses (each piece is written whole before the next is taken).
   */
  frame(piece: Uint8Array): Uint8Array {
    if (this.#moved > BULK_AFTER) this.#frame ??= new Uint8Array(FRAME_SIZE);
    return chunk(piece, this.#frame);
  }
}

/** Writes one piece of payload, framed as a chunk when `out` is chunked. */
function emit(sink: Sink, piece: Uint8Array, out: OutFraming, taker: Taker): Promise<void> {
  return put(sink, out === "raw" ? piece : taker.frame(piece), taker.stall);
}

/** Emits a piece, and gives it to the tee (if any) at the same time. */
function send(
  sink: Sink,
  piece: Uint8Array,
  out: OutFraming,
  taker: Taker,
  tee: CopyOptions["tee"],
): Promise<unknown> {
  const sent = emit(sink, piece, out, taker);
  return tee ? Promise.all([sent, tee(piece)]) : sent;
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
  const taker = new Taker(src, options);
  try {
    let left = length;
    while (left > 0) {
      const piece = await taker.take(Math.min(left, PIECE));
      if (piece === null) {
        throw new BodyError("read", `ended after ${length - left} of ${length} bytes`);
      }
      await send(sink, piece, out, taker, options.tee);
      left -= piece.length;
      options.onBytes?.(piece.length);
    }
    if (out === "chunked") await put(sink, LAST_CHUNK, taker.stall);
    return length;
  } finally {
    taker.stall.done();
  }
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
  const taker = new Taker(src, options);
  try {
    let total = 0;
    for (;;) {
      const piece = await taker.take(PIECE);
      if (piece === null) break;
      await send(sink, piece, out, taker, options.tee);
      total += piece.length;
      options.onBytes?.(piece.length);
    }
    if (out === "chunked") await put(sink, LAST_CHUNK, taker.stall);
    return total;
  } finally {
    taker.stall.done();
  }
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
async function line(src: BufferedReader, max: number, stall: Stall): Promise<string> {
  let bytes: Uint8Array | null;
  try {
    bytes = await stall.guard("read", src.readLine(max));
  } catch (err) {
    if (err instanceof BodyError) throw err;
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
  const taker = new Taker(src, options);
  try {
    return await chunked(src, sink, options, taker);
  } finally {
    taker.stall.done();
  }
}

/** The body of {@linkcode copyChunked}. */
async function chunked(
  src: BufferedReader,
  sink: Sink,
  options: CopyOptions,
  taker: Taker,
): Promise<number> {
  const out = options.out ?? "raw";
  const maxLine = options.maxLineBytes ?? 65536;
  const { stall } = taker;
  let total = 0;
  for (;;) {
    const sizeLine = await line(src, maxLine, stall);
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
      await send(sink, piece, out, taker, options.tee);
      left -= piece.length;
      total += piece.length;
      options.onBytes?.(piece.length);
    }
    if ((await line(src, 2, stall)) !== "") {
      throw new BodyError("read", "chunk data not followed by CRLF", { malformed: true });
    }
  }
  const trailerLines: string[] = [];
  let trailerBytes = 0;
  for (;;) {
    const l = await line(src, maxLine, stall);
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
    await put(sink, Buffer.from(text, "latin1"), stall);
  }
  return total;
}
