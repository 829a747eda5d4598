/**
 * Policy: which clients are served and which CONNECT ports are allowed. Pure checks that throw
 * a 403 naming the rule; the caller decides when to ask (a client before a byte of its request
 * is read, a target before dialing, so no denied request reaches an upstream).
 *
 * @module
 */

import { Forbidden, ProxyError } from "./errors.ts";
import { listValues, VIA_NAME } from "./http1/headers.ts";
import type { Field } from "./http1/parse.ts";
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

/**
 * Refuses a request that already passed through this proxy: one of its Via entries names us
 * (RFC 9110 §7.6.3), so forwarding it would loop. Chained instances need distinct names.
 *
 * @param fields The request fields.
 * @throws {ProxyError} 508 Loop Detected.
 */
export function checkLoop(fields: readonly Field[]): void {
  for (const entry of listValues(fields, "via")) {
    const receivedBy = entry.split(/[ \t]+/)[1];
    if (receivedBy?.toLowerCase() === VIA_NAME) {
      throw new ProxyError(508, `loop detected: the request already passed through ${VIA_NAME}`, {
        kind: "http_request_denied",
        close: true,
      });
    }
  }
}

/**
 * Reads Max-Forwards (RFC 9110 §7.6.2).
 *
 * @param fields The request fields.
 * @returns Its value, or undefined when absent.
 * @throws {SyntaxError} for a value that is not a number.
 */
export function maxForwards(fields: readonly Field[]): number | undefined {
  const values = listValues(fields, "max-forwards");
  if (values.length === 0) return undefined;
  if (values.length > 1 || !/^\d{1,9}$/.test(values[0]!)) {
    throw new SyntaxError(`malformed Max-Forwards "${values.join(", ")}"`);
  }
  return Number(values[0]);
}
