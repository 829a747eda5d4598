/**
 * Counts the garbage a keep-alive request makes, as a program of its own (it needs V8 flags; see
 * tests/integration/gc_test.ts for them): it runs the proxy in this process with an origin and
 * 10 keep-alive clients that allocate next to nothing, the young generation too big to be
 * collected and the old generation's first limit above what the run allocates, and prints one line
 * `bytes/request N` per round: the growth of the heap over the round's requests, divided by them.
 * The figure is the same to within about 50 bytes from run to run (docs/performance.md).
 *
 * @module
 */

import { startProxy } from "./servers.ts";

const ROUNDS = 5;
const PER_ROUND = 2000;
const CLIENTS = 10;
const enc = new TextEncoder();
const RESPONSE = enc.encode(
  "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n" +
    `Server: x\r\n\r\n${"a".repeat(1024)}`,
);
const END = 0x0d0a0d0a; // CRLF CRLF, as the last four bytes seen

const originListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const originPort = originListener.addr.port;
/** An origin that answers each request head with the same 1 KiB response. */
async function originConn(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(65536);
  let tail = 0;
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let i = 0; i < n; i++) {
        tail = ((tail << 8) | buf[i]!) >>> 0;
        if (tail === END) await conn.write(RESPONSE);
      }
    }
  } catch {
    // the proxy went away
  }
  conn.close();
}
const accepting = (async () => {
  for await (const conn of originListener) void originConn(conn);
})();

await using proxy = startProxy({});

/** One client: `count` requests on one connection, each response read whole. */
async function client(count: number): Promise<void> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const request = enc.encode(
    `GET http://127.0.0.1:${originPort}/1k HTTP/1.1\r\nHost: x\r\nUser-Agent: g\r\n\r\n`,
  );
  const buf = new Uint8Array(65536);
  for (let i = 0; i < count; i++) {
    await conn.write(request);
    let got = 0;
    let headEnd = -1;
    let tail = 0;
    while (headEnd < 0 || got < headEnd + 1024) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) throw new Error("the proxy closed the connection");
      for (let j = got; j < got + n && headEnd < 0; j++) {
        tail = ((tail << 8) | buf[j]!) >>> 0;
        if (tail === END) headEnd = j + 1;
      }
      got += n;
    }
  }
}

const all = (count: number) => Promise.all(Array.from({ length: CLIENTS }, () => client(count)));
await all(600); // warm-up: the code optimised, the pool and the kept strings filled
for (let r = 0; r < ROUNDS; r++) {
  const before = Deno.memoryUsage().heapUsed;
  await all(PER_ROUND / CLIENTS);
  const after = Deno.memoryUsage().heapUsed;
  await Deno.stdout.write(
    enc.encode(`bytes/request ${Math.round((after - before) / PER_ROUND)}\n`),
  );
}
originListener.close();
await accepting.catch(() => {});
