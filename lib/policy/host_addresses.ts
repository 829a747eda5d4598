/**
 * The proxy host's own addresses and the proxy's own listeners, as the destination policy sees
 * them: loopback, the unspecified addresses (connecting to 0.0.0.0 reaches this host), and the
 * address of every interface (`Deno.networkInterfaces()`, read again every few seconds so a new
 * DHCP lease counts). Without the `sys` permission for that call only the fixed ranges are known,
 * and {@linkcode HostAddresses.complete} says so. It opens no socket.
 *
 * @module
 */

import { type Cidr, inRange, type Ip, isUnspecified, parseCidr, parseIp, sameIp } from "./ip.ts";

/** Always this host, whatever its interfaces: 127/8, ::1, 0.0.0.0/8 and ::. */
const FIXED: readonly Cidr[] = ["127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"].map((t) =>
  parseCidr(t)!
);

/** How long a reading of the interfaces is trusted. */
const REFRESH_MS = 5_000;

/** Reads the interface addresses, or undefined without permission. */
function readInterfaces(): Ip[] | undefined {
  try {
    if (
      Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state !== "granted"
    ) {
      return undefined;
    }
    const out: Ip[] = [];
    for (const i of Deno.networkInterfaces()) {
      const ip = parseIp(i.address.replace(/%.*$/, ""));
      if (ip) out.push(ip);
    }
    return out;
  } catch {
    return undefined; // not supported here: only the fixed ranges count
  }
}

/** The addresses that reach this host. */
export class HostAddresses {
  #interfaces: Ip[] = [];
  #readAt = -Infinity;
  #complete = false;
  #read: () => Ip[] | undefined;

  /**
   * @param read Reads the interface addresses (tests inject a list). @default the system's
   */
  constructor(read: () => Ip[] | undefined = readInterfaces) {
    this.#read = read;
  }

  /** Whether the interface addresses could be read (the `sys` permission). */
  get complete(): boolean {
    this.#refresh();
    return this.#complete;
  }

  #refresh(): void {
    const now = performance.now();
    if (now - this.#readAt < REFRESH_MS) return;
    this.#readAt = now;
    const found = this.#read();
    this.#complete = found !== undefined;
    this.#interfaces = found ?? [];
  }

  /**
   * Tells whether an address reaches this host.
   *
   * @param ip The address.
   * @returns True for loopback, unspecified, and every interface address.
   */
  has(ip: Ip): boolean {
    if (FIXED.some((r) => inRange(r, ip))) return true;
    this.#refresh();
    return this.#interfaces.some((a) => sameIp(a, ip));
  }
}

/** A listener of this process: the proxy's own ports and the admin port. */
export interface Endpoint {
  /** The bound address (IPv6 without brackets); 0.0.0.0 or :: for every address. */
  hostname: string;
  /** The bound port. */
  port: number;
  /** What it is, for messages: "proxy" or "admin". */
  what: string;
}

/** This process's own listeners, which no request may be sent to (no loop, no admin through it). */
export class OwnListeners {
  #endpoints: { ip: Ip | undefined; port: number; what: string }[] = [];
  #host: HostAddresses;

  /**
   * @param host The host's addresses (a wildcard listener is reached through any of them).
   */
  constructor(host: HostAddresses) {
    this.#host = host;
  }

  /**
   * Adds a listener.
   *
   * @param endpoint Its bound address and port.
   */
  add(endpoint: Endpoint): void {
    this.#endpoints.push({
      ip: parseIp(endpoint.hostname),
      port: endpoint.port,
      what: endpoint.what,
    });
  }

  /**
   * Finds the listener an address and port reach.
   *
   * @param ip The destination address.
   * @param port The destination port.
   * @returns "proxy" or "admin", or undefined when it is not one of ours.
   */
  find(ip: Ip, port: number): string | undefined {
    for (const e of this.#endpoints) {
      if (e.port !== port) continue;
      // A wildcard (or unparsable) bind answers on every address of this host.
      const wildcard = e.ip === undefined || isUnspecified(e.ip);
      if (wildcard ? this.#host.has(ip) : sameIp(e.ip!, ip) || isUnspecified(ip)) return e.what;
    }
    return undefined;
  }
}
