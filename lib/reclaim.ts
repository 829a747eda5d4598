/**
 * Gives memory back after a crowd of connections has gone. V8 collects garbage only when the
 * program allocates: a proxy that held 2,000 slow or idle clients and then fell quiet kept their
 * buffers (over 100 MiB, `deno task connections`) until traffic came back, as nothing allocated
 * any more. So when the number of open client connections has fallen far below its peak, and
 * stays there for a moment, the server asks V8 for one full collection: the buffers' pages go
 * back to the system (the reader's big buffers are page-mapped for this; see `BufferedReader`).
 *
 * A collection stops the thread for a few tens of ms with thousands of dead connections behind
 * it, so it runs at most once per `minIntervalMs`, never while connections keep arriving, and
 * never under steady load (the open count then stays near its peak). Deno exposes no `gc()`;
 * `node:v8`'s documented `setFlagsFromString("--expose-gc")` makes it reachable through
 * `node:vm`. Where that fails, nothing is reclaimed and nothing else changes. Both modules load at
 * the first collection, not at start: together they cost an idle proxy 4 MiB of memory.
 *
 * @module
 */

let gc: (() => void) | null | undefined;
let collected = 0;

/** Collections run by {@linkcode collectGarbage} in this thread so far. */
export function collections(): number {
  return collected;
}

/**
 * Runs one full garbage collection, if the runtime allows it.
 *
 * @returns Whether a collection ran.
 */
export async function collectGarbage(): Promise<boolean> {
  if (gc === undefined) {
    try {
      const [{ setFlagsFromString }, { runInNewContext }] = await Promise.all([
        import("node:v8"),
        import("node:vm"),
      ]);
      setFlagsFromString("--expose-gc");
      const found: unknown = runInNewContext("gc");
      gc = typeof found === "function" ? found as () => void : null;
    } catch {
      gc = null;
    }
  }
  if (!gc) return false;
  gc();
  collected++;
  return true;
}

/** Options of {@linkcode Reclaimer}. */
export interface ReclaimOptions {
  /** Connections that must have gone since the peak. @default 256 */
  drop?: number;
  /** How long the count must stay down (no new peak) before collecting, ms. @default 2000 */
  delayMs?: number;
  /** Least time between two collections, ms. @default 10000 */
  minIntervalMs?: number;
  /** What collecting means. @default collectGarbage */
  collect?: () => unknown;
}

/** Watches the open-connection count and collects after a large fall; see the module doc. */
export class Reclaimer {
  #drop: number;
  #delayMs: number;
  #minIntervalMs: number;
  #collect: () => unknown;
  #peak = 0;
  #open = 0;
  #last = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /** @param options Thresholds; see {@linkcode ReclaimOptions}. */
  constructor(options: ReclaimOptions = {}) {
    this.#drop = options.drop ?? 256;
    this.#delayMs = options.delayMs ?? 2000;
    this.#minIntervalMs = options.minIntervalMs ?? 10_000;
    this.#collect = options.collect ?? collectGarbage;
  }

  /** A client connection opened; `open` counts it. */
  opened(open: number): void {
    this.#open = open;
    if (open > this.#peak) this.#peak = open;
  }

  /** A client connection ended; `open` no longer counts it. */
  closed(open: number): void {
    this.#open = open;
    if (this.#timer === undefined && !this.#stopped && this.#peak - open >= this.#drop) {
      this.#arm(this.#delayMs);
    }
  }

  /** Stops for good (shutdown). */
  close(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(ms: number): void {
    const timer = setTimeout(() => this.#fire(), ms);
    // A pending collection never keeps the process alive.
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const wait = this.#last + this.#minIntervalMs - now;
    if (wait > 0) return this.#arm(wait);
    // The peak restarts from here whether or not the fall was large enough to act on.
    const fell = this.#peak - this.#open >= this.#drop;
    this.#peak = this.#open;
    if (!fell) return;
    this.#last = now;
    // A collection that fails changes nothing else (see the module doc).
    void Promise.resolve().then(this.#collect).catch(() => {});
  }
}
