/**
 * Test fixtures: the proxy in-process with captured log lines, raw and Deno.serve origins on
 * 127.0.0.1 port 0, a raw client, and curl. Each fixture is an AsyncDisposable.
 *
 * @module
 */

import type { Cache } from "../../lib/cache/cache.ts";
import { AssertionError } from "node:assert/strict";
import { type Config, DEFAULTS } from "../../lib/cli/config.ts";
import type { Authenticator } from "../../lib/policy/auth.ts";
import type { ConnectFn, ResolveFn } from "../../lib/upstream/dial.ts";
import { BufferedReader } from "../../lib/http1/head.ts";
import { createLogger, type LogFormat } from "../../lib/observe/log.ts";
import { ProxyServer } from "../../lib/server.ts";

/** A running in-process proxy. */
export interface ProxyFixture extends AsyncDisposable {
  /** Its port on 127.0.0.1. */
  port: number;
  /** `127.0.0.1:port`. */
  addr: string;
  /** Access log lines so far. */
  lines: string[];
  /** Diagnostic lines so far. */
  diag: string[];
  /** The server. */
  server: ProxyServer;
  /** Resolves once the log holds `count` lines matching `re`. */
  waitForLine(re: RegExp, count?: number): Promise<string>;
}

/**
 * Starts the proxy on 127.0.0.1 port 0.
 *
 * @param overrides Config fields to change.
 * @param options Log format and an injected connect function.
 */
export function startProxy(
  overrides: Partial<Config> = {},
  options: {
    format?: LogFormat;
    connect?: ConnectFn;
    resolve?: ResolveFn;
    auth?: Authenticator;
    allowDiag?: boolean;
    cache?: Cache;
  } = {},
): ProxyFixture {
  const config: Config = {
    ...DEFAULTS,
    connectPorts: "any",
    ...overrides,
    listen: [{ hostname: "127.0.0.1", port: 0 }],
  };
  const lines: string[] = [];
  const diag: string[] = [];
  const waiters: (() => void)[] = [];
  const logger = createLogger({
    format: options.format ?? config.logFormat,
    sink: (line) => {
      lines.push(...line.split("\n"));
      for (const w of waiters.splice(0)) w();
    },
    diag: (line) => diag.push(line),
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = new ProxyServer([listener], {
    config,
    logger,
    ...(options.connect ? { connect: options.connect } : {}),
    ...(options.resolve ? { resolve: options.resolve } : {}),
    ...(options.auth ? { auth: options.auth } : {}),
    ...(options.cache ? { cache: options.cache } : {}),
  });
  const port = listener.addr.port;
  return {
    port,
    addr: `127.0.0.1:${port}`,
    lines,
    diag,
    server,
    async waitForLine(re, count = 1) {
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = lines.filter((l) => re.test(l));
        if (found.length >= count) return found[count - 1]!;
        if (Date.now() > deadline) {
          throw new Error(`no log line ${re} within 5 s; log:\n${lines.join("\n")}`);
        }
        const { promise, resolve } = Promise.withResolvers<void>();
        waiters.push(resolve);
        const t = setTimeout(resolve, 50);
        await promise;
        clearTimeout(t);
      }
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown(0);
      // Diagnostics mean something went wrong inside (an internal error, a failing accept):
      // no test expects one unless it says so.
      if (diag.length > 0 && !options.allowDiag) {
        throw new Error(`unexpected diagnostics from the proxy:\n${diag.join("\n")}`);
      }
    },
  };
}

/** A raw TCP origin on 127.0.0.1 port 0 that runs `handler` per connection. */
export interface OriginFixture extends AsyncDisposable {
  /** Its port. */
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Assertion failures inside handlers; rethrown when the fixture is disposed. */
  failures: Error[];
}

/** Per-connection helpers given to a raw origin's handler. */
export interface OriginConn {
  /** The socket. */
  conn: Deno.TcpConn;
  /** A reader over it. */
  reader: BufferedReader;
  /** Reads one request head as text (or null at EOF). */
  readHead(): Promise<string | null>;
  /** Reads exactly n body bytes. */
  readBody(n: number): Promise<Uint8Array>;
  /** Writes text or bytes. */
  write(data: string | Uint8Array): Promise<void>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A response body that arrives slowly: `pieces` pieces of `size` bytes, `gapMs` apart.
 *
 * @param pieces How many pieces.
 * @param size Bytes in each.
 * @param gapMs Time between two pieces.
 */
export function trickle(pieces: number, size: number, gapMs: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async start(c) {
      for (let i = 0; i < pieces; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, gapMs));
        c.enqueue(new Uint8Array(size).fill(97));
      }
      c.close();
    },
  });
}

/**
 * Starts a raw origin; `handler` scripts each connection (misbehaving on purpose if it likes).
 * The connection is closed when the handler returns.
 *
 * @param handler The per-connection script.
 */
export function startOrigin(handler: (c: OriginConn) => Promise<void>): OriginFixture {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const fixture: OriginFixture = {
    port: listener.addr.port,
    accepted: 0,
    failures: [],
    async [Symbol.asyncDispose]() {
      listener.close();
      await loop;
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // closed by the handler
        }
      }
      await Promise.all(tasks);
      if (fixture.failures.length > 0) throw fixture.failures[0];
    },
  };
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      fixture.accepted++;
      conns.add(conn);
      const reader = new BufferedReader(conn);
      const c: OriginConn = {
        conn,
        reader,
        async readHead() {
          const head = await reader.readHead({ maxBytes: 1 << 20, timeoutMs: 10_000 });
          return head === null ? null : dec.decode(head);
        },
        async readBody(n) {
          const out = new Uint8Array(n);
          let got = 0;
          while (got < n) {
            const piece = await reader.read(n - got);
            if (piece === null) throw new Error(`origin: body ended at ${got} of ${n}`);
            out.set(piece, got);
            got += piece.length;
          }
          return out;
        },
        async write(data) {
          const bytes = typeof data === "string" ? enc.encode(data) : data;
          let off = 0;
          while (off < bytes.length) off += await conn.write(bytes.subarray(off));
        },
      };
      const task = handler(c).catch((err) => {
        // Scripted origins may see the proxy close on them (that is the point of many tests);
        // a failed assertion, though, must fail the test.
        if (err instanceof AssertionError) fixture.failures.push(err);
      }).finally(() => {
        conns.delete(conn);
        try {
          conn.close();
        } catch {
          // already closed
        }
        tasks.delete(task);
      });
      tasks.add(task);
    }
  })();
  return fixture;
}

/**
 * An absolute-form GET for the origin on 127.0.0.1:`port`, asking the proxy to close after it.
 *
 * @param port The origin's port.
 * @param path Path and query. @default "/"
 * @returns The raw request.
 */
export function getRequest(port: number, path = "/"): string {
  return `GET http://127.0.0.1:${port}${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
}

/**
 * Starts a raw origin that answers each connection's first request with `response` (bytes
 * exactly as given, misbehaving ones included), then closes.
 *
 * @param response The raw response.
 */
export function answerOnce(response: string): OriginFixture {
  return startOrigin(async (c) => {
    await c.readHead();
    await c.write(response);
  });
}

/**
 * Starts a Deno.serve origin on 127.0.0.1 port 0.
 *
 * @param handler The request handler.
 */
export function startHttpOrigin(
  handler: (req: Request, info: Deno.ServeHandlerInfo) => Response | Promise<Response>,
): { port: number } & AsyncDisposable {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return {
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/**
 * Sends raw bytes to a port and reads until the peer closes (or `timeoutMs` passes).
 *
 * @param port Port on 127.0.0.1.
 * @param data What to send.
 * @param options Half-close after sending; give up after a time.
 * @returns Everything received, as text (latin1-safe for ASCII tests).
 */
export async function rawExchange(
  port: number,
  data: string | Uint8Array,
  options: { halfClose?: boolean; timeoutMs?: number } = {},
): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
  if (options.halfClose) await conn.closeWrite();
  return await readAll(conn, options.timeoutMs ?? 5000);
}

/**
 * Reads from a connection until it closes; throws if it is still open after `timeoutMs`.
 *
 * @param conn The connection.
 * @param timeoutMs Longest wait.
 * @returns The text received.
 */
export async function readAll(conn: Deno.Conn, timeoutMs = 5000): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((
    r,
  ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
  try {
    for (;;) {
      const n = await Promise.race([conn.read(buf).catch(() => null), timeout]);
      if (n === "timeout") {
        throw new Error(
          `connection still open after ${timeoutMs} ms; got ${
            JSON.stringify(dec.decode(concat(chunks)))
          }`,
        );
      }
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
  }
  return dec.decode(concat(chunks));
}

/**
 * Reads from a connection until `predicate` holds for what was received.
 *
 * @param conn The connection.
 * @param predicate Checked after each read.
 * @param timeoutMs Longest wait.
 * @returns The text received so far.
 */
export async function readUntil(
  conn: Deno.Conn,
  predicate: (text: string) => boolean,
  timeoutMs = 5000,
): Promise<string> {
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  const deadline = Date.now() + timeoutMs;
  while (!predicate(text)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting; got ${JSON.stringify(text)}`);
    const n = await conn.read(buf);
    if (n === null) throw new Error(`closed early; got ${JSON.stringify(text)}`);
    text += dec.decode(buf.subarray(0, n));
  }
  return text;
}

/** Concatenates byte arrays. */
export function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/**
 * Runs curl and returns its exit code and output.
 *
 * @param args Arguments after `curl -sS`.
 * @param prefix A command that runs curl (nsenter into a network namespace). @default none
 */
export async function curl(
  args: string[],
  prefix: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, ...before] = [...prefix, "curl"];
  const out = await new Deno.Command(program!, {
    args: [...before, "-sS", "--max-time", "20", "--noproxy", "", ...args],
    stdout: "piped",
    stderr: "piped",
    env: {
      http_proxy: "",
      https_proxy: "",
      HTTP_PROXY: "",
      HTTPS_PROXY: "",
      ALL_PROXY: "",
      NO_PROXY: "",
      no_proxy: "",
    },
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Sleeps `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** An origin that answers 404 "no" for `/missing` and 200 "ok" for any other path. */
export function startOkOrMissingOrigin(): { port: number } & AsyncDisposable {
  return startHttpOrigin((req) =>
    new URL(req.url).pathname === "/missing"
      ? new Response("no", { status: 404 })
      : new Response("ok")
  );
}

/**
 * Fetches `url` through the proxy at `proxy` with curl, the body thrown away.
 *
 * @param proxy The proxy's `host:port`.
 * @param url The URL.
 * @param extra More curl flags (`-p` for a CONNECT tunnel).
 */
export function curlThrough(
  proxy: string,
  url: string,
  extra: string[] = [],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return curl([...extra, "-x", proxy, "-s", "-o", "/dev/null", url]);
}
