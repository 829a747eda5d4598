/**
 * Destination lists from files (`--deny-dest-file`, `--allow-dest-file`): the block lists people
 * already have, in hosts-file form (`0.0.0.0 ads.example.com`, as Pi-hole and StevenBlack ship
 * them) or one domain per line (squid `dstdomain` files, tinyproxy filters). A listed name stands
 * for itself and every name under it. Pure: the caller reads the files.
 *
 * @module
 */

import { parseIp } from "./ip.ts";

/** Names a hosts file maps to itself; never destinations worth listing. */
const HOSTS_FILE_SELF = new Set([
  "localhost",
  "localhost.localdomain",
  "local",
  "broadcasthost",
  "ip6-localhost",
  "ip6-loopback",
  "ip6-localnet",
  "ip6-mcastprefix",
  "ip6-allnodes",
  "ip6-allrouters",
  "ip6-allhosts",
  "0.0.0.0",
]);

/** A line the list could not use, for the startup line. */
export interface IgnoredLine {
  /** The file. */
  source: string;
  /** 1-based line number. */
  line: number;
  /** The line (cut to 80 characters). */
  text: string;
}

/**
 * A set of names, each matching itself and its subdomains, built to hold a million names in
 * little memory and to answer in well under a microsecond (`deno task lists` measures both).
 * Names are parsed from the file's bytes with no string made per line, and kept as bytes in one
 * arena (a length byte, then the name). An open-addressing table in typed arrays maps a hash of
 * each name, read right to left, to its place there (a Map cost 58 MiB for a million names;
 * this costs 16). One pass over a host, right to left, yields the hash of each of its parent
 * names in turn; a hash that hits is checked against the bytes held.
 */
export class NameList {
  /** Arena offset + 1 of the name in each slot (0: empty); linear probing. */
  #slots = new Int32Array(1024);
  /** The full hash of the name in each slot. */
  #hashes = new Uint32Array(1024);
  #words: number[] = [];
  #arena = new Uint8Array(1 << 16);
  #used = 0;
  #size = 0;
  /** Lines that held no usable name (not counting comments and blank lines). */
  ignored = 0;
  /** The first of them. */
  firstIgnored: IgnoredLine | undefined;
  /** Files read into it. */
  files = 0;

  /** Names held. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds every name of one file's text (see {@linkcode addBytes}).
   *
   * @param text The file's text.
   * @param source The file's name, for the ignored-line report.
   */
  addText(text: string, source: string): void {
    this.addBytes(new TextEncoder().encode(text), source);
  }

  /**
   * Adds every name of one file: hosts-file lines (an address, then names) or one name a line,
   * `#` comments and blank lines skipped; a trailing dot and a leading `*.` are dropped, case
   * is folded. A line with nothing usable is counted (and the first one kept) in `ignored`.
   *
   * @param bytes The file's bytes.
   * @param source The file's name, for the ignored-line report.
   */
  addBytes(bytes: Uint8Array, source: string): void {
    this.files++;
    this.#lines(bytes, source, 0);
  }

  /**
   * Adds every name of one file read in pieces (see {@linkcode addBytes}), so a large file is
   * never held whole.
   *
   * @param chunks The file's bytes, piece by piece.
   * @param source The file's name, for the ignored-line report.
   * @param sizeHint The file's size, if known: the arena is sized once for it.
   */
  async addChunks(
    chunks: AsyncIterable<Uint8Array>,
    source: string,
    sizeHint = 0,
  ): Promise<void> {
    this.files++;
    this.#reserve(sizeHint + 1);
    let carry: Uint8Array = new Uint8Array(0);
    let lineNo = 0;
    // A line longer than any name could make is not kept growing: it is skipped to its end.
    let skipping = false;
    for await (const chunk of chunks) {
      let piece = chunk;
      if (skipping) {
        const lf = piece.indexOf(LF);
        if (lf < 0) continue;
        skipping = false;
        piece = piece.subarray(lf + 1);
      }
      const last = piece.lastIndexOf(LF);
      if (last < 0) {
        carry = concat(carry, piece);
        if (carry.length > MAX_LINE) {
          this.#ignore(source, ++lineNo, carry.subarray(0, 80));
          carry = new Uint8Array(0);
          skipping = true;
        }
        continue;
      }
      lineNo = this.#lines(concat(carry, piece.subarray(0, last + 1)), source, lineNo);
      carry = piece.slice(last + 1);
    }
    if (!skipping) this.#lines(carry, source, lineNo);
  }

  #ignore(source: string, line: number, text: Uint8Array): void {
    this.ignored++;
    this.firstIgnored ??= {
      source,
      line,
      text: new TextDecoder().decode(text).trim().slice(0, 80),
    };
  }

  /** Adds the lines of `bytes`, numbered after `lineNo`; returns the last line number. */
  #lines(bytes: Uint8Array, source: string, lineNo: number): number {
    for (let start = 0; start < bytes.length;) {
      let end = bytes.indexOf(LF, start);
      if (end < 0) end = bytes.length;
      lineNo++;
      if (!this.#line(bytes, start, end)) this.#ignore(source, lineNo, bytes.subarray(start, end));
      start = end + 1;
    }
    return lineNo;
  }

  /** One line: true when it is blank, a comment, or gave at least one name (or self-name). */
  #line(bytes: Uint8Array, from: number, to: number): boolean {
    for (let i = from; i < to; i++) {
      if (bytes[i] === HASH) {
        to = i;
        break;
      }
    }
    // Words: [start, end) pairs, in an array reused line after line.
    const words = this.#words;
    words.length = 0;
    for (let i = from; i < to;) {
      while (i < to && isSpace(bytes[i]!)) i++;
      if (i >= to) break;
      const w = i;
      while (i < to && !isSpace(bytes[i]!)) i++;
      words.push(w, i);
    }
    if (words.length === 0) return true;
    let first = 0;
    if (words.length > 2) {
      // Hosts-file form: an address, then names; anything else has one name alone.
      if (!isAddress(bytes, words[0]!, words[1]!)) return false;
      first = 2;
    } else if (words.length === 2 && isAddress(bytes, words[0]!, words[1]!)) {
      return false; // an address alone
    }
    let used = false;
    for (let k = first; k < words.length; k += 2) {
      if (this.#word(bytes, words[k]!, words[k + 1]!)) used = true;
    }
    return used;
  }

  /** One name: checked, folded and added; true when usable (or a hosts file's own name). */
  #word(bytes: Uint8Array, from: number, to: number): boolean {
    if (to - from >= 2 && bytes[from] === STAR && bytes[from + 1] === DOT) from += 2;
    if (to > from && bytes[to - 1] === DOT) to--;
    const length = to - from;
    if (length < 1 || length > 253) return false;
    // Folded into the arena as it is checked: letters, digits, _ and -, labels of 1 to 63
    // with no hyphen at either end.
    this.#reserve(length + 1);
    const at = this.#used;
    const arena = this.#arena;
    arena[at] = length;
    let label = 0;
    let digitsAndDots = true;
    for (let i = 0; i < length; i++) {
      let c = bytes[from + i]!;
      if (c >= 65 && c <= 90) c += 32;
      if (c === DOT) {
        if (label === 0 || arena[at + i] === HYPHEN) return false;
        label = 0;
      } else {
        const ok = (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === UNDERSCORE ||
          (c === HYPHEN && label > 0);
        if (!ok || ++label > 63) return false;
        if (c < 48 || c > 57) digitsAndDots = false;
      }
      arena[at + 1 + i] = c;
    }
    if (label === 0 || arena[at + length] === HYPHEN) return false;
    const name = arena.subarray(at + 1, at + 1 + length);
    const key = hashBytes(name);
    if (SELF_HASHES.has(key) && HOSTS_FILE_SELF.has(new TextDecoder().decode(name))) return true;
    if (digitsAndDots && parseIp(new TextDecoder().decode(name))) return false; // an address
    if ((this.#size + 1) * 2 > this.#slots.length) this.#grow();
    const mask = this.#slots.length - 1;
    let slot = key & mask;
    for (; this.#slots[slot] !== 0; slot = (slot + 1) & mask) {
      if (this.#hashes[slot] === key && this.#equalsBytes(this.#slots[slot]! - 1, name)) {
        return true; // listed already
      }
    }
    this.#slots[slot] = at + 1;
    this.#hashes[slot] = key;
    this.#used += length + 1;
    this.#size++;
    return true;
  }

  /** Doubles the table (load stays at most one half). */
  #grow(): void {
    const slots = new Int32Array(this.#slots.length * 2);
    const hashes = new Uint32Array(slots.length);
    const mask = slots.length - 1;
    for (let i = 0; i < this.#slots.length; i++) {
      const offset = this.#slots[i]!;
      if (offset === 0) continue;
      let slot = this.#hashes[i]! & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = offset;
      hashes[slot] = this.#hashes[i]!;
    }
    this.#slots = slots;
    this.#hashes = hashes;
  }

  #reserve(n: number): void {
    if (this.#used + n <= this.#arena.length) return;
    const grown = new Uint8Array(Math.max(this.#arena.length * 2, this.#used + n));
    grown.set(this.#arena.subarray(0, this.#used));
    this.#arena = grown;
  }

  #equalsBytes(offset: number, name: Uint8Array): boolean {
    const arena = this.#arena;
    if (arena[offset] !== name.length) return false;
    for (let i = 0; i < name.length; i++) if (arena[offset + 1 + i] !== name[i]) return false;
    return true;
  }

  /** Whether the name at `offset` is `host`'s characters from `from` to its end. */
  #equalsSuffix(offset: number, host: string, from: number): boolean {
    const arena = this.#arena;
    const length = host.length - from;
    if (arena[offset] !== length) return false;
    for (let i = 0; i < length; i++) {
      if (arena[offset + 1 + i] !== host.charCodeAt(from + i)) return false;
    }
    return true;
  }

  /**
   * The listed name that covers `host` (itself or a parent domain), if any.
   *
   * @param host A normalised host name (lower case, no trailing dot).
   * @returns The entry that matched, or undefined.
   */
  match(host: string): string | undefined {
    if (this.#size === 0) return undefined;
    // Right to left: at each dot (and at the start) the hash covers one parent name of host.
    let h = FNV_OFFSET;
    for (let i = host.length - 1; i >= -1; i--) {
      if (i === -1 || host.charCodeAt(i) === DOT) {
        const key = h >>> 0;
        const mask = this.#slots.length - 1;
        for (let slot = key & mask; this.#slots[slot] !== 0; slot = (slot + 1) & mask) {
          if (
            this.#hashes[slot] === key && this.#equalsSuffix(this.#slots[slot]! - 1, host, i + 1)
          ) {
            return i === -1 ? host : host.slice(i + 1);
          }
        }
        if (i === -1) return undefined;
      }
      h = Math.imul(h ^ host.charCodeAt(i), FNV_PRIME);
    }
    return undefined;
  }
}

const LF = 10;
/** Longest line kept whole when a file is read in pieces (a hosts line with many names). */
const MAX_LINE = 64 * 1024;
const DOT = 46;
const HASH = 35;
const STAR = 42;
const HYPHEN = 45;
const UNDERSCORE = 95;
const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 13 || c === 11 || c === 12;
}

/** Whether a word is an IP address (the usual hosts-file ones without parsing). */
function isAddress(bytes: Uint8Array, from: number, to: number): boolean {
  if (to - from === 7 && startsWith(bytes, from, ZEROS)) return true;
  if (to - from === 9 && startsWith(bytes, from, LOOPBACK)) return true;
  const c = bytes[from]!;
  if (!((c >= 48 && c <= 57) || c === 58 || (c | 32) >= 97 && (c | 32) <= 102)) return false;
  return parseIp(new TextDecoder().decode(bytes.subarray(from, to))) !== undefined;
}

const ZEROS = new TextEncoder().encode("0.0.0.0");
const LOOPBACK = new TextEncoder().encode("127.0.0.1");

function startsWith(bytes: Uint8Array, from: number, word: Uint8Array): boolean {
  for (let i = 0; i < word.length; i++) if (bytes[from + i] !== word[i]) return false;
  return true;
}

/** FNV-1a over a name's bytes read right to left (see NameList). */
function hashBytes(name: Uint8Array): number {
  let h = FNV_OFFSET;
  for (let i = name.length - 1; i >= 0; i--) h = Math.imul(h ^ name[i]!, FNV_PRIME);
  return h >>> 0;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const SELF_HASHES = new Set(
  [...HOSTS_FILE_SELF].map((n) => hashBytes(new TextEncoder().encode(n))),
);
