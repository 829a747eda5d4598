/**
 * Abuse limits: connections in total and per client IP, and a per-client request rate (token
 * bucket). State only, no sockets: the server asks before serving a connection, the connection
 * handler before each request.
 *
 * @module
 */

import { ProxyError } from "../errors.ts";

/** Counts open client connections, in total and per IP. */
export class ConnectionLimits {
  #total = 0;
  #perIp = new Map<string, number>();
  #max: number;
  #maxPerIp: number;

  /**
   * @param max Most connections in total (0: no limit).
   * @param maxPerIp Most connections from one IP (0: no limit).
   */
  constructor(max: number, maxPerIp: number) {
    this.#max = max;
    this.#maxPerIp = maxPerIp;
  }

  /**
   * Changes the limits (a reload); connections already held stay counted.
   *
   * @param max Most connections in total (0: no limit).
   * @param maxPerIp Most connections from one IP (0: no limit).
   */
  set(max: number, maxPerIp: number): void {
    this.#max = max;
    this.#maxPerIp = maxPerIp;
  }

  /**
   * Counts a new connection, or says why it is one too many.
   *
   * @param ip The client IP.
   * @returns undefined when admitted (call `release` later), or the 503 to answer with.
   */
  admit(ip: string): ProxyError | undefined {
    const mine = this.#perIp.get(ip) ?? 0;
    const why = this.#max > 0 && this.#total >= this.#max
      ? `too many connections (${this.#max}, see --max-connections)`
      : this.#maxPerIp > 0 && mine >= this.#maxPerIp
      ? `too many connections from ${ip} (${this.#maxPerIp}, see --max-connections-per-ip)`
      : undefined;
    if (why) return new ProxyError(503, why, { kind: "connection_limit_reached", close: true });
    this.#total++;
    this.#perIp.set(ip, mine + 1);
    return undefined;
  }

  /**
   * Uncounts a connection that was admitted.
   *
   * @param ip The client IP.
   */
  release(ip: string): void {
    this.#total--;
    const left = (this.#perIp.get(ip) ?? 1) - 1;
    if (left > 0) this.#perIp.set(ip, left);
    else this.#perIp.delete(ip);
  }
}

/** Requests per second per client IP, as a token bucket holding one second's worth. */
export class RateLimiter {
  #rate: number;
  #buckets = new Map<string, { tokens: number; at: number }>();

  /**
   * @param perSecond Requests allowed per second, and the burst size.
   */
  constructor(perSecond: number) {
    this.#rate = perSecond;
  }

  /**
   * Takes a token for a request.
   *
   * @param ip The client IP.
   * @param now performance.now() value. @default performance.now()
   * @throws {ProxyError} 429 with Retry-After when the bucket is empty.
   */
  take(ip: string, now = performance.now()): void {
    let bucket = this.#buckets.get(ip);
    if (!bucket) {
      // Forget full buckets now and then, so the map holds only recent clients.
      if (this.#buckets.size >= 10_000) {
        for (const [key, b] of this.#buckets) {
          if (b.tokens + ((now - b.at) / 1000) * this.#rate >= this.#rate) {
            this.#buckets.delete(key);
          }
        }
      }
      bucket = { tokens: this.#rate, at: now };
      this.#buckets.set(ip, bucket);
    }
    bucket.tokens = Math.min(this.#rate, bucket.tokens + ((now - bucket.at) / 1000) * this.#rate);
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return;
    }
    const wait = Math.max(1, Math.ceil((1 - bucket.tokens) / this.#rate));
    throw new ProxyError(429, `more than ${this.#rate} requests a second from ${ip} (see --rate)`, {
      kind: "http_request_denied",
      headers: [["Retry-After", String(wait)]],
    });
  }
}
