/**
 * `--workers N`: N isolates (threads) in one process, each with its own listeners on the same
 * ports (SO_REUSEPORT, so the kernel spreads new connections), its own upstream pool and its own
 * log sink; they share nothing else. The main thread is worker 0; this module starts the others
 * from the program's own module URL and stops them at shutdown, each finishing its exchanges in
 * flight within the grace period. Exchange ids stay unique: worker k numbers k+1, k+1+N, …
 *
 * @module
 */

import { Cache } from "../cache/cache.ts";
import type { Config } from "./config.ts";
import type { ExchangeObserver, ExchangeRecord } from "../exchange.ts";
import type { ProxyServer } from "../server.ts";
import { loadCredentials, loadFiles, startInstance, withoutLists } from "./startup.ts";
import { type RawSummary, Summary } from "../observe/summary.ts";

/** Messages between the main thread and a worker. */
type ToWorker =
  | { kind: "start"; config: Config; index: number; count: number }
  | { kind: "stop"; graceMs: number }
  | { kind: "reopen" }
  | { kind: "reload"; config: Config }
  | { kind: "summary" };
type FromWorker =
  | { kind: "ready" }
  | { kind: "error"; message: string }
  | { kind: "stopped"; raw: RawSummary }
  | { kind: "opened" | "closed"; ex: ExchangeRecord }
  | { kind: "gauges"; connections: number; idleUpstreams: number; flows: Flow[] }
  | { kind: "summary"; raw: RawSummary };

/** An exchange under way in a worker and its bytes so far: `[id, bytesUp, bytesDown]`. */
export type Flow = [number, number, number];

/** What the main thread hears of the workers' traffic (with --admin): their exchanges, and gauges. */
export interface WorkerEvents extends ExchangeObserver {
  /**
   * Worker `index`'s gauges, sent every second, with the bytes so far of each of its exchanges
   * under way whose bytes moved since the last time (the main thread's records of them are
   * copies that only the end would update otherwise).
   */
  gauges(index: number, connections: number, idleUpstreams: number, flows: Flow[]): void;
}

/** A started worker. */
export interface WorkerHandle {
  /** Asks it to stop within `graceMs`; resolves with its final counts once it has. */
  stop(graceMs: number): Promise<RawSummary | undefined>;
  /** Asks it to reopen its log file. */
  reopenLog(): void;
  /** Hands it a reloaded config (it reads the password file and lists itself). */
  reload(config: Config): void;
  /** Asks for its traffic counts (undefined if it does not answer within a second). */
  summary(): Promise<RawSummary | undefined>;
}

/**
 * Tells whether this code runs inside a worker thread.
 *
 * @returns True in a worker.
 */
export function inWorker(): boolean {
  const scope = (globalThis as { WorkerGlobalScope?: new () => unknown }).WorkerGlobalScope;
  return scope !== undefined && globalThis instanceof scope;
}

/**
 * Starts workers 1…count-1, each listening on the addresses the main thread bound.
 *
 * @param entry The program's module URL (it runs {@linkcode serveWorker} in a worker).
 * @param config The configuration, with the bound (real) ports.
 * @param count Total workers, the main thread included.
 * @returns Handles, once every worker listens.
 * @throws {Error} with a one-line message if a worker fails to start.
 */
export async function startWorkers(
  entry: string,
  config: Config,
  count: number,
  events?: WorkerEvents,
): Promise<WorkerHandle[]> {
  const handles: WorkerHandle[] = [];
  const starts: Promise<void>[] = [];
  for (let index = 1; index < count; index++) {
    const worker = new Worker(entry, { type: "module", name: `http-proxy-worker-${index}` });
    const { promise: ready, resolve, reject } = Promise.withResolvers<void>();
    let stopped: ((raw: RawSummary | undefined) => void) | undefined;
    const summaries: ((raw: RawSummary | undefined) => void)[] = [];
    worker.onmessage = (e: MessageEvent<FromWorker>) => {
      if (e.data.kind === "ready") resolve();
      else if (e.data.kind === "error") reject(new Error(e.data.message));
      else if (e.data.kind === "stopped") stopped?.(e.data.raw);
      else if (e.data.kind === "summary") summaries.shift()?.(e.data.raw);
      else if (e.data.kind === "opened") events?.opened?.(e.data.ex);
      else if (e.data.kind === "closed") events?.closed(e.data.ex);
      else if (e.data.kind === "gauges") {
        events?.gauges(index, e.data.connections, e.data.idleUpstreams, e.data.flows);
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`worker ${index} failed: ${e.message}`));
      stopped?.(undefined);
    };
    worker.postMessage(
      { kind: "start", config: withoutLists(config), index, count } satisfies ToWorker,
    );
    starts.push(ready);
    let stopping: Promise<RawSummary | undefined> | undefined;
    handles.push({
      reopenLog() {
        worker.postMessage({ kind: "reopen" } satisfies ToWorker);
      },
      reload(config) {
        worker.postMessage({ kind: "reload", config: withoutLists(config) } satisfies ToWorker);
      },
      summary() {
        const { promise, resolve } = Promise.withResolvers<RawSummary | undefined>();
        summaries.push(resolve);
        worker.postMessage({ kind: "summary" } satisfies ToWorker);
        const timer = setTimeout(() => resolve(undefined), 1000);
        return promise.finally(() => clearTimeout(timer));
      },
      stop(graceMs) {
        // A second call (a second signal) only shortens the wait: the worker gets graceMs 0.
        worker.postMessage({ kind: "stop", graceMs } satisfies ToWorker);
        if (!stopping) {
          const { promise, resolve } = Promise.withResolvers<RawSummary | undefined>();
          stopped = resolve;
          stopping = promise.finally(() => worker.terminate());
        }
        return stopping;
      },
    });
  }
  try {
    await Promise.all(starts);
  } catch (err) {
    await Promise.all(handles.map((h) => h.stop(0)));
    throw err;
  }
  return handles;
}

/** Runs in a worker: waits for its config, serves, and stops when told. */
export function serveWorker(): void {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
    postMessage(m: FromWorker): void;
    close(): void;
  };
  let server: ProxyServer | undefined;
  let closeLog: (() => void) | undefined;
  let reopenLog: (() => void) | undefined;
  let info: ((line: string) => void) | undefined;
  let stopping = false;
  let cache: Cache | undefined;
  let summary = new Summary();
  let gaugeTimer: ReturnType<typeof setInterval> | undefined;
  scope.onmessage = async (e) => {
    const msg = e.data;
    if (msg.kind === "start") {
      try {
        const { auth } = await loadCredentials(msg.config);
        const config = await loadFiles(msg.config);
        // The main thread shows (--admin) and writes (--har, --history) every worker's traffic.
        const live = msg.config.admin !== undefined || msg.config.har !== undefined ||
          msg.config.history !== undefined;
        // Exchanges under way here, with the bytes last reported of each.
        const flowing = new Map<number, { ex: ExchangeRecord; sent: number }>();
        const report: ExchangeObserver = {
          opened: (ex: ExchangeRecord) => {
            flowing.set(ex.id, { ex, sent: ex.bytesUp + ex.bytesDown });
            scope.postMessage({ kind: "opened", ex });
          },
          closed: (ex: ExchangeRecord) => {
            flowing.delete(ex.id);
            scope.postMessage({ kind: "closed", ex });
          },
        };
        const flows = (): Flow[] => {
          const moved: Flow[] = [];
          for (const f of flowing.values()) {
            const now = f.ex.bytesUp + f.ex.bytesDown;
            if (now === f.sent) continue;
            f.sent = now;
            moved.push([f.ex.id, f.ex.bytesUp, f.ex.bytesDown]);
          }
          return moved;
        };
        // The store the main thread opened (and cleared of what a crash left), shared.
        cache = config.cache
          ? new Cache({
            dir: config.cacheDir,
            maxBytes: config.cacheSize,
            memBytes: config.cacheMem,
            diag: (line) => info?.(line),
            shared: true,
            recover: false,
          })
          : undefined;
        const instance = startInstance(config, {
          index: msg.index,
          count: msg.count,
          watchers: live ? [report] : [],
          auth,
          ...(cache ? { cache } : {}),
        });
        server = instance.server;
        summary = instance.summary;
        closeLog = instance.log.close;
        reopenLog = instance.log.reopen;
        info = (line) => instance.log.logger.info(line);
        if (live) {
          gaugeTimer = setInterval(() => {
            scope.postMessage({
              kind: "gauges",
              connections: server!.connections,
              idleUpstreams: server!.idleUpstreams,
              flows: flows(),
            });
          }, 1000);
        }
        scope.postMessage({ kind: "ready" });
      } catch (err) {
        scope.postMessage({ kind: "error", message: (err as Error).message });
      }
    } else if (msg.kind === "reopen") {
      reopenLog?.();
    } else if (msg.kind === "reload") {
      // The main thread has read and checked the same files; if one changed in between, this
      // worker keeps what it has and says so.
      try {
        const { auth } = await loadCredentials(msg.config);
        await server?.reload(await loadFiles(msg.config), auth);
      } catch (err) {
        info?.(`reload: a worker kept the running config: ${(err as Error).message}`);
      }
    } else if (msg.kind === "summary") {
      scope.postMessage({ kind: "summary", raw: summary.raw() });
    } else if (msg.kind === "stop") {
      if (stopping) {
        server?.shutdown(0);
        return;
      }
      stopping = true;
      clearInterval(gaugeTimer);
      await server?.shutdown(msg.graceMs);
      await cache?.close();
      closeLog?.();
      scope.postMessage({ kind: "stopped", raw: summary.raw() });
      scope.close();
    }
  };
}
