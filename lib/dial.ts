/**
 * Upstream dialing with a connect timeout. The connect function is swappable so tests can
 * inject one that hangs or fails like DNS does; failures become 502 or 504 ProxyErrors with a
 * Proxy-Status kind. It returns an open connection and never closes one it handed out.
 *
 * @module
 */

import { BadGateway, GatewayTimeout } from "./errors.ts";

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
  /** How to connect. @default Deno.connect */
  connect?: ConnectFn;
}

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
 * Opens a TCP connection to `hostname:port`.
 *
 * @param hostname Name or IP address (IPv6 without brackets).
 * @param port TCP port.
 * @param options Timeout, abort signal and connect function.
 * @returns The connection.
 * @throws {GatewayTimeout} when the timeout passes first.
 * @throws {BadGateway} when DNS fails, the connection is refused, or any other connect error.
 */
export async function dial(
  hostname: string,
  port: number,
  options: DialOptions = {},
): Promise<Deno.TcpConn> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const connect = options.connect ?? Deno.connect;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  const target = hostPort(hostname, port);
  try {
    return await connect({ hostname, port, transport: "tcp", signal });
  } catch (err) {
    // Classify by which signal fired, not only by error class: an abort rejects with the
    // signal's reason, and a DNS failure is a plain Error (STYLE.md, Deno 2.9.6).
    if (timeout.aborted) {
      throw new GatewayTimeout(
        `Cannot connect to upstream "${target}": timed out after ${timeoutMs} ms`,
        { kind: "connection_timeout", cause: err },
      );
    }
    if (options.signal?.aborted) {
      throw new BadGateway(`Cannot connect to upstream "${target}": aborted`, {
        kind: "proxy_internal_error",
        cause: err,
      });
    }
    if (err instanceof Deno.errors.ConnectionRefused) {
      throw new BadGateway(`Cannot connect to upstream "${target}": connection refused`, {
        kind: "connection_refused",
        cause: err,
      });
    }
    const message = err instanceof Error ? err.message : String(err);
    if (
      !(err instanceof Deno.errors.ConnectionReset ||
        err instanceof Deno.errors.PermissionDenied) &&
      /lookup|resolve|name or service|nodename|no address|dns/i.test(message)
    ) {
      throw new BadGateway(`DNS lookup failed: ${hostname}`, { kind: "dns_error", cause: err });
    }
    throw new BadGateway(`Cannot connect to upstream "${target}": ${message}`, {
      kind: "destination_unavailable",
      cause: err,
    });
  }
}
