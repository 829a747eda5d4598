/**
 * The golden-path demo: starts an origin on 127.0.0.1 and the proxy (in this process, logging
 * as the CLI does), makes a fixed set of requests through it — 200, 404, chunked, POST, a
 * CONNECT tunnel, an unreachable host — and prints the proxy's log with clock times, durations
 * and ports normalised, so `tests/golden/demo.txt` can hold the expected transcript.
 *
 * Run: `deno task demo`. Traffic goes to 127.0.0.1 only.
 *
 * @module
 */

import { DEFAULTS } from "../lib/cli/config.ts";
import { createLogger, printLine } from "../lib/observe/log.ts";
import { ProxyServer } from "../lib/server.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Sends `request` to the proxy (then `tunnelled` once a head came back) and reads until close. */
async function exchange(port: number, request: string, tunnelled?: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(enc.encode(request));
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  let sentTunnel = false;
  for (;;) {
    if (tunnelled !== undefined && !sentTunnel && text.includes("\r\n\r\n")) {
      await conn.write(enc.encode(tunnelled));
      sentTunnel = true;
    }
    const n = await conn.read(buf);
    if (n === null) return text;
    text += dec.decode(buf.subarray(0, n));
  }
}

/**
 * Runs the demo and returns the normalised log.
 *
 * @returns The transcript lines.
 */
export async function runDemo(): Promise<string[]> {
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/") return new Response("hello from the origin\n");
    if (path === "/chunked") {
      const parts = ["one ", "two ", "three\n"];
      return new Response(
        new ReadableStream({
          pull(c) {
            const p = parts.shift();
            if (p === undefined) c.close();
            else c.enqueue(enc.encode(p));
          },
        }),
      );
    }
    if (req.method === "POST") {
      return new Response(`received ${(await req.arrayBuffer()).byteLength} bytes\n`);
    }
    return new Response("not here\n", { status: 404 });
  });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = closed.addr.port;
  closed.close();

  const lines: string[] = [];
  const logger = createLogger({ sink: (l) => lines.push(...l.split("\n")), diag: () => {} });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = new ProxyServer([listener], {
    config: { ...DEFAULTS, connectPorts: "any" },
    logger,
  });
  const proxyPort = listener.addr.port;
  const o = `127.0.0.1:${origin.addr.port}`;
  const waitForLines = async (n: number) => {
    for (let i = 0; lines.length < n && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
  };
  try {
    const requests = [
      `GET http://${o}/ HTTP/1.1\r\nHost: ${o}\r\nConnection: close\r\n\r\n`,
      `GET http://${o}/missing HTTP/1.1\r\nHost: ${o}\r\nConnection: close\r\n\r\n`,
      `GET http://${o}/chunked HTTP/1.1\r\nHost: ${o}\r\nConnection: close\r\n\r\n`,
      `POST http://${o}/upload HTTP/1.1\r\nHost: ${o}\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world`,
    ];
    for (const r of requests) {
      const before = lines.length;
      await exchange(proxyPort, r);
      await waitForLines(before + 2);
    }
    let before = lines.length;
    await exchange(
      proxyPort,
      `CONNECT ${o} HTTP/1.1\r\nHost: ${o}\r\n\r\n`,
      "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n",
    );
    await waitForLines(before + 2);
    before = lines.length;
    await exchange(
      proxyPort,
      `GET http://127.0.0.1:${deadPort}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    await waitForLines(before + 2);
  } finally {
    await server.shutdown(0);
    await origin.shutdown();
  }
  return lines.map((l) =>
    l.replace(/^\[\d\d:\d\d:\d\d\]/, "[HH:MM:SS]")
      .replace(/\b\d+ ms #/, "N ms #")
      .replaceAll(`:${origin.addr.port}`, ":ORIGIN_PORT")
      .replaceAll(`:${deadPort}`, ":CLOSED_PORT")
  );
}

if (import.meta.main) {
  for (const line of await runDemo()) printLine(line);
}
