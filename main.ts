/**
 * The `http-proxy` command: flags → config → `Deno.listen` on every address → serve (in N
 * workers with `--workers`); SIGINT and SIGTERM stop accepting and let exchanges in flight
 * finish for `--grace`. Errors on the command line exit 2 with one line; a listen failure
 * exits 1. Run as a worker thread, the same module serves what the main thread hands it.
 *
 * @module
 */

import { envCredentials, hashLine, loadAuth } from "./lib/policy/auth.ts";
import {
  type Config,
  configFileArgs,
  HELP,
  parseCommand,
  UsageError,
  VERSION,
} from "./lib/cli/config.ts";
import { hostPort } from "./lib/upstream/dial.ts";
import { isLoopbackListen } from "./lib/policy/ip.ts";
import { fanOut } from "./lib/exchange.ts";
import { asciiJson, openLog, printLine } from "./lib/observe/log.ts";
import { listenAll, ListenError, ProxyServer } from "./lib/server.ts";
import { type RawSummary, Summary } from "./lib/observe/summary.ts";
import { type AdminServer, startAdmin } from "./lib/observe/admin.ts";
import { Metrics } from "./lib/observe/metrics.ts";
import { HarFile } from "./lib/observe/har.ts";
import { HostAddresses } from "./lib/policy/host_addresses.ts";
import { guardInspector } from "./lib/cli/inspector.ts";
import { describePolicy } from "./lib/policy/policy.ts";
import { inWorker, serveWorker, startWorkers, type WorkerHandle } from "./lib/cli/workers.ts";

/**
 * Runs the command line and returns the exit code (the process exits with it).
 *
 * @param args Command-line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "hash-password") return await hashPassword(args.slice(1));
  // SIGUSR1 opens Deno's debugger: closed at once, from the first moment. If this process may
  // not close it, it stops: at once during startup (nothing to lose yet), later with no grace.
  let cannotClose = (): void => Deno.exit(1);
  guardInspector({
    warn: (line) => printLine(line, "stderr"),
    cannotClose: () => cannotClose(),
  });
  let config: Config;
  try {
    const file = configPath(args);
    if (file !== undefined) {
      const missing = needs("--config", "read", file);
      if (missing) {
        printLine(`http-proxy: ${missing}`, "stderr");
        return 2;
      }
      let text: string;
      try {
        text = await Deno.readTextFile(file);
      } catch (err) {
        throw new UsageError(`--config: cannot read "${file}": ${(err as Error).message}`);
      }
      args = [...configFileArgs(text, file, args), ...args];
    }
    const command = parseCommand(args);
    if (command.kind === "help") {
      printLine(HELP);
      return 0;
    }
    if (command.kind === "version") {
      printLine(`http-proxy ${VERSION}`);
      return 0;
    }
    config = command.config;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printLine(`http-proxy: ${err.message}`, "stderr");
    return 2;
  }
  const fail = (message: string, code: number) => {
    printLine(`http-proxy: ${message}`, "stderr");
    return code;
  };

  // Secrets from the environment, where `ps` does not show them.
  config.auth.push(...envCredentials("HTTP_PROXY_AUTH"));
  config.adminAuth.push(...envCredentials("HTTP_PROXY_ADMIN_AUTH"));
  // An address others can reach, with nobody named as allowed, would be an open proxy.
  const exposed = config.listen.find((a) => !isLoopbackListen(a.hostname));
  const authed = config.auth.length > 0 || config.authFile !== undefined;
  if (exposed && config.allow.length === 0 && !config.open && !authed) {
    return fail(
      `--listen ${hostPort(exposed.hostname, exposed.port)}: a proxy on a non-loopback address ` +
        `serves anyone who reaches it; name its clients with --allow CIDR, require --auth, ` +
        `or pass --open`,
      2,
    );
  }
  // The admin listener shows every user's URLs: beyond loopback only behind credentials.
  if (
    config.admin && !isLoopbackListen(config.admin.hostname) && config.adminAuth.length === 0 &&
    config.adminAuthFile === undefined
  ) {
    return fail(
      `--admin ${hostPort(config.admin.hostname, config.admin.port)}: an admin listener on a ` +
        `non-loopback address shows every user's traffic to whoever reaches it; give admin ` +
        `credentials (--admin-auth-file or HTTP_PROXY_ADMIN_AUTH) or listen on loopback`,
      2,
    );
  }
  // Each file flag needs its permission; say which flag lacks what, in one line.
  const denied = needs("--auth-file", "read", config.authFile) ??
    needs("--admin-auth-file", "read", config.adminAuthFile) ??
    needs("--log-file", "write", config.logFile) ??
    needs("--summary-json", "write", config.summaryJson) ??
    needs("--har", "write", config.har);
  if (denied) return fail(denied, 2);
  const auth = await loadAuth(config);
  if (typeof auth === "string") return fail(auth, 2);
  const adminAuth = await loadAuth(
    { auth: config.adminAuth, authFile: config.adminAuthFile },
    { plain: "HTTP_PROXY_ADMIN_AUTH", file: "--admin-auth-file" },
  );
  if (typeof adminAuth === "string") return fail(adminAuth, 2);
  const workers = config.workers === "auto" ? navigator.hardwareConcurrency : config.workers;
  // Without --unstable-net, Deno.listen({ reusePort }) ends the process (exit 70) rather than
  // throwing, so ask first: the unstable net APIs exist only with the flag.
  if (workers > 1 && typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    return fail(
      `--workers: needs the --unstable-net flag of deno run (SO_REUSEPORT lets the workers ` +
        `share the listen ports)`,
      2,
    );
  }
  const self = new URL(import.meta.url);
  if (
    workers > 1 && self.protocol === "file:" &&
    Deno.permissions.querySync({ name: "read", path: self }).state !== "granted"
  ) {
    return fail(
      `--workers: each worker loads this program again; run with --allow-read=${self.pathname}` +
        ` (or the folder it is in)`,
      2,
    );
  }
  const summary = new Summary();
  const metrics = new Metrics();
  // For --admin: the summary of every thread's traffic, and the workers' latest gauges.
  const everywhere = new Summary();
  const workerGauges = new Map<number, { connections: number; idleUpstreams: number }>();
  let har: HarFile | undefined;
  try {
    if (config.har !== undefined) har = new HarFile(config.har, (m) => printLine(m, "stderr"));
  } catch (err) {
    return fail(`--har: cannot create "${config.har}": ${(err as Error).message}`, 1);
  }
  let log: ReturnType<typeof openLog>;
  try {
    // Metrics cost a little per exchange: counted only when --admin serves them.
    const live = config.admin ? metrics : undefined;
    log = openLog(config, [summary, ...(live ? [live, everywhere] : []), ...(har ? [har] : [])]);
  } catch (err) {
    return fail(`--log-file: cannot open "${config.logFile}": ${(err as Error).message}`, 1);
  }
  const { logger } = log;

  let listeners: Deno.TcpListener[];
  try {
    listeners = listenAll(config.listen, workers > 1);
  } catch (err) {
    log.close();
    if (!(err instanceof ListenError)) throw err;
    return fail(err.message, 1);
  }
  const hostAddresses = new HostAddresses();
  // The admin listener first, so the proxy (and every worker) knows its real port and never
  // relays a request to it.
  let admin: AdminServer | undefined;
  // Assigned once, after the admin listener whose gauges read it (so not a const).
  // deno-lint-ignore prefer-const
  let server: ProxyServer | undefined;
  let others: WorkerHandle[] = [];
  if (config.admin) {
    try {
      const sum = (pick: (g: { connections: number; idleUpstreams: number }) => number) =>
        [...workerGauges.values()].reduce((n, g) => n + pick(g), 0);
      admin = startAdmin(config.admin, {
        metrics,
        summary: everywhere,
        gauges: {
          connections: () => (server?.connections ?? 0) + sum((g) => g.connections),
          idleUpstreams: () => (server?.idleUpstreams ?? 0) + sum((g) => g.idleUpstreams),
        },
        auth: adminAuth,
        hosts: config.adminHosts,
        hostAddresses,
      });
    } catch (err) {
      for (const l of listeners) l.close();
      log.close();
      const why = err instanceof Deno.errors.AddrInUse
        ? "address already in use"
        : (err as Error).message;
      return fail(
        `--admin: cannot listen on ${hostPort(config.admin.hostname, config.admin.port)}: ${why}`,
        1,
      );
    }
    config = { ...config, admin: admin.bound };
  }
  server = new ProxyServer(listeners, {
    config,
    logger,
    ids: { first: 1, step: workers },
    hostAddresses,
    ...(auth ? { auth } : {}),
  });
  const bound = server.addrs.map((a) => ({ hostname: a.hostname, port: a.port }));
  try {
    others = await startWorkers(
      import.meta.url,
      { ...config, listen: bound },
      workers,
      config.admin
        ? {
          ...fanOut(metrics, everywhere),
          gauges: (i, connections, idleUpstreams) =>
            workerGauges.set(i, { connections, idleUpstreams }),
        }
        : undefined,
    );
  } catch (err) {
    await server.shutdown(0);
    await admin?.shutdown();
    log.close();
    return fail((err as Error).message, 1);
  }
  const addrs = bound.map((a) => hostPort(a.hostname, a.port)).join(", ");
  logger.info(
    `http-proxy ${VERSION} listening on ${addrs}${workers > 1 ? ` (${workers} workers)` : ""}`,
  );
  const users = auth?.users ?? 0;
  for (const line of describePolicy(config, users)) logger.info(line);
  if (exposed && !hostAddresses.complete) {
    logger.info(
      "warning: without --allow-sys the proxy cannot read this host's interface addresses, so " +
        "only loopback and 0.0.0.0 are refused to other machines as this host's own",
    );
  }
  if (admin) {
    logger.info(
      `admin: http://${admin.addr}/ (metrics at /metrics), ` +
        (adminAuth ? `asks for admin credentials` : `no credentials (loopback only)`),
    );
  }

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
  // SIGHUP: reopen the log file (logrotate moved it), here and in every worker.
  const onHup = () => {
    log.reopen();
    for (const w of others) w.reopenLog();
  };
  Deno.addSignalListener("SIGHUP", onHup);
  const { promise: stopped, resolve: stop } = Promise.withResolvers<string>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((s) => [s, () => stop(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  cannotClose = () => stop("SIGUSR1");
  const signal = await stopped;
  const graceMs = signal === "SIGUSR1" ? 0 : config.graceMs;
  logger.info(
    `${signal}: shutting down, ${server.connections} connection(s) open` +
      `${workers > 1 ? " in the main thread" : ""}, up to ${graceMs} ms grace`,
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
    har?.close();
    logger.info("stopped");
    log.close();
  }
  // Stopped because a debugger opened that could not be closed: a failure for the supervisor.
  return signal === "SIGUSR1" ? 1 : 0;
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
 * `http-proxy hash-password USER`: reads a password on stdin (one line), prints the
 * `--auth-file` line for it.
 */
async function hashPassword(args: string[]): Promise<number> {
  const user = args[0];
  if (args.length !== 1 || !user || !/^[^:\s]+$/.test(user)) {
    printLine("http-proxy: usage: http-proxy hash-password USER < password-file", "stderr");
    return 2;
  }
  const input = await new Response(Deno.stdin.readable).text();
  const password = input.replace(/\r?\n$/, "");
  if (password === "" || password.includes("\n")) {
    printLine("http-proxy: hash-password: give one non-empty password line on stdin", "stderr");
    return 2;
  }
  printLine(await hashLine(user, password));
  return 0;
}

if (import.meta.main) {
  if (inWorker()) serveWorker();
  else Deno.exit(await main(Deno.args));
}
