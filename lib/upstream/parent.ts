/**
 * The parent proxy (`--parent`, squid's `cache_peer … parent`, tinyproxy's `Upstream`): where
 * requests go when this proxy sits behind another, and which go direct (`--no-parent`, in the
 * `NO_PROXY` syntax curl and most tools read). Pure: parsing and matching only.
 *
 * @module
 */

import { type Cidr, inRange, parseCidr, parseIp } from "../policy/ip.ts";

/** A parent proxy. */
export interface ParentProxy {
  /** Its host (IPv6 without brackets). */
  host: string;
  /** Its port. */
  port: number;
  /** `host:port` as given, for logs and messages. */
  text: string;
}

/**
 * Parses `--parent http://host:port`.
 *
 * @param text The flag value.
 * @returns The parent, or a one-line reason it is not one.
 */
export function parseParent(text: string): ParentProxy | string {
  const m = /^http:\/\/(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-]+)):(\d{1,5})\/?$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    if (/^https:/i.test(text)) return `"${text}": a parent over TLS is not supported; give http://`;
    if (/@/.test(text)) {
      return `"${text}": credentials do not go in the URL (ps shows it); use --parent-auth-file`;
    }
    return `"${text}" is not http://host:port`;
  }
  const host = (m[1] ?? m[2]!).toLowerCase();
  return { host, port, text: host.includes(":") ? `[${host}]:${port}` : `${host}:${port}` };
}

/** One `--no-parent` entry. */
export type NoParentRule =
  | { kind: "all" }
  | { kind: "name"; name: string; port?: number }
  | { kind: "range"; range: Cidr; port?: number };

/**
 * Parses `--no-parent` values in `NO_PROXY` syntax: a comma list of `*` (everything),
 * `example.com` or `.example.com` (that name and every name under it), an IP address or CIDR
 * range, each optionally with `:PORT` (`[v6]:PORT` for IPv6).
 *
 * @param texts The flag values (each a comma list).
 * @returns The rules, or a one-line reason naming the bad entry.
 */
export function parseNoParent(texts: readonly string[]): NoParentRule[] | string {
  const rules: NoParentRule[] = [];
  for (const entry of texts.flatMap((t) => t.split(","))) {
    const text = entry.trim().toLowerCase();
    if (text === "") continue;
    if (text === "*") {
      rules.push({ kind: "all" });
      continue;
    }
    let body = text;
    let port: number | undefined;
    const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
    if (bracketed) {
      body = bracketed[1]!;
      if (bracketed[2]) port = Number(bracketed[2]);
    } else {
      const m = /^([^:]+):(\d{1,5})$/.exec(text);
      if (m) [body, port] = [m[1]!, Number(m[2])];
    }
    if (port !== undefined && (port < 1 || port > 65535)) return `bad port in "${entry.trim()}"`;
    const withPort = port === undefined ? {} : { port };
    const range = parseCidr(body);
    if (range) {
      rules.push({ kind: "range", range, ...withPort });
      continue;
    }
    const name = body.replace(/^\*?\./, "").replace(/\.$/, "");
    if (!/^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
      return `"${entry.trim()}" is not a name, address or range`;
    }
    rules.push({ kind: "name", name, ...withPort });
  }
  return rules;
}

/**
 * Whether a request to host:port goes direct rather than through the parent.
 *
 * @param rules The `--no-parent` rules.
 * @param host The target host, normalised.
 * @param port The target port.
 * @returns True when a rule matches.
 */
export function goesDirect(rules: readonly NoParentRule[], host: string, port: number): boolean {
  if (rules.length === 0) return false;
  const ip = parseIp(host);
  return rules.some((r) => {
    if (r.kind === "all") return true;
    if (r.port !== undefined && r.port !== port) return false;
    if (r.kind === "range") return ip !== undefined && inRange(r.range, ip);
    return ip === undefined && (host === r.name || host.endsWith(`.${r.name}`));
  });
}

/**
 * The Basic credentials of `user:password` (UTF-8, then base64), as the parent wants them.
 *
 * @param userPassword `user:password`.
 * @returns The base64 text after `Basic `.
 */
export function basic(userPassword: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(userPassword)));
}
