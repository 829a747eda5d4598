/**
 * Configuration: the flags (parsed with `node:util` parseArgs), their defaults, and validation
 * with one-line errors that name the flag. Pure: it reads no file and opens no socket.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { StartupError } from "../errors.ts";
import { parseCidr, parseIp } from "../policy/ip.ts";
import { LOG_FORMATS, type LogFormat } from "../observe/log.ts";
import { FORWARDED_MODES, type ForwardedMode } from "../http1/plan.ts";
import { isToken } from "../http1/parse.ts";
import { type DestRule, normalizeHost, parseDestRule } from "../policy/policy.ts";
import type { PortRule } from "../policy/policy.ts";
import type { NameList } from "../policy/name_list.ts";
import { parseNoParent, parseParent } from "../upstream/parent.ts";

/** The program's version, printed by `--version` and in the startup line. */
export const VERSION = "0.1.0";

/** A listen address. */
export interface ListenAddr {
  /** IP address or name to bind (IPv6 without brackets). */
  hostname: string;
  /** TCP port; 0 picks a free one. */
  port: number;
}

/**
 * What the proxy is configured with beyond its flags: what startup reads from the files and the
 * environment the flags name. Every other field of {@linkcode Config} is a flag's, typed by its
 * row in {@linkcode OPTIONS}.
 */
interface Loaded {
  /**
   * Admin `user:password` pairs, from the HTTP_PROXY_ADMIN_AUTH environment variable (never a
   * flag: a command line shows in `ps`). @default []
   */
  adminAuth: string[];
  /** The names of `denyDestFile`, once read. */
  denyList?: NameList;
  /** The names of `allowDestFile`, once read. */
  allowList?: NameList;
  /** The certificate chain and key as read (startup and reloads read the files). */
  tlsPem?: { cert: string; key: string };
  /** The parent's `user:password`, from `parentAuthFile` or HTTP_PROXY_PARENT_AUTH. */
  parentAuth?: string;
}

/** A row's value type: what its parser returns, or `boolean` for a switch. */
type FieldOf<R> = R extends { parse: (value: string) => infer T } ? T
  : R extends { parseList: (values: string[]) => infer T } ? T
  : boolean;

/** The rows that set a field. */
type Rows = Extract<(typeof ROWS)[number], { key: string }>;

/**
 * Everything the proxy is configured with: a field per row of {@linkcode OPTIONS} that names one
 * (its `key`; required when the row has a default, optional otherwise; typed by its parser),
 * plus what startup loads ({@linkcode Loaded}). The rows' help texts document the fields.
 */
export type Config =
  & { [R in Extract<Rows, { default: unknown }> as R["key"]]: FieldOf<R> }
  & { [R in Exclude<Rows, { default: unknown }> as R["key"]]?: FieldOf<R> }
  & Loaded;

/** A bad command line: the message is one line naming the flag; exit code 2. */
export class UsageError extends StartupError {
  /**
   * @param message The one-line cause.
   */
  constructor(message: string) {
    super(message, 2);
  }
}

/** What the command line asks for. */
export type Command = { kind: "help" } | { kind: "version" } | { kind: "run"; config: Config };

/** What every row has: how the flag is written and documented. */
interface Described {
  /** The flag without its dashes (also its `--config` key). */
  name: string;
  /** A one-letter alias. */
  short?: string;
  /** The default as `--help` and the README show it. */
  shown?: string;
  /** What it does (`--help` wraps it; the README shows it as it is). */
  help: string;
  /** README only: what follows the help there (a link to a section). */
  more?: string;
}

/**
 * One command-line flag: everything about it, in one row of {@linkcode OPTIONS}. A row that sets
 * a Config field names it (`key`), gives its default (none for a field that may be absent), says
 * what its value looks like (`value`: `DUR`, `PATH`; none for a switch, which sets `true`) and
 * parses its text (`parse`, or `parseList` for a repeatable flag). The field's type is what the
 * parser returns; the compiler checks the default against it. `--config`, `--help` and
 * `--version` set no field.
 */
export type Option =
  & Described
  & (
    | { key?: undefined; value?: string; default?: undefined } & NoParser
    | { key: string; value: string; default?: unknown } & ParsesOne
    | { key: string; value: string; default?: unknown } & ParsesList
    | { key: string; value?: undefined; default: boolean } & NoParser
  );

/** A switch, or a flag that sets no field. */
type NoParser = { multiple?: undefined; parse?: undefined; parseList?: undefined };
/** A flag given once: its text is parsed. */
type ParsesOne = { multiple?: undefined; parse: (value: string) => unknown; parseList?: undefined };
/** A repeatable flag: all its texts are parsed at once. */
type ParsesList = { multiple: true; parseList: (values: string[]) => unknown; parse?: undefined };

/** A path flag's value: anything but empty. */
function path(flag: string, text: string): string {
  if (text === "") throw new UsageError(`--${flag}: empty path ${HINT}`);
  return text;
}

/**
 * Every flag, in `--help` order. Adding a flag is adding a row here: its {@linkcode Config}
 * field, the parse spec, the defaults, `--help`, the `--config` keys and the README's flag table
 * are all made from this table (a test checks the README against it), and the compiler refuses a
 * default that does not fit what the row's parser returns.
 */
const ROWS = [
  {
    name: "allow",
    value: "CIDR",
    multiple: true,
    shown: "loopback only",
    help: "clients to serve, repeatable: 192.168.1.0/24, fd00::/8, 10.1.2.3",
    more: "(see [Safety](#safety))",
    key: "allow",
    default: [],
    parseList: (v) =>
      v.map((text) => {
        const range = parseCidr(text);
        if (!range) {
          throw new UsageError(
            `--allow: bad address range "${text}", expected e.g. 192.168.1.0/24 or fd00::/8 ${HINT}`,
          );
        }
        return range;
      }),
  },
  {
    name: "open",
    shown: "off",
    help: "serve every client (an open proxy: only on a trusted network)",
    key: "open",
    default: false,
  },
  {
    name: "allow-trace",
    shown: "refused: 405",
    help: "relay TRACE requests",
    key: "allowTrace",
    default: false,
  },
  {
    name: "via-name",
    value: "NAME",
    shown: "http-proxy",
    help: "this proxy's name in Via and in loop detection; give chained instances different names",
    key: "viaName",
    default: "http-proxy",
    parse: (v) => {
      if (v.length > 64 || !isToken(v)) {
        throw new UsageError(
          `--via-name: "${v}" is not a single token of 1 to 64 characters ${HINT}`,
        );
      }
      return v;
    },
  },
  {
    name: "forwarded",
    value: "MODE",
    shown: "off",
    help: "tell origins the client's address: off, xff (X-Forwarded-For) or forwarded " +
      "(RFC 7239 Forwarded); off keeps it private, and a field the client sent passes as it came",
    key: "forwarded",
    default: "off",
    parse: (v) => {
      if (!(FORWARDED_MODES as readonly string[]).includes(v)) {
        throw new UsageError(
          `--forwarded: unknown mode "${v}", expected ${FORWARDED_MODES.join(", ")} ${HINT}`,
        );
      }
      return v as ForwardedMode;
    },
  },
  {
    name: "auth",
    value: "USER:PASSWORD",
    multiple: true,
    shown: "no auth",
    help: "require Basic proxy credentials, repeatable (visible to ps: prefer --auth-file or " +
      "HTTP_PROXY_AUTH)",
    more: "(see [Safety](#safety))",
    key: "auth",
    default: [],
    parseList: (v) => v,
  },
  {
    name: "auth-file",
    value: "PATH",
    help: 'users as "user:pbkdf2-sha256$…" lines (http-proxy hash-password USER) or htpasswd -B ' +
      "bcrypt lines; re-read on SIGHUP",
    key: "authFile",
    parse: (v) => path("auth-file", v),
  },
  {
    name: "deny-dest",
    value: "RULE",
    multiple: true,
    help: "never reach RULE, repeatable: example.com, *.example.com, 10.0.0.0/8, [fd00::]/8, " +
      "any of them with :PORT, or :PORT alone",
    key: "denyDest",
    default: [],
    parseList: (v) => destRules("deny-dest", v),
  },
  {
    name: "allow-dest",
    value: "RULE",
    multiple: true,
    help: "reach only these (same forms); a range here also lifts the defaults below for " +
      "itself; with only names here, other names are refused before DNS",
    key: "allowDest",
    default: [],
    parseList: (v) => destRules("allow-dest", v),
  },
  {
    name: "deny-dest-file",
    value: "PATH",
    multiple: true,
    help: "never reach the names in PATH, repeatable: hosts-file lines (0.0.0.0 ads.example.com) " +
      "or one name a line, # comments; a name covers its subdomains; checked before DNS; " +
      "re-read on SIGHUP",
    key: "denyDestFile",
    default: [],
    parseList: (v) => v.map((p) => path("deny-dest-file", p)),
  },
  {
    name: "allow-dest-file",
    value: "PATH",
    multiple: true,
    help: "reach only the names in PATH (and --allow-dest), repeatable, same format",
    key: "allowDestFile",
    default: [],
    parseList: (v) => v.map((p) => path("allow-dest-file", p)),
  },
  {
    name: "block-private",
    shown: "off",
    help: "deny private, loopback, CGNAT, link-local, unspecified, benchmarking, multicast and " +
      "reserved addresses as destinations, also inside IPv6 transition forms (checked after " +
      "DNS; link-local and cloud metadata are denied anyway unless an --allow-dest range names " +
      "them)",
    key: "blockPrivate",
    default: false,
  },
  {
    name: "parent",
    value: "URL",
    shown: "none: direct",
    help: "send requests through this proxy, http://host:port: plain requests in absolute-form, " +
      "CONNECT through it; its credentials from --parent-auth-file or HTTP_PROXY_PARENT_AUTH",
    more: "(see [Behind another proxy](#behind-another-proxy---parent))",
    key: "parent",
    parse: (v) => {
      const parent = parseParent(v);
      if (typeof parent === "string") throw new UsageError(`--parent: ${parent} ${HINT}`);
      return parent;
    },
  },
  {
    name: "parent-auth-file",
    value: "PATH",
    help: "a file whose one line is the parent's user:password (Basic)",
    key: "parentAuthFile",
    parse: (v) => path("parent-auth-file", v),
  },
  {
    name: "no-parent",
    value: "LIST",
    multiple: true,
    help: "reach these directly, NO_PROXY syntax, repeatable: localhost,.internal,10.0.0.0/8,* " +
      "(a name covers its subdomains)",
    key: "noParent",
    default: [],
    parseList: (v) => {
      const rules = parseNoParent(v);
      if (typeof rules === "string") throw new UsageError(`--no-parent: ${rules} ${HINT}`);
      return rules;
    },
  },
  {
    name: "outgoing-address",
    value: "IP|same",
    shown: "the system's choice",
    help: "upstream connections leave from this local address; same: from the address the " +
      "client connected to (a host with several networks)",
    key: "outgoingAddress",
    parse: (v) => {
      const text = v.trim().replace(/^\[(.*)\]$/, "$1");
      if (text !== "same" && parseIp(text) === undefined) {
        throw new UsageError(
          `--outgoing-address: "${v}" is not an IP address or "same" ${HINT}`,
        );
      }
      return text;
    },
  },
  {
    name: "listen",
    value: "ADDR",
    multiple: true,
    shown: "127.0.0.1:8081",
    help: "address to listen on, repeatable: 127.0.0.1:8081, [::1]:8081; port 0 picks a free " +
      "port (the startup line prints the real one)",
    key: "listen",
    default: [{ hostname: "127.0.0.1", port: 8081 }],
    parseList: (v) => v.map(parseListen),
  },
  {
    name: "listen-tls",
    value: "ADDR",
    multiple: true,
    shown: "none",
    help: "also listen with TLS (clients use an https:// proxy URL), repeatable, same forms as " +
      "--listen; needs --tls-cert and --tls-key",
    more: "(see [TLS to the proxy](#tls-to-the-proxy---listen-tls))",
    key: "listenTls",
    default: [],
    parseList: (v) => v.map(parseListen),
  },
  {
    name: "tls-cert",
    value: "PATH",
    help: "the TLS listeners' certificate chain (PEM; make-cert makes one); re-read on SIGHUP",
    key: "tlsCert",
    parse: (v) => path("tls-cert", v),
  },
  {
    name: "tls-key",
    value: "PATH",
    help: "the TLS listeners' private key (PEM); re-read on SIGHUP",
    key: "tlsKey",
    parse: (v) => path("tls-key", v),
  },
  {
    name: "connect-ports",
    value: "LIST",
    shown: "443",
    help: "ports CONNECT may reach: 443,8443 or any",
    key: "connectPorts",
    default: new Set([443]),
    parse: (v) => parsePorts(v),
  },
  {
    name: "max-header-bytes",
    value: "SIZE",
    shown: "64KiB",
    help: "largest request head (431) or response head (502)",
    key: "maxHeaderBytes",
    default: 64 * 1024,
    parse: (v) => parseSize("max-header-bytes", v),
  },
  {
    name: "header-timeout",
    value: "DUR",
    shown: "10s",
    help: "time for a whole request head to arrive (408 and close)",
    key: "headerTimeoutMs",
    default: 10_000,
    parse: (v) => parseDuration("header-timeout", v),
  },
  {
    name: "idle-timeout",
    value: "DUR",
    shown: "60s",
    help: "idle time allowed between keep-alive requests",
    key: "idleTimeoutMs",
    default: 60_000,
    parse: (v) => parseDuration("idle-timeout", v),
  },
  {
    name: "connect-timeout",
    value: "DUR",
    shown: "10s",
    help: "time to open an upstream connection (504)",
    key: "connectTimeoutMs",
    default: 10_000,
    parse: (v) => parseDuration("connect-timeout", v),
  },
  {
    name: "response-timeout",
    value: "DUR",
    shown: "60s",
    help: "time for the upstream's response head once the request is sent (504); interim " +
      "responses do not restart it",
    key: "responseTimeoutMs",
    default: 60_000,
    parse: (v) => parseDuration("response-timeout", v),
  },
  {
    name: "grace",
    value: "DUR",
    shown: "5s",
    help: "at SIGINT/SIGTERM, how long exchanges in flight may finish",
    key: "graceMs",
    default: 5_000,
    parse: (v) => parseDuration("grace", v, true),
  },
  {
    name: "tunnel-idle-timeout",
    value: "DUR",
    shown: "15m",
    help: "close a CONNECT tunnel idle both ways this long",
    key: "tunnelIdleTimeoutMs",
    default: 900_000,
    parse: (v) => parseDuration("tunnel-idle-timeout", v),
  },
  {
    name: "half-closed-timeout",
    value: "DUR",
    shown: "60s",
    help: "close a tunnel one side of which has finished (a client gone, an upstream that never " +
      "shuts) idle this long",
    key: "halfClosedTimeoutMs",
    default: 60_000,
    parse: (v) => parseDuration("half-closed-timeout", v),
  },
  {
    name: "read-timeout",
    value: "DUR",
    shown: "15m",
    help: "give up on a request or response body with no new byte this long (408 when nothing " +
      "was answered yet)",
    key: "readTimeoutMs",
    default: 900_000,
    parse: (v) => parseDuration("read-timeout", v),
  },
  {
    name: "write-timeout",
    value: "DUR",
    shown: "15m",
    help: "drop a client (or upstream) that takes no byte this long, tunnels included",
    key: "writeTimeoutMs",
    default: 900_000,
    parse: (v) => parseDuration("write-timeout", v),
  },
  {
    name: "max-connections",
    value: "N",
    shown: "10000",
    help: "client connections in total (503 past it; 0: no limit)",
    key: "maxConnections",
    default: 10_000,
    parse: (v) => parseCount("max-connections", v),
  },
  {
    name: "max-connections-per-ip",
    value: "N",
    shown: "0",
    help: "client connections from one IP (503; 0: no limit)",
    key: "maxConnectionsPerIp",
    default: 0,
    parse: (v) => parseCount("max-connections-per-ip", v),
  },
  {
    name: "rate",
    value: "N",
    shown: "no limit",
    help: "requests a second per client IP (429 with Retry-After)",
    key: "rate",
    default: 0,
    parse: (v) => parseCount("rate", v),
  },
  {
    name: "max-header-fields",
    value: "N",
    shown: "100",
    help: "header fields in a request (431)",
    key: "maxHeaderFields",
    default: 100,
    parse: (v) => {
      const n = parseCount("max-header-fields", v);
      if (n === 0) throw new UsageError(`--max-header-fields: must be at least 1 ${HINT}`);
      return n;
    },
  },
  {
    name: "max-request-line",
    value: "SIZE",
    shown: "8KiB",
    help: "request line length (414)",
    key: "maxRequestLine",
    default: 8192,
    parse: (v) => parseSize("max-request-line", v),
  },
  {
    name: "max-idle-per-host",
    value: "N",
    shown: "256",
    help: "idle upstream connections kept per host:port for reuse (1024 in all); 0 opens a new " +
      "one for every request",
    key: "maxIdlePerHost",
    default: 256,
    parse: (v) => parseCount("max-idle-per-host", v),
  },
  {
    name: "max-dials-per-host",
    value: "N",
    shown: "64",
    help: "new upstream connections being opened at once to one host:port; more requests wait " +
      "their turn within --connect-timeout (taking an idle connection if one frees up), so a " +
      "crowd of new clients is not a burst of failed dials; 0: no limit",
    key: "maxDialsPerHost",
    default: 64,
    parse: (v) => parseCount("max-dials-per-host", v),
  },
  {
    name: "max-active-per-host",
    value: "N",
    shown: "64",
    help: "requests in flight at once to one host:port, each on an upstream connection of its " +
      "own (CONNECT tunnels, upgraded connections and requests through --parent do not count); " +
      "more wait their turn, first come first served, within --connect-timeout (then 504), so a " +
      "crowd of busy clients queues in the proxy rather than at the origin; 0: no limit",
    key: "maxActivePerHost",
    default: 64,
    parse: (v) => parseCount("max-active-per-host", v),
  },
  {
    name: "upstream-idle-timeout",
    value: "DUR",
    shown: "15s",
    help: "how long an idle upstream connection is kept",
    key: "upstreamIdleTimeoutMs",
    default: 15_000,
    parse: (v) => parseDuration("upstream-idle-timeout", v),
  },
  {
    name: "log-format",
    value: "FORMAT",
    shown: "text",
    help: "access log format: text, json, clf, combined, csv or squid",
    more: "(see [Other log formats](#other-log-formats))",
    key: "logFormat",
    default: "text",
    parse: (v) => {
      if (!(LOG_FORMATS as readonly string[]).includes(v)) {
        throw new UsageError(
          `--log-format: unknown format "${v}", expected ${LOG_FORMATS.join(", ")} ${HINT}`,
        );
      }
      return v as LogFormat;
    },
  },
  {
    name: "log-file",
    value: "PATH",
    shown: "stdout",
    help: "append the access log to PATH",
    key: "logFile",
    parse: (v) => path("log-file", v),
  },
  {
    name: "quiet",
    shown: "off",
    help: "no access log",
    key: "quiet",
    default: false,
  },
  {
    name: "summary-every",
    value: "DUR",
    shown: "never",
    help: "print the per-host traffic summary this often; it is also printed at exit and on " +
      "SIGUSR2 (stderr)",
    more: "(see [Summary](#summary))",
    key: "summaryEveryMs",
    default: 0,
    parse: (v) => parseDuration("summary-every", v),
  },
  {
    name: "summary-json",
    value: "PATH",
    shown: "none",
    help: "also write the summary as JSON to PATH",
    key: "summaryJson",
    parse: (v) => path("summary-json", v),
  },
  {
    name: "admin",
    value: "[ADDR:]PORT",
    shown: "off",
    help: "serve /metrics (Prometheus), /api/recent, /api/summary, /api/events and a live " +
      "dashboard at / (a bare port means 127.0.0.1); a non-loopback ADDR needs admin credentials",
    more: "(see [Live view](#live-view---admin))",
    key: "admin",
    parse: (v) =>
      /^\d{1,5}$/.test(v)
        ? parseListen(`127.0.0.1:${v}`)
        : parseListen(v.startsWith(":") ? `127.0.0.1${v}` : v),
  },
  {
    name: "admin-auth-file",
    value: "PATH",
    shown: "none",
    help: 'admin users as "user:pbkdf2-sha256$…" lines (hash-password): every admin path then ' +
      "asks for them (401)",
    key: "adminAuthFile",
    parse: (v) => path("admin-auth-file", v),
  },
  {
    name: "admin-host",
    value: "NAME",
    multiple: true,
    shown: "its own address",
    help: "a host name the admin listener answers to, repeatable; any other Host gets 421 " +
      "(DNS rebinding)",
    key: "adminHosts",
    default: [],
    parseList: (v) =>
      v.map((name) => {
        const ok =
          /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/;
        if (!ok.test(name)) {
          throw new UsageError(`--admin-host: "${name}" is not a host name ${HINT}`);
        }
        return normalizeHost(name);
      }),
  },
  {
    name: "har",
    value: "PATH",
    shown: "off",
    help: "write the exchanges as HAR 1.2 (devtools import it; no bodies, no credentials), " +
      "complete once the proxy stops",
    more: "(see [HAR](#har))",
    key: "har",
    parse: (v) => path("har", v),
  },
  {
    name: "history",
    value: "PATH",
    shown: "off",
    help: "keep every exchange's metadata (no bodies, no credentials) in an SQLite database " +
      "at PATH, for the history subcommand; batched writes, WAL journal",
    more: "(see [History](#history---history))",
    key: "history",
    parse: (v) => path("history", v),
  },
  {
    name: "history-days",
    value: "N",
    shown: "30",
    help: "delete history rows older than N days",
    key: "historyDays",
    default: 30,
    parse: (v) => {
      const n = parseCount("history-days", v);
      if (n === 0) throw new UsageError(`--history-days: must be at least 1 ${HINT}`);
      return n;
    },
  },
  {
    name: "history-max",
    value: "SIZE",
    shown: "1GiB",
    help: "keep the history database near at most SIZE (the oldest rows go first): 500MiB, 2GiB",
    key: "historyMax",
    default: 1024 ** 3,
    parse: (v) => parseStorage("history-max", v),
  },
  {
    name: "cache",
    shown: "off",
    help: "cache plain-HTTP responses as RFC 9111 allows a shared cache to, on disk and in " +
      "memory, kept across restarts (HTTPS through CONNECT is never cached)",
    more: "(see [Cache](#cache---cache))",
    key: "cache",
    default: false,
  },
  {
    name: "cache-dir",
    value: "PATH",
    shown: "http-proxy-cache",
    help: "where --cache keeps its bodies and its index (created if missing)",
    key: "cacheDir",
    default: "http-proxy-cache",
    parse: (v) => path("cache-dir", v),
  },
  {
    name: "cache-size",
    value: "SIZE",
    shown: "1GiB",
    help: "keep the cache's bodies on disk under SIZE, the least recently used going first; " +
      "one response may take an eighth of it",
    key: "cacheSize",
    default: 1024 ** 3,
    parse: (v) => parseStorage("cache-size", v),
  },
  {
    name: "cache-mem",
    value: "SIZE",
    shown: "64MiB",
    help: "also keep small cached bodies (up to an eighth of SIZE, at most 1MiB each) in memory",
    key: "cacheMem",
    default: 64 * 1024 ** 2,
    parse: (v) => parseStorage("cache-mem", v),
  },
  {
    name: "utc",
    shown: "local time",
    help: "log times in UTC",
    key: "utc",
    default: false,
  },
  {
    name: "workers",
    value: "N|auto",
    shown: "1",
    help: "accepting threads sharing the listen ports (Linux SO_REUSEPORT; needs " +
      "--unstable-net, and read access to the program to load it again); auto = one per CPU",
    more: "(see [Performance](#performance))",
    key: "workers",
    default: 1,
    parse: (v) => parseWorkers(v),
  },
  {
    name: "config",
    value: "PATH",
    help: 'read flags from a JSON file, comments allowed: {"listen": ["127.0.0.1:8081"], ' +
      '"block-private": true, …}; a repeatable flag or a comma list takes a JSON list (flags ' +
      "on the command line win)",
  },
  { name: "help", short: "h", help: "print this help" },
  { name: "version", short: "V", help: "print the version" },
] as const satisfies readonly Option[];

/** Every flag, in `--help` order (see above). */
export const OPTIONS: readonly Option[] = ROWS;

/** A default as written in a row (`as const`: read-only) made comparable to its field's type. */
type Writable<T> = T extends Set<unknown> | Map<unknown, unknown> ? T
  : T extends readonly (infer E)[] ? Writable<E>[]
  : T extends object ? { -readonly [P in keyof T]: Writable<T[P]> }
  : T;

/** The key of a row whose default does not fit its field, named in a compile error (none: `true`). */
type Misfit = {
  [R in Extract<Rows, { default: unknown }> as R["key"]]: Writable<R["default"]> extends FieldOf<R>
    ? never
    : R["key"];
}[Extract<Rows, { default: unknown }>["key"]];
const EVERY_DEFAULT_FITS: [Misfit] extends [never] ? true : Misfit = true;
void EVERY_DEFAULT_FITS;

/** Config fields no flag sets: admin passwords come from the environment only (never `ps`). */
const NOT_FLAGS: Pick<Config, "adminAuth"> = { adminAuth: [] };

/** Defaults, made from {@linkcode OPTIONS}. */
export const DEFAULTS: Config = Object.freeze({
  ...Object.fromEntries(
    OPTIONS.flatMap((o) => o.key && o.default !== undefined ? [[o.key, o.default]] : []),
  ),
  ...NOT_FLAGS,
}) as Config;

/** The parseArgs spec, made from {@linkcode OPTIONS}. */
const FLAGS = Object.fromEntries(OPTIONS.map((o) => [o.name, {
  type: o.value === undefined ? "boolean" as const : "string" as const,
  ...(o.multiple ? { multiple: true } : {}),
  ...(o.short ? { short: o.short } : {}),
}]));

/** A flag as `--help` and the README name it: `--name VALUE`, with its short form first. */
function flagText(o: Option): string {
  const long = `--${o.name}${o.value ? ` ${o.value}` : ""}`;
  return o.short ? `-${o.short}, ${long}` : long;
}

/** Words wrapped into lines of at most `width` characters. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines;
}

/** The flags part of `--help`: flag, help wrapped at 92 columns, and the default in brackets. */
function flagsHelp(): string {
  const out: string[] = [];
  for (const o of OPTIONS) {
    const flag = `  ${flagText(o)}`;
    const lines = wrap(o.help, 90 - 27);
    const first = flag.length < 26 ? flag.padEnd(27) + lines[0] : `${flag}  ${lines[0]}`;
    const body = [first, ...lines.slice(1).map((l) => " ".repeat(27) + l)];
    if (o.shown !== undefined) {
      const tag = `[${o.shown}]`;
      const last = body.at(-1)!;
      if (last.length + 2 + tag.length <= 92) {
        body[body.length - 1] = `${last.padEnd(Math.max(last.length + 1, 68))}${tag}`.trimEnd();
        if (last.length >= 68) body[body.length - 1] = `${last} ${tag}`;
      } else body.push(" ".repeat(68) + tag);
    }
    out.push(...body);
  }
  return out.join("\n");
}

/**
 * The README's flag table, made from {@linkcode OPTIONS} (a test compares the README with it).
 *
 * @returns The Markdown table rows, header first.
 */
export function readmeFlagTable(): string[] {
  const cell = (text: string) => text.replace(/\|/g, "\\|");
  return [
    "| flag | default | meaning |",
    "| --- | --- | --- |",
    ...OPTIONS.map((o) =>
      `| \`${cell(flagText(o))}\` | ${o.shown ? `\`${cell(o.shown)}\`` : ""} | ${
        cell(o.help + (o.more ? ` ${o.more}` : ""))
      } |`
    ),
  ];
}

/** The `--help` text. */
export const HELP =
  `http-proxy ${VERSION}: a forward HTTP/1.1 proxy with CONNECT tunnels and traffic logs

Usage: http-proxy [flags]
       http-proxy hash-password USER     (asks for a password, prints an --auth-file line)
       http-proxy make-cert [--dir DIR] NAME...   (a local CA and a certificate for --listen-tls)
       http-proxy history FILE [--since 2h] [--client IP] [--host H] [--top hosts] [--format csv]

Flags (defaults in brackets):
${flagsHelp()}

DUR is a number with a unit: 500ms, 10s, 2m (a bare number is seconds).
SIZE is bytes, or with a unit: 64KiB, 1MiB.

Environment (read with --allow-env for these names; never shown by ps):
  HTTP_PROXY_AUTH          proxy users, "user:password", one per line (like --auth)
  HTTP_PROXY_ADMIN_AUTH    admin users, "user:password", one per line
  HTTP_PROXY_PARENT_AUTH   the --parent's "user:password"

Signals: SIGINT/SIGTERM stop (a second one: now); SIGHUP reopens the log file and reads the
config file, password file and lists again (a bad one keeps the running config, in one log
line); SIGUSR2 prints the summary. Never send SIGUSR1: Deno opens a debugger for it (closed at
once with --allow-sys, else the proxy stops).`;

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
 * Parses a storage size flag: a number with MiB or GiB (M, MB, G, GB), from 1 MiB to 1 TiB.
 *
 * @param flag The flag name for the error message.
 * @param text The value.
 * @returns Bytes.
 * @throws {UsageError} for anything else.
 */
export function parseStorage(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(m|mb|mib|g|gb|gib)$/i.exec(text.trim());
  const unit = m?.[2]?.toLowerCase().startsWith("g") ? 1024 ** 3 : 1024 ** 2;
  const value = m ? Math.round(Number(m[1]) * unit) : NaN;
  if (!(value >= 1024 ** 2 && value <= 1024 ** 4)) {
    throw new UsageError(
      `--${flag}: bad size "${text}", expected 1MiB to 1024GiB, e.g. 2GiB ${HINT}`,
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
  // A fresh copy: no two configs share a default list.
  const config: Config = structuredClone({ ...DEFAULTS });
  const fields = config as unknown as Record<string, unknown>;
  for (const o of OPTIONS) {
    const value = (values as Record<string, unknown>)[o.name];
    if (value === undefined || o.key === undefined) continue;
    if (o.parseList) fields[o.key] = o.parseList(value as string[]);
    else if (o.parse) fields[o.key] = o.parse(value as string);
    else fields[o.key] = value as boolean;
  }
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

/** Rewrites parseArgs' errors as one line naming the flag. */
function usageMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const flag = /'(-[^' ]+)/.exec(e.message ?? "")?.[1];
  switch (e.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const near = flag?.startsWith("--")
        ? closest(flag.slice(2).split("=")[0]!, FILE_KEYS)
        : undefined;
      return `unknown flag ${flag ?? ""}${near ? `; did you mean --${near}?` : ""} ${HINT}`;
    }
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
    data = JSON.parse(stripJsonc(text));
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
      const near = closest(key, FILE_KEYS);
      throw new UsageError(
        `${where}: unknown key "${key}"${near ? `; did you mean "${near}"?` : ""} ${HINT}`,
      );
    }
    if (given.has(key)) continue;
    if (spec.type === "boolean") {
      if (typeof value !== "boolean") {
        throw new UsageError(`${where}: "${key}" must be true or false`);
      }
      if (value) out.push(`--${key}`);
      continue;
    }
    // A flag whose value is a comma list (connect-ports) takes a JSON list too.
    const joined = Array.isArray(value) && !spec.multiple && COMMA_LISTS.has(key)
      ? value.join(",")
      : value;
    const list = Array.isArray(joined) ? joined : [joined];
    if (!spec.multiple && Array.isArray(joined)) {
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

/** The `--config` keys: every flag but config, help and version. */
const FILE_KEYS = OPTIONS.map((o) => o.name).filter((n) =>
  n !== "config" && n !== "help" && n !== "version"
);

/** Flags whose one value is a comma-separated list. */
const COMMA_LISTS = new Set(OPTIONS.filter((o) => o.value === "LIST").map((o) => o.name));

/**
 * JSON with comments (JSONC, as VS Code and tsconfig write it): `//` and `/* *\/` comments and
 * trailing commas become spaces, so JSON.parse's error positions still point into the file.
 *
 * @param text The file's text.
 * @returns Plain JSON text of the same length.
 */
export function stripJsonc(text: string): string {
  const out = text.split("");
  let i = 0;
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== "\n") out[k] = " ";
  };
  while (i < text.length) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
      i++;
    } else if (c === "/" && text[i + 1] === "/") {
      const end = text.indexOf("\n", i);
      blank(i, end < 0 ? text.length : end);
      i = end < 0 ? text.length : end;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      blank(i, end < 0 ? text.length : end + 2); // unclosed: JSON.parse then reports the end
      i = end < 0 ? text.length : end + 2;
    } else if (c === ",") {
      // A trailing comma: only blanks and comments (already blanked or still ahead) follow it
      // before a closing bracket.
      let j = i + 1;
      for (;;) {
        while (j < text.length && /\s/.test(text[j]!)) j++;
        if (text.startsWith("//", j)) {
          j = text.indexOf("\n", j) < 0 ? text.length : text.indexOf("\n", j);
        } else if (text.startsWith("/*", j)) {
          j = text.indexOf("*/", j) < 0 ? text.length : text.indexOf("*/", j) + 2;
        } else break;
      }
      if (text[j] === "}" || text[j] === "]") out[i] = " ";
      i++;
    } else i++;
  }
  return out.join("");
}

/**
 * The candidate closest to `word` by edit distance, if it is close enough to be a typo.
 *
 * @param word What was written.
 * @param candidates What could have been meant.
 * @returns The likeliest candidate, or undefined.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(word.length / 4)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best;
}

/** Levenshtein distance (insert, delete, substitute), for {@linkcode closest}; short words only. */
function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Infinity;
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        row[j]! + 1,
        next[j - 1]! + 1,
        row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length]!;
}
