import assert from "node:assert/strict";
import {
  curl,
  rawExchange,
  readAll,
  readUntil,
  startHttpOrigin,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("tunnel() relays both ways and logs open and close with bytes each way", async () => {
  await using origin = startOrigin(async (c) => {
    const buf = new Uint8Array(1024);
    for (;;) {
      const n = await c.conn.read(buf);
      if (n === null) return;
      await c.write(dec.decode(buf.subarray(0, n)).toUpperCase());
    }
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nHost: x\r\n\r\n`));
  const established = await readUntil(conn, (t) => t.includes("\r\n\r\n"));
  assert.equal(established, "HTTP/1.1 200 Connection established\r\n\r\n");
  await conn.write(enc.encode("hello"));
  assert.equal(await readUntil(conn, (t) => t.length >= 5), "HELLO");
  await conn.write(enc.encode("again!"));
  assert.equal(await readUntil(conn, (t) => t.length >= 6), "AGAIN!");
  await conn.closeWrite();
  assert.equal(await readAll(conn), "");
  const open = await proxy.waitForLine(/ CONNECT /);
  assert.match(
    open,
    new RegExp(
      `^\\[\\d\\d:\\d\\d:\\d\\d\\] CONNECT 127\\.0\\.0\\.1:${origin.port} from 127\\.0\\.0\\.1 -> 127\\.0\\.0\\.1 #\\d+$`,
    ),
  );
  const close = await proxy.waitForLine(/tunnel closed/);
  assert.match(close, /^\[\d\d:\d\d:\d\d\] tunnel closed 11 bytes up 11 bytes down \d+ ms #\d+$/);
});

Deno.test("tunnel() forwards a reply sent after the client half-closes", async () => {
  await using origin = startOrigin(async (c) => {
    // Read everything the client sends until it half-closes, then answer.
    let got = "";
    const buf = new Uint8Array(1024);
    for (;;) {
      const n = await c.conn.read(buf);
      if (n === null) break;
      got += dec.decode(buf.subarray(0, n));
    }
    await c.write(`you said ${got}`);
  });
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\nearly bytes`,
    { halfClose: true },
  );
  assert.equal(res, "HTTP/1.1 200 Connection established\r\n\r\nyou said early bytes");
  await proxy.waitForLine(/tunnel closed 11 bytes up 20 bytes down/);
});

Deno.test("tunnel() writes bytes sent right after the CONNECT head upstream first", async () => {
  await using origin = startOrigin(async (c) => {
    const buf = new Uint8Array(1024);
    const n = await c.conn.read(buf);
    await c.write(`first:${dec.decode(buf.subarray(0, n ?? 0))}`);
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  // The CONNECT head and a "ClientHello" in one write.
  await conn.write(
    enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n\x16\x03\x01hello`),
  );
  const text = await readAll(conn);
  assert.equal(text, "HTTP/1.1 200 Connection established\r\n\r\nfirst:\x16\x03\x01hello");
});

Deno.test("tunnel() passes the upstream's close on as a half-close and ends when the client closes", async () => {
  await using origin = startOrigin(async (c) => {
    await c.write("bye");
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`));
  const text = await readAll(conn);
  assert.equal(text, "HTTP/1.1 200 Connection established\r\n\r\nbye");
  // The client may still send (TCP cannot tell a half-close from a close); the tunnel stays
  // open until it closes its side too.
  assert.equal(proxy.lines.filter((l) => l.includes("tunnel closed")).length, 0);
  await conn.closeWrite();
  await proxy.waitForLine(/tunnel closed 0 bytes up 3 bytes down/);
});

Deno.test("CONNECT is refused with 403 on a port outside --connect-ports, without dialing", async () => {
  await using origin = startOrigin(async () => {});
  await using proxy = startProxy({ connectPorts: new Set([443, 8443]) });
  const res = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`, {
    halfClose: true,
  });
  assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(
    res,
    new RegExp(`CONNECT to port ${origin.port} is not allowed \\(allowed: 443, 8443`),
  );
  assert.equal(origin.accepted, 0);
  await proxy.waitForLine(/ 403 Forbidden 0 bytes \(CONNECT to port \d+ is not allowed/);
});

Deno.test("CONNECT to a refused port answers 502", async () => {
  await using proxy = startProxy();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const res = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`, {
    halfClose: true,
  });
  assert.match(res, /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*connection refused\n$/);
});

Deno.test("curl -p tunnels plain HTTP through CONNECT", async () => {
  await using origin = startHttpOrigin((req) =>
    new Response(`tunnelled ${new URL(req.url).pathname}`)
  );
  await using proxy = startProxy();
  const res = await curl(["-p", "-x", proxy.addr, `http://127.0.0.1:${origin.port}/t`]);
  assert.equal(res.stdout, "tunnelled /t");
  await proxy.waitForLine(new RegExp(`CONNECT 127\\.0\\.0\\.1:${origin.port} from`));
  await proxy.waitForLine(/tunnel closed \d+ bytes up \d+ bytes down/);
});

Deno.test("IPv6 targets work in absolute-form and CONNECT, and the log shows the IPv6 upstream", async () => {
  const server = Deno.serve({ hostname: "::1", port: 0, onListen() {} }, () => new Response("six"));
  try {
    const port = server.addr.port;
    await using proxy = startProxy();
    const plain = await curl(["-x", proxy.addr, `http://[::1]:${port}/`]);
    assert.equal(plain.stdout, "six");
    await proxy.waitForLine(
      new RegExp(`GET http://\\[::1\\]:${port}/ from 127\\.0\\.0\\.1 -> ::1 #`),
    );
    const tunnelled = await curl(["-p", "-x", proxy.addr, `http://[::1]:${port}/`]);
    assert.equal(tunnelled.stdout, "six");
    await proxy.waitForLine(new RegExp(`CONNECT \\[::1\\]:${port} from 127\\.0\\.0\\.1 -> ::1 #`));
  } finally {
    await server.shutdown();
  }
});

Deno.test("tunnel() relays 24 MiB each way without losing or reordering a byte", async () => {
  const size = 24 * 1024 * 1024;
  // A non-repeating pattern: byte i is a hash of i, so a reused buffer overwritten too early shows.
  const pattern = (offset: number, out: Uint8Array) => {
    for (let i = 0; i < out.length; i++) {
      const x = Math.imul(offset + i, 2654435761) >>> 0;
      out[i] = (x >>> 24) ^ (x & 0xff);
    }
  };
  /** Checks `total` pattern bytes; returns the count and any bytes that came after them. */
  const check = async (conn: Deno.Conn, total: number) => {
    const buf = new Uint8Array(100_000);
    const want = new Uint8Array(100_000);
    let got = 0;
    let after = "";
    while (got < total) {
      const n = await conn.read(buf);
      if (n === null) break;
      const mine = Math.min(n, total - got);
      pattern(got, want.subarray(0, mine));
      for (let i = 0; i < mine; i++) {
        if (buf[i] !== want[i]) throw new Error(`byte ${got + i} differs`);
      }
      after = dec.decode(buf.subarray(mine, n));
      got += mine;
    }
    return [got, after] as const;
  };
  const send = async (conn: Deno.Conn, total: number) => {
    const piece = new Uint8Array(300_000);
    for (let sent = 0; sent < total; sent += piece.length) {
      const part = piece.subarray(0, Math.min(piece.length, total - sent));
      pattern(sent, part);
      let off = 0;
      while (off < part.length) off += await conn.write(part.subarray(off));
    }
  };
  await using origin = startOrigin(async (c) => {
    // Echo nothing: receive the client's bytes and send our own, both at once.
    const [[received]] = await Promise.all([check(c.conn, size), send(c.conn, size)]);
    await c.write(new TextEncoder().encode(`|${received}`));
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(`CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`));
  assert.equal(
    await readUntil(conn, (t) => t.includes("\r\n\r\n")),
    "HTTP/1.1 200 Connection established\r\n\r\n",
  );
  const [[got, after]] = await Promise.all([check(conn, size), send(conn, size)]);
  assert.equal(got, size);
  const trailer = `|${size}`;
  const rest = after.length >= trailer.length
    ? ""
    : await readUntil(conn, (t) => after.length + t.length >= trailer.length);
  assert.equal(after + rest, trailer);
});
