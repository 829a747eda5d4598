import assert from "node:assert/strict";
import { RateLimiter } from "../../lib/policy/limits.ts";
import {
  rawExchange,
  readAll,
  readUntil,
  startHttpOrigin,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

const enc = new TextEncoder();

Deno.test("--max-connections-per-ip and --max-connections answer 503 and close past the limit", async (t) => {
  for (
    const [name, config, re] of [
      [
        "per IP",
        { maxConnectionsPerIp: 2 },
        /too many connections from 127\.0\.0\.1 \(2, see --max-connections-per-ip\)/,
      ],
      ["in total", { maxConnections: 2 }, /too many connections \(2, see --max-connections\)/],
    ] as const
  ) {
    await t.step(name, async () => {
      await using origin = startHttpOrigin(() => new Response("ok"));
      await using proxy = startProxy(config);
      using a = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      using b = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      // Both are being served: each gets an answer on its kept connection.
      for (const c of [a, b]) {
        await c.write(
          enc.encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`),
        );
        await readUntil(c, (text) => text.endsWith("ok"));
      }
      const third = await rawExchange(
        proxy.port,
        `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
      );
      assert.match(third, /^HTTP\/1\.1 503 Service Unavailable\r\n[\s\S]*Connection: close\r\n/);
      assert.match(third, re);
      await proxy.waitForLine(/ 503 Service Unavailable 0 bytes \(too many connections/);
      a.close();
      // Once one leaves, a new one is served again.
      for (let i = 0; i < 50 && proxy.server.connections > 1; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const again = await rawExchange(
        proxy.port,
        `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      assert.match(again, /^HTTP\/1\.1 200 OK\r\n/);
    });
  }
});

Deno.test("--rate answers 429 with Retry-After once a client's bucket is empty", async () => {
  await using origin = startHttpOrigin(() => new Response("ok"));
  await using proxy = startProxy({ rate: 2 });
  const req = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`;
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(req + req + req));
  const text = await readUntil(conn, (t) => t.includes("429"));
  assert.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 2);
  assert.match(text, /HTTP\/1\.1 429 Too Many Requests\r\n[\s\S]*\r\nRetry-After: 1\r\n/);
  assert.match(text, /more than 2 requests a second from 127\.0\.0\.1 \(see --rate\)/);
});

Deno.test("RateLimiter refills at its rate and tells how long to wait", () => {
  const limiter = new RateLimiter(1);
  limiter.take("a", 0);
  assert.throws(
    () => limiter.take("a", 100),
    (e) => (e as { headers: [string, string][] }).headers[0]![1] === "1",
  );
  limiter.take("a", 1100); // a second later there is a token again
  limiter.take("b", 1100); // another client has its own bucket
});

Deno.test("--max-header-fields answers 431 and --max-request-line 414", async () => {
  await using proxy = startProxy({ maxHeaderFields: 3, maxRequestLine: 1024 });
  const fields = await rawExchange(
    proxy.port,
    "GET http://127.0.0.1:1/ HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
  );
  assert.match(
    fields,
    /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n[\s\S]*more than 3 header fields\n$/,
  );
  const line = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:1/${"a".repeat(1100)} HTTP/1.1\r\n\r\n`,
  );
  assert.match(
    line,
    /^HTTP\/1\.1 414 URI Too Long\r\n[\s\S]*request line longer than 1024 bytes\n$/,
  );
});

Deno.test("--tunnel-idle-timeout closes a tunnel with no traffic either way", async () => {
  await using origin = startOrigin(async (c) => {
    await c.reader.read(1); // say nothing; wait for the proxy to give up
  });
  await using proxy = startProxy({ tunnelIdleTimeoutMs: 200 });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`));
  const text = await readAll(conn, 3000);
  assert.equal(text, "HTTP/1.1 200 Connection established\r\n\r\n");
  await proxy.waitForLine(/tunnel closed 0 bytes up 0 bytes down \(idle for 200 ms\) \d+ ms #\d+$/);
});
