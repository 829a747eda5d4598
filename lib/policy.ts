/**
 * Policy: which CONNECT ports are allowed. Pure checks that throw a 403 naming the rule; the
 * caller decides when to ask (before dialing, so no denied request reaches an upstream).
 *
 * @module
 */

import { Forbidden } from "./errors.ts";

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
