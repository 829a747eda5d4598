/**
 * Policy: which clients are served and which CONNECT ports are allowed. Pure checks that throw
 * a 403 naming the rule; the caller decides when to ask (a client before a byte of its request
 * is read, a target before dialing, so no denied request reaches an upstream).
 *
 * @module
 */

import { Forbidden } from "./errors.ts";
import { type Cidr, inRange, LOOPBACK, parseIp } from "./ip.ts";

/**
 * Checks a client address against `--allow` / `--open` (default: loopback only).
 *
 * @param address The client IP as the socket reports it.
 * @param rule The allowed ranges and the open flag.
 * @throws {Forbidden} (closing the connection) when the client is not allowed.
 */
export function checkClient(
  address: string,
  rule: { allow: readonly Cidr[]; open: boolean },
): void {
  if (rule.open) return;
  const ip = parseIp(address);
  const ranges = rule.allow.length > 0 ? rule.allow : LOOPBACK;
  if (ip && ranges.some((r) => inRange(r, ip))) return;
  throw new Forbidden(
    `client ${address} is not allowed (${
      rule.allow.length > 0 ? "not in --allow" : "only loopback clients are served without --allow"
    })`,
    { close: true },
  );
}

/** Allowed CONNECT ports: a set, or every port. */
export type PortRule = ReadonlySet<number> | "any";

/**
 * Checks a CONNECT target port.
 *
 * @param port The requested port.
 * @param allowed The configured rule (`--connect-ports`).
 * @throws {Forbidden} when the port is not allowed.
 */
export function checkConnectPort(port: number, allowed: PortRule): void {
  if (allowed === "any" || allowed.has(port)) return;
  throw new Forbidden(
    `CONNECT to port ${port} is not allowed (allowed: ${[...allowed].join(", ")}; ` +
      `see --connect-ports)`,
  );
}
