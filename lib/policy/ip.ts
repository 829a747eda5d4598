/**
 * IP addresses and CIDR ranges: parsing (IPv4 dotted quads, IPv6 with `::` and embedded IPv4)
 * and matching, with IPv4-mapped IPv6 (`::ffff:127.0.0.1`) treated as the IPv4 address it maps,
 * so no rule can be dodged by spelling an address the other way. Pure.
 *
 * @module
 */

/** An address as 4 or 16 bytes. */
export interface Ip {
  /** 4 or 6. */
  version: 4 | 6;
  /** The address bytes, network order. */
  bytes: Uint8Array;
}

/** A CIDR range. */
export interface Cidr extends Ip {
  /** Prefix length in bits. */
  prefix: number;
  /** The range as written, for messages. */
  text: string;
}

/**
 * A dotted quad: four decimal parts of 0–255, no leading zeros (`010` could mean octal to some
 * readers), nothing else. One pass over the chars: it runs for every client connection (the
 * --allow check), and a split with a regular expression a part cost 3% of the CPU of
 * `Connection: close` traffic (V8's CPU profile).
 */
function parseV4(text: string): Uint8Array | undefined {
  const out = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : DOT;
    if (c === DOT) {
      if (digits === 0 || part === 4) return undefined;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= ZERO && c <= NINE) {
      if (digits > 0 && value === 0) return undefined; // a leading zero
      value = value * 10 + (c - ZERO);
      if (++digits > 3 || value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  return part === 4 ? out : undefined;
}

const DOT = 46;
const ZERO = 48;
const NINE = 57;

function parseV6(text: string): Uint8Array | undefined {
  let head = text;
  let v4: Uint8Array | undefined;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    v4 = parseV4(text.slice(lastColon + 1));
    if (!v4) return undefined;
    head = text.slice(0, lastColon + 1) + "0:0"; // two groups stand for the IPv4 part
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string) => (s === "" ? [] : s.split(":"));
  const left = groups(halves[0]!);
  const right = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...left, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...right];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const g = all[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    const n = parseInt(g, 16);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  }
  if (v4) out.set(v4, 12);
  return out;
}

/**
 * Parses an IP address (no brackets, no zone).
 *
 * @param text `127.0.0.1`, `::1`, `::ffff:10.0.0.1`, …
 * @returns The address (IPv4-mapped IPv6 comes back as IPv4), or undefined.
 */
export function parseIp(text: string): Ip | undefined {
  const v4 = parseV4(text);
  if (v4) return { version: 4, bytes: v4 };
  const v6 = text.includes(":") ? parseV6(text) : undefined;
  if (!v6) return undefined;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? { version: 4, bytes: v6.slice(12) } : { version: 6, bytes: v6 };
}

/**
 * Parses a CIDR range, or a single address (a full-length prefix).
 *
 * @param text `10.0.0.0/8`, `fd00::/8`, `192.0.2.7`, …
 * @returns The range, or undefined.
 */
export function parseCidr(text: string): Cidr | undefined {
  const [addr, bits, extra] = text.trim().split("/");
  if (addr === undefined || extra !== undefined) return undefined;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  // A mapped range like ::ffff:127.0.0.0/104 becomes the IPv4 range 127.0.0.0/8.
  const max = ip.version === 4 ? 32 : 128;
  const mappedShift = ip.version === 4 && addr.includes(":") ? 96 : 0;
  let prefix = max;
  if (bits !== undefined) {
    if (!/^\d{1,3}$/.test(bits)) return undefined;
    prefix = Number(bits) - mappedShift;
    if (prefix < 0 || prefix > max) return undefined;
  }
  return { ...ip, prefix, text: text.trim() };
}

/**
 * Tells whether `ip` lies in `range`.
 *
 * @param range The range.
 * @param ip The address.
 * @returns True if inside.
 */
export function inRange(range: Cidr, ip: Ip): boolean {
  if (range.version !== ip.version) return false;
  let bits = range.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((range.bytes[i]! & mask) !== (ip.bytes[i]! & mask)) return false;
  }
  return true;
}

/** Loopback: 127.0.0.0/8 and ::1 (IPv4-mapped forms match the first). */
export const LOOPBACK: readonly Cidr[] = ["127.0.0.0/8", "::1/128"].map((t) => parseCidr(t)!);

/**
 * Tells whether two addresses are the same (IPv4-mapped forms were already folded by parseIp).
 *
 * @param a One address.
 * @param b The other.
 * @returns True when equal byte for byte.
 */
export function sameIp(a: Ip, b: Ip): boolean {
  return a.version === b.version && a.bytes.every((x, i) => x === b.bytes[i]);
}

/**
 * Tells whether an address is unspecified: 0.0.0.0 (all of 0/8) or `::`. Bound, it listens on
 * every address; dialed, it reaches a listener on any local address.
 *
 * @param ip The address.
 * @returns True for 0/8 and ::.
 */
export function isUnspecified(ip: Ip): boolean {
  return ip.version === 4 ? ip.bytes[0] === 0 : ip.bytes.every((b) => b === 0);
}

/**
 * Tells whether a listen address is reachable from this machine only: a loopback address or
 * the name `localhost`.
 *
 * @param hostname The address or name to bind.
 * @returns True for loopback.
 */
export function isLoopbackListen(hostname: string): boolean {
  return hostname === "localhost" || isLoopback(hostname);
}

/**
 * Tells whether an address is loopback.
 *
 * @param text The address.
 * @returns True for 127/8, ::1 and their mapped forms.
 */
export function isLoopback(text: string): boolean {
  const ip = parseIp(text);
  return ip !== undefined && LOOPBACK.some((r) => inRange(r, ip));
}

/** IPv6 ranges that carry an IPv4 address, and where it sits in the 16 bytes. */
const CARRIERS: readonly { range: Cidr; at: (b: Uint8Array) => Uint8Array }[] = [
  // RFC 6052 well-known NAT64 prefix: the IPv4 address is the last 32 bits.
  { range: parseCidr("64:ff9b::/96")!, at: (b) => b.slice(12) },
  // RFC 8215 local-use NAT64: a /48 puts it in bits 48–63 and 72–87 (RFC 6052 §2.2), but a
  // network may use a /96 inside it: both readings are checked.
  { range: parseCidr("64:ff9b:1::/48")!, at: (b) => Uint8Array.of(b[6]!, b[7]!, b[9]!, b[10]!) },
  { range: parseCidr("64:ff9b:1::/48")!, at: (b) => b.slice(12) },
  // RFC 3056 6to4: bits 16–47.
  { range: parseCidr("2002::/16")!, at: (b) => b.slice(2, 6) },
  // RFC 4380 Teredo: the server in bits 32–63, the client (inverted) in the last 32.
  { range: parseCidr("2001::/32")!, at: (b) => b.slice(4, 8) },
  { range: parseCidr("2001::/32")!, at: (b) => b.slice(12).map((x) => x ^ 0xff) },
  // RFC 4291 §2.5.5.1 IPv4-compatible (deprecated, still routed by some stacks): ::a.b.c.d.
  { range: parseCidr("::/96")!, at: (b) => b.slice(12) },
];

/**
 * The IPv4 addresses an IPv6 address carries in a transition form (NAT64, 6to4, Teredo,
 * IPv4-compatible), which a translator or tunnel may deliver to: a rule about an IPv4 range
 * must hold for them too.
 *
 * @param ip The address.
 * @returns The embedded IPv4 addresses (none for IPv4 or a plain IPv6 address).
 */
export function embeddedIpv4(ip: Ip): Ip[] {
  if (ip.version === 4) return [];
  const out: Ip[] = [];
  for (const c of CARRIERS) {
    if (inRange(c.range, ip)) out.push({ version: 4, bytes: c.at(ip.bytes) });
  }
  return out;
}
