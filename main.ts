/**
 * The `http-proxy` command: flags → config → `Deno.listen` on every address → serve; SIGINT and
 * SIGTERM stop accepting and let exchanges in flight finish for `--grace`. Errors on the command
 * line exit 2 with one line; a listen failure exits 1.
 *
 * @module
 */

import { type Config, HELP, parseCommand, UsageError, VERSION } from "./lib/config.ts";
import { hostPort } from "./lib/dial.ts";
import { createLogger, fileSink, type Logger, printLine } from "./lib/log.ts";
import { ProxyServer } from "./lib/server.ts";

/**
 * Runs the command line and returns the exit code (the process exits with it).
 *
 * @param args Command-line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let config: Config;
  try {
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

  let file: ReturnType<typeof fileSink> | undefined;
  if (config.logFile !== undefined) {
    const path = config.logFile;
    if (Deno.permissions.querySync({ name: "write", path }).state !== "granted") {
      printLine(
        `http-proxy: --log-file: no permission to write "${path}"; run with --allow-write=${path}`,
        "stderr",
      );
      return 2;
    }
    try {
      file = fileSink(path);
    } catch (err) {
      printLine(
        `http-proxy: --log-file: cannot open "${path}": ${(err as Error).message}`,
        "stderr",
      );
      return 1;
    }
  }
  const logger: Logger = createLogger({
    format: config.logFormat,
    utc: config.utc,
    quiet: config.quiet,
    ...(file ? { sink: file.sink } : {}),
  });

  const listeners: Deno.TcpListener[] = [];
  for (const addr of config.listen) {
    try {
      listeners.push(Deno.listen({ hostname: addr.hostname, port: addr.port, transport: "tcp" }));
    } catch (err) {
      for (const l of listeners) l.close();
      const why = err instanceof Deno.errors.AddrInUse
        ? "address already in use"
        : (err as Error).message;
      printLine(
        `http-proxy: cannot listen on ${hostPort(addr.hostname, addr.port)}: ${why}`,
        "stderr",
      );
      file?.close();
      return 1;
    }
  }
  const server = new ProxyServer(listeners, { config, logger });
  const bound = server.addrs.map((a) => hostPort(a.hostname, a.port)).join(", ");
  logger.info(`http-proxy ${VERSION} listening on ${bound}`);

  const { promise: stopped, resolve: stop } = Promise.withResolvers<string>();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const onSignal = (signal: Deno.Signal) => () => stop(signal);
  const handlers = signals.map((s) => [s, onSignal(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  const signal = await stopped;
  const open = server.connections;
  logger.info(
    `${signal}: shutting down, ${open} connection(s) open, up to ${config.graceMs} ms grace`,
  );
  // A second signal means now.
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  const force = () => server.shutdown(0);
  for (const s of signals) Deno.addSignalListener(s, force);
  await server.shutdown(config.graceMs);
  logger.info("stopped");
  file?.close();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
