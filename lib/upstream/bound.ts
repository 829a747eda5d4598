/**
 * Upstream connections that leave from a chosen local address (`--outgoing-address`, squid's
 * `tcp_outgoing_address`, tinyproxy's `Bind`/`BindSame`). `Deno.connect` cannot bind before it
 * connects; `node:net`'s `connect({ localAddress })` can, so such a connection is a `node:net`
 * socket behind the small part of the `Deno.TcpConn` shape the relay uses (read, write,
 * closeWrite, close, the addresses, setNoDelay).
 *
 * @module
 */

import type net from "node:net";
import type { ConnectFn } from "./dial.ts";
import { parseIp } from "../policy/ip.ts";

/**
 * A connect function whose connections leave from `localAddress`.
 *
 * @param localAddress The local IP address to bind.
 * @returns The function, for `dial`'s `connect` option.
 */
export function connectFrom(localAddress: string): ConnectFn {
  return async (options) => {
    // Loaded at the first such connection (the runtime keeps it): an idle proxy without the flag
    // never pays its 3 MiB.
    const { connect } = await import("node:net");
    return new Promise<Deno.TcpConn>((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const socket = connect({ host: options.hostname, port: options.port, localAddress });
      const onAbort = () => {
        socket.destroy();
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      socket.once("connect", () => {
        signal?.removeEventListener("abort", onAbort);
        socket.removeAllListeners("error");
        resolve(new BoundConn(socket) as unknown as Deno.TcpConn);
      });
      socket.once("error", (err: Error & { code?: string }) => {
        signal?.removeEventListener("abort", onAbort);
        reject(denoError(err, localAddress, options.hostname ?? ""));
      });
    });
  };
}

/** Node's error as the Deno error class the dialer classifies (refused, unreachable, …). */
function denoError(err: Error & { code?: string }, localAddress: string, to: string): Error {
  const otherVersion = parseIp(localAddress)?.version !== parseIp(to)?.version;
  const bindFailed = ["EADDRNOTAVAIL", "EINVAL", "EAFNOSUPPORT"].includes(err.code ?? "");
  const message = bindFailed && otherVersion
    ? `cannot leave from ${localAddress} to an address of the other IP version`
    : bindFailed
    ? `cannot leave from ${localAddress}: not an address of this host`
    : err.message;
  switch (err.code) {
    case "ECONNREFUSED":
      return new Deno.errors.ConnectionRefused(message, { cause: err });
    case "EADDRNOTAVAIL":
      return new Deno.errors.AddrNotAvailable(message, { cause: err });
    default:
      return new Error(message, { cause: err });
  }
}

/** A connected `node:net` socket, read and written the way a `Deno.TcpConn` is. */
class BoundConn {
  #socket: net.Socket;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.pause();
    const wake = () => {
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    };
    socket.on("readable", wake);
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (err) => {
      this.#error = err;
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
  }

  get remoteAddr(): Deno.NetAddr {
    return {
      transport: "tcp",
      hostname: this.#socket.remoteAddress!,
      port: this.#socket.remotePort!,
    };
  }

  get localAddr(): Deno.NetAddr {
    return {
      transport: "tcp",
      hostname: this.#socket.localAddress!,
      port: this.#socket.localPort!,
    };
  }

  /** Reads into `p` what has arrived (waiting for something); null at the end. */
  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#error) throw this.#error;
      const chunk = this.#socket.read() as Uint8Array | null;
      if (chunk !== null) {
        const n = Math.min(chunk.length, p.length);
        p.set(chunk.subarray(0, n));
        if (n < chunk.length) this.#socket.unshift(chunk.subarray(n));
        return n;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Writes all of `p`, resolving once the socket took it. */
  write(p: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (err) => (err ? reject(err) : resolve(p.length)));
    });
  }

  /** Sends FIN (the other direction stays open). */
  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  close(): void {
    if (this.#socket.destroyed) throw new Deno.errors.BadResource("already closed");
    this.#socket.destroy();
  }

  setNoDelay(noDelay = true): void {
    this.#socket.setNoDelay(noDelay);
  }

  setKeepAlive(keepAlive = true): void {
    this.#socket.setKeepAlive(keepAlive);
  }

  [Symbol.dispose](): void {
    this.#socket.destroy();
  }
}
