/**
 * The `http-proxy` command: flags → config → `Deno.listen` on every address → serve (in N
 * workers with `--workers`); SIGINT and SIGTERM stop accepting and let exchanges in flight
 * finish for `--grace`. A step that cannot go on throws a StartupError: one line on stderr, exit
 * 2 for a wrong command line or setting, 1 for what the machine refused (a port in use, a file
 * that cannot be opened). Run as a worker thread, the same module serves what the main thread
 * hands it.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Config, HELP, VERSION } from "./lib/cli/config.ts";
import { checkNames, makeCertificates } from "./lib/cli/make_cert.ts";
import { historyCommand } from "./lib/cli/history_command.ts";
import { guardInspector } from "./lib/cli/inspector.ts";
import {
  addEnvironmentSecrets,
  checkExposure,
  checkPermissions,
  type Instance,
  loadCredentials,
  loadFiles,
  readCommand,
  reloadConfig,
  startInstance,
  workerCount,
} from "./lib/cli/startup.ts";
import { inWorker, serveWorker, startWorkers, type WorkerHandle } from "./lib/cli/workers.ts";
import { StartupError } from "./lib/errors.ts";
import { fanOut } from "./lib/exchange.ts";
import { type AdminServer, startAdmin } from "./lib/observe/admin.ts";
import { HarFile } from "./lib/observe/har.ts";
import { History } from "./lib/observe/history.ts";
import { Cache } from "./lib/cache/cache.ts";
import { asciiJson, printLine } from "./lib/observe/log.ts";
import { Metrics } from "./lib/observe/metrics.ts";
import { type RawSummary, Summary } from "./lib/observe/summary.ts";
import { type Authenticator, hashLine } from "./lib/policy/auth.ts";
import { HostAddresses } from "./lib/policy/host_addresses.ts";
import { isLoopbackListen } from "./lib/policy/ip.ts";
import { describePolicy } from "./lib/policy/policy.ts";
import { hostPort } from "./lib/upstream/dial.ts";

/**
 * Runs the command line and returns the exit code (the process exits with it).
 *
 * @param args Command-line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "hash-password") return await hashPassword(args.slice(1));
  if (args[0] === "history") {
    try {
      return historyCommand(args.slice(1));
    } catch (err) {
      if (!(err instanceof StartupError)) throw err;
      printLine(`http-proxy: ${err.message}`, "stderr");
      return err.code;
    }
  }
  if (args[0] === "make-cert") {
    try {
      return await makeCert(args.slice(1));
    } catch (err) {
      if (!(err instanceof StartupError)) throw err;
      printLine(`http-proxy: ${err.message}`, "stderr");
      return err.code;
    }
  }
  // SIGUSR1 opens Deno's debugger: closed at once, from the first moment. If this process may
  // not close it, it stops: at once during startup (nothing to lose yet), later with no grace.
  const guard = { cannotClose: (): void => Deno.exit(1) };
  guardInspector({
    warn: (line) => printLine(line, "stderr"),
    cannotClose: () => guard.cannotClose(),
  });
  try {
    const command = await readCommand(args);
    if (command.kind === "help") printLine(HELP);
    if (command.kind === "version") printLine(`http-proxy ${VERSION}`);
    if (command.kind !== "run") return 0;
    return await serve(command.config, guard, args);
  } catch (err) {
    if (!(err instanceof StartupError)) throw err;
    printLine(`http-proxy: ${err.message}`, "stderr");
    return err.code;
  }
}

/** What the admin listener and the reports read: every thread's traffic. */
interface Reports {
  /** Metrics of every thread (counted only with --admin). */
  metrics: Metrics;
  /** The summary of every thread's traffic, for /api/summary. */
  everywhere: Summary;
  /** The --har file, if any. */
  har: HarFile | undefined;
  /** The --history database, if any. */
  history: History | undefined;
  /** The --cache store, if any. */
  cache: Cache | undefined;
  /** The workers' latest gauges. */
  workerGauges: Map<number, { connections: number; idleUpstreams: number }>;
}

/**
 * Serves until SIGINT or SIGTERM, as a short list of steps.
 *
 * @param config The config from the command line.
 * @param guard Where the debugger guard learns how to stop the proxy once it serves.
 * @param args The command line, read again on SIGHUP.
 * @returns The exit code.
 */
async function serve(
  config: Config,
  guard: { cannotClose: () => void },
  args: string[],
): Promise<number> {
  addEnvironmentSecrets(config);
  // As given, for a reload to tell which restart-only settings were changed.
  const started: Config = { ...config };
  checkExposure(config);
  checkPermissions(config);
  const { auth, adminAuth } = await loadCredentials(config);
  config = await loadFiles(config);
  const workers = workerCount(config, new URL(import.meta.url));
  const reports = openReports(config, workers);
  const hostAddresses = new HostAddresses();
  let instance: Instance | undefined;
  // The admin listener first, so the proxy (and every worker) knows its real port and never
  // relays a request to it.
  const admin = startAdminListener(config, reports, adminAuth, hostAddresses, () => instance);
  if (admin) config = { ...config, admin: admin.bound };
  let others: WorkerHandle[] = [];
  try {
    // Metrics cost a little per exchange: counted only when --admin serves them.
    const watchers = [
      ...(admin ? [reports.metrics, reports.everywhere] : []),
      ...(reports.har ? [reports.har] : []),
      ...(reports.history ? [reports.history] : []),
    ];
    instance = startInstance(config, {
      index: 0,
      count: workers,
      watchers,
      auth,
      hostAddresses,
      ...(reports.cache ? { cache: reports.cache } : {}),
    });
    // The real ports (0 picks one): plain listeners first, then the TLS ones (startInstance).
    const bound = instance.server.addrs.map((a) => ({ hostname: a.hostname, port: a.port }));
    config = {
      ...config,
      listen: bound.slice(0, config.listen.length),
      listenTls: bound.slice(config.listen.length),
    };
    others = await startWorkers(
      import.meta.url,
      config,
      workers,
      // Workers send their exchanges here for what this thread writes or shows for all.
      admin || reports.har || reports.history
        ? {
          ...fanOut(
            ...(admin ? [reports.metrics, reports.everywhere] : []),
            reports.har,
            reports.history,
          ),
          gauges: (i, connections, idleUpstreams, flows) => {
            reports.workerGauges.set(i, { connections, idleUpstreams });
            for (const [id, up, down] of flows) reports.metrics.progress(id, up, down);
          },
        }
        : undefined,
    );
  } catch (err) {
    await instance?.server.shutdown(0);
    instance?.log.close();
    await admin?.shutdown();
    reports.har?.close();
    reports.history?.close();
    await reports.cache?.close();
    throw err instanceof StartupError ? err : new StartupError((err as Error).message, 1);
  }
  announce(config, instance, workers, auth, admin, adminAuth, hostAddresses, reports.cache);
  return await runUntilStopped(config, instance, others, admin, reports, guard, {
    args,
    started,
  });
}

/**
 * Opens what reports on every thread's traffic: metrics, the all-threads summary, the HAR file.
 *
 * @throws {StartupError} when the HAR file cannot be created (exit 1).
 */
function openReports(config: Config, workers: number): Reports {
  let har: HarFile | undefined;
  try {
    if (config.har !== undefined) har = new HarFile(config.har, (m) => printLine(m, "stderr"));
  } catch (err) {
    throw new StartupError(`--har: cannot create "${config.har}": ${(err as Error).message}`, 1);
  }
  let history: History | undefined;
  try {
    if (config.history !== undefined) {
      history = new History(config.history, {
        maxAgeMs: config.historyDays * 86_400_000,
        maxBytes: config.historyMax,
        diag: (m) => printLine(m, "stderr"),
      });
    }
  } catch (err) {
    har?.close();
    throw new StartupError(
      `--history: cannot open "${config.history}": ${(err as Error).message}`,
      1,
    );
  }
  let cache: Cache | undefined;
  try {
    if (config.cache) {
      cache = new Cache({
        dir: config.cacheDir,
        maxBytes: config.cacheSize,
        memBytes: config.cacheMem,
        diag: (m) => printLine(m, "stderr"),
        // With workers, every thread opens the store; this one first, clearing what a crash left.
        shared: workers > 1,
      });
    }
  } catch (err) {
    har?.close();
    history?.close();
    throw new StartupError(
      `--cache-dir: cannot open the cache in "${config.cacheDir}": ${(err as Error).message}`,
      1,
    );
  }
  return {
    metrics: new Metrics(),
    everywhere: new Summary(),
    har,
    history,
    cache,
    workerGauges: new Map(),
  };
}

/**
 * Starts the admin listener (`--admin`), if asked for.
 *
 * @throws {StartupError} when its address cannot be bound (exit 1).
 */
function startAdminListener(
  config: Config,
  reports: Reports,
  adminAuth: Authenticator | undefined,
  hostAddresses: HostAddresses,
  instance: () => Instance | undefined,
): AdminServer | undefined {
  if (!config.admin) return undefined;
  const sum = (pick: (g: { connections: number; idleUpstreams: number }) => number) =>
    [...reports.workerGauges.values()].reduce((n, g) => n + pick(g), 0);
  try {
    return startAdmin(config.admin, {
      metrics: reports.metrics,
      summary: reports.everywhere,
      gauges: {
        connections: () => (instance()?.server.connections ?? 0) + sum((g) => g.connections),
        idleUpstreams: () => (instance()?.server.idleUpstreams ?? 0) + sum((g) => g.idleUpstreams),
        cache: () => reports.cache?.store.stats,
      },
      auth: adminAuth,
      hosts: config.adminHosts,
      hostAddresses,
      history: config.history,
      cache: reports.cache,
    });
  } catch (err) {
    reports.har?.close();
    reports.history?.close();
    void reports.cache?.close();
    const why = err instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : (err as Error).message;
    throw new StartupError(
      `--admin: cannot listen on ${hostPort(config.admin.hostname, config.admin.port)}: ${why}`,
      1,
    );
  }
}

/** The startup lines: where it listens, who may use it and where they may go, the admin URL. */
function announce(
  config: Config,
  instance: Instance,
  workers: number,
  auth: Authenticator | undefined,
  admin: AdminServer | undefined,
  adminAuth: Authenticator | undefined,
  hostAddresses: HostAddresses,
  cache: Cache | undefined,
): void {
  const { logger } = instance.log;
  // TLS listeners as the URL clients give (https://…).
  const addrs = [
    ...config.listen.map((a) => hostPort(a.hostname, a.port)),
    ...config.listenTls.map((a) => `https://${hostPort(a.hostname, a.port)}`),
  ].join(", ");
  logger.info(
    `http-proxy ${VERSION} listening on ${addrs}${workers > 1 ? ` (${workers} workers)` : ""}`,
  );
  for (const line of describePolicy(config, auth?.users ?? 0)) logger.info(line);
  const exposed = config.listen.some((a) => !isLoopbackListen(a.hostname));
  if (exposed && !hostAddresses.complete) {
    logger.info(
      "warning: without --allow-sys the proxy cannot read this host's interface addresses, so " +
        "only loopback and 0.0.0.0 are refused to other machines as this host's own",
    );
  }
  if (cache) {
    const { entries, bytes } = cache.store.stats;
    const mib = (n: number) => `${Math.round(n / 1024 ** 2)} MiB`;
    logger.info(
      `cache: ${entries} response(s), ${mib(bytes)} of ${mib(config.cacheSize)} in ` +
        `${Deno.realPathSync(config.cacheDir)}; ${mib(config.cacheMem)} in memory`,
    );
  }
  if (admin) {
    logger.info(
      `admin: http://${admin.addr}/ (metrics at /metrics), ` +
        (adminAuth ? `asks for admin credentials` : `no credentials (loopback only)`),
    );
  }
}

/**
 * Serves until a stop signal, answering SIGUSR2 (summary) and SIGHUP (reopen the log, reload
 * the config) on the way, then shuts down: grace for exchanges in flight, the final summary, the
 * HAR file closed and the log flushed whatever happens.
 *
 * @returns The exit code: 0, or 1 when a debugger opened that could not be closed.
 */
async function runUntilStopped(
  config: Config,
  instance: Instance,
  others: WorkerHandle[],
  admin: AdminServer | undefined,
  reports: Reports,
  guard: { cannotClose: () => void },
  origin: { args: string[]; started: Config },
): Promise<number> {
  const { server, log, summary } = instance;
  const { logger } = log;
  // The per-host summary, all threads merged: on SIGUSR2, every --summary-every, and at exit.
  const publish = async (fromWorkers: (RawSummary | undefined)[]) => {
    const all = new Summary();
    all.merge(summary.raw());
    for (const raw of fromWorkers) if (raw) all.merge(raw);
    logger.info(all.table());
    if (config.summaryJson === undefined) return;
    try {
      await Deno.writeTextFile(config.summaryJson, asciiJson(all.toJSON(), 2) + "\n");
    } catch (err) {
      logger.info(
        `--summary-json: cannot write "${config.summaryJson}": ${(err as Error).message}`,
      );
    }
  };
  const report = async () => publish(await Promise.all(others.map((w) => w.summary())));
  const onUsr2 = () => void report();
  Deno.addSignalListener("SIGUSR2", onUsr2);
  const every = config.summaryEveryMs > 0 ? setInterval(onUsr2, config.summaryEveryMs) : undefined;
  if (every !== undefined) Deno.unrefTimer(every as unknown as number);
  // SIGHUP: reopen the log file (logrotate moved it), here and in every worker; then read the
  // config, password file and lists again and switch to them, or keep what runs and say why.
  let reloading = Promise.resolve();
  const onHup = () => {
    log.reopen();
    for (const w of others) w.reopenLog();
    reloading = reloading.then(async () => {
      try {
        const next = await reloadConfig(origin.args, origin.started, config);
        config = next.config;
        await server.reload(next.config, next.auth);
        for (const w of others) w.reload(next.config);
        for (const flag of next.kept) {
          logger.info(`reload: --${flag} changed, which needs a restart; kept as it runs`);
        }
        logger.info("reload: SIGHUP: config, password file and lists read again");
        for (const line of describePolicy(config, next.auth?.users ?? 0)) logger.info(line);
      } catch (err) {
        const why = err instanceof StartupError ? err.message : String((err as Error)?.message);
        logger.info(`reload: SIGHUP: kept the running config: ${why}`);
      }
    });
  };
  Deno.addSignalListener("SIGHUP", onHup);
  const { promise: stopped, resolve: stop } = Promise.withResolvers<string>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((s) => [s, () => stop(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  guard.cannotClose = () => stop("SIGUSR1");
  const signal = await stopped;
  const graceMs = signal === "SIGUSR1" ? 0 : config.graceMs;
  logger.info(
    `${signal}: shutting down, ${server.connections} connection(s) open` +
      `${others.length > 0 ? " in the main thread" : ""}, up to ${graceMs} ms grace`,
  );
  // A second signal means now.
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  clearInterval(every);
  Deno.removeSignalListener("SIGUSR2", onUsr2);
  const force = () => {
    server.shutdown(0);
    for (const w of others) w.stop(0);
  };
  for (const s of signals) Deno.addSignalListener(s, force);
  // Each worker hands over its final counts as it stops.
  const [, ...fromWorkers] = await Promise.all([
    server.shutdown(graceMs),
    ...others.map((w) => w.stop(graceMs)),
  ]);
  Deno.removeSignalListener("SIGHUP", onHup);
  // Whatever fails while reporting, the HAR file is closed (valid JSON) and the log flushed.
  try {
    await admin?.shutdown();
    await publish(fromWorkers);
  } catch (err) {
    logger.info(`shutdown: could not write the summary: ${(err as Error)?.stack ?? err}`);
  } finally {
    reports.har?.close();
    reports.history?.close();
    await reports.cache?.close();
    logger.info("stopped");
    log.close();
  }
  // Stopped because a debugger opened that could not be closed: a failure for the supervisor.
  return signal === "SIGUSR1" ? 1 : 0;
}

/**
 * `http-proxy hash-password USER`: asks for the password twice without echoing it on a
 * terminal, or reads one line from standard input otherwise, and prints the `--auth-file` line.
 */
async function hashPassword(args: string[]): Promise<number> {
  const user = args[0];
  if (args.length !== 1 || !user || !/^[^:\s]+$/.test(user)) {
    printLine("http-proxy: usage: http-proxy hash-password USER (asks, or reads stdin)", "stderr");
    return 2;
  }
  let password: string | undefined;
  if (Deno.stdin.isTerminal()) {
    password = await askHidden(`Password for ${user}: `);
    const again = password === undefined ? undefined : await askHidden("Again: ");
    if (password === undefined || again === undefined) return 130; // Ctrl-C or Ctrl-D
    if (again !== password) {
      printLine("http-proxy: hash-password: the two passwords differ; nothing written", "stderr");
      return 2;
    }
  } else {
    const input = await new Response(Deno.stdin.readable).text();
    password = input.replace(/\r?\n$/, "");
  }
  if (password === "" || password.includes("\n")) {
    printLine("http-proxy: hash-password: give one non-empty password line", "stderr");
    return 2;
  }
  printLine(await hashLine(user, password));
  return 0;
}

/**
 * `http-proxy make-cert [--dir DIR] NAME…`: a local CA (made once, reused after) and a server
 * certificate for the names and addresses given, written to DIR; prints how to use and trust
 * them. Never overwrites a key.
 */
async function makeCert(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { dir: { type: "string", default: "." } },
      allowPositionals: true,
    });
  } catch (err) {
    throw new StartupError(`make-cert: ${(err as Error).message.split("\n")[0]}`, 2);
  }
  const dir = parsed.values.dir;
  const names = parsed.positionals;
  checkNames(names); // a bad name is reported before anything on disk is looked at
  if (names.length === 0) {
    throw new StartupError(
      "make-cert: usage: http-proxy make-cert [--dir DIR] NAME... (the proxy's host names and " +
        "addresses, e.g. proxy.lan 192.168.1.10)",
      2,
    );
  }
  const file = (name: string) => `${dir}/${name}`;
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new StartupError(`make-cert: cannot make "${dir}": ${(err as Error).message}`, 1);
  }
  const exists = async (path: string) => {
    try {
      await Deno.lstat(path);
      return true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return false;
      throw new StartupError(`make-cert: cannot look at "${path}": ${(err as Error).message}`, 1);
    }
  };
  for (const name of ["proxy.pem", "proxy-key.pem"]) {
    if (await exists(file(name))) {
      throw new StartupError(
        `make-cert: "${file(name)}" exists and is never overwritten; move it away first`,
        2,
      );
    }
  }
  const [hasCa, hasCaKey] = [await exists(file("ca.pem")), await exists(file("ca-key.pem"))];
  if (hasCa !== hasCaKey) {
    throw new StartupError(`make-cert: "${dir}" has only one of ca.pem and ca-key.pem`, 2);
  }
  let ca: { cert: string; key: string } | undefined;
  try {
    if (hasCa) {
      ca = {
        cert: await Deno.readTextFile(file("ca.pem")),
        key: await Deno.readTextFile(file("ca-key.pem")),
      };
    }
  } catch (err) {
    throw new StartupError(
      `make-cert: cannot read the CA in "${dir}": ${(err as Error).message}`,
      1,
    );
  }
  const made = await makeCertificates(names, ca);
  const write = async (name: string, text: string, mode: number) => {
    try {
      // createNew: a file that appeared meanwhile is not overwritten either.
      await Deno.writeTextFile(file(name), text, { createNew: true, mode });
    } catch (err) {
      throw new StartupError(
        `make-cert: cannot write "${file(name)}": ${(err as Error).message}`,
        1,
      );
    }
  };
  if (!ca) {
    await write("ca-key.pem", made.caKey, 0o600);
    await write("ca.pem", made.caCert, 0o644);
  }
  await write("proxy-key.pem", made.key, 0o600);
  await write("proxy.pem", made.cert, 0o644);
  const host = names[0]!.includes(":") && !names[0]!.startsWith("[") ? `[${names[0]}]` : names[0];
  printLine(
    [
      `${ca ? "reused the CA" : "made a CA"} in ${file("ca.pem")} (its key: ${
        file("ca-key.pem")
      }, keep it private)`,
      `made ${file("proxy.pem")} and ${file("proxy-key.pem")} for ${names.join(", ")}`,
      "",
      "Serve with:",
      `  http-proxy --listen-tls ${host}:3129 --tls-cert ${file("proxy.pem")} --tls-key ${
        file("proxy-key.pem")
      } ...`,
      "Trust the CA (ca.pem) where clients run:",
      `  curl:      curl --proxy https://${host}:3129 --proxy-cacert ca.pem https://example.com/`,
      "  Debian/Ubuntu:  cp ca.pem /usr/local/share/ca-certificates/http-proxy.crt && " +
      "update-ca-certificates",
      "  Chromium (Linux):  certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n http-proxy -i ca.pem",
      "  Firefox:   Settings > Privacy & Security > Certificates > View Certificates > " +
      "Authorities > Import (trust it to identify websites)",
      "  macOS:     security add-trusted-cert -d -r trustRoot -k " +
      "/Library/Keychains/System.keychain ca.pem",
      "  Windows:   certutil -addstore -f Root ca.pem",
    ].join("\n"),
  );
  return 0;
}

/**
 * Reads one line from the terminal without echoing it (the prompt goes to stderr, so stdout
 * holds only the hash line).
 *
 * @returns The line, or undefined for Ctrl-C or Ctrl-D.
 */
async function askHidden(prompt: string): Promise<string | undefined> {
  Deno.stderr.writeSync(new TextEncoder().encode(prompt));
  Deno.stdin.setRaw(true);
  const bytes: number[] = [];
  const buf = new Uint8Array(64);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) return undefined;
      for (const c of buf.subarray(0, n)) {
        if (c === 3 || c === 4) return undefined; // Ctrl-C, Ctrl-D
        if (c === 13 || c === 10) return new TextDecoder().decode(new Uint8Array(bytes));
        if (c === 127 || c === 8) bytes.pop(); // backspace
        else bytes.push(c);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  }
}

if (import.meta.main) {
  if (inWorker()) serveWorker();
  else Deno.exit(await main(Deno.args));
}
