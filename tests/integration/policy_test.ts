import assert from "node:assert/strict";
import { parseCidr } from "../../lib/ip.ts";
import { rawExchange, startHttpOrigin, startOrigin, startProxy } from "../_fixtures/servers.ts";

Deno.test("a client outside --allow gets 403 before any of its request is read, and nothing is dialed", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
  });
  await using proxy = startProxy({ allow: [parseCidr("10.0.0.0/8")!] });
  const res = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
  );
  assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(res, /\r\nConnection: close\r\n/);
  assert.match(
    res,
    /\r\n\r\n403 Forbidden: client 127\.0\.0\.1 is not allowed \(not in --allow\)\n$/,
  );
  assert.equal(origin.accepted, 0);
  await proxy.waitForLine(/^\[\d\d:\d\d:\d\d\] - - from 127\.0\.0\.1 #\d+$/);
  await proxy.waitForLine(
    / 403 Forbidden 0 bytes \(client 127\.0\.0\.1 is not allowed \(not in --allow\)\)/,
  );
});

Deno.test("a client that sends a large body before reading still gets its 403", async () => {
  await using proxy = startProxy({ allow: [parseCidr("10.0.0.0/8")!] });
  const big = "x".repeat(100_000);
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\n\r\n${big}`,
  );
  assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
});

Deno.test("--allow ranges, the loopback default and --open each let the right clients in", async (t) => {
  await using origin = startHttpOrigin(() => new Response("in"));
  const req =
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const cases: [string, Parameters<typeof startProxy>[0]][] = [
    ["loopback by default", {}],
    ["an --allow range that holds the client", { allow: [parseCidr("127.0.0.0/24")!] }],
    ["its IPv4-mapped IPv6 spelling", { allow: [parseCidr("::ffff:127.0.0.1/128")!] }],
    ["--open", { allow: [parseCidr("10.0.0.0/8")!], open: true }],
  ];
  for (const [name, config] of cases) {
    await t.step(name, async () => {
      await using proxy = startProxy(config);
      assert.match(await rawExchange(proxy.port, req), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nin$/);
    });
  }
});
