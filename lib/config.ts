/**
 * Configuration: the flags (parsed with `node:util` parseArgs), their defaults, and validation
 * with one-line errors that name the flag. Pure: it reads no file and opens no socket.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Cidr, parseCidr } from "./ip.ts";
import { LOG_FORMATS, type LogFormat } from "./log.ts";
import { type DestRule, normalizeHost, parseDestRule } from "./policy.ts";
import type { PortRule } from "./policy.ts";

/** The program's version, printed by `--version` and in the startup line. */
export const VERSION = "0.1.0";

/** A listen address. */
export interface ListenAddr {
  /** IP address or name to bind (IPv6 without brackets). */
  hostname: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

/** Everything the proxy is configured with. */
export interface Config {
  /** Addresses to listen on, one listener each. @default [127.0.0.1:8081] */
  listen: ListenAddr[];
  /** Ports CONNECT may reach. @default {443} */
  connectPorts: PortRule;
  /** Largest request or response head, in bytes. @default 65536 */
  maxHeaderBytes: number;
  /** Time allowed for a whole request head to arrive. @default 10000 */
  headerTimeoutMs: number;
  /** Time a keep-alive client connection may sit idle between requests. @default 60000 */
  idleTimeoutMs: number;
  /** Time allowed to open an upstream connection. @default 10000 */
  connectTimeoutMs: number;
  /** Time allowed for the upstream's response head, after the request was sent. @default 60000 */
  responseTimeoutMs: number;
  /** Time exchanges in flight get to finish at shutdown. @default 5000 */
  graceMs: number;
  /** Idle upstream connections kept per (host, port); 0 turns reuse off. @default 16 */
  maxIdlePerHost: number;
  /** How long an idle upstream connection is kept. @default 15000 */
  upstreamIdleTimeoutMs: number;
  /** Access log format. @default "text" */
  logFormat: LogFormat;
  /** Append the access log to this file instead of stdout. */
  logFile?: string;
  /** No access log. @default false */
  quiet: boolean;
  /** Log times in UTC. @default false */
  utc: boolean;
  /** Accepting threads (isolates) sharing the listen ports with SO_REUSEPORT. @default 1 */
  workers: number | "auto";
  /** Client ranges served; empty means loopback only. @default [] */
  allow: Cidr[];
  /** Serve every client (overrides `allow`). @default false */
  open: boolean;
  /** Relay TRACE (refused with 405 otherwise). @default false */
  allowTrace: boolean;
  /** Destinations never reached. @default [] */
  denyDest: DestRule[];
  /** When any, the only destinations reached (besides what the defaults deny). @default [] */
  allowDest: DestRule[];
  /** Deny private, loopback, CGNAT and unspecified addresses as destinations. @default false */
  blockPrivate: boolean;
  /** `user:password` pairs clients must present (Basic proxy auth). @default [] */
  auth: string[];
  /** A file of `user:pbkdf2-sha256$…` lines, made with `hash-password`. */
  authFile?: string;
  /** Most client connections in total; 0 means no limit. @default 10000 */
  maxConnections: number;
  /** Most client connections from one IP; 0 means no limit. @default 0 */
  maxConnectionsPerIp: number;
  /** Requests per second per client IP; 0 means no limit. @default 0 */
  rate: number;
  /** Most header fields in a request. @default 100 */
  maxHeaderFields: number;
  /** Longest request line, in bytes. @default 8192 */
  maxRequestLine: number;
  /** A CONNECT tunnel with no byte either way for this long is closed. @default 900000 */
  tunnelIdleTimeoutMs: number;
  /** A tunnel one side of which has finished sending is closed after this long idle. @default 60000 */
  halfClosedTimeoutMs: number;
  /** A request or response body with no new byte for this long is abandoned. @default 900000 */
  readTimeoutMs: number;
  /** A peer (a client, mostly) that takes no byte for this long is dropped. @default 900000 */
  writeTimeoutMs: number;
  /** Print the per-host summary this often (besides at exit and on SIGUSR2); 0: never. @default 0 */
  summaryEveryMs: number;
  /** Also write the summary as JSON to this file (replaced each time). */
  summaryJson?: string;
  /** Where the admin listener (metrics, dashboard, API) listens; off when absent. */
  admin?: ListenAddr;
  /** Admin users as `user:pbkdf2-sha256$…` lines (hash-password); every admin path asks then. */
  adminAuthFile?: string;
  /**
   * Admin `user:password` pairs, from the HTTP_PROXY_ADMIN_AUTH environment variable (never a
   * flag: a command line shows in `ps`). @default []
   */
  adminAuth: string[];
  /** Host names the admin listener answers to besides its own address. @default [] */
  adminHosts: string[];
  /** Write the exchanges as HAR 1.2 to this file. */
  har?: string;
  /** This proxy's pseudonym in Via, and what loop detection looks for. @default "http-proxy" */
  viaName: string;
}

/** Defaults, as `--help` prints them. */
export const DEFAULTS: Config = {
  listen: [{ hostname: "127.0.0.1", port: 8081 }],
  connectPorts: new Set([443]),
  maxHeaderBytes: 64 * 1024,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  connectTimeoutMs: 10_000,
  responseTimeoutMs: 60_000,
  graceMs: 5_000,
  maxIdlePerHost: 16,
  upstreamIdleTimeoutMs: 15_000,
  logFormat: "text",
  quiet: false,
  utc: false,
  workers: 1,
  allow: [],
  open: false,
  allowTrace: false,
  denyDest: [],
  allowDest: [],
  blockPrivate: false,
  auth: [],
  maxConnections: 10_000,
  maxConnectionsPerIp: 0,
  rate: 0,
  maxHeaderFields: 100,
  maxRequestLine: 8192,
  tunnelIdleTimeoutMs: 900_000,
  halfClosedTimeoutMs: 60_000,
  readTimeoutMs: 900_000,
  writeTimeoutMs: 900_000,
  summaryEveryMs: 0,
  viaName: "http-proxy",
  adminAuth: [],
  adminHosts: [],
};

/** A bad command line: the message is one line naming the flag; exit code 2. */
export class UsageError extends Error {
  /**
   * @param message The one-line cause.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** What the command line asks for. */
export type Command = { kind: "help" } | { kind: "version" } | { kind: "run"; config: Config };

const FLAGS = {
  listen: { type: "string", multiple: true },
  "connect-ports": { type: "string" },
  "max-header-bytes": { type: "string" },
  "header-timeout": { type: "string" },
  "idle-timeout": { type: "string" },
  "connect-timeout": { type: "string" },
  "response-timeout": { type: "string" },
  grace: { type: "string" },
  "max-idle-per-host": { type: "string" },
  "upstream-idle-timeout": { type: "string" },
  "log-format": { type: "string" },
  "log-file": { type: "string" },
  quiet: { type: "boolean" },
  workers: { type: "string" },
  allow: { type: "string", multiple: true },
  open: { type: "boolean" },
  "allow-trace": { type: "boolean" },
  "deny-dest": { type: "string", multiple: true },
  "allow-dest": { type: "string", multiple: true },
  "block-private": { type: "boolean" },
  auth: { type: "string", multiple: true },
  "max-connections": { type: "string" },
  "max-connections-per-ip": { type: "string" },
  rate: { type: "string" },
  "max-header-fields": { type: "string" },
  "max-request-line": { type: "string" },
  "tunnel-idle-timeout": { type: "string" },
  "half-closed-timeout": { type: "string" },
  "read-timeout": { type: "string" },
  "write-timeout": { type: "string" },
  "summary-every": { type: "string" },
  "summary-json": { type: "string" },
  admin: { type: "string" },
  "admin-auth-file": { type: "string" },
  "admin-host": { type: "string", multiple: true },
  har: { type: "string" },
  "via-name": { type: "string" },
  "auth-file": { type: "string" },
  utc: { type: "boolean" },
  config: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** The `--help` text. */
export const HELP =
  `http-proxy ${VERSION}: a forward HTTP/1.1 proxy with CONNECT tunnels and traffic logs

Usage: http-proxy [flags]
       http-proxy hash-password USER     (reads the password on stdin, prints an --auth-file line)

Flags (defaults in brackets):
  --allow CIDR             clients to serve, repeatable: 192.168.1.0/24, fd00::/8, 10.1.2.3
                                                                    [loopback only]
  --open                   serve every client (an open proxy: only on a trusted network)
  --allow-trace            relay TRACE requests                     [refused: 405]
  --via-name NAME          this proxy's name in Via and in loop detection; give chained
                           instances different names                [http-proxy]
  --auth USER:PASSWORD     require Basic proxy credentials, repeatable (visible to ps:
                           prefer --auth-file or HTTP_PROXY_AUTH)   [no auth]
  --auth-file PATH         users as "user:pbkdf2-sha256$…" lines; make one with
                           http-proxy hash-password USER < password
  --deny-dest RULE         never reach RULE, repeatable: example.com, *.example.com,
                           10.0.0.0/8, [fd00::]/8, any of them with :PORT, or :PORT alone
  --allow-dest RULE        reach only these (same forms); a range here also lifts the
                           defaults below for itself
  --block-private          deny private, loopback, CGNAT, link-local and unspecified
                           addresses as destinations (checked after DNS)       [off]
                           (link-local and cloud metadata are denied unless an
                           --allow-dest range names them)
  --listen ADDR            address to listen on, repeatable: 127.0.0.1:8081, [::1]:8081,
                           port 0 picks a free port                 [127.0.0.1:8081]
  --connect-ports LIST     ports CONNECT may reach: 443,8443 or any [443]
  --max-header-bytes SIZE  largest request or response head         [64KiB]
  --header-timeout DUR     time for a whole request head to arrive  [10s]
  --idle-timeout DUR       idle time allowed between keep-alive requests [60s]
  --connect-timeout DUR    time to open an upstream connection      [10s]
  --response-timeout DUR   time for the upstream's response head    [60s]
  --grace DUR              time in-flight exchanges get at shutdown [5s]
  --tunnel-idle-timeout DUR  close a CONNECT tunnel idle both ways this long [15m]
  --half-closed-timeout DUR  close a tunnel one side of which has finished, idle this
                           long                                     [60s]
  --read-timeout DUR       give up on a request or response body with no new byte
                           for this long (408 if nothing was answered yet) [15m]
  --write-timeout DUR      drop a client (or upstream) that takes no byte this long
                                                                    [15m]
  --max-connections N      client connections in total (503 past it; 0: no limit) [10000]
  --max-connections-per-ip N  client connections from one IP (503; 0: no limit) [0]
  --rate N                 requests a second per client IP (429 + Retry-After) [no limit]
  --max-header-fields N    header fields in a request (431)          [100]
  --max-request-line SIZE  request line length (414)                 [8KiB]
  --max-idle-per-host N    idle upstream connections kept per host:port for reuse;
                           0 opens a new one for every request      [16]
  --upstream-idle-timeout DUR  how long an idle upstream connection is kept [15s]
  --log-format FORMAT      access log format: text, json, clf, combined, csv or squid
                                                                    [text]
  --log-file PATH          append the access log to PATH            [stdout]
  --quiet                  no access log                            [off]
  --summary-every DUR      print the per-host traffic summary this often; it is also
                           printed at exit and on SIGUSR2 (stderr)  [never]
  --summary-json PATH      also write the summary as JSON to PATH   [none]
  --admin [ADDR:]PORT      serve /metrics (Prometheus), /api/recent, /api/summary and a
                           live dashboard at / (a bare port means 127.0.0.1); a
                           non-loopback ADDR needs admin credentials   [off]
  --admin-auth-file PATH   admin users as "user:pbkdf2-sha256$…" lines (hash-password):
                           every admin path then asks for them (401)   [none]
  --admin-host NAME        a host name the admin listener answers to, repeatable; any
                           other Host gets 421 (DNS rebinding)     [its own address]
  --har PATH               write the exchanges as HAR 1.2 (devtools import it; no bodies,
                           no credentials), complete once the proxy stops  [off]
  --utc                    log times in UTC                         [local time]
  --workers N|auto         accepting threads sharing the listen ports (Linux SO_REUSEPORT;
                           needs --unstable-net, and read access to the program to load
                           it again); auto = one per CPU              [1]
  --config PATH            read flags from a JSON file: {"listen": ["127.0.0.1:8081"],
                           "block-private": true, …} (flags on the command line win)
  -h, --help               print this help
  -V, --version            print the version

DUR is a number with a unit: 500ms, 10s, 2m (a bare number is seconds).
SIZE is bytes, or with a unit: 64KiB, 1MiB.

Environment (read with --allow-env for these names; never shown by ps):
  HTTP_PROXY_AUTH          proxy users, "user:password", one per line (like --auth)
  HTTP_PROXY_ADMIN_AUTH    admin users, "user:password", one per line

Signals: SIGINT/SIGTERM stop (a second one: now), SIGHUP reopens the log file, SIGUSR2
prints the summary. Never send SIGUSR1: Deno opens a debugger for it (closed at once with
--allow-sys, else the proxy stops).`;

const HINT = "(see --help)";

/**
 * Parses a duration flag: `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
 *
 * @param flag The flag name for the error message.
 * @param text The value.
 * @param allowZero Whether 0 is accepted.
 * @returns Milliseconds.
 * @throws {UsageError} for anything else.
 */
export function parseDuration(flag: string, text: string, allowZero = false): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m?.[2] ?? "s"] ?? 1000;
  const value = m ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isFinite(value) || value < (allowZero ? 0 : 1) || value > 2_147_483_647) {
    throw new UsageError(`--${flag}: bad duration "${text}", expected e.g. 500ms, 10s, 2m ${HINT}`);
  }
  return value;
}

/**
 * Parses a size flag: bytes, or a number with B, KiB/K/KB, MiB/M/MB.
 *
 * @param flag The flag name for the error message.
 * @param text The value.
 * @returns Bytes.
 * @throws {UsageError} for anything else.
 */
export function parseSize(flag: string, text: string): number {
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib)?$/i.exec(text.trim());
  const unit = m?.[2]?.toLowerCase().startsWith("k")
    ? 1024
    : m?.[2]?.toLowerCase().startsWith("m")
    ? 1024 * 1024
    : 1;
  const value = m ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(value) || value < 1024 || value > 16 * 1024 * 1024) {
    throw new UsageError(
      `--${flag}: bad size "${text}", expected 1KiB to 16MiB, e.g. 64KiB ${HINT}`,
    );
  }
  return value;
}

/**
 * Parses a count flag: a whole number from 0 to 100000.
 *
 * @param flag The flag name for the error message.
 * @param text The value.
 * @returns The number.
 * @throws {UsageError} for anything else.
 */
export function parseCount(flag: string, text: string): number {
  const value = /^\d{1,6}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(value <= 100_000)) {
    throw new UsageError(`--${flag}: bad number "${text}", expected 0 to 100000 ${HINT}`);
  }
  return value;
}

/**
 * Parses `--workers`: a whole number from 1 to 64, or `auto`.
 *
 * @param text The value.
 * @returns The count, or "auto".
 * @throws {UsageError} for anything else.
 */
export function parseWorkers(text: string): number | "auto" {
  if (text.trim().toLowerCase() === "auto") return "auto";
  const n = /^\d{1,2}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n >= 1 && n <= 64)) {
    throw new UsageError(`--workers: bad count "${text}", expected 1 to 64 or auto ${HINT}`);
  }
  return n;
}

/**
 * Parses a listen address: `host:port` or `[v6]:port`.
 *
 * @param text The value.
 * @returns Host and port.
 * @throws {UsageError} for a missing or bad host or port.
 */
export function parseListen(text: string): ListenAddr {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(
      `--listen: bad address "${text}", expected host:port such as 127.0.0.1:8081 or [::1]:8081 ${HINT}`,
    );
  }
  return { hostname: m[1] ?? m[2]!, port };
}

/**
 * Parses `--connect-ports`: a comma list of ports, or `any`.
 *
 * @param text The value.
 * @returns The rule.
 * @throws {UsageError} for a bad port.
 */
export function parsePorts(text: string): PortRule {
  if (text.trim().toLowerCase() === "any") return "any";
  const ports = new Set<number>();
  for (const part of text.split(",")) {
    const t = part.trim();
    const n = Number(t);
    if (!/^\d{1,5}$/.test(t) || n < 1 || n > 65535) {
      throw new UsageError(
        `--connect-ports: bad port "${t}", expected a list like 443,8443 or "any" ${HINT}`,
      );
    }
    ports.add(n);
  }
  return ports;
}

/**
 * Parses the command line.
 *
 * @param args The arguments after the program name.
 * @returns Help, version, or the config to run with.
 * @throws {UsageError} naming the flag that is wrong.
 */
export function parseCommand(args: string[]): Command {
  let values;
  try {
    ({ values } = parseArgs({ args, options: FLAGS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new UsageError(usageMessage(err));
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const format = values["log-format"] ?? DEFAULTS.logFormat;
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(
      `--log-format: unknown format "${format}", expected ${LOG_FORMATS.join(", ")} ${HINT}`,
    );
  }
  if (values["log-file"] === "") throw new UsageError(`--log-file: empty path ${HINT}`);
  const config: Config = {
    listen: values.listen?.map(parseListen) ?? DEFAULTS.listen,
    connectPorts: values["connect-ports"] === undefined
      ? DEFAULTS.connectPorts
      : parsePorts(values["connect-ports"]),
    maxHeaderBytes: values["max-header-bytes"] === undefined
      ? DEFAULTS.maxHeaderBytes
      : parseSize("max-header-bytes", values["max-header-bytes"]),
    headerTimeoutMs: duration(values, "header-timeout", DEFAULTS.headerTimeoutMs),
    idleTimeoutMs: duration(values, "idle-timeout", DEFAULTS.idleTimeoutMs),
    connectTimeoutMs: duration(values, "connect-timeout", DEFAULTS.connectTimeoutMs),
    responseTimeoutMs: duration(values, "response-timeout", DEFAULTS.responseTimeoutMs),
    maxIdlePerHost: values["max-idle-per-host"] === undefined
      ? DEFAULTS.maxIdlePerHost
      : parseCount("max-idle-per-host", values["max-idle-per-host"]),
    upstreamIdleTimeoutMs: duration(
      values,
      "upstream-idle-timeout",
      DEFAULTS.upstreamIdleTimeoutMs,
    ),
    graceMs: values.grace === undefined
      ? DEFAULTS.graceMs
      : parseDuration("grace", values.grace, true),
    logFormat: format as LogFormat,
    quiet: values.quiet ?? false,
    utc: values.utc ?? false,
    workers: values.workers === undefined ? DEFAULTS.workers : parseWorkers(values.workers),
    allow: (values.allow ?? []).map((text) => {
      const range = parseCidr(text);
      if (!range) {
        throw new UsageError(
          `--allow: bad address range "${text}", expected e.g. 192.168.1.0/24 or fd00::/8 ${HINT}`,
        );
      }
      return range;
    }),
    open: values.open ?? false,
    allowTrace: values["allow-trace"] ?? false,
    denyDest: destRules("deny-dest", values["deny-dest"]),
    allowDest: destRules("allow-dest", values["allow-dest"]),
    blockPrivate: values["block-private"] ?? false,
    auth: values.auth ?? [],
    maxConnections: count(values, "max-connections", DEFAULTS.maxConnections),
    maxConnectionsPerIp: count(values, "max-connections-per-ip", DEFAULTS.maxConnectionsPerIp),
    rate: count(values, "rate", DEFAULTS.rate),
    maxHeaderFields: count(values, "max-header-fields", DEFAULTS.maxHeaderFields),
    maxRequestLine: values["max-request-line"] === undefined
      ? DEFAULTS.maxRequestLine
      : parseSize("max-request-line", values["max-request-line"]),
    tunnelIdleTimeoutMs: duration(values, "tunnel-idle-timeout", DEFAULTS.tunnelIdleTimeoutMs),
    halfClosedTimeoutMs: duration(values, "half-closed-timeout", DEFAULTS.halfClosedTimeoutMs),
    readTimeoutMs: duration(values, "read-timeout", DEFAULTS.readTimeoutMs),
    writeTimeoutMs: duration(values, "write-timeout", DEFAULTS.writeTimeoutMs),
    summaryEveryMs: duration(values, "summary-every", DEFAULTS.summaryEveryMs),
    viaName: values["via-name"] ?? DEFAULTS.viaName,
    adminAuth: [],
    adminHosts: [],
  };
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$/.test(config.viaName)) {
    throw new UsageError(
      `--via-name: "${config.viaName}" is not a single token of 1 to 64 characters ${HINT}`,
    );
  }
  if (values["summary-json"] === "") throw new UsageError(`--summary-json: empty path ${HINT}`);
  if (values["summary-json"] !== undefined) config.summaryJson = values["summary-json"];
  if (values.har === "") throw new UsageError(`--har: empty path ${HINT}`);
  if (values.har !== undefined) config.har = values.har;
  if (values.admin !== undefined) {
    const text = values.admin;
    config.admin = /^\d{1,5}$/.test(text)
      ? parseListen(`127.0.0.1:${text}`)
      : parseListen(text.startsWith(":") ? `127.0.0.1${text}` : text);
  }
  if (config.maxHeaderFields === 0) {
    throw new UsageError(`--max-header-fields: must be at least 1 ${HINT}`);
  }
  if (values["admin-auth-file"] === "") {
    throw new UsageError(`--admin-auth-file: empty path ${HINT}`);
  }
  if (values["admin-auth-file"] !== undefined) config.adminAuthFile = values["admin-auth-file"];
  for (const name of values["admin-host"] ?? []) {
    if (
      !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/
        .test(name)
    ) {
      throw new UsageError(`--admin-host: "${name}" is not a host name ${HINT}`);
    }
    config.adminHosts.push(normalizeHost(name));
  }
  if (values["auth-file"] === "") throw new UsageError(`--auth-file: empty path ${HINT}`);
  if (values["auth-file"] !== undefined) config.authFile = values["auth-file"];
  if (values["log-file"] !== undefined) config.logFile = values["log-file"];
  return { kind: "run", config };
}

function destRules(flag: string, texts: string[] | undefined): DestRule[] {
  return (texts ?? []).map((text) => {
    const rule = parseDestRule(text);
    if (!rule) {
      throw new UsageError(
        `--${flag}: bad rule "${text}", expected a host, *.suffix, CIDR or :PORT ${HINT}`,
      );
    }
    return rule;
  });
}

function count(values: Record<string, unknown>, flag: string, fallback: number): number {
  const text = values[flag];
  return typeof text === "string" ? parseCount(flag, text) : fallback;
}

function duration(values: Record<string, unknown>, flag: string, fallback: number): number {
  const text = values[flag];
  return typeof text === "string" ? parseDuration(flag, text) : fallback;
}

/** Rewrites parseArgs' errors as one line naming the flag. */
function usageMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const flag = /'(-[^' ]+)/.exec(e.message ?? "")?.[1];
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown flag ${flag ?? ""} ${HINT}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const m = e.message ?? "";
      const why = /argument missing/.test(m)
        ? "needs a value"
        : /ambiguous/.test(m)
        ? `needs a value; for one starting with "-" write ${flag}=VALUE`
        : /does not take/.test(m)
        ? "takes no value"
        : m.split("\n")[0];
      return `${flag ?? "a flag"}: ${why} ${HINT}`;
    }
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${/'([^']*)'/.exec(e.message ?? "")?.[1] ?? ""} ${HINT}`;
    default:
      return `${(e.message ?? String(err)).split("\n")[0]} ${HINT}`;
  }
}

/**
 * Turns a `--config` JSON file into flags placed before the command line's own, so the command
 * line wins: a key given on both is taken from the command line alone (a list is not merged).
 *
 * @param text The file's text.
 * @param path The file's path, for messages.
 * @param cliArgs The command line's arguments.
 * @returns The flags from the file, to put before `cliArgs`.
 * @throws {UsageError} naming the key for an unknown key, a bad value, or bad JSON.
 */
export function configFileArgs(text: string, path: string, cliArgs: string[]): string[] {
  const where = `--config ${path}`;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${where}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new UsageError(`${where}: expected a JSON object of flag names and values`);
  }
  const given = new Set<string>();
  try {
    const { tokens } = parseArgs({ args: cliArgs, options: FLAGS, strict: false, tokens: true });
    for (const t of tokens) if (t.kind === "option") given.add(t.name);
  } catch {
    // the command line's own errors are reported when it is parsed
  }
  const out: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const spec = (FLAGS as Record<string, { type: string; multiple?: boolean }>)[key];
    if (!spec || key === "config" || key === "help" || key === "version") {
      throw new UsageError(`${where}: unknown key "${key}" ${HINT}`);
    }
    if (given.has(key)) continue;
    if (spec.type === "boolean") {
      if (typeof value !== "boolean") {
        throw new UsageError(`${where}: "${key}" must be true or false`);
      }
      if (value) out.push(`--${key}`);
      continue;
    }
    const list = Array.isArray(value) ? value : [value];
    if (!spec.multiple && Array.isArray(value)) {
      throw new UsageError(`${where}: "${key}" takes one value, not a list`);
    }
    for (const item of list) {
      if (typeof item !== "string" && typeof item !== "number") {
        throw new UsageError(`${where}: "${key}" must be a string or a number`);
      }
      out.push(`--${key}=${item}`);
    }
  }
  return out;
}
