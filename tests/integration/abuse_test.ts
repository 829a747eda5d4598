import assert from "node:assert/strict";
import { startCli } from "../_fixtures/cli.ts";
import {
  getRequest,
  rawExchange,
  readAll,
  readUntil,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

Deno.test("shutdown after 3,000 distinct destinations loses nothing: valid HAR, every log line, a bounded summary, exit 0", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using cli = await startCli([
      "--listen",
      "127.0.0.1:0",
      "--log-format",
      "json",
      "--log-file",
      `${dir}/access.log`,
      "--har",
      `${dir}/traffic.har`,
      "--summary-json",
      `${dir}/summary.json`,
    ], { denoFlags: [`--allow-write=${dir}`] });
    const [hostname, port] = [cli.addrs[0]!.split(":")[0]!, Number(cli.addrs[0]!.split(":")[1])];
    // Link-local literals: each a distinct destination, each refused (403) before any packet,
    // pipelined 500 to a connection.
    const enc = new TextEncoder();
    for (let c = 0; c < 6; c++) {
      using conn = await Deno.connect({ hostname, port });
      let batch = "";
      for (let i = 0; i < 500; i++) {
        const n = c * 500 + i;
        batch += `GET http://169.254.${n >> 8}.${n & 255}:80/${"p".repeat(200)} HTTP/1.1\r\n` +
          `Host: x\r\n${i === 499 ? "Connection: close\r\n" : ""}\r\n`;
      }
      const bytes = enc.encode(batch);
      for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
      await readUntil(conn, (t) => (t.match(/HTTP\/1\.1 403 /g)?.length ?? 0) === 500, 20_000);
    }
    assert.equal(await cli.stop("SIGTERM"), 0);
    const har = JSON.parse(await Deno.readTextFile(`${dir}/traffic.har`));
    assert.equal(har.log.entries.length, 3000);
    const lines = (await Deno.readTextFile(`${dir}/access.log`)).trimEnd().split("\n");
    assert.equal(lines.length, 3000);
    assert.equal(JSON.parse(lines[2999]!).status, 403);
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
    assert.equal(summary.hosts.length, 1001);
    assert.equal(
      summary.hosts.reduce((n: number, h: { requests: number }) => n + h.requests, 0),
      3000,
    );
    assert.ok(summary.hosts.some((h: { host: string }) => h.host === "(other)"));
    assert.match(cli.stderr.text, /^summary: 3000 exchange\(s\) in \d+ s/m);
    assert.match(cli.stderr.text, /^\.\.\. 951 more host\(s\) \(all of them: --summary-json\)$/m);
    assert.match(cli.stderr.text, /\nstopped\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Reads until the peer closes (or resets); returns when that happened, by performance.now(). */
async function closedAt(
  reader: { read(max: number): Promise<Uint8Array | null> },
): Promise<number> {
  try {
    while ((await reader.read(65536)) !== null) {
      // drop what arrives
    }
  } catch {
    // reset: closed all the same
  }
  return performance.now();
}

Deno.test("flowing data has timeouts: a stalled request body gets 408, a stalled response body and a client that does not read are cut, both sockets closed", async (t) => {
  const limits = { readTimeoutMs: 300, writeTimeoutMs: 300 };
  await t.step("request body stops arriving: 408 to the client, the upstream closed", async () => {
    let upstreamClosed = Promise.resolve(0);
    await using origin = startOrigin(async (c) => {
      await c.readHead();
      upstreamClosed = closedAt(c.reader);
      await upstreamClosed;
    });
    await using proxy = startProxy(limits);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    const started = performance.now();
    await conn.write(new TextEncoder().encode(
      `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789`,
    ));
    const res = await readAll(conn);
    assert.match(
      res,
      /^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*request body stalled: no byte for 300 ms\n$/,
    );
    assert.ok((await upstreamClosed) - started < 2000);
    await proxy.waitForLine(
      / 408 Request Timeout 0 bytes \(request body stalled: no byte for 300 ms\)/,
    );
  });
  await t.step(
    "response body stops arriving: the client connection ends short, the upstream closed",
    async () => {
      let upstreamClosed = Promise.resolve(0);
      await using origin = startOrigin(async (c) => {
        await c.readHead();
        await c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        upstreamClosed = closedAt(c.reader);
        await upstreamClosed;
      });
      await using proxy = startProxy(limits);
      const started = performance.now();
      const res = await rawExchange(proxy.port, getRequest(origin.port));
      assert.match(res, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n0123456789$/);
      assert.ok((await upstreamClosed) - started < 2000);
      await proxy.waitForLine(/ 200 OK 10 bytes \(upstream body stalled: no byte for 300 ms\)/);
    },
  );
  await t.step("a client that never reads is dropped, and its upstream closed", async () => {
    let upstreamClosed = Promise.resolve(0);
    const piece = new Uint8Array(1 << 20);
    await using origin = startOrigin(async (c) => {
      await c.readHead();
      upstreamClosed = closedAt(c.reader);
      await c.write(`HTTP/1.1 200 OK\r\nContent-Length: ${64 << 20}\r\n\r\n`);
      for (let i = 0; i < 64; i++) await c.write(piece);
    });
    await using proxy = startProxy(limits);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(new TextEncoder().encode(getRequest(origin.port)));
    const line = await proxy.waitForLine(/ 200 OK \d+ bytes \(client took no byte for 300 ms\)/);
    assert.ok(Number(/ OK (\d+) bytes/.exec(line)![1]) < 64 << 20);
    assert.ok((await upstreamClosed) > 0);
  });
});

Deno.test("a client that leaves while the upstream thinks is noticed: upstream closed at once, logged as the client's leaving, not a 504", async () => {
  let upstreamClosed = Promise.resolve(0);
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    upstreamClosed = closedAt(c.reader); // never answers
    await upstreamClosed;
  });
  await using proxy = startProxy({ responseTimeoutMs: 10_000 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode(getRequest(origin.port)));
  await proxy.waitForLine(/ -> 127\.0\.0\.1 #/);
  const left = performance.now();
  conn.close();
  const line = await proxy.waitForLine(
    / \(client closed the connection before the response came\)/,
  );
  assert.match(line, /\] 0 +0 bytes/);
  assert.ok((await upstreamClosed) - left < 1000, "upstream closed within a second");
  assert.ok(!proxy.lines.some((l) => / 504 /.test(l)));
});

Deno.test("a tunnel whose client left gets --half-closed-timeout, not the tunnel idle timeout", async () => {
  const { promise: done, resolve: release } = Promise.withResolvers<void>();
  await using origin = startOrigin(async (c) => {
    await closedAt(c.reader); // reads, never answers, never closes
    await done;
  });
  await using proxy = startProxy({ tunnelIdleTimeoutMs: 10_000, halfClosedTimeoutMs: 300 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(
    new TextEncoder().encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\nhello`),
  );
  await readUntil(conn, (t) => t.includes("\r\n\r\n"));
  const left = performance.now();
  conn.close();
  await proxy.waitForLine(/tunnel closed 5 bytes up 0 bytes down \(idle for 300 ms\)/);
  const took = performance.now() - left;
  release();
  assert.ok(took >= 250 && took < 2000, `closed after ${took} ms`);
});

Deno.test("a tunnel client that sends but never reads is dropped after --write-timeout", async () => {
  await using origin = startOrigin(async (c) => {
    const piece = new Uint8Array(1 << 20);
    for (let i = 0; i < 64; i++) await c.write(piece);
    await closedAt(c.reader);
  });
  await using proxy = startProxy({ writeTimeoutMs: 300 });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`));
  // Keep the tunnel busy the other way, so only the write timeout can end it.
  const ticking = setInterval(() => conn.write(new Uint8Array(1)).catch(() => {}), 50);
  try {
    await proxy.waitForLine(
      /tunnel closed \d+ bytes up \d+ bytes down \(took no byte for 300 ms\)/,
    );
  } finally {
    clearInterval(ticking);
  }
});
