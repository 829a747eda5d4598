/**
 * Upstream dialing: resolve the name, let the destination policy check every address, connect
 * to one, all within the connect timeout. Resolve and connect are swappable so tests inject
 * ones that hang or fail (no test looks a name up in DNS); failures become 502 or 504
 * ProxyErrors with a Proxy-Status kind. It returns an open connection and never closes one it
 * handed out.
 *
 * @module
 */

import { BadGateway, GatewayTimeout } from "../errors.ts";
import { parseIp } from "../policy/ip.ts";

/** Deno.connect's TCP shape: what the proxy needs to open an upstream connection. */
export type ConnectFn = (options: Deno.ConnectOptions & { signal?: AbortSignal }) => Promise<
  Deno.TcpConn
>;

/** Options of {@linkcode dial}. */
export interface DialOptions {
  /** Give up after this many ms. @default 10000 */
  timeoutMs?: number;
  /** Aborts the dial (e.g. shutdown or the client leaving). */
  signal?: AbortSignal;
  /** What is dialed, in messages. @default "upstream" */
  what?: string;
  /** How to connect (given an IP address). @default Deno.connect */
  connect?: ConnectFn;
  /** How to resolve a host name to addresses. @default systemResolve */
  resolve?: ResolveFn;
  /** Vetoes an address before anything is sent to it, by throwing (a 403). */
  check?: (address: string) => void;
  /** Told how many ms the name took to resolve. */
  onResolved?: (ms: number) => void;
}

/** Resolves a host name to IP addresses (an IP literal to itself). */
export type ResolveFn = (hostname: string) => Promise<string[]>;

/** Formats host and port as an authority, bracketing IPv6. */
export function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Closes a connection that may already be closed.
 *
 * @param conn The connection (or listener), or undefined.
 */
export function closeQuietly(conn: { close(): void } | undefined): void {
  try {
    conn?.close();
  } catch {
    // already closed
  }
}

/**
 * Resolves a host name the way the system does (getaddrinfo: /etc/hosts first), so the
 * addresses a policy checks are the ones dialed, and a name cannot resolve one way for the
 * check and another way for the connect (DNS rebinding).
 *
 * @param hostname A name (an IP literal comes back as itself).
 * @returns Its addresses, in the system's order.
 */
export async function systemResolve(hostname: string): Promise<string[]> {
  if (parseIp(hostname)) return [hostname];
  // Loaded at the first name, not at start: an idle proxy pays 0.7 MiB for the module. The
  // runtime keeps it loaded; a later import() is a lookup in its module map (about 1 µs).
  const { lookup } = await import("node:dns/promises");
  const found = await lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/**
 * Opens a TCP connection to `hostname:port`: resolves it, lets `check` veto each address, then
 * connects to the first address that answers.
 *
 * @param hostname Name or IP address (IPv6 without brackets).
 * @param port TCP port.
 * @param options Timeout, abort signal, resolve, check and connect functions.
 * @returns The connection.
 * @throws {GatewayTimeout} when the timeout passes first.
 * @throws {BadGateway} when DNS fails, the connection is refused, or any other connect error.
 * @throws whatever `check` throws (a 403), before any packet goes to that address.
 */
export async function dial(
  hostname: string,
  port: number,
  options: DialOptions = {},
): Promise<Deno.TcpConn> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  // Not AbortSignal.timeout(): its timer lives the full timeout after a dial that succeeded in
  // a millisecond (a Connection: close load held thousands of them, with their signals).
  const timer = new AbortController();
  const id = setTimeout(
    () => timer.abort(new DOMException("The dial timed out", "TimeoutError")),
    timeoutMs,
  );
  try {
    return await dialUntil(hostname, port, options, timeoutMs, timer.signal);
  } finally {
    clearTimeout(id);
  }
}

async function dialUntil(
  hostname: string,
  port: number,
  options: DialOptions,
  timeoutMs: number,
  timeout: AbortSignal,
): Promise<Deno.TcpConn> {
  const connect = options.connect ?? Deno.connect;
  const resolve = options.resolve ?? systemResolve;
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  const target = `${options.what ?? "upstream"} "${hostPort(hostname, port)}"`;
  const timedOut = (err?: unknown) =>
    new GatewayTimeout(`Cannot connect to ${target}: timed out after ${timeoutMs} ms`, {
      kind: "connection_timeout",
      cause: err,
    });

  const aborted = (err: unknown) =>
    new BadGateway(`Cannot connect to ${target}: aborted`, {
      kind: "proxy_internal_error",
      cause: err,
    });

  let addresses: string[];
  try {
    const { promise: gaveUp, reject } = Promise.withResolvers<never>();
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    const started = performance.now();
    try {
      // An IP literal needs no lookup (and its lookup time is 0, not a few microseconds).
      addresses = parseIp(hostname) && !options.resolve
        ? [hostname]
        : await Promise.race([resolve(hostname), gaveUp]);
      options.onResolved?.(addresses[0] === hostname ? 0 : performance.now() - started);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    if (addresses.length === 0) throw new Error("no addresses");
  } catch (err) {
    if (timeout.aborted) throw timedOut(err);
    if (options.signal?.aborted) throw aborted(err);
    throw new BadGateway(`DNS lookup failed: ${hostname}`, { kind: "dns_error", cause: err });
  }
  for (const address of addresses) options.check?.(address);

  let last: unknown;
  for (const address of addresses) {
    try {
      signal.throwIfAborted();
      return await connect({ hostname: address, port, transport: "tcp", signal });
    } catch (err) {
      last = err;
      if (signal.aborted) break;
    }
  }
  const err = last;
  // Classify by which signal fired, not only by error class: an abort rejects with the
  // signal's reason (STYLE.md, Deno 2.9.6).
  if (timeout.aborted) throw timedOut(err);
  if (options.signal?.aborted) throw aborted(err);
  if (err instanceof Deno.errors.ConnectionRefused) {
    throw new BadGateway(`Cannot connect to ${target}: connection refused`, {
      kind: "connection_refused",
      cause: err,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  throw new BadGateway(`Cannot connect to ${target}: ${message}`, {
    kind: "destination_unavailable",
    cause: err,
  });
}
