import assert from "node:assert/strict";
import type { ConnectFn, ResolveFn } from "../../lib/upstream/dial.ts";
import {
  answerOnce,
  getRequest,
  rawExchange,
  readAll,
  readUntil,
  sleep,
  startHttpOrigin,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

const enc = new TextEncoder();

/** Asserts a complete error answer: status, one-line body naming the cause, Connection: close. */
function assertError(res: string, status: number, cause: RegExp) {
  const m = /^HTTP\/1\.1 (\d{3}) ([^\r]+)\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(res);
  assert.ok(m, `not an HTTP response: ${JSON.stringify(res)}`);
  assert.equal(Number(m[1]), status, res);
  assert.match(m[3]!, /Content-Type: text\/plain; charset=utf-8/);
  assert.match(m[3]!, new RegExp(`Content-Length: ${enc.encode(m[4]!).length}\r?$`, "m"));
  assert.match(m[3]!, /Proxy-Status: http-proxy; error=[a-z_]+; details="/);
  assert.equal(m[4]!.split("\n").length, 2, "one line of body");
  assert.ok(m[4]!.startsWith(`${status} ${m[2]}: `));
  assert.match(m[4]!, cause);
  return m[3]!;
}

Deno.test("handleConn() answers malformed requests with 400 and closes", async (t) => {
  await using origin = startHttpOrigin(() => new Response("never"));
  await using proxy = startProxy();
  const url = `http://127.0.0.1:${origin.port}/`;
  const cases: [string, string, RegExp][] = [
    ["garbage request line", "HELLO\r\n\r\n", /malformed request line/],
    ["two spaces", `GET  ${url} HTTP/1.1\r\n\r\n`, /malformed request line/],
    ["bad version", `GET ${url} HTTP/1.2\r\n\r\n`, /unsupported HTTP version/],
    ["HTTP/2 version", `GET ${url} HTTP/2.0\r\n\r\n`, /unsupported HTTP version/],
    ["origin-form to the proxy", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", /this is a proxy/],
    ["asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", /this is a proxy/],
    ["bad scheme", "GET ftp://127.0.0.1/ HTTP/1.1\r\n\r\n", /unsupported URL scheme "ftp"/],
    ["https absolute-form", "GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", /CONNECT/],
    ["userinfo", `GET http://a@127.0.0.1:${origin.port}/ HTTP/1.1\r\n\r\n`, /userinfo/],
    ["bad port", "GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n", /invalid port/],
    ["empty host", "GET http:///x HTTP/1.1\r\n\r\n", /malformed host/],
    ["bad header name", `GET ${url} HTTP/1.1\r\nBad Name: x\r\n\r\n`, /invalid header name/],
    [
      "whitespace before colon",
      `GET ${url} HTTP/1.1\r\nHost : x\r\n\r\n`,
      /whitespace before colon/,
    ],
    ["obs-fold", `GET ${url} HTTP/1.1\r\nX: a\r\n b\r\n\r\n`, /obsolete line folding/],
    ["bare CR", `GET ${url} HTTP/1.1\r\nX: a\rb\r\n\r\n`, /bare CR/],
    ["NUL in value", `GET ${url} HTTP/1.1\r\nX: a\0b\r\n\r\n`, /control character/],
    ["no colon", `GET ${url} HTTP/1.1\r\nNoColon\r\n\r\n`, /without colon/],
    [
      "CL with TE",
      `POST ${url} HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      /both Content-Length and Transfer-Encoding/,
    ],
    [
      "differing CL",
      `POST ${url} HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`,
      /conflicting Content-Length/,
    ],
    [
      "CL list differing",
      `POST ${url} HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd`,
      /conflicting Content-Length/,
    ],
    [
      "malformed CL",
      `POST ${url} HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc`,
      /malformed Content-Length/,
    ],
    [
      "TE not chunked",
      `POST ${url} HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n`,
      /unsupported Transfer-Encoding/,
    ],
    [
      "TE chunked twice",
      `POST ${url} HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n`,
      /unsupported Transfer-Encoding/,
    ],
    [
      "TE chunked not last",
      `POST ${url} HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n`,
      /unsupported Transfer-Encoding/,
    ],
    [
      "TE in HTTP/1.0",
      `POST ${url} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      /HTTP\/1\.0/,
    ],
    ["CONNECT without port", "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", /without a port/],
    ["CONNECT in origin-form", "CONNECT / HTTP/1.1\r\n\r\n", /authority-form/],
    ["CONNECT absolute-form", `CONNECT ${url} HTTP/1.1\r\n\r\n`, /authority-form/],
  ];
  for (const [name, req, cause] of cases) {
    await t.step(name, async () => {
      const res = await rawExchange(proxy.port, req);
      const fields = assertError(res, 400, cause);
      assert.match(fields, /Connection: close/);
    });
  }
  // None of them reached the origin: nothing was dialed.
  assert.equal(proxy.lines.filter((l) => l.includes(" -> ")).length, 0);
  assert.equal(
    proxy.lines.filter((l) => / 400 Bad Request 0 bytes \(/.test(l)).length,
    cases.length,
  );
});

Deno.test("handleConn() rejects smuggling in a chunked body with 400, and the origin sees no second request", async (t) => {
  const heads: string[] = [];
  await using origin = startOrigin(async (c) => {
    for (;;) {
      const head = await c.readHead();
      if (head === null) return;
      heads.push(head);
      // read whatever body arrives and never answer: the proxy must answer 400 itself
      await c.reader.read(1 << 16);
    }
  });
  await using proxy = startProxy();
  const url = `http://127.0.0.1:${origin.port}/`;
  const bodies: [string, string][] = [
    ["bad chunk size", "zz\r\nabc\r\n0\r\n\r\n"],
    ["chunk size with sign", "+3\r\nabc\r\n0\r\n\r\n"],
    ["bare LF after size", "3\nabc\r\n0\r\n\r\n"],
    ["data longer than size", "3\r\nabcd\r\n0\r\n\r\n"],
    ["huge chunk size", "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"],
  ];
  for (const [name, body] of bodies) {
    await t.step(name, async () => {
      const res = await rawExchange(
        proxy.port,
        `POST ${url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body}` +
          `GET ${url}smuggled HTTP/1.1\r\nHost: x\r\n\r\n`,
      );
      assertError(res, 400, /chunk/);
      assert.doesNotMatch(res, /smuggled/);
    });
  }
  assert.ok(heads.every((h) => !h.includes("smuggled")), heads.join("\n"));
});

Deno.test("handleConn() answers 431 for a head over --max-header-bytes", async () => {
  await using proxy = startProxy({ maxHeaderBytes: 4096 });
  const res = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:1/ HTTP/1.1\r\nX-Big: ${"a".repeat(5000)}\r\n\r\n`,
  );
  assertError(res, 431, /larger than 4096 bytes/);
  await proxy.waitForLine(/ 431 Request Header Fields Too Large 0 bytes \(request head larger/);
});

Deno.test("handleConn() answers 408 and closes when the head is not complete in time (slowloris)", async () => {
  await using proxy = startProxy({ headerTimeoutMs: 300 });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode("GET http://127.0.0.1:1/ HTTP/1.1\r\n"));
  let res = "";
  const reading = readAll(conn, 3000).then((r) => (res = r));
  // one byte every 100 ms does not extend the deadline
  for (let i = 0; i < 6; i++) {
    await sleep(100);
    try {
      await conn.write(enc.encode("X"));
    } catch {
      break; // closed by the proxy
    }
  }
  await reading;
  assertError(res, 408, /not received within 300 ms/);
  await proxy.waitForLine(/ 408 Request Timeout 0 bytes/);
});

Deno.test("handleConn() closes an idle keep-alive connection silently after --idle-timeout", async () => {
  await using origin = startHttpOrigin(() => new Response("ok"));
  await using proxy = startProxy({ idleTimeoutMs: 200 });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`));
  const text = await readAll(conn, 3000);
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
  // (The status, not any "408": a line also holds the origin's port and timings.)
  assert.equal(proxy.lines.filter((l) => /\] 408 /.test(l)).length, 0);
  assert.equal(proxy.lines.filter((l) => /\] 200 OK 2 bytes /.test(l)).length, 1);
});

Deno.test("dial failures: refused → 502, DNS → 502, connect timeout → 504", async (t) => {
  await t.step("refused", async () => {
    await using proxy = startProxy();
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = closed.addr.port;
    closed.close();
    const res = await rawExchange(
      proxy.port,
      `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
      { halfClose: true },
    );
    const fields = assertError(res, 502, /connection refused/);
    assert.match(fields, /error=connection_refused/);
    await proxy.waitForLine(
      new RegExp(
        `^\\[\\d\\d:\\d\\d:\\d\\d\\] GET http://127\\.0\\.0\\.1:${port}/ from 127\\.0\\.0\\.1 #\\d+$`,
      ),
    );
    await proxy.waitForLine(
      / 502 Bad Gateway 0 bytes \(Cannot connect to upstream "127\.0\.0\.1:\d+": connection refused\) \d+ ms #\d+$/,
    );
  });
  await t.step("DNS (injected: no name lookups leave this machine)", async () => {
    const notFound: ResolveFn = () =>
      Promise.reject(Object.assign(new Error("getaddrinfo ENOTFOUND"), { code: "ENOTFOUND" }));
    await using proxy = startProxy({}, { resolve: notFound });
    const res = await rawExchange(
      proxy.port,
      "GET http://nosuchhost.invalid/ HTTP/1.1\r\nHost: x\r\n\r\n",
      { halfClose: true },
    );
    const fields = assertError(res, 502, /DNS lookup failed: nosuchhost\.invalid/);
    assert.match(fields, /error=dns_error/);
    await proxy.waitForLine(
      / 502 Bad Gateway 0 bytes \(DNS lookup failed: nosuchhost\.invalid\) \d+ ms #\d+$/,
    );
  });
  await t.step("timeout (injected connect that never completes)", async () => {
    const hanging: ConnectFn = ({ signal }) =>
      new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
    await using proxy = startProxy({ connectTimeoutMs: 200 }, { connect: hanging });
    const res = await rawExchange(
      proxy.port,
      "GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\n\r\n",
      { halfClose: true },
    );
    const fields = assertError(res, 504, /timed out after 200 ms/);
    assert.match(fields, /error=connection_timeout/);
  });
});

Deno.test("a 502 on a request without a body keeps the client connection alive", async () => {
  await using origin = startHttpOrigin(() => new Response("fine"));
  await using proxy = startProxy();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = closed.addr.port;
  closed.close();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(enc.encode(
    `GET http://127.0.0.1:${dead}/ HTTP/1.1\r\nHost: x\r\n\r\n` +
      getRequest(origin.port),
  ));
  const text = await readAll(conn);
  assert.match(text, /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*HTTP\/1\.1 200 OK\r\n[\s\S]*fine$/);
});

Deno.test("upstream failures: no answer → 504, malformed or ambiguous → 502, closed early → 502", async (t) => {
  const scripts: [
    string,
    (c: import("../_fixtures/servers.ts").OriginConn) => Promise<void>,
    number,
    RegExp,
  ][] = [
    [
      "never answers",
      async (c) => {
        await c.readHead();
        await c.reader.read(1); // until the proxy gives up and closes
      },
      504,
      /no response from upstream "127\.0\.0\.1:\d+" within 200 ms/,
    ],
    [
      "garbage status line",
      async (c) => {
        await c.readHead();
        await c.write("SPDY/3 OK\r\n\r\n");
      },
      502,
      /malformed status line/,
    ],
    [
      "CL with TE",
      async (c) => {
        await c.readHead();
        await c.write(
          "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
      },
      502,
      /both Content-Length and Transfer-Encoding/,
    ],
    [
      "conflicting CL",
      async (c) => {
        await c.readHead();
        await c.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef");
      },
      502,
      /conflicting Content-Length/,
    ],
    [
      "closes without a response",
      async (c) => {
        await c.readHead();
      },
      502,
      /closed the connection without a response/,
    ],
    [
      "closes mid-head",
      async (c) => {
        await c.readHead();
        await c.write("HTTP/1.1 200 OK\r\nX-Partial");
      },
      502,
      /closed the connection mid-head/,
    ],
    [
      "101 unasked",
      async (c) => {
        await c.readHead();
        await c.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
      },
      502,
      /switched protocols/,
    ],
    [
      "obs-fold in response",
      async (c) => {
        await c.readHead();
        await c.write("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n");
      },
      502,
      /obsolete line folding/,
    ],
  ];
  for (const [name, script, status, cause] of scripts) {
    await t.step(name, async () => {
      await using origin = startOrigin(script);
      await using proxy = startProxy({ responseTimeoutMs: 200 });
      const res = await rawExchange(
        proxy.port,
        getRequest(origin.port),
      );
      assertError(res, status, cause);
      await proxy.waitForLine(new RegExp(` ${status} [A-Za-z ]+ 0 bytes \\(`));
    });
  }
});

Deno.test("an upstream that closes mid-body makes the proxy close the client, never end the body cleanly", async (t) => {
  await t.step("Content-Length", async () => {
    await using origin = answerOnce("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
    await using proxy = startProxy();
    const res = await rawExchange(
      proxy.port,
      `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    assert.match(res, /\r\nContent-Length: 100\r\n[\s\S]*\r\n\r\nonly this$/);
    await proxy.waitForLine(
      / 200 OK 9 bytes \(upstream closed mid-body: ended after 9 of 100 bytes\) \d+ ms #\d+$/,
    );
  });
  await t.step("chunked", async () => {
    await using origin = answerOnce(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n10\r\nshort",
    );
    await using proxy = startProxy();
    const res = await rawExchange(
      proxy.port,
      `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    // The client sees the connection close without the last chunk: curl reports it as an error.
    assert.ok(!res.endsWith("0\r\n\r\n"), res);
    assert.match(res, /4\r\nabcd\r\n5\r\nshort\r\n$/);
    await proxy.waitForLine(/ 200 OK 9 bytes \(upstream closed mid-body: ended inside a chunk\)/);
  });
  await t.step("malformed chunk", async () => {
    await using origin = answerOnce(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX\r\n0\r\n\r\n",
    );
    await using proxy = startProxy();
    const res = await rawExchange(
      proxy.port,
      `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
    assert.match(res, /\r\n\r\n4\r\nabcd\r\n$/);
    await proxy.waitForLine(/ 200 OK 4 bytes \(malformed body from upstream: /);
  });
});

Deno.test("a client that leaves mid-download makes the proxy close the upstream", async () => {
  const { promise: upstreamClosed, resolve } = Promise.withResolvers<string>();
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
    const piece = new Uint8Array(64 * 1024);
    try {
      for (let i = 0; i < 16_000; i++) await c.write(piece);
      resolve("wrote everything");
    } catch {
      resolve("closed");
    }
  });
  await using proxy = startProxy();
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(
      enc.encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`),
    );
    await readUntil(conn, (t) => t.length > 200_000);
  }
  assert.equal(await upstreamClosed, "closed");
  await proxy.waitForLine(/ 200 OK \d+ bytes \(client closed the connection\)/);
});

Deno.test("a client that leaves mid-upload makes the proxy close the upstream", async () => {
  const { promise: seen, resolve } = Promise.withResolvers<string>();
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    try {
      await c.readBody(1000);
      resolve("body complete");
    } catch (err) {
      resolve((err as Error).message);
    }
  });
  await using proxy = startProxy();
  {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await conn.write(enc.encode(
      `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc`,
    ));
    await proxy.waitForLine(/ POST /);
  }
  assert.match(await seen, /body ended at 3 of 1000/);
  await proxy.waitForLine(/ - 3 bytes|client closed mid-upload/);
});

Deno.test("an unsupported Expect gets 417", async () => {
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    "POST http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nExpect: magic\r\nContent-Length: 0\r\n\r\n",
    { halfClose: true },
  );
  assertError(res, 417, /unsupported expectation "magic"/);
});

Deno.test("an error answer to HEAD carries no body", async () => {
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    "HEAD http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    { halfClose: true },
  );
  assert.match(
    res,
    /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*Content-Length: \d+\r\n[\s\S]*\r\n\r\n$/,
  );
});
