/**
 * Pure HTTP/1.1 parsing (RFC 9112): head bytes in, values out, no I/O. Strict where leniency
 * would let a request be read two ways (request smuggling): obs-fold, whitespace before a colon,
 * bare CR and control bytes are all errors. Every failure is a `SyntaxError` whose message is
 * the one-line cause shown to the client.
 *
 * @module
 */

import { Buffer } from "node:buffer";

/** One header field line, name and value as sent (value without surrounding whitespace). */
export type Field = [name: string, value: string];

/** A parsed request head. */
export interface RequestHead {
  /** The method token, case-sensitive (RFC 9110 §9.1). */
  method: string;
  /** The request-target exactly as sent. */
  target: string;
  /** Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  /** Header fields in order, with case and repeats kept. */
  fields: Field[];
}

/** A parsed response head. */
export interface ResponseHead {
  /** Minor version of the upstream's HTTP/1.x. */
  minor: 0 | 1;
  /** The three-digit status code. */
  status: number;
  /** The reason phrase as sent (may be empty). */
  reason: string;
  /** Header fields in order, with case and repeats kept. */
  fields: Field[];
}

/** An absolute-form `http://` target split into its parts. */
export interface HttpTarget {
  /** Host for dialing: a name, an IPv4 address, or an IPv6 address without brackets. */
  hostname: string;
  /** TCP port. */
  port: number;
  /** The authority as sent (without userinfo), used for the rebuilt Host field. */
  authority: string;
  /** Path and query exactly as sent, `/` when the target had none. */
  path: string;
}

const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const TARGET_CHARS = /^[\x21-\x7e\x80-\xff]+$/;
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=%]+$/;

/**
 * Decodes head bytes as ISO-8859-1 so every byte maps to one char and back (obs-text survives).
 *
 * @param bytes Head bytes.
 * @returns A one-byte-per-char string.
 */
export function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** Whether a byte may be in a token (RFC 9110 §5.6.2 tchar), by byte value. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

/**
 * Whether `text` is a token (RFC 9110 §5.6.2): one or more tchars. The one definition of the
 * set, for a method, a field name and `--via-name` alike.
 *
 * @param text The text.
 * @returns true for a token.
 */
export function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) if (TCHAR[text.charCodeAt(i)] !== 1) return false;
  return true;
}

/**
 * Field names seen before, by length, each kept as one string of its own: a head's names are
 * then those same strings, not slices of it. A fresh slice had to have its hash computed (a call
 * out of the JIT's code) at every lookup of it in a Set or Map (a Set of names already checked,
 * which this replaced, and the lower-case cache in headers.ts): about 1 µs a keep-alive request
 * in `perf`, with V8's builtins named from its perf map.
 */
const seenNames: string[][] = [];
/** Longest name kept, and most kept of one length: a client sending junk names fills them. */
const MAX_SEEN_LENGTH = 40;
const MAX_SEEN_PER_LENGTH = 12;

/**
 * The name in `bytes[start, end)` (a token, checked), as the string kept for it if it was seen
 * before; undefined if a byte is not a token char.
 */
function fieldName(
  bytes: Uint8Array,
  text: string,
  start: number,
  end: number,
): string | undefined {
  const len = end - start;
  const seen = len <= MAX_SEEN_LENGTH ? seenNames[len] : undefined;
  if (seen) {
    next: for (let j = 0; j < seen.length; j++) {
      const s = seen[j]!;
      for (let k = 0; k < len; k++) if (s.charCodeAt(k) !== bytes[start + k]) continue next;
      return s;
    }
  }
  for (let k = start; k < end; k++) if (TCHAR[bytes[k]!] === 0) return undefined;
  if (len > MAX_SEEN_LENGTH || (seen && seen.length >= MAX_SEEN_PER_LENGTH)) {
    return text.slice(start, end);
  }
  // A string of its own, not a slice that would keep this head's text alive.
  const name = String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
  if (seen) seen.push(name);
  else seenNames[len] = [name];
  return name;
}

/** Returns `line` from `from` with spaces and tabs (OWS, RFC 9110 §5.6.3) trimmed off both ends. */
function trimOws(line: string, from: number): string {
  let a = from;
  let b = line.length;
  while (a < b && (line.charCodeAt(a) === 32 || line.charCodeAt(a) === 9)) a++;
  while (b > a && (line.charCodeAt(b - 1) === 32 || line.charCodeAt(b - 1) === 9)) b--;
  return line.slice(a, b);
}

/**
 * Splits a head into lines (CRLF or bare LF). One pass over the chars finds the line ends and
 * any forbidden byte, so a clean head (nearly all) skips the per-value check; otherwise the
 * lines are split again and checked one by one so the error names the field. (The pass took
 * the place of a regular expression over the whole head and a split by another: a 240-byte
 * response head went from 1.6 to 0.5 µs.)
 */
function splitLines(text: string): { lines: string[]; clean: boolean } {
  const lines: string[] = [];
  const n = text.length;
  let start = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c >= 32 && c !== 127) continue;
    if (c === 10) {
      lines.push(text.slice(start, i > start && text.charCodeAt(i - 1) === 13 ? i - 1 : i));
      start = i + 1;
    } else if ((c === 13 && text.charCodeAt(i + 1) !== 10) || (c !== 13 && c !== 9)) {
      return { lines: checkedLines(text), clean: false };
    }
  }
  // The head ends in a blank line: drop it.
  lines.length -= 1;
  return { lines, clean: true };
}

/** The lines of a head that holds a forbidden byte; a bare CR is the error found here. */
function checkedLines(text: string): string[] {
  const lines = text.split("\n");
  // The head ends in a blank line: drop it and the empty string after the final LF.
  lines.length -= 2;
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line.includes("\r")) throw new SyntaxError("bare CR in head");
    lines[i] = line;
  }
  return lines;
}

/** A head split into its start line and the rest, by {@linkcode splitHead}. */
interface SplitHead {
  /** The start line. */
  line: string;
  /** The fields, when read straight from the bytes by {@linkcode quickHead}. */
  fields: Field[] | undefined;
  /** Otherwise the field lines, for {@linkcode parseFields}. */
  rest: readonly string[];
  /** Whether no field line holds a control byte. */
  clean: boolean;
}

const NO_LINES: readonly string[] = [];

/**
 * Splits a head into its start line and its fields: straight from the bytes when the head is
 * clean and common (nearly all), else into lines. The field lines are parsed after the start
 * line is checked ({@linkcode headFields}), so the start line's errors come first.
 */
function splitHead(bytes: Uint8Array, maxFields: number): SplitHead {
  const text = latin1(bytes);
  const quick = quickHead(bytes, text, maxFields);
  if (quick) return quick;
  const { lines, clean } = splitLines(text);
  return { line: lines[0] ?? "", fields: undefined, rest: lines.slice(1), clean };
}

/** The fields of a split head: those read already, or its field lines parsed. */
function headFields(head: SplitHead, maxFields: number): Field[] {
  return head.fields ?? parseFields(head.rest, maxFields, head.clean);
}

/**
 * Reads a head straight from its bytes, in one pass: the start line and each field's name and
 * value are sliced from the text where the bytes say, with no string a line and no second scan
 * of a value (a 240-byte response head: about half the time and a third less garbage than by
 * lines). It only takes the common, clean case: at anything unusual (a control byte, a bare
 * CR, folding, a line without a colon, a name that is not a token, too many fields) it gives
 * up, and the line-by-line path reads the head again and names what is wrong.
 *
 * @returns The head, or undefined to take the line-by-line path.
 */
function quickHead(bytes: Uint8Array, text: string, maxFields: number): SplitHead | undefined {
  const n = bytes.length;
  // The start line: no control byte but its CR before the LF.
  let i = 0;
  for (; i < n; i++) {
    const b = bytes[i]!;
    if (b < 32 || b === 127) break;
  }
  let lineEnd = i;
  if (bytes[i] === CR && bytes[i + 1] === LF) i += 2;
  else if (bytes[i] === LF) i += 1;
  else return undefined;
  const line = text.slice(0, lineEnd);
  const fields: Field[] = [];
  const done: SplitHead = { line, fields, rest: NO_LINES, clean: true };
  for (;;) {
    const start = i;
    if (bytes[i] === CR && bytes[i + 1] === LF) return i + 2 === n ? done : undefined;
    if (bytes[i] === LF) return i + 1 === n ? done : undefined;
    // The name: token bytes up to the colon (a space, a control byte or no colon: the slow path).
    for (; i < n; i++) {
      const b = bytes[i]!;
      if (b === COLON || b <= 32 || b === 127) break;
    }
    if (bytes[i] !== COLON || i === start || fields.length >= maxFields) return undefined;
    const colon = i;
    // The value: from the first byte that is not OWS to the line end, no control but HTAB.
    i++;
    while (bytes[i] === SP || bytes[i] === HTAB) i++;
    const from = i;
    for (; i < n; i++) {
      const b = bytes[i]!;
      if (b < 32 ? b !== HTAB : b === 127) break;
    }
    lineEnd = i;
    if (bytes[i] === CR && bytes[i + 1] === LF) i += 2;
    else if (bytes[i] === LF) i += 1;
    else return undefined;
    let to = lineEnd;
    while (to > from && (bytes[to - 1] === SP || bytes[to - 1] === HTAB)) to--;
    const name = fieldName(bytes, text, start, colon);
    if (name === undefined) return undefined;
    fields.push([name, text.slice(from, to)]);
  }
}

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;

/**
 * Parses header field lines (RFC 9112 §5).
 *
 * @param lines The lines after the start line.
 * @param maxFields Most field lines accepted.
 * @param clean The caller checked that no line holds a control byte.
 * @returns The fields in order.
 */
export function parseFields(
  lines: readonly string[],
  maxFields = Infinity,
  clean = false,
): Field[] {
  if (lines.length > maxFields) {
    throw new RangeError(`more than ${maxFields} header fields`);
  }
  const fields: Field[] = [];
  for (const line of lines) {
    const first = line.charCodeAt(0);
    if (first === 32 || first === 9) {
      throw new SyntaxError("obsolete line folding in header");
    }
    const colon = line.indexOf(":");
    if (colon < 0) throw new SyntaxError(`header line without colon: ${printable(line)}`);
    const name = line.slice(0, colon);
    // (Only unusual heads and trailers come here: quickHead reads the rest, names and all.)
    if (!isToken(name)) {
      throw new SyntaxError(
        /[ \t]$/.test(name)
          ? `whitespace before colon in header ${printable(name.trimEnd())}`
          : `invalid header name ${printable(name)}`,
      );
    }
    const value = trimOws(line, colon + 1);
    if (!clean && !FIELD_VALUE.test(value)) {
      throw new SyntaxError(`control character in header ${name}`);
    }
    fields.push([name, value]);
  }
  return fields;
}

/**
 * Parses a request head (RFC 9112 §3).
 *
 * @param bytes The head, up to and including its blank line.
 * @param maxFields Most header field lines accepted. @default Infinity
 * @returns The request line parts and fields.
 * @throws {SyntaxError} naming what is malformed.
 */
export function parseRequestHead(bytes: Uint8Array, maxFields = Infinity): RequestHead {
  const head = splitHead(bytes, maxFields);
  const { line } = head;
  // Three parts between two single spaces (indexOf: a split called out of the JIT's code).
  const sp1 = line.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : line.indexOf(" ", sp1 + 1);
  if (sp2 < 0 || line.indexOf(" ", sp2 + 1) >= 0) {
    throw new SyntaxError(`malformed request line: ${printable(line)}`);
  }
  const sent = line.slice(0, sp1);
  const known = knownMethod(sent);
  const method = known ?? sent;
  const target = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  // A common method is a token; a head read by quickHead has no control byte or DEL in its
  // start line, so its target (between two spaces) has only the chars TARGET_CHARS allows.
  if (known === undefined && !isToken(method)) {
    throw new SyntaxError(`malformed method: ${printable(method)}`);
  }
  if (head.fields === undefined && !TARGET_CHARS.test(target)) {
    throw new SyntaxError(`malformed request target: ${printable(target)}`);
  }
  const minor = parseVersion(version);
  if (minor === undefined) {
    throw new SyntaxError(`unsupported HTTP version: ${printable(version)}`);
  }
  return { method, target, minor, fields: headFields(head, maxFields) };
}

/**
 * Parses a response head (RFC 9112 §4).
 *
 * @param bytes The head, up to and including its blank line.
 * @returns The status line parts and fields.
 * @throws {SyntaxError} naming what is malformed.
 */
export function parseResponseHead(bytes: Uint8Array): ResponseHead {
  const head = splitHead(bytes, Infinity);
  const { line } = head;
  // The usual status line of a clean head (no control byte but HTAB) read without a regular
  // expression; anything else, and every error, by the expression.
  if (
    head.clean && line.startsWith("HTTP/1.") && line.charCodeAt(8) === SP &&
    (line.length === 12 || line.charCodeAt(12) === SP)
  ) {
    const status = digits(line.slice(9, 12), 3);
    const minor = line.charCodeAt(7) === 49 ? 1 : line.charCodeAt(7) === 48 ? 0 : undefined;
    if (status >= 100 && minor !== undefined) {
      return {
        minor,
        status,
        reason: line.length === 12 ? "" : line.slice(13),
        fields: headFields(head, Infinity),
      };
    }
  }
  const m = /^(HTTP\/\d\.\d) (\d{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/.exec(line);
  if (!m) throw new SyntaxError(`malformed status line: ${printable(line)}`);
  const minor = parseVersion(m[1]!);
  if (minor === undefined) throw new SyntaxError(`unsupported HTTP version: ${m[1]}`);
  const status = digits(m[2]!, 3);
  if (status < 100) throw new SyntaxError(`invalid status code ${m[2]}`);
  return {
    minor,
    status,
    reason: m[3] ?? "",
    fields: headFields(head, Infinity),
  };
}

/**
 * The number a string of 1 to `max` ASCII digits spells, else -1: a loop, not `Number()`, which
 * called out of the JIT's code for each fresh string (a port, a status code; seen in `perf`).
 */
export function digits(text: string, max: number): number {
  const n = text.length;
  if (n === 0 || n > max) return -1;
  let value = 0;
  for (let i = 0; i < n; i++) {
    const d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value;
}

/** Methods as string constants (see {@linkcode knownMethod}). */
const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"];

/**
 * The constant for a common method, else undefined: a constant's hash is known, so the
 * Sets the method is looked up in (the idempotent ones, the cache's) do not compute one for a
 * fresh string each request.
 */
function knownMethod(method: string): string | undefined {
  for (let i = 0; i < METHODS.length; i++) if (METHODS[i] === method) return METHODS[i]!;
  return undefined;
}

function parseVersion(version: string): 0 | 1 | undefined {
  if (version === "HTTP/1.1") return 1;
  if (version === "HTTP/1.0") return 0;
  return undefined;
}

/**
 * Splits an absolute-form `http://` target (RFC 9112 §3.2.2) without normalising the path:
 * `/a/./b`, `%2F` and `;` reach the origin as sent (RFC 9110 §7.7).
 *
 * @param target The request-target.
 * @returns Host, port, authority and path.
 * @throws {SyntaxError} for another scheme, userinfo, a fragment or a bad authority.
 */
export function parseHttpTarget(target: string): HttpTarget {
  const m = target.startsWith("http://")
    ? httpParts(target)
    : /^([A-Za-z][A-Za-z0-9+\-.]*):\/\/([^/?#]*)(.*)$/.exec(target);
  if (!m) {
    if (target.startsWith("/") || target === "*") {
      throw new SyntaxError(
        "this is a proxy: send absolute-form requests (GET http://host/path), e.g. with curl -x",
      );
    }
    throw new SyntaxError(`malformed request target: ${printable(target)}`);
  }
  const scheme = m[1]!.toLowerCase();
  const authority = m[2]!;
  let path = m[3]!;
  if (scheme === "https") {
    throw new SyntaxError("https:// targets must be tunnelled with CONNECT (curl -x does this)");
  }
  if (scheme !== "http") throw new SyntaxError(`unsupported URL scheme "${scheme}"`);
  if (path.includes("#")) throw new SyntaxError("fragment (#) in request target");
  if (authority.includes("@")) {
    throw new SyntaxError("userinfo (user@) in request target is not allowed");
  }
  const { hostname, port } = parseHostPort(authority, 80);
  if (path === "") path = "/";
  else if (path.startsWith("?")) path = "/" + path;
  return { hostname, port, authority, path };
}

/**
 * The parts of a target that starts with `http://`, as the expression in parseHttpTarget would
 * match them (scheme, authority up to the first `/`, `?` or `#`, the rest), without running it.
 */
function httpParts(target: string): [string, string, string, string] {
  let end = 7;
  for (; end < target.length; end++) {
    const c = target.charCodeAt(end);
    if (c === 47 || c === 63 || c === 35) break; // / ? #
  }
  return [target, "http", target.slice(7, end), target.slice(end)];
}

/**
 * Parses a CONNECT authority-form target `host:port` (RFC 9112 §3.2.3); the port is required.
 *
 * @param target The request-target.
 * @returns Host (IPv6 without brackets) and port.
 * @throws {SyntaxError} for a missing port, a path, or a bad host.
 */
export function parseConnectTarget(target: string): { hostname: string; port: number } {
  if (target.includes("/") || target.includes("@")) {
    throw new SyntaxError(`CONNECT needs an authority-form target (host:port), got ${target}`);
  }
  const { hostname, port, hadPort } = parseHostPortParts(target);
  if (!hadPort) throw new SyntaxError(`CONNECT target without a port: ${printable(target)}`);
  return { hostname, port: port ?? 0 };
}

function parseHostPort(authority: string, defaultPort: number) {
  const { hostname, port } = parseHostPortParts(authority);
  return { hostname, port: port ?? defaultPort };
}

function parseHostPortParts(authority: string) {
  let host: string;
  let portText: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close < 0) throw new SyntaxError(`malformed IPv6 host in ${printable(authority)}`);
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) {
      throw new SyntaxError(`malformed authority ${printable(authority)}`);
    }
    if (rest !== "") portText = rest.slice(1);
    if (!/^[0-9A-Fa-f:.]+$/.test(host) || !host.includes(":")) {
      throw new SyntaxError(`malformed IPv6 host in ${printable(authority)}`);
    }
  } else {
    const colon = authority.lastIndexOf(":");
    host = colon < 0 ? authority : authority.slice(0, colon);
    if (colon >= 0) portText = authority.slice(colon + 1);
    if (host === "" || !REG_NAME.test(host)) {
      throw new SyntaxError(`malformed host in ${printable(authority || "(empty)")}`);
    }
  }
  let port: number | undefined;
  if (portText !== undefined && portText !== "") {
    port = digits(portText, 5);
    if (port < 1 || port > 65535) throw new SyntaxError(`invalid port in ${printable(authority)}`);
  }
  return { hostname: host, port, hadPort: portText !== undefined && portText !== "" };
}

/** Quotes a string for an error message, escaping anything not printable and cutting it. */
export function printable(text: string, max = 80): string {
  const cut = text.length > max ? text.slice(0, max) + "…" : text;
  return JSON.stringify(cut);
}
