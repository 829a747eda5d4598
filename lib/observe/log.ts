/**
 * Traffic logging: pure formatters (text, json) over an {@linkcode ExchangeRecord}, and
 * {@linkcode createLogger}, which takes its sinks as parameters so tests capture lines. This is
 * the only module that writes to the console. Bodies and credentials never reach a record.
 *
 * @module
 */

// deno-lint-ignore-file no-console -- the one module allowed to print (STYLE.md)

import { hostPort } from "../upstream/dial.ts";
import { type ExchangeObserver, type ExchangeRecord, fanOut, type Logger } from "../exchange.ts";

/** Access log formats. */
export type LogFormat = "text" | "json" | "clf" | "combined" | "csv" | "squid";

/** Every access log format, for flag validation. */
export const LOG_FORMATS: readonly LogFormat[] = [
  "text",
  "json",
  "clf",
  "combined",
  "csv",
  "squid",
];

/** Options of {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Access log format. @default "text" */
  format?: LogFormat;
  /** Print times in UTC instead of local time. @default false */
  utc?: boolean;
  /** Turn the access log off (diagnostics still go out). @default false */
  quiet?: boolean;
  /** Where access log lines go. @default console.log */
  sink?: (line: string) => void;
  /** Where diagnostic lines go. @default console.error */
  diag?: (line: string) => void;
  /** For csv, write the header row first (not when appending to a file that has rows). @default true */
  csvHeader?: boolean;
}

/** Printable ASCII except the backslash: what every format writes as it is. */
const PLAIN = /^[\x20-\x5b\x5d-\x7e]*$/;
const NOT_PLAIN = /[^\x20-\x5b\x5d-\x7e]/gu;

/** `\xHH` for a character up to U+00FF (so raw bytes read as ISO-8859-1 show as bytes), else `\u{H…}`. */
function hexEscape(c: string): string {
  const n = c.codePointAt(0)!;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, "0")}` : `\\u{${n.toString(16)}}`;
}

/** {@linkcode hexEscape}, but a backslash is doubled (readable, and unambiguous). */
function escapeChar(c: string): string {
  return c === "\\" ? "\\\\" : hexEscape(c);
}

/**
 * Escapes a logged value so it cannot forge a line or drive a terminal: every character
 * outside printable ASCII (C0 and C1 controls, DEL, tabs, raw bytes, any non-ASCII) becomes
 * `\xHH` or `\u{H…}`, and a backslash is doubled, so the escaping reads back unambiguously.
 *
 * @param text A value that may hold client or origin text.
 * @returns The value, printable ASCII only.
 */
export function escapeText(text: string): string {
  return PLAIN.test(text) ? text : text.replace(NOT_PLAIN, escapeChar);
}

/**
 * JSON.stringify with every character past U+007E written as a `\uXXXX` escape (JSON.stringify
 * already escapes C0 controls): the same value once parsed, printable ASCII as text.
 *
 * @param value The value.
 * @param indent Indentation, as for JSON.stringify.
 * @returns The JSON text.
 */
export function asciiJson(value: unknown, indent?: number): string {
  const text = JSON.stringify(value, null, indent);
  return NON_ASCII_JSON.test(text)
    ? text.replace(NON_ASCII_JSON_G, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
    : text;
}

const NON_ASCII_JSON = /[\x7f-\uffff]/;
const NON_ASCII_JSON_G = /[\x7f-\uffff]/g;

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/**
 * Formats a clock time as `HH:MM:SS`.
 *
 * @param epochMs The time.
 * @param utc UTC instead of local time.
 * @returns The clock time.
 */
export function clock(epochMs: number, utc: boolean): string {
  // The text of the last second asked for is kept: a busy proxy logs thousands of lines a
  // second, and each one made a Date and four strings (about 250 bytes of garbage a line).
  const second = Math.floor(epochMs / 1000);
  const last = utc ? lastUtc : lastLocal;
  if (last.second === second) return last.text;
  const d = new Date(second * 1000);
  const text = utc
    ? `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
    : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  last.second = second;
  last.text = text;
  return text;
}

/** The last second each kind of {@linkcode clock} formatted, and its text. */
const lastUtc = { second: NaN, text: "" };
const lastLocal = { second: NaN, text: "" };

function ms(value: number | undefined): number | null {
  return value === undefined ? null : Math.round(value * 10) / 10;
}

function requestLine(ex: ExchangeRecord, at: number, utc: boolean): string {
  const how = ex.upstreamUse === "reused" || ex.upstreamUse === "retry"
    ? ` (${ex.upstreamUse})`
    : "";
  const to = ex.upstreamIp === undefined
    ? ""
    : ex.parent !== undefined
    ? ` -> parent ${escapeText(ex.parent)}${how}`
    : ` -> ${ex.upstreamIp}${how}`;
  const who = ex.user === undefined ? ex.clientIp : `${escapeText(ex.user)}@${ex.clientIp}`;
  return `[${clock(at, utc)}] ${escapeText(ex.method)} ${
    escapeText(ex.target)
  } from ${who}${to} #${ex.id}`;
}

/**
 * Text format, first line: `[14:10:02] GET http://example.com/ from 203.0.113.12 ->
 * 198.51.100.34 #7`.
 *
 * @param ex The exchange.
 * @param utc UTC times.
 * @returns The line.
 */
export function formatTextOpen(ex: ExchangeRecord, utc = false): string {
  return requestLine(ex, ex.start + (ex.connectMs ?? 0), utc);
}

/**
 * Text format, last line: `[14:10:03] 200 OK 1256 bytes 12 ms #7`, with the cause in
 * parentheses after the bytes on failure; a tunnel logs bytes each way. When the open line was
 * never written (nothing was dialed), the request line comes first, without `->`.
 *
 * @param ex The exchange.
 * @param utc UTC times.
 * @returns One or two lines.
 */
export function formatTextClose(ex: ExchangeRecord, utc = false): string {
  const end = ex.start + (ex.totalMs ?? 0);
  const cause = ex.error === undefined ? "" : ` (${escapeText(ex.error)})`;
  const tail = ` ${Math.round(ex.totalMs ?? 0)} ms${
    ex.cache ? ` cache ${ex.cache}` : ""
  } #${ex.id}`;
  const stamp = `[${clock(end, utc)}]`;
  const last = ex.tunnel && ex.status === 200
    ? `${stamp} tunnel closed ${ex.bytesUp} bytes up ${ex.bytesDown} bytes down${cause}${tail}`
    : ex.upgraded !== undefined
    ? `${stamp} 101 upgraded to ${
      escapeText(ex.upgraded)
    }, closed ${ex.bytesUp} bytes up ${ex.bytesDown} bytes down${cause}${tail}`
    : `${stamp} ${ex.status ?? 0} ${
      escapeText(ex.reason ?? "")
    } ${ex.bytesDown} bytes${cause}${tail}`;
  return ex.opened ? last : `${requestLine(ex, ex.start, utc)}\n${last}`;
}

/**
 * JSON format: one object per exchange, fields in a stable order.
 *
 * @param ex The exchange.
 * @returns The JSON line.
 */
export function formatJson(ex: ExchangeRecord): string {
  return asciiJson(jsonRecord(ex));
}

/**
 * The JSON format's object for an exchange (also served by the admin API).
 *
 * @param ex The exchange.
 * @returns The object, fields in the stable order.
 */
export function jsonRecord(ex: ExchangeRecord): Record<string, unknown> {
  return {
    time: new Date(ex.start).toISOString(),
    id: ex.id,
    client: hostPort(ex.clientIp, ex.clientPort),
    listener: ex.listener ?? null,
    tls: ex.tls ?? false,
    user: ex.user ?? null,
    method: ex.method,
    url: ex.target,
    upstream: ex.upstreamIp === undefined ? null : hostPort(ex.upstreamIp, ex.upstreamPort!),
    upstream_conn: ex.upstreamUse ?? null,
    parent: ex.parent ?? null,
    status: ex.status ?? null,
    reason: ex.reason ?? null,
    bytes_up: ex.bytesUp,
    bytes_down: ex.bytesDown,
    dns_ms: ms(ex.dnsMs),
    connect_ms: ms(ex.connectMs),
    first_byte_ms: ms(ex.firstByteMs),
    total_ms: ms(ex.totalMs),
    error: ex.error ?? null,
    cache: ex.cache ?? null,
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `[27/Nov/2026:14:10:02 +0000]`, the NCSA time stamp, in UTC or local time. */
function ncsaTime(epochMs: number, utc: boolean): string {
  const d = new Date(epochMs);
  if (utc) {
    return `[${pad(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000]`;
  }
  const off = -d.getTimezoneOffset();
  const sign = off < 0 ? "-" : "+";
  const zone = `${sign}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`;
  return `[${pad(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}]`;
}

/** What a quoted NCSA field escapes: anything not printable ASCII, `"` and `\`. */
const NCSA_ESCAPED = /[^\x20\x21\x23-\x5b\x5d-\x7e]/gu;

/** Escapes a value for a quoted NCSA field: `"`, `\` and every non-printable as `\xHH`. */
function ncsaQuote(value: string): string {
  return value.replace(NCSA_ESCAPED, hexEscape);
}

/**
 * NCSA common log format (what GoAccess, awstats and most log tools read):
 * `client - user [time] "METHOD url HTTP/1.1" status bytes`; `combined` adds the Referer and
 * User-Agent. Bytes are the response body bytes; `-` stands for nothing known.
 *
 * @param ex The exchange.
 * @param utc UTC times (else local time with its offset).
 * @param combined Add Referer and User-Agent.
 * @returns The line.
 */
export function formatClf(ex: ExchangeRecord, utc = false, combined = false): string {
  const request = ex.method === "-" ? "-" : `${ex.method} ${ex.target} ${ex.version ?? "HTTP/1.1"}`;
  const user = ex.user === undefined ? "-" : ncsaQuote(ex.user).replace(/ /g, "\\x20");
  let line = `${ex.clientIp} - ${user} ${ncsaTime(ex.start, utc)} "${ncsaQuote(request)}" ` +
    `${ex.status ?? "-"} ${ex.bytesDown > 0 ? ex.bytesDown : "-"}`;
  if (combined) {
    line += ` "${ncsaQuote(ex.referer ?? "-")}" "${ncsaQuote(ex.userAgent ?? "-")}"`;
  }
  return line;
}

/** The CSV columns, in order (RFC 4180; the header row is written first). */
export const CSV_HEADER =
  "time,id,client,user,method,url,upstream,upstream_conn,status,reason,bytes_up,bytes_down," +
  "dns_ms,connect_ms,first_byte_ms,total_ms,error,listener,tls,parent,cache";

/**
 * One CSV cell. Text is escaped like every format (so no cell holds a line break or a control),
 * and a text cell a spreadsheet would run as a formula (`=`, `+`, `@`, or `-` followed by
 * more) gets a leading `'`, which spreadsheets show as text (OWASP "CSV injection").
 */
export function csvField(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return String(value);
  let text = escapeText(value);
  if (/^[=+@]|^-./.test(text)) text = `'${text}`;
  return /[",]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * CSV, one row per exchange, columns as {@linkcode CSV_HEADER}, quoted per RFC 4180.
 *
 * @param ex The exchange.
 * @returns The row.
 */
export function formatCsv(ex: ExchangeRecord): string {
  return [
    new Date(ex.start).toISOString(),
    ex.id,
    hostPort(ex.clientIp, ex.clientPort),
    ex.user,
    ex.method,
    ex.target,
    ex.upstreamIp === undefined ? undefined : hostPort(ex.upstreamIp, ex.upstreamPort!),
    ex.upstreamUse,
    ex.status,
    ex.reason,
    ex.bytesUp,
    ex.bytesDown,
    ms(ex.dnsMs),
    ms(ex.connectMs),
    ms(ex.firstByteMs),
    ms(ex.totalMs),
    ex.error,
    ex.listener,
    ex.tls ? "tls" : "",
    ex.parent,
    ex.cache,
  ].map(csvField).join(",");
}

/**
 * Squid's native access.log layout, so squid's log tools read it:
 * `time.ms elapsed client code/status bytes method url user hierarchy/peer type`. Codes:
 * TCP_MISS (forwarded), TCP_TUNNEL (CONNECT), TCP_DENIED (refused by policy or auth),
 * TAG_NONE (failed before any upstream), and with `--cache` the cache's result: TCP_HIT,
 * TCP_STALE_HIT, TCP_REFRESH_UNMODIFIED, TCP_REFRESH_MODIFIED, TCP_REFRESH_FAIL_OLD,
 * TCP_CF_HIT (collapsed onto another's fetch). Bytes are the response body bytes.
 *
 * @param ex The exchange.
 * @returns The line.
 */
export function formatSquid(ex: ExchangeRecord): string {
  const status = ex.status ?? 0;
  const code = ex.cache !== undefined
    ? `TCP_${ex.cache}`
    : status === 403 || status === 407 || status === 429
    ? "TCP_DENIED"
    : ex.upstreamIp === undefined
    ? "TAG_NONE"
    : ex.tunnel
    ? "TCP_TUNNEL"
    : "TCP_MISS";
  const time = (ex.start / 1000).toFixed(3);
  const elapsed = String(Math.round(ex.totalMs ?? 0)).padStart(6, " ");
  const peer = ex.upstreamIp === undefined
    ? "HIER_NONE/-"
    : `${ex.parent === undefined ? "HIER_DIRECT" : "FIRSTUP_PARENT"}/${ex.upstreamIp}`;
  const type = ex.contentType?.split(";")[0]?.trim() || "-";
  // Fields are separated by spaces: one inside a value would shift the rest.
  const field = (v: string) => escapeText(v).replace(/ /g, "\\x20");
  return `${time} ${elapsed} ${ex.clientIp} ${code}/${status} ${ex.bytesDown} ${field(ex.method)} ${
    field(ex.target)
  } ${field(ex.user ?? "-")} ${peer} ${field(type)}`;
}

/**
 * Makes the proxy's logger.
 *
 * @param options Format, clock, sinks.
 * @returns The logger.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const formatName = options.format ?? "text";
  const utc = options.utc ?? false;
  const quiet = options.quiet ?? false;
  const sink = options.sink ?? ((line: string) => console.log(line));
  const diag = options.diag ?? ((line: string) => console.error(line));
  const format: (ex: ExchangeRecord) => string = {
    text: (ex: ExchangeRecord) => formatTextClose(ex, utc),
    json: formatJson,
    clf: (ex: ExchangeRecord) => formatClf(ex, utc),
    combined: (ex: ExchangeRecord) => formatClf(ex, utc, true),
    csv: formatCsv,
    squid: formatSquid,
  }[formatName];
  if (formatName === "csv" && !quiet && (options.csvHeader ?? true)) sink(CSV_HEADER);
  return {
    opened(ex) {
      ex.opened = true;
      if (!quiet && formatName === "text") sink(formatTextOpen(ex, utc));
    },
    closed(ex) {
      if (quiet) return;
      sink(format(ex));
    },
    info(message) {
      // Diagnostics may span lines (a stack, the summary table), but never drive a terminal.
      diag(message.split("\n").map(escapeText).join("\n"));
    },
  };
}

/** Flush the log file at least this often while lines are waiting, in ms. */
const FLUSH_MS = 500;
/** …or as soon as this many bytes wait (or the next line might not fit in them). */
const FLUSH_BYTES = 64 * 1024;
const LF = 10;

/**
 * An access log file: lines are buffered and written at least every {@linkcode FLUSH_MS}, when
 * 64 KiB wait, and at close; `reopen` starts a new file under the same name (after logrotate
 * moved the old one). A write that fails (disk full, file gone) is reported once on the
 * diagnostic sink and its lines are dropped; the proxy keeps proxying, and the log resumes (and
 * says so) once writes work again. Each flush is one `write` of whole lines, so lines from
 * several workers appending to one file never interleave within a line.
 */
export class LogFile {
  #path: string;
  #file: Deno.FsFile;
  /** The queued lines, encoded, newlines included; flushed before it would overflow. */
  #buf = new Uint8Array(FLUSH_BYTES);
  #used = 0;
  #lines = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failing = false;
  #diag: (line: string) => void;
  #encoder = new TextEncoder();
  /** Whether the file was empty when opened (a csv header is written only then). */
  readonly empty: boolean;

  /**
   * Opens (creating) the file for appending.
   *
   * @param path The log file.
   * @param diag Where write failures are reported.
   * @throws {Error} when the file cannot be opened.
   */
  constructor(path: string, diag: (line: string) => void = (l) => console.error(l)) {
    this.#path = path;
    this.#diag = diag;
    this.#file = Deno.openSync(path, { append: true, create: true, write: true });
    // The end offset is the size; fstat would need read permission.
    this.empty = this.#file.seekSync(0, Deno.SeekMode.End) === 0;
  }

  /**
   * Queues one line.
   *
   * @param line The line, without its newline.
   */
  write(line: string): void {
    // Encoded now rather than kept as a string until the flush: a waiting line is a rope of
    // pieces, some sliced from an exchange's heads, and it kept those heads alive through the
    // young collections (`--trace-gc-nvp`: 120 KiB promoted a scavenge under keep-alive load
    // with the log, 1 KiB with --quiet; see tests/integration/gc_test.ts).
    const room = line.length * 3 + 1; // UTF-8 takes at most 3 bytes a UTF-16 unit
    if (this.#used + room > this.#buf.length) this.flush();
    if (room > this.#buf.length) {
      this.#writeOut(this.#encoder.encode(line + "\n"), 1);
      return;
    }
    this.#used += this.#encoder.encodeInto(line, this.#buf.subarray(this.#used)).written;
    this.#buf[this.#used++] = LF;
    this.#lines++;
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), FLUSH_MS);
      Deno.unrefTimer(this.#timer as unknown as number); // never keeps the process alive
    }
  }

  /** Writes every queued line now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#lines === 0) return;
    const lines = this.#lines;
    const used = this.#used;
    this.#lines = 0;
    this.#used = 0;
    this.#writeOut(this.#buf.subarray(0, used), lines);
  }

  /** One write of whole lines (several, for a short write); a failure drops them. */
  #writeOut(bytes: Uint8Array, lines: number): void {
    try {
      let off = 0;
      while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
      if (this.#failing) {
        this.#failing = false;
        this.#diag(`--log-file: writing to "${this.#path}" works again`);
      }
    } catch (err) {
      if (!this.#failing) {
        this.#diag(
          `--log-file: cannot write to "${this.#path}": ${(err as Error).message}; ` +
            `dropped ${lines} line(s), and drops more until writing works again`,
        );
      }
      this.#failing = true;
    }
  }

  /** Flushes, then opens the path anew (SIGHUP after logrotate). */
  reopen(): void {
    this.flush();
    try {
      const next = Deno.openSync(this.#path, { append: true, create: true, write: true });
      this.#file.close();
      this.#file = next;
    } catch (err) {
      this.#diag(`--log-file: cannot reopen "${this.#path}": ${(err as Error).message}`);
    }
  }

  /** Flushes and closes. */
  close(): void {
    this.flush();
    try {
      this.#file.close();
    } catch {
      // already closed
    }
  }
}

/**
 * Prints one line (help, version, a CLI error) to stdout or stderr.
 *
 * @param text The text.
 * @param stream Where to. @default "stdout"
 */
export function printLine(text: string, stream: "stdout" | "stderr" = "stdout"): void {
  if (stream === "stderr") console.error(text);
  else console.log(text);
}

/**
 * Opens the access log a config asks for: its file (appending) or stdout, in its format.
 *
 * @param config Format, file, quiet and clock settings.
 * @param watchers Also told of every exchange (summary, metrics, HAR, a worker's reports).
 * @returns The logger, and functions that close and reopen its file.
 * @throws {Error} when the log file cannot be opened.
 */
export function openLog(
  config: { logFormat: LogFormat; logFile?: string; quiet: boolean; utc: boolean },
  watchers: ExchangeObserver[] = [],
): { logger: Logger; close: () => void; reopen: () => void } {
  const file = config.logFile === undefined ? undefined : new LogFile(config.logFile);
  const base = createLogger({
    format: config.logFormat,
    utc: config.utc,
    quiet: config.quiet,
    ...(file ? { sink: (line: string) => file.write(line), csvHeader: file.empty } : {}),
  });
  // The access log first (it marks the record opened), then the others.
  const all = fanOut(base, ...watchers);
  const logger: Logger = {
    opened: (ex) => all.opened!(ex),
    closed: (ex) => all.closed(ex),
    info: (m) => base.info(m),
  };
  return { logger, close: () => file?.close(), reopen: () => file?.reopen() };
}
