/**
 * `--har FILE`: the exchanges as an HTTP Archive (HAR 1.2), which browser devtools import.
 * Written as it goes — the opening at start, one entry per finished exchange, the closing at
 * exit — so memory stays flat; the file is complete JSON once the proxy has stopped. Bodies are
 * never recorded (sizes only), and credentials (Authorization, Proxy-Authorization, Cookie,
 * Set-Cookie) are replaced by `(removed)`. A CONNECT tunnel is an entry with what a proxy sees:
 * the authority, the 200, bytes each way and timings.
 *
 * @module
 */

import { VERSION } from "../cli/config.ts";
import type { Field } from "../http1/parse.ts";
import type { ExchangeObserver, ExchangeRecord } from "../exchange.ts";
import { asciiJson } from "./log.ts";

const SECRET = /^(authorization|proxy-authorization|cookie|set-cookie)$/i;

function headers(fields: readonly Field[] | undefined) {
  return (fields ?? []).map(([name, value]) => ({
    name,
    value: SECRET.test(name) ? "(removed)" : value,
  }));
}

function queryString(url: string) {
  const q = url.indexOf("?");
  if (q < 0) return [];
  return url.slice(q + 1).split("&").filter((p) => p !== "").map((p) => {
    const eq = p.indexOf("=");
    return eq < 0 ? { name: p, value: "" } : { name: p.slice(0, eq), value: p.slice(eq + 1) };
  });
}

/**
 * One HAR entry for an exchange.
 *
 * @param ex The exchange.
 * @returns The entry object (HAR 1.2 §entries).
 */
export function harEntry(ex: ExchangeRecord): Record<string, unknown> {
  const reused = ex.upstreamUse === "reused";
  const round = (n: number) => Math.max(0, Math.round(n * 1000) / 1000);
  const dns = ex.dnsMs === undefined || reused ? -1 : round(ex.dnsMs);
  const connect = ex.connectMs === undefined || reused
    ? -1
    : round(ex.connectMs - Math.max(0, dns));
  const opened = ex.connectMs ?? 0;
  const wait = ex.firstByteMs === undefined
    ? round((ex.totalMs ?? 0) - opened)
    : round(ex.firstByteMs - opened);
  const receive = round((ex.totalMs ?? 0) - opened - wait);
  const timings = { blocked: -1, dns, connect, send: 0, wait, receive, ssl: -1 };
  const time = [dns, connect, 0, wait, receive].filter((t) => t > 0).reduce((a, b) => a + b, 0);
  const url = ex.tunnel
    ? `https://${ex.target}/`
    : ex.target === "-"
    ? "http://unknown/"
    : ex.target;
  const type = ex.contentType ?? "";
  return {
    startedDateTime: new Date(ex.start).toISOString(),
    time: round(time),
    request: {
      method: ex.method === "-" ? "GET" : ex.method,
      url,
      httpVersion: ex.version ?? "HTTP/1.1",
      cookies: [],
      headers: headers(ex.requestFields),
      queryString: queryString(url),
      headersSize: -1,
      bodySize: ex.bytesUp,
    },
    response: {
      status: ex.status ?? 0,
      statusText: ex.reason ?? "",
      httpVersion: "HTTP/1.1",
      cookies: [],
      headers: headers(ex.responseFields),
      content: { size: ex.bytesDown, mimeType: type || "x-unknown" },
      redirectURL: "",
      headersSize: -1,
      bodySize: ex.bytesDown,
    },
    cache: {},
    timings,
    ...(ex.upstreamIp === undefined ? {} : { serverIPAddress: ex.upstreamIp }),
    connection: String(ex.id),
    // Custom fields (HAR 1.2 allows names that start with _): where the client came in.
    ...(ex.listener === undefined ? {} : { _listener: ex.listener, _tls: ex.tls ?? false }),
    ...(ex.parent === undefined ? {} : { _parent: ex.parent }),
    ...(ex.cache === undefined ? {} : { _cache: ex.cache }),
    ...(ex.error === undefined ? {} : { comment: ex.error }),
  };
}

/** A HAR file being written; see the module doc. */
export class HarFile implements ExchangeObserver {
  #file: Deno.FsFile;
  #first = true;
  #enc = new TextEncoder();
  #failed = false;
  #diag: (line: string) => void;

  /**
   * Creates (truncates) the file and writes the HAR opening.
   *
   * @param path The file.
   * @param diag Where a write failure is reported (once).
   * @throws {Error} when the file cannot be created.
   */
  constructor(path: string, diag: (line: string) => void) {
    this.#diag = diag;
    this.#file = Deno.openSync(path, { write: true, create: true, truncate: true });
    this.#write(
      `{"log":{"version":"1.2","creator":{"name":"http-proxy","version":"${VERSION}"},` +
        `"pages":[],"entries":[\n`,
    );
  }

  #write(text: string): void {
    try {
      const bytes = this.#enc.encode(text);
      let off = 0;
      while (off < bytes.length) off += this.#file.writeSync(bytes.subarray(off));
    } catch (err) {
      if (!this.#failed) this.#diag(`--har: cannot write: ${(err as Error).message}`);
      this.#failed = true;
    }
  }

  /**
   * Appends one exchange.
   *
   * @param ex The finished exchange.
   */
  closed(ex: ExchangeRecord): void {
    this.#write((this.#first ? "" : ",\n") + asciiJson(harEntry(ex)));
    this.#first = false;
  }

  /** Writes the closing and closes the file. */
  close(): void {
    this.#write("\n]}}\n");
    try {
      this.#file.close();
    } catch {
      // already closed
    }
  }
}
