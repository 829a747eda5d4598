/**
 * The accept loop: one per listener, a set of live connections, and a graceful close (stop
 * accepting, close idle keep-alive connections, let exchanges in flight finish for the grace
 * period, then close what is left). It owns the listeners and the client sockets' lifetime.
 *
 * @module
 */

import type { Cache } from "./cache/cache.ts";
import { StartupError } from "./errors.ts";
import type { Authenticator } from "./policy/auth.ts";
import type { Config } from "./cli/config.ts";
import { closeQuietly, type ConnectFn, hostPort, type ResolveFn } from "./upstream/dial.ts";
import { type ConnState, handleConn } from "./handle_conn.ts";
import type { Logger } from "./exchange.ts";
import { ConnectionLimits, RateLimiter } from "./policy/limits.ts";
import { UpstreamPool } from "./upstream/pool.ts";
import { Reclaimer } from "./reclaim.ts";
import { HostGate } from "./upstream/gate.ts";
import { connectFrom } from "./upstream/bound.ts";
import { HostAddresses, OwnListeners } from "./policy/host_addresses.ts";
import type { LocalView } from "./policy/policy.ts";
import { type Listed, Roster } from "./roster.ts";

/** A listen address could not be bound; the message is one line. */
export class ListenError extends StartupError {
  /**
   * @param message The one-line cause.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, 1, options);
  }
}

/**
 * Binds every address, or none: on a failure the ones already bound are closed.
 *
 * @param addrs Addresses to bind.
 * @param reusePort Set SO_REUSEPORT so other workers can bind the same ports (Linux).
 * @returns The listeners.
 * @throws {ListenError} naming the address and the cause.
 */
export function listenAll(
  addrs: readonly { hostname: string; port: number }[],
  reusePort = false,
  tls?: { cert: string; key: string },
): Listener[] {
  const listeners: Listener[] = [];
  for (const addr of addrs) {
    try {
      const options = {
        hostname: addr.hostname,
        port: addr.port,
        transport: "tcp" as const,
        ...(reusePort ? { reusePort: true } : {}),
      };
      listeners.push(tls ? Deno.listenTls({ ...options, ...tls }) : Deno.listen(options));
    } catch (err) {
      for (const l of listeners) l.close();
      const message = (err as Error).message;
      const why = err instanceof Deno.errors.AddrInUse ? "address already in use" : message;
      throw new ListenError(`cannot listen on ${hostPort(addr.hostname, addr.port)}: ${why}`, {
        cause: err,
      });
    }
  }
  return listeners;
}

/** A listener the proxy accepts on: plain TCP, or TLS (an HTTPS proxy). */
export type Listener = Deno.TcpListener | Deno.TlsListener;

/** Options of {@linkcode ProxyServer}. */
export interface ServerOptions {
  /** The configuration. */
  config: Config;
  /** The logger. */
  logger: Logger;
  /** How upstream connections are opened. @default Deno.connect */
  connect?: ConnectFn;
  /** How host names are resolved. @default systemResolve */
  resolve?: ResolveFn;
  /** Proxy authentication, when configured. */
  auth?: Authenticator;
  /** The host's own addresses. @default read from the system's interfaces */
  hostAddresses?: HostAddresses;
  /**
   * Exchange ids `first`, `first + step`, …: with N workers, worker k uses first k+1 and step N,
   * so ids stay unique across the process. @default { first: 1, step: 1 }
   */
  ids?: { first: number; step: number };
  /** The listeners share their ports with other workers (SO_REUSEPORT). @default false */
  reusePort?: boolean;
  /** The shared cache (`--cache`); its owner closes it. */
  cache?: Cache;
}

/** An open client connection, its state and the handler serving it. */
interface Client extends Listed {
  conn: Deno.TcpConn;
  state: ConnState;
  /** Set right after the handler starts. */
  handler: Promise<void> | undefined;
}

/** A running proxy over one or more listeners. */
export class ProxyServer {
  #listeners: Listener[];
  #options: ServerOptions;
  #abort = new AbortController();
  /** The open client connections: a roster, not a Map (see lib/roster.ts for why). */
  #conns = new Roster<Client>();
  #loops: Map<Listener, Promise<void>>;
  #closed: Promise<void> | undefined;
  #pool: UpstreamPool | undefined;
  #nextId: () => number;
  #limits: ConnectionLimits;
  #endGrace: () => void = () => {};
  #local: LocalView;
  /** Dial slots per destination, shared by every connection (--max-dials-per-host). */
  #dials = new HostGate();
  /** Slots for requests in flight per destination, likewise (--max-active-per-host). */
  #active = new HostGate();
  /** Collects garbage after a crowd of connections has gone (see lib/reclaim.ts). */
  #reclaim = new Reclaimer();
  /**
   * What a reload replaces, for new connections; open ones have theirs replaced in their
   * context (see reload), so the next request on a keep-alive connection sees a new policy.
   * (Plain properties, not getters: a context with accessors cost a tenth of keep-alive
   * throughput.)
   */
  #live: { config: Config; auth: Authenticator | undefined; rate: RateLimiter | undefined };

  /**
   * Starts accepting on every listener.
   *
   * @param listeners Bound TCP listeners; the server closes them at shutdown.
   * @param options Config, logger and connect function.
   */
  constructor(listeners: Listener[], options: ServerOptions) {
    this.#listeners = listeners;
    this.#options = options;
    const { first, step } = options.ids ?? { first: 1, step: 1 };
    let id = first - step;
    this.#nextId = () => (id += step);
    const { maxIdlePerHost, upstreamIdleTimeoutMs, rate } = options.config;
    this.#limits = new ConnectionLimits(
      options.config.maxConnections,
      options.config.maxConnectionsPerIp,
    );
    this.#live = {
      config: options.config,
      auth: options.auth,
      rate: rate > 0 ? new RateLimiter(rate) : undefined,
    };
    if (maxIdlePerHost > 0) {
      this.#pool = new UpstreamPool({ maxIdlePerHost, idleTimeoutMs: upstreamIdleTimeoutMs });
    }
    // This host and our own listeners (and the admin's) are never destinations for just anyone.
    const host = options.hostAddresses ?? new HostAddresses();
    const own = new OwnListeners(host);
    for (const l of listeners) own.add({ ...l.addr, what: "proxy" });
    if (options.config.admin) own.add({ ...options.config.admin, what: "admin" });
    this.#local = { host, own, loopbackClient: false };
    // One accept loop per listener: Deno refuses a second accept in flight on the same
    // listener ("Another accept task is ongoing").
    this.#loops = new Map(listeners.map((l) => [l, this.#accept(l)]));
  }

  /** The bound addresses (port 0 resolved to the real port). */
  get addrs(): Deno.NetAddr[] {
    return this.#listeners.map((l) => l.addr);
  }

  /** Idle upstream connections held for reuse now. */
  get idleUpstreams(): number {
    return this.#pool?.idle ?? 0;
  }

  /** Client connections open now. */
  get connections(): number {
    return this.#conns.size;
  }

  async #accept(listener: Listener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        // A TLS connection is read and written like a TCP one (its handshake is checked first,
        // in handleConn); the relay does not need what only a TCP socket has.
        conn = await listener.accept() as Deno.TcpConn;
      } catch (err) {
        if (this.#abort.signal.aborted || err instanceof Deno.errors.BadResource) return;
        // EMFILE and the like: say so, breathe, and keep serving the connections we have.
        this.#options.logger.info(`accept failed: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#abort.signal.aborted) {
        closeQuietly(conn);
        continue;
      }
      const ip = conn.remoteAddr.hostname;
      const refusal = this.#limits.admit(ip);
      const state: ConnState = refusal ? { idle: false, refusal } : { idle: true };
      const client: Client = { conn, state, handler: undefined, slot: -1 };
      this.#conns.add(client);
      this.#reclaim.opened(this.#conns.size);
      const live = this.#live;
      // --outgoing-address: a fixed local address, or the one this client connected to.
      const outgoing = live.config.outgoingAddress;
      const source = outgoing === "same" ? conn.localAddr.hostname : outgoing;
      const connect = source === undefined ? this.#options.connect : connectFrom(source);
      const handler = handleConn(conn, {
        config: live.config,
        auth: live.auth,
        rate: live.rate,
        logger: this.#options.logger,
        signal: this.#abort.signal,
        nextId: this.#nextId,
        local: this.#local,
        ...(this.#pool ? { pool: this.#pool } : {}),
        dials: this.#dials,
        active: this.#active,
        ...(this.#options.cache ? { cache: this.#options.cache } : {}),
        ...(connect ? { connect } : {}),
        ...(source === undefined ? {} : { sourceAddress: source }),
        ...(this.#options.resolve ? { resolve: this.#options.resolve } : {}),
      }, state).catch((err) => {
        this.#options.logger.info(`connection handler failed: ${err?.stack ?? err}`);
      }).finally(() => {
        this.#conns.delete(client);
        this.#reclaim.closed(this.#conns.size);
        if (refusal) return; // a refused connection never took a slot
        // A TLS handshake left stuck keeps its slot while its socket lives (see ConnState).
        if (state.stuck) void state.stuck.then(() => this.#limits.release(ip));
        else this.#limits.release(ip);
      });
      client.handler = handler;
    }
  }

  /**
   * Takes a new configuration and credentials (SIGHUP): the policy, limits, timeouts and users
   * of every request from now on, on new and open connections alike. What needs a restart
   * (listen addresses, the upstream pool's size) is the caller's to keep unchanged.
   *
   * @param config The new configuration.
   * @param auth The new proxy credentials, if any.
   */
  async reload(config: Config, auth: Authenticator | undefined): Promise<void> {
    const live = this.#live;
    const old = live.config;
    if (
      config.tlsPem &&
      (config.tlsPem.cert !== old.tlsPem?.cert || config.tlsPem.key !== old.tlsPem?.key)
    ) {
      await this.#replaceTls(config);
    }
    live.config = config;
    live.auth = auth;
    if (config.rate !== old.rate) {
      live.rate = config.rate > 0 ? new RateLimiter(config.rate) : undefined;
    }
    this.#limits.set(config.maxConnections, config.maxConnectionsPerIp);
    // Connections already open read their context per request: the next one sees these.
    for (const { state } of this.#conns.values()) {
      if (!state.ctx) continue;
      state.ctx.config = config;
      state.ctx.auth = live.auth;
      state.ctx.rate = live.rate;
    }
  }

  /**
   * Serves a new certificate: each TLS listener is closed and opened again on its address with
   * it (Deno cannot change a listener's certificate). Connections already open keep theirs.
   */
  async #replaceTls(config: Config): Promise<void> {
    const tls = new Set(config.listenTls.map((a) => hostPort(a.hostname, a.port)));
    const next: Listener[] = [];
    for (const listener of this.#listeners) {
      const addr = listener.addr as Deno.NetAddr;
      if (this.#abort.signal.aborted || !tls.has(hostPort(addr.hostname, addr.port))) {
        next.push(listener);
        continue;
      }
      // The port is free once the accept loop has seen its listener close.
      closeQuietly(listener);
      await this.#loops.get(listener);
      this.#loops.delete(listener);
      try {
        const [fresh] = listenAll([addr], this.#options.reusePort ?? false, config.tlsPem);
        this.#loops.set(fresh!, this.#accept(fresh!));
        next.push(fresh!);
      } catch (err) {
        this.#options.logger.info(
          `reload: the TLS listener on ${hostPort(addr.hostname, addr.port)} could not be opened ` +
            `again, and is closed: ${(err as Error).message}`,
        );
      }
    }
    this.#listeners = next;
  }

  /**
   * Stops accepting, closes idle connections, waits up to `graceMs` for exchanges in flight,
   * then closes every connection that is left. Safe to call more than once.
   *
   * @param graceMs How long exchanges in flight may take. @default config.graceMs
   * @returns When every connection is closed.
   */
  shutdown(graceMs = this.#live.config.graceMs): Promise<void> {
    if (graceMs === 0) this.#endGrace(); // a shutdown already waiting stops waiting
    this.#closed ??= this.#shutdown(graceMs);
    return this.#closed;
  }

  async #shutdown(graceMs: number): Promise<void> {
    this.#abort.abort();
    for (const l of this.#listeners) closeQuietly(l);
    await Promise.all(this.#loops.values());
    for (const { conn, state } of this.#conns.values()) if (state.idle) closeQuietly(conn);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((r) => {
      timer = setTimeout(r, graceMs);
      this.#endGrace = r;
    });
    await Promise.race([this.#handlersDone(), grace]);
    clearTimeout(timer);
    for (const { conn, state } of this.#conns.values()) {
      if (state.abort) state.abort();
      else closeQuietly(conn);
    }
    await this.#handlersDone();
    this.#reclaim.close();
    this.#pool?.closeAll();
  }

  /** When every open connection's handler has ended. */
  #handlersDone(): Promise<unknown> {
    return Promise.all(this.#conns.values().map((c) => c.handler));
  }

  /** Shuts down with no grace period (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown(0);
  }
}
