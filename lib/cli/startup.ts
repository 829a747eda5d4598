/**
 * The startup steps `main()` lists, each a function that either returns what the next step
 * needs or throws a {@linkcode StartupError} (one line, an exit code): read the command, refuse
 * an exposed setup, check file permissions, load credentials, count workers, and
 * {@linkcode startInstance}, which the main thread and every worker run alike (log and
 * observers, listeners, the server).
 *
 * @module
 */

import type { Cache } from "../cache/cache.ts";
import { StartupError } from "../errors.ts";
import type { ExchangeObserver } from "../exchange.ts";
import { openLog } from "../observe/log.ts";
import { Summary } from "../observe/summary.ts";
import { type Authenticator, envCredentials, loadAuth } from "../policy/auth.ts";
import type { HostAddresses } from "../policy/host_addresses.ts";
import { isLoopbackListen } from "../policy/ip.ts";
import { listenAll, type Listener, ProxyServer } from "../server.ts";
import { hostPort } from "../upstream/dial.ts";
import { NameList } from "../policy/name_list.ts";
import {
  type Command,
  type Config,
  configFileArgs,
  OPTIONS,
  parseCommand,
  UsageError,
} from "./config.ts";

/**
 * Reads the command line, with a `--config` file's flags placed before it.
 *
 * @param args The arguments.
 * @returns Help, version, or the config to run with.
 * @throws {StartupError} for a bad flag or an unreadable file.
 */
export async function readCommand(args: string[]): Promise<Command> {
  const file = configPath(args);
  if (file !== undefined) {
    const missing = needs("--config", "read", file);
    if (missing) throw new StartupError(missing);
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      throw new UsageError(`--config: cannot read "${file}": ${(err as Error).message}`);
    }
    args = [...configFileArgs(text, file, args), ...args];
  }
  return parseCommand(args);
}

/** The `--config` path on the command line, if any (`--config PATH` or `--config=PATH`). */
function configPath(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--config") return args[i + 1];
    if (a.startsWith("--config=")) return a.slice("--config=".length);
  }
  return undefined;
}

/**
 * Adds the credentials given in the environment, where `ps` does not show them.
 *
 * @param config The config, changed in place.
 */
export function addEnvironmentSecrets(config: Config): void {
  config.auth.push(...envCredentials("HTTP_PROXY_AUTH"));
  config.adminAuth.push(...envCredentials("HTTP_PROXY_ADMIN_AUTH"));
  const parent = envCredentials("HTTP_PROXY_PARENT_AUTH");
  if (parent.length > 0) config.parentAuth = parent[0]!;
}

/**
 * Refuses a setup that would serve anyone: a proxy on an address others can reach with nobody
 * named as allowed (an open proxy), or an admin listener beyond loopback without credentials.
 *
 * @param config The config.
 * @throws {StartupError} naming the flag.
 */
export function checkExposure(config: Config): void {
  const exposed = [...config.listen, ...config.listenTls].find((a) =>
    !isLoopbackListen(a.hostname)
  );
  const authed = config.auth.length > 0 || config.authFile !== undefined;
  if (exposed && config.allow.length === 0 && !config.open && !authed) {
    const flag = config.listen.includes(exposed) ? "--listen" : "--listen-tls";
    throw new StartupError(
      `${flag} ${hostPort(exposed.hostname, exposed.port)}: a proxy on a non-loopback address ` +
        `serves anyone who reaches it; name its clients with --allow CIDR, require --auth, ` +
        `or pass --open`,
    );
  }
  if (
    config.admin && !isLoopbackListen(config.admin.hostname) && config.adminAuth.length === 0 &&
    config.adminAuthFile === undefined
  ) {
    throw new StartupError(
      `--admin ${hostPort(config.admin.hostname, config.admin.port)}: an admin listener on a ` +
        `non-loopback address shows every user's traffic to whoever reaches it; give admin ` +
        `credentials (--admin-auth-file or HTTP_PROXY_ADMIN_AUTH) or listen on loopback`,
    );
  }
}

/**
 * Checks that every file flag has its permission, naming the flag and the `--allow-…` to add.
 *
 * @param config The config.
 * @throws {StartupError} for the first one missing.
 */
export function checkPermissions(config: Config): void {
  const denied = needs("--tls-cert", "read", config.tlsCert) ??
    needs("--tls-key", "read", config.tlsKey) ??
    needs("--parent-auth-file", "read", config.parentAuthFile) ??
    config.denyDestFile.map((f) => needs("--deny-dest-file", "read", f)).find(Boolean) ??
    config.allowDestFile.map((f) => needs("--allow-dest-file", "read", f)).find(Boolean) ??
    needs("--auth-file", "read", config.authFile) ??
    needs("--admin-auth-file", "read", config.adminAuthFile) ??
    needs("--log-file", "write", config.logFile) ??
    needs("--summary-json", "write", config.summaryJson) ??
    needs("--har", "write", config.har) ??
    needs("--history", "write", config.history) ??
    needs("--history", "read", config.history) ??
    (config.cache ? needs("--cache-dir", "write", config.cacheDir) : undefined) ??
    (config.cache ? needs("--cache-dir", "read", config.cacheDir) : undefined);
  if (denied) throw new StartupError(denied);
}

/**
 * The one-line error for a file flag whose permission is missing, or undefined when granted.
 *
 * @param flag The flag, for the message.
 * @param name The permission.
 * @param path The file, or undefined when the flag is not used.
 * @returns The message, or undefined.
 */
function needs(flag: string, name: "read" | "write", path: string | undefined): string | undefined {
  if (path === undefined || Deno.permissions.querySync({ name, path }).state === "granted") return;
  return `${flag}: no permission to ${name} "${path}"; run with --allow-${name}=${path}`;
}

/** Reads a file a flag names; a failure is one line naming the flag (exit 1). */
async function readFlagFile(flag: string, file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    throw new StartupError(`${flag}: cannot read "${file}": ${(err as Error).message}`, 1);
  }
}

/**
 * Reads the files the policy needs into the config: the `--deny-dest-file` and
 * `--allow-dest-file` lists, the parent's credentials (`--parent-auth-file`) and the TLS pair.
 *
 * @param config The config.
 * @returns The config with `denyList`, `allowList`, `parentAuth` and `tlsPem` set where given.
 * @throws {StartupError} for a file that cannot be read (exit 1).
 */
export async function loadFiles(config: Config): Promise<Config> {
  const read = async (flag: string, files: string[]) => {
    if (files.length === 0) return undefined;
    const list = new NameList();
    for (const file of files) {
      try {
        // In pieces: a million-name list is never held whole beside its index.
        using f = await Deno.open(file);
        await list.addChunks(f.readable, file, (await f.stat()).size);
      } catch (err) {
        throw new StartupError(`${flag}: cannot read "${file}": ${(err as Error).message}`, 1);
      }
    }
    return list;
  };
  const rest = withoutLists(config);
  const denyList = await read("--deny-dest-file", config.denyDestFile);
  const allowList = await read("--allow-dest-file", config.allowDestFile);
  const parentAuth = config.parentAuthFile === undefined
    ? config.parentAuth
    : await readParentAuth(config.parentAuthFile);
  const tlsPem = await readTlsPem(config);
  return {
    ...rest,
    ...(tlsPem ? { tlsPem } : {}),
    ...(denyList ? { denyList } : {}),
    ...(allowList ? { allowList } : {}),
    ...(parentAuth === undefined ? {} : { parentAuth }),
  };
}

/**
 * Reads `--tls-cert` and `--tls-key` for the TLS listeners, and checks that they make a working
 * TLS server (a listener on 127.0.0.1 port 0, opened and closed), so a bad pair is one line at
 * startup, or on a reload keeps the running pair.
 */
async function readTlsPem(config: Config): Promise<{ cert: string; key: string } | undefined> {
  const tls = config.listenTls.length > 0;
  if (!tls && (config.tlsCert !== undefined || config.tlsKey !== undefined)) {
    throw new StartupError(
      `${config.tlsCert !== undefined ? "--tls-cert" : "--tls-key"} is only for --listen-tls`,
    );
  }
  if (!tls) return undefined;
  if (config.tlsCert === undefined || config.tlsKey === undefined) {
    throw new StartupError(
      `--listen-tls: needs --tls-cert and --tls-key (PEM files; http-proxy make-cert makes them)`,
    );
  }
  const pem = {
    cert: await readFlagFile("--tls-cert", config.tlsCert),
    key: await readFlagFile("--tls-key", config.tlsKey),
  };
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...pem }).close();
  } catch (err) {
    throw new StartupError(
      `--tls-cert/--tls-key: "${config.tlsCert}" and "${config.tlsKey}" do not make a TLS ` +
        `server: ${(err as Error).message.split("\n")[0]}`,
    );
  }
  return pem;
}

/** Reads `--parent-auth-file`: one `user:password` line. */
async function readParentAuth(file: string): Promise<string> {
  const text = await readFlagFile("--parent-auth-file", file);
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) =>
    l !== "" && !l.startsWith("#")
  );
  if (lines.length !== 1 || lines[0]!.indexOf(":") <= 0) {
    throw new StartupError(`--parent-auth-file: "${file}" must hold one user:password line`);
  }
  return lines[0]!;
}

/**
 * A config to hand to a worker: without the lists it loads itself (a worker gets a copy of
 * what it is posted, and a million names are better read than copied).
 *
 * @param config The config.
 * @returns The same without `denyList` and `allowList`.
 */
export function withoutLists(config: Config): Config {
  const { denyList: _d, allowList: _a, ...rest } = config;
  return rest;
}

/**
 * Loads the proxy's and the admin listener's credentials.
 *
 * @param config The config.
 * @returns Both authenticators (undefined where none is configured).
 * @throws {StartupError} for a bad credential or an unreadable file.
 */
export async function loadCredentials(
  config: Config,
): Promise<{ auth: Authenticator | undefined; adminAuth: Authenticator | undefined }> {
  const auth = await loadAuth(config);
  const adminAuth = await loadAuth(
    { auth: config.adminAuth, authFile: config.adminAuthFile },
    { plain: "HTTP_PROXY_ADMIN_AUTH", file: "--admin-auth-file" },
  );
  return { auth, adminAuth };
}

/**
 * How many threads serve (`--workers`), once what they need is known to be there.
 *
 * @param config The config.
 * @param program The program's module URL (each worker loads it again).
 * @returns The count, the main thread included.
 * @throws {StartupError} without `--unstable-net` or read access to the program.
 */
export function workerCount(config: Config, program: URL): number {
  const workers = config.workers === "auto" ? navigator.hardwareConcurrency : config.workers;
  if (workers === 1) return 1;
  // Without --unstable-net, Deno.listen({ reusePort }) ends the process (exit 70) rather than
  // throwing, so ask first: the unstable net APIs exist only with the flag.
  if (typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    throw new StartupError(
      `--workers: needs the --unstable-net flag of deno run (SO_REUSEPORT lets the workers ` +
        `share the listen ports)`,
    );
  }
  if (
    program.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: program }).state !== "granted"
  ) {
    throw new StartupError(
      `--workers: each worker loads this program again; run with --allow-read=${program.pathname}` +
        ` (or the folder it is in)`,
    );
  }
  return workers;
}

/** What {@linkcode startInstance} needs besides the config. */
export interface InstanceOptions {
  /** This thread's index and the thread count (exchange ids: index+1, index+1+count, …). */
  index: number;
  /** The thread count. */
  count: number;
  /** Observers of every exchange besides the access log and the summary. */
  watchers: ExchangeObserver[];
  /** Proxy credentials, when configured. */
  auth: Authenticator | undefined;
  /** The host's addresses (the main thread shares its set with the admin listener). */
  hostAddresses?: HostAddresses;
  /** The shared cache (`--cache`). */
  cache?: Cache;
}

/** A serving thread: its server, its log, its summary. */
export interface Instance {
  /** The proxy server. */
  server: ProxyServer;
  /** The access log: its logger, and closing and reopening its file. */
  log: ReturnType<typeof openLog>;
  /** This thread's traffic summary. */
  summary: Summary;
}

/**
 * Starts one serving thread (the main thread and every worker alike): opens the access log with
 * the summary and the other observers, binds the listen addresses (sharing them with
 * SO_REUSEPORT when there are workers), and starts the server.
 *
 * @param config The config (the listen ports real, the admin address bound).
 * @param options Thread index and count, observers, credentials, host addresses.
 * @returns The instance.
 * @throws {StartupError} when the log file cannot be opened (exit 1) or an address cannot be
 *   bound (exit 1).
 */
export function startInstance(config: Config, options: InstanceOptions): Instance {
  const summary = new Summary();
  let log: ReturnType<typeof openLog>;
  try {
    log = openLog(config, [summary, ...options.watchers]);
  } catch (err) {
    throw new StartupError(
      `--log-file: cannot open "${config.logFile}": ${(err as Error).message}`,
      1,
      { cause: err },
    );
  }
  let listeners: Listener[] = [];
  try {
    listeners = listenAll(config.listen, options.count > 1);
    if (config.listenTls.length > 0) {
      listeners.push(...listenAll(config.listenTls, options.count > 1, config.tlsPem));
    }
  } catch (err) {
    for (const l of listeners) l.close();
    log.close();
    throw err;
  }
  const server = new ProxyServer(listeners, {
    config,
    logger: log.logger,
    ids: { first: options.index + 1, step: options.count },
    reusePort: options.count > 1,
    ...(options.hostAddresses ? { hostAddresses: options.hostAddresses } : {}),
    ...(options.auth ? { auth: options.auth } : {}),
    ...(options.cache ? { cache: options.cache } : {}),
  });
  return { server, log, summary };
}

/**
 * Settings that a reload cannot change: what was bound, opened or sized when the proxy started
 * (listeners, the admin listener and its users, workers, the log, reports, the upstream pool).
 */
export const RESTART_ONLY = [
  "listen",
  "listenTls",
  "admin",
  "adminAuthFile",
  "adminAuth",
  "adminHosts",
  "workers",
  "logFile",
  "logFormat",
  "quiet",
  "utc",
  "har",
  "history",
  "historyDays",
  "historyMax",
  "cache",
  "cacheDir",
  "cacheSize",
  "cacheMem",
  "summaryJson",
  "summaryEveryMs",
  "maxIdlePerHost",
  "upstreamIdleTimeoutMs",
] as const satisfies readonly (keyof Config)[];

/** A configuration read again for a reload, checked and with its files loaded. */
export interface Reloaded {
  /** The new configuration (restart-only settings as they run). */
  config: Config;
  /** The new proxy credentials. */
  auth: Authenticator | undefined;
  /** Flags whose change needs a restart, kept as they were. */
  kept: string[];
}

/**
 * Reads the command line and its `--config` file again (SIGHUP), with the password file and the
 * lists, and checks the result as startup does. Restart-only settings keep their running values;
 * a change to one is named in `kept`.
 *
 * @param args The command line the proxy started with.
 * @param started The configuration it started with (before ports were bound).
 * @param running The configuration it runs with.
 * @returns The configuration and credentials to switch to.
 * @throws {StartupError} for anything startup would refuse: the running config then stays.
 */
export async function reloadConfig(
  args: string[],
  started: Config,
  running: Config,
): Promise<Reloaded> {
  const command = await readCommand(args);
  if (command.kind !== "run") throw new StartupError("the command line no longer runs the proxy");
  const next = command.config;
  addEnvironmentSecrets(next);
  const kept: string[] = [];
  for (const key of RESTART_ONLY) {
    if (JSON.stringify(next[key]) !== JSON.stringify(started[key])) {
      kept.push(OPTIONS.find((o) => o.key === key)?.name ?? key);
    }
    (next as unknown as Record<string, unknown>)[key] = running[key];
  }
  checkExposure(next);
  checkPermissions(next);
  const { auth } = await loadCredentials(next);
  return { config: await loadFiles(next), auth, kept };
}
