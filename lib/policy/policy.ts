/**
 * Policy: which clients are served, which destinations and CONNECT ports may be reached. Pure checks that throw
 * a 403 naming the rule; the caller decides when to ask (a client before a byte of its request
 * is read, a target before dialing, so no denied request reaches an upstream).
 *
 * @module
 */

import type { NameList } from "./name_list.ts";
import { Forbidden, ProxyError } from "../errors.ts";
import { listValues, VIA_NAME } from "../http1/headers.ts";
import type { Field } from "../http1/parse.ts";
import type { HostAddresses, OwnListeners } from "./host_addresses.ts";
import {
  type Cidr,
  embeddedIpv4,
  inRange,
  type Ip,
  isLoopbackListen,
  LOOPBACK,
  parseCidr,
  parseIp,
} from "./ip.ts";

/**
 * Checks a client address against `--allow` / `--open` (default: loopback only, or anyone
 * when proxy authentication is on and no `--allow` narrows it).
 *
 * @param address The client IP as the socket reports it.
 * @param rule The allowed ranges and the open flag.
 * @throws {Forbidden} (closing the connection) when the client is not allowed.
 */
export function checkClient(
  address: string,
  rule: { allow: readonly Cidr[]; open: boolean; auth: readonly string[]; authFile?: string },
): void {
  // With proxy authentication and no --allow, credentials are the gate: any client may try.
  const authed = rule.auth.length > 0 || rule.authFile !== undefined;
  if (rule.open || (authed && rule.allow.length === 0)) return;
  const ip = parseIp(address);
  const ranges = rule.allow.length > 0 ? rule.allow : LOOPBACK;
  if (ip && ranges.some((r) => inRange(r, ip))) return;
  throw new Forbidden(
    `client ${address} is not allowed (${
      rule.allow.length > 0 ? "not in --allow" : "only loopback clients are served without --allow"
    })`,
    { close: true },
  );
}

/** Allowed CONNECT ports: a set, or every port. */
export type PortRule = ReadonlySet<number> | "any";

/**
 * Checks a CONNECT target port.
 *
 * @param port The requested port.
 * @param allowed The configured rule (`--connect-ports`).
 * @throws {Forbidden} when the port is not allowed.
 */
export function checkConnectPort(port: number, allowed: PortRule): void {
  if (allowed === "any" || allowed.has(port)) return;
  throw new Forbidden(
    `CONNECT to port ${port} is not allowed (allowed: ${[...allowed].join(", ")}; ` +
      `see --connect-ports)`,
  );
}

/**
 * Refuses a request that already passed through this proxy: one of its Via entries names us
 * (RFC 9110 §7.6.3), so forwarding it would loop. Chained instances need distinct names.
 *
 * @param fields The request fields.
 * @param name This proxy's pseudonym (`--via-name`). @default "http-proxy"
 * @throws {ProxyError} 508 Loop Detected.
 */
export function checkLoop(fields: readonly Field[], name = VIA_NAME): void {
  for (const entry of listValues(fields, "via")) {
    const receivedBy = entry.split(/[ \t]+/)[1];
    if (receivedBy?.toLowerCase() === name.toLowerCase()) {
      throw new ProxyError(508, `loop detected: the request already passed through ${name}`, {
        kind: "http_request_denied",
        close: true,
      });
    }
  }
}

/** One `--deny-dest` / `--allow-dest` entry. */
export interface DestRule {
  /** The entry as written, for messages. */
  text: string;
  /** A host name (exact), a `*.suffix`, an address range, or any host. */
  kind: "name" | "suffix" | "range" | "any";
  /** Lower-case name or suffix (without `*.`) for name and suffix rules. */
  name?: string;
  /** The range for range rules. */
  range?: Cidr;
  /** The port the rule is limited to, if any. */
  port?: number;
}

/**
 * Parses a destination rule: `example.com`, `*.example.com` (the name and every name under
 * it), `198.51.100.0/24`, `192.0.2.7`, `[fd00::]/8`, each optionally with `:PORT`, or `:PORT` alone.
 *
 * @param text The entry.
 * @returns The rule, or undefined when malformed.
 */
export function parseDestRule(text: string): DestRule | undefined {
  let body = text.trim();
  let port: number | undefined;
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(body)!;
  // A trailing :N is a port unless what precedes it is a bare IPv6 address or range.
  if (
    m[2] !== undefined &&
    (m[1] === "" || !m[1]!.includes(":") || m[1]!.endsWith("]") || /\]\/\d+$/.test(m[1]!))
  ) {
    port = Number(m[2]);
    if (port < 1 || port > 65535) return undefined;
    body = m[1]!;
  }
  const withPort = (rule: DestRule): DestRule => (port === undefined ? rule : { ...rule, port });
  if (body === "") return port === undefined ? undefined : withPort({ text, kind: "any" });
  const range = parseCidr(body.replace(/^\[([^\]]+)\]/, "$1"));
  if (range) return withPort({ text, kind: "range", range });
  const name = normalizeHost(body.startsWith("*.") ? body.slice(2) : body);
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(name)) {
    return undefined;
  }
  return withPort({ text, kind: body.startsWith("*.") ? "suffix" : "name", name });
}

/**
 * Lower-cases a host name and drops one trailing dot, so `EXAMPLE.com.` and `example.com` are
 * one destination to every rule (and to the resolver).
 *
 * @param host The host as sent.
 * @returns The normalised name.
 */
export function normalizeHost(host: string): string {
  const lower = host.toLowerCase();
  return lower.endsWith(".") ? lower.slice(0, -1) : lower;
}

/**
 * Address ranges denied by default: link-local, which holds most cloud metadata services
 * (AWS, GCP, Azure, DigitalOcean, Oracle at 169.254.169.254), and the providers' metadata and
 * platform addresses outside it: AWS's IPv6 one, Alibaba's 100.100.100.200, Oracle's legacy
 * 192.0.0.192 and Azure's platform endpoint 168.63.129.16.
 */
const LINK_LOCAL = [
  "169.254.0.0/16",
  "fe80::/10",
  "fd00:ec2::254/128",
  "100.100.100.200/32",
  "192.0.0.192/32",
  "168.63.129.16/32",
].map((t) => parseCidr(t)!);

/** The `--block-private` preset (IPv4-mapped IPv6 forms are caught by normalisation). */
const PRIVATE = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "127.0.0.0/8",
  "::1/128",
  "169.254.0.0/16",
  "fe80::/10",
  "fc00::/7",
  "100.64.0.0/10",
  "0.0.0.0/8",
  "::/128",
  // Not private, but never a public web destination: benchmarking (RFC 2544), IETF protocol
  // assignments, multicast, reserved and broadcast, IPv6 site-local and multicast.
  "198.18.0.0/15",
  "192.0.0.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "fec0::/10",
  "ff00::/8",
].map((t) => parseCidr(t)!);

/** Whether a rule matches; a range rule matches when any of `ips` lies in it. */
function matches(rule: DestRule, host: string, ips: readonly Ip[], port: number): boolean {
  if (rule.port !== undefined && rule.port !== port) return false;
  switch (rule.kind) {
    case "any":
      return true;
    case "name":
      return host === rule.name;
    case "suffix":
      return host === rule.name || host.endsWith("." + rule.name);
    case "range":
      return ips.some((ip) => inRange(rule.range!, ip));
  }
}

/** Parsed addresses by text: the same few origins are checked on every request. */
const ipCache = new Map<string, Ip | undefined>();

/** parseIp with a bounded cache (the hot path checks the same host for every request). */
function parsedIp(text: string): Ip | undefined {
  if (ipCache.has(text)) return ipCache.get(text);
  const ip = parseIp(text);
  if (ipCache.size >= 1024) ipCache.clear();
  ipCache.set(text, ip);
  return ip;
}

/** Destination rules as configured. */
export interface DestConfig {
  /** `--deny-dest` entries. */
  denyDest: readonly DestRule[];
  /** `--allow-dest` entries (when any, only these are reachable). */
  allowDest: readonly DestRule[];
  /** `--block-private`. */
  blockPrivate: boolean;
  /** Names from `--deny-dest-file` lists, when any were given. */
  denyList?: NameList;
  /** Names from `--allow-dest-file` lists (when given, they allow like `--allow-dest` names). */
  allowList?: NameList;
}

/** Where a request comes from and what this host is, for the rules about the host itself. */
export interface LocalView {
  /** The host's own addresses. */
  host: HostAddresses;
  /** This process's own listeners (proxy and admin). */
  own: OwnListeners;
  /** Whether the client is on loopback (this machine). */
  loopbackClient: boolean;
}

/** Names that mean this host by definition (RFC 6761 §6.3), not by what a DNS server says. */
function isLocalhostName(host: string): boolean {
  return host === "localhost" || host.endsWith(".localhost");
}

/**
 * Checks a destination before anything is sent to it. The order: an explicit `--deny-dest`
 * match denies; this proxy's own listeners (proxy and admin ports) are denied to everyone; an
 * explicit `--allow-dest` range allows (it can open a hole in the defaults and the preset);
 * the host's own addresses are denied to clients that are not on loopback, and to everyone when
 * reached through a name other than `localhost` (DNS rebinding), unless an `--allow-dest` name
 * names it; link-local and metadata addresses are denied, and with `--block-private` the
 * private ranges; else, when `--allow-dest` lists anything, the rest is denied.
 *
 * @param rules The configured rules.
 * @param host The requested host (normalised).
 * @param address The address about to be dialed, or undefined for the check before DNS.
 * @param port The port.
 * @param local The client's side and the host's addresses; without it, no host-local rule.
 * @throws {Forbidden} naming the rule.
 */
export function checkDestination(
  rules: DestConfig,
  host: string,
  address: string | undefined,
  port: number,
  local?: LocalView,
): void {
  const ip = parsedIp(address ?? host);
  // The address, and the IPv4 one it carries in a transition form (NAT64, 6to4, Teredo, …):
  // a deny rule or a default about IPv4 holds for both.
  const ips = ip ? withCarried(ip) : NONE;
  // (Every request passes here: the common path makes no closure and no array.)
  const denied = rules.denyDest.length > 0
    ? rules.denyDest.find((r) => matches(r, host, ips, port))
    : undefined;
  if (denied) deny(host, address, `by --deny-dest ${denied.text}`);
  const named = parsedIp(host) === undefined;
  const listed = named ? rules.denyList?.match(host) : undefined;
  if (listed !== undefined) deny(host, address, `by --deny-dest-file (listed: ${listed})`);
  // Only the address itself can be opened by a range, not what it carries. A list entry allows
  // as an --allow-dest name does.
  const allowedByList = named && rules.allowList?.match(host) !== undefined;
  const allowed =
    (rules.allowDest.length > 0
      ? rules.allowDest.find((r) => matches(r, host, ip ? [ip] : [], port))
      : undefined) ??
      (allowedByList ? LISTED : undefined);
  const allowing = rules.allowDest.length > 0 || rules.allowList !== undefined;
  if (address === undefined && ip === undefined) {
    // Before DNS only names and ports can be judged. When no --allow-dest rule could allow
    // this name (none names it, and none is a range its addresses could fall in), it is
    // refused now, so no rule-less name is ever looked up.
    const ranges = rules.allowDest.some((r) => r.kind === "range");
    if (allowing && !allowed && !ranges) deny(host, address, NOT_ALLOWED);
    return;
  }
  const own = ip && local?.own.find(ip, port);
  if (own) {
    deny(
      host,
      address,
      `(it is ${own === "admin" ? "this proxy's admin listener" : "this proxy itself"})`,
    );
  }
  // Only an address range may open a hole in the defaults: a name is whatever its DNS says.
  if (allowed?.kind === "range") return;
  if (ip && local?.host.has(ip)) {
    if (!local.loopbackClient) {
      deny(
        host,
        address,
        "(the proxy host's own addresses are reachable only by clients on it; see --allow-dest)",
      );
    }
    // A name that resolves here may be DNS rebinding: a page's own name now pointing at us.
    if (named && !isLocalhostName(host) && allowed === undefined) {
      deny(
        host,
        address,
        "(a name that resolves to this host could be DNS rebinding; use localhost or the " +
          "address, or name it in --allow-dest)",
      );
    }
  }
  const metadata = carrying(LINK_LOCAL, ips);
  if (metadata) {
    deny(
      host,
      address,
      `(link-local and cloud metadata addresses are denied by default${via(ip, metadata.carried)})`,
    );
  }
  const preset = rules.blockPrivate ? carrying(PRIVATE, ips) : undefined;
  if (preset) {
    deny(host, address, `by --block-private (${preset.range.text}${via(ip, preset.carried)})`);
  }
  if (allowing && !allowed) deny(host, address, NOT_ALLOWED);
}

const NONE: readonly Ip[] = [];

/** An address with the IPv4 ones it carries, by address (the cache hands out the same one). */
const carriedOf = new WeakMap<Ip, readonly Ip[]>();

function withCarried(ip: Ip): readonly Ip[] {
  let ips = carriedOf.get(ip);
  if (ips === undefined) {
    ips = [ip, ...embeddedIpv4(ip)];
    carriedOf.set(ip, ips);
  }
  return ips;
}

/** The first range that holds one of `ips`, and which one it holds. */
function carrying(
  ranges: readonly Cidr[],
  ips: readonly Ip[],
): { range: Cidr; carried: Ip } | undefined {
  for (const range of ranges) {
    for (const ip of ips) if (inRange(range, ip)) return { range, carried: ip };
  }
  return undefined;
}

/** ", carried in it" when the address that matched is one the requested address carries. */
function via(ip: Ip | undefined, matched: Ip): string {
  return matched === ip ? "" : ", carried in it";
}

/** Refuses a destination, naming the rule. */
function deny(host: string, address: string | undefined, why: string): never {
  const shown = address === undefined || address === host ? host : `${host} (${address})`;
  throw new Forbidden(`destination ${shown} is denied ${why}`);
}

/** What an --allow-dest-file entry allows as: a name rule (it opens no hole in the defaults). */
const LISTED: DestRule = { text: "--allow-dest-file", kind: "name" };

const NOT_ALLOWED = "(not in --allow-dest or --allow-dest-file)";

/** What {@linkcode describePolicy} reads of the configuration. */
export interface PolicySettings extends DestConfig {
  /** `--allow` ranges. */
  allow: readonly Cidr[];
  /** `--open`. */
  open: boolean;
  /** Listen addresses (on loopback only, nobody beyond this machine can connect). */
  listen: readonly { hostname: string; port: number }[];
  /** TLS listen addresses. */
  listenTls?: readonly { hostname: string; port: number }[];
}

/**
 * Says in one line who may use the proxy and where they may go, and warns in a second line
 * when clients beyond this machine can reach private networks.
 *
 * @param config The policy settings.
 * @param users How many proxy users are configured (0: no authentication).
 * @returns The lines to log at startup.
 */
export function describePolicy(config: PolicySettings, users: number): string[] {
  const clients = config.open
    ? "anyone (--open)"
    : config.allow.length > 0
    ? config.allow.map((r) => r.text).join(", ")
    : users > 0
    ? "anyone with credentials"
    : "loopback only";
  const auth = users > 0 ? `Basic proxy authentication (${users} user(s))` : "no authentication";
  const privateNets = config.blockPrivate ? "blocked (--block-private)" : "reachable";
  const dest = `this host: clients on it only; link-local and metadata: denied; ` +
    `private networks: ${privateNets}` +
    (config.allowDest.length > 0 ? `; only --allow-dest (${config.allowDest.length})` : "") +
    (config.allowList ? `; only --allow-dest-file (${listSize(config.allowList)})` : "") +
    (config.denyDest.length > 0 ? `; --deny-dest (${config.denyDest.length})` : "") +
    (config.denyList ? `; --deny-dest-file (${listSize(config.denyList)})` : "");
  const lines = [`policy: clients ${clients}, ${auth}; destinations: ${dest}`];
  const reachable = [...config.listen, ...(config.listenTls ?? [])].some((a) =>
    !isLoopbackListen(a.hostname)
  );
  const beyond = reachable && (config.open || (users > 0 && config.allow.length === 0) ||
    config.allow.some((r) => !LOOPBACK.some((l) => l.version === r.version && covers(l, r))));
  const clear = config.listen.find((a) => !isLoopbackListen(a.hostname));
  if (clear && users > 0) {
    const where = clear.hostname.includes(":") ? `[${clear.hostname}]` : clear.hostname;
    lines.push(
      `warning: on ${where}:${clear.port} proxy passwords cross the network in the clear (Basic ` +
        "credentials are only base64); serve that network with --listen-tls instead",
    );
  }
  if (beyond && !config.blockPrivate) {
    lines.push(
      "warning: clients beyond loopback can reach every private network this host reaches " +
        "(10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10) through the proxy; pass " +
        "--block-private unless that is what they are for",
    );
  }
  return lines;
}

/** A list's size for the policy line: names, files, and the first line it could not use. */
function listSize(list: NameList): string {
  const first = list.firstIgnored;
  return `${list.size.toLocaleString("en-US")} names from ${list.files} file(s)` +
    (first
      ? `, ${list.ignored} line(s) ignored, first ${first.source}:${first.line} ${
        JSON.stringify(first.text).replace(
          /[^\x20-\x7e]/g,
          (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
        )
      }`
      : "");
}

/** Whether `outer` contains all of `inner`. */
function covers(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && inRange(outer, inner);
}
