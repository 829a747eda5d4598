import assert from "node:assert/strict";
import {
  answerOnce,
  curl,
  getRequest,
  rawExchange,
  readAll,
  readUntil,
  sleep,
  startHttpOrigin,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

/** An origin that answers every request with its own head echoed as the body, then closes. */
function echoHeadOrigin(extra = "") {
  return startOrigin(async (c) => {
    const head = await c.readHead();
    if (head === null) return;
    await c.write(
      `HTTP/1.1 200 OK\r\nContent-Length: ${head.length}\r\n${extra}Connection: close\r\n\r\n${head}`,
    );
  });
}

Deno.test("forward() sends the path and query byte for byte, as origin-form", async () => {
  await using origin = echoHeadOrigin();
  await using proxy = startProxy();
  const res = await curl([
    "--path-as-is",
    "-x",
    proxy.addr,
    `http://127.0.0.1:${origin.port}/a/./b/../%2F;p=1?q=%20&x=y`,
  ]);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^GET \/a\/\.\/b\/\.\.\/%2F;p=1\?q=%20&x=y HTTP\/1\.1\r\n/);
  assert.match(res.stdout, new RegExp(`\r\nHost: 127\\.0\\.0\\.1:${origin.port}\r\n`));
  assert.match(res.stdout, /\r\nVia: 1\.1 http-proxy\r\n/);
});

Deno.test("forward() rebuilds Host, drops hop-by-hop fields, keeps order, case and repeats", async () => {
  await using origin = echoHeadOrigin();
  await using proxy = startProxy();
  const req = `GET http://127.0.0.1:${origin.port}/x HTTP/1.1\r\n` +
    `Host: wrong.example\r\n` +
    `X-First: 1\r\n` +
    `Connection: keep-alive, X-Secret\r\n` +
    `X-Secret: drop me\r\n` +
    `Proxy-Connection: keep-alive\r\n` +
    `Keep-Alive: timeout=5\r\n` +
    `TE: trailers\r\n` +
    `Trailer: X-T\r\n` +
    `Upgrade: websocket\r\n` +
    `Proxy-Authorization: Basic dTpw\r\n` +
    `x-lower: a\r\n` +
    `X-Repeat: 1\r\n` +
    `X-Repeat: 2\r\n` +
    `Via: 1.0 other\r\n` +
    `Connection: close\r\n\r\n`;
  const res = await rawExchange(proxy.port, req);
  const body = res.slice(res.indexOf("\r\n\r\n") + 4);
  assert.equal(
    body,
    `GET /x HTTP/1.1\r\n` +
      `Host: 127.0.0.1:${origin.port}\r\n` +
      `X-First: 1\r\n` +
      `x-lower: a\r\n` +
      `X-Repeat: 1\r\n` +
      `X-Repeat: 2\r\n` +
      `Via: 1.0 other, 1.1 http-proxy\r\n\r\n`,
  );
});

Deno.test("forward() drops hop-by-hop response fields and keeps repeated Set-Cookie", async () => {
  await using origin = answerOnce(
    "HTTP/1.1 200 Fine\r\nSet-Cookie: a=1\r\nConnection: X-Hop\r\nX-Hop: no\r\n" +
      "Set-Cookie: b=2\r\nKeep-Alive: timeout=1\r\nProxy-Authenticate: Basic\r\n" +
      "Content-Length: 2\r\n\r\nok",
  );
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    getRequest(origin.port),
  );
  assert.equal(
    res,
    "HTTP/1.1 200 Fine\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n" +
      "Via: 1.1 http-proxy\r\nConnection: close\r\n\r\nok",
  );
  await proxy.waitForLine(/\] 200 Fine 2 bytes \d+ ms #\d+$/);
});

Deno.test("forward() logs the request line with the upstream IP and the response line", async () => {
  await using origin = startHttpOrigin(() => new Response("hello"));
  await using proxy = startProxy();
  const res = await curl(["-x", proxy.addr, `http://localhost:${origin.port}/p?q=1`]);
  assert.equal(res.stdout, "hello");
  const open = await proxy.waitForLine(/ GET /);
  assert.match(
    open,
    new RegExp(
      `^\\[\\d\\d:\\d\\d:\\d\\d\\] GET http://localhost:${origin.port}/p\\?q=1 from 127\\.0\\.0\\.1 -> 127\\.0\\.0\\.1 #(\\d+)$`,
    ),
  );
  const id = open.slice(open.lastIndexOf("#"));
  const close = await proxy.waitForLine(/ 200 OK /);
  assert.match(close, /^\[\d\d:\d\d:\d\d\] 200 OK 5 bytes \d+ ms #\d+$/);
  assert.ok(close.endsWith(id));
});

Deno.test("forward() relays every method with its body, and HEAD without one", async () => {
  await using origin = startHttpOrigin(async (req) => {
    const body = await req.text();
    return new Response(`${req.method} ${body.length}`, { headers: { "x-m": req.method } });
  });
  await using proxy = startProxy();
  for (const method of ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]) {
    const res = await curl([
      "-x",
      proxy.addr,
      "-X",
      method,
      "--data-binary",
      "abcdef",
      `http://127.0.0.1:${origin.port}/`,
    ]);
    assert.equal(res.stdout, `${method} 6`);
  }
  const head = await curl(["-x", proxy.addr, "-I", `http://127.0.0.1:${origin.port}/`]);
  assert.match(head.stdout, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(head.stdout, /\r\nx-m: HEAD\r\n/i);
  assert.match(head.stdout, /\r\ncontent-length: 6\r\n/i);
});

Deno.test("forward() streams a chunked response with trailers to an HTTP/1.1 client", async () => {
  await using origin = answerOnce(
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
      "5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n",
  );
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    getRequest(origin.port),
  );
  assert.equal(
    res,
    "HTTP/1.1 200 OK\r\nVia: 1.1 http-proxy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
      "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n",
  );
  await proxy.waitForLine(/\] 200 OK 11 bytes /);
});

Deno.test("forward() gives an HTTP/1.0 client the chunked body unframed, then closes", async () => {
  await using origin = answerOnce(
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
  );
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
  );
  assert.equal(res, "HTTP/1.1 200 OK\r\nVia: 1.1 http-proxy\r\nConnection: close\r\n\r\nabc");
  const curled = await curl([
    "--http1.0",
    "-x",
    `127.0.0.1:${proxy.port}`,
    `http://127.0.0.1:${origin.port}/`,
    "-i",
  ]);
  assert.doesNotMatch(curled.stdout, /chunked/i);
  assert.match(curled.stdout, /\r\n\r\nabc$/);
});

Deno.test("forward() re-frames a read-until-close response as chunked for HTTP/1.1 keep-alive", async () => {
  await using origin = answerOnce("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close");
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const req = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`;
  await conn.write(new TextEncoder().encode(req + req));
  const text = await readUntil(conn, (t) => t.split("0\r\n\r\n").length === 3);
  const one = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nVia: 1.1 http-proxy\r\n" +
    "Transfer-Encoding: chunked\r\n\r\nb\r\nuntil close\r\n0\r\n\r\n";
  assert.equal(text, one + one);
});

Deno.test("forward() answers pipelined requests in order on one connection, to several origins", async () => {
  await using a = startHttpOrigin((req) => new Response(`A${new URL(req.url).pathname}`));
  await using b = startHttpOrigin((req) => new Response(`B${new URL(req.url).pathname}`));
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const reqs = [
    `GET http://127.0.0.1:${a.port}/1 HTTP/1.1\r\nHost: x\r\n\r\n`,
    `GET http://127.0.0.1:${b.port}/2 HTTP/1.1\r\nHost: x\r\n\r\n`,
    `GET http://127.0.0.1:${a.port}/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
  ];
  await conn.write(new TextEncoder().encode(reqs.join("")));
  const text = await readAll(conn);
  const bodies = [...text.matchAll(/\r\n\r\n([AB]\/\d)/g)].map((m) => m[1]);
  assert.deepEqual(bodies, ["A/1", "B/2", "A/3"]);
  assert.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 3);
  assert.match(text, /Connection: close\r\n/);
});

Deno.test("forward() keeps an HTTP/1.0 keep-alive client alive when the length is known", async () => {
  await using origin = startHttpOrigin(() => new Response("x"));
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const req = `GET http://127.0.0.1:${origin.port}/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`;
  await conn.write(new TextEncoder().encode(req));
  const first = await readUntil(conn, (t) => t.endsWith("\r\n\r\nx"));
  assert.match(first, /\r\nConnection: keep-alive\r\n/);
  await conn.write(new TextEncoder().encode(req.replace("keep-alive", "close")));
  const second = await readAll(conn);
  assert.match(second, /\r\nConnection: close\r\n\r\nx$/);
});

Deno.test("forward() serves several requests on one curl connection", async () => {
  await using origin = startHttpOrigin((req) => new Response(new URL(req.url).pathname));
  await using proxy = startProxy();
  const res = await curl([
    "-x",
    proxy.addr,
    "-v",
    ...["/a", "/b", "/c"].map((p) => `http://127.0.0.1:${origin.port}${p}`),
  ]);
  assert.equal(res.stdout, "/a/b/c");
  assert.match(res.stderr, /Re-using existing connection/);
  const lines = proxy.lines.filter((l) => / GET /.test(l));
  assert.equal(lines.length, 3);
});

Deno.test("forward() answers Expect: 100-continue itself so an upload never waits on the origin", async () => {
  // A raw origin that ignores Expect, like many do: it just reads the body.
  await using origin = startOrigin(async (c) => {
    const head = (await c.readHead())!;
    assert.doesNotMatch(head, /expect/i);
    const n = Number(/content-length: (\d+)/i.exec(head)![1]);
    const body = await c.readBody(n);
    await c.write(
      `HTTP/1.1 200 OK\r\nContent-Length: ${String(body.length).length}\r\n\r\n${body.length}`,
    );
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const enc = new TextEncoder();
  await conn.write(enc.encode(
    `PUT http://127.0.0.1:${origin.port}/up HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n` +
      `Expect: 100-continue\r\nConnection: close\r\n\r\n`,
  ));
  // The client sends nothing more until it sees 100 Continue.
  const interim = await readUntil(conn, (t) => t.includes("\r\n\r\n"));
  assert.equal(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  const chunk = new Uint8Array(1 << 20).fill(97);
  for (let i = 0; i < 3; i++) {
    let off = 0;
    while (off < chunk.length) off += await conn.write(chunk.subarray(off));
  }
  const rest = await readAll(conn);
  assert.match(rest, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n3000000$/);
  await proxy.waitForLine(/ 200 OK 7 bytes /);
  // curl, too, gets the 100 from the proxy.
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, new Uint8Array(2_000_000).fill(98));
    const res = await curl([
      "-v",
      "-x",
      proxy.addr,
      "-T",
      file,
      `http://127.0.0.1:${origin.port}/up`,
    ]);
    assert.equal(res.stdout, "2000000");
    assert.match(res.stderr, /HTTP\/1\.1 100 Continue/);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("forward() streams a chunked upload and counts its bytes", async () => {
  await using origin = startOrigin(async (c) => {
    const head = (await c.readHead())!;
    assert.match(head, /\r\nTransfer-Encoding: chunked\r\n/);
    let body = "";
    for (;;) {
      const line = new TextDecoder().decode((await c.reader.readLine(100))!);
      const n = parseInt(line, 16);
      if (n === 0) break;
      body += new TextDecoder().decode(await c.readBody(n));
      await c.reader.readLine(2);
    }
    const trailer = new TextDecoder().decode((await c.reader.readLine(100))!);
    await c.write(
      `HTTP/1.1 200 OK\r\nContent-Length: ${
        body.length + trailer.length + 1
      }\r\n\r\n${body}|${trailer}`,
    );
  });
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n` +
      `Connection: close\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\nX-Check: 1\r\n\r\n`,
  );
  assert.match(res, /\r\n\r\nabcdef\|X-Check: 1$/);
  const line = await proxy.waitForLine(/ 200 OK /);
  assert.match(line, / 200 OK 17 bytes /);
});

Deno.test("forward() sends no body for 204 and 304 and keeps the connection", async () => {
  await using origin = startHttpOrigin((req) =>
    new Response(null, { status: new URL(req.url).pathname === "/204" ? 204 : 304 })
  );
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode(
    `GET http://127.0.0.1:${origin.port}/204 HTTP/1.1\r\nHost: x\r\n\r\n` +
      `GET http://127.0.0.1:${origin.port}/304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
  ));
  const text = await readAll(conn);
  assert.match(
    text,
    /^HTTP\/1\.1 204 No Content\r\n[\s\S]*?\r\n\r\nHTTP\/1\.1 304 Not Modified\r\n[\s\S]*\r\n\r\n$/,
  );
});

Deno.test("forward() relays 1xx interim responses to HTTP/1.1 clients", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n");
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  });
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    getRequest(origin.port),
  );
  assert.match(
    res,
    /^HTTP\/1\.1 103 Early Hints\r\nLink: <\/s\.css>; rel=preload\r\n\r\nHTTP\/1\.1 200 OK\r\n/,
  );
});

Deno.test("forward() does not let bytes an origin sends after its response reach a later request", async () => {
  let n = 0;
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    n++;
    await c.write(
      `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr${n}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL`,
    );
  });
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const req = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`;
  await conn.write(
    new TextEncoder().encode(req + req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")),
  );
  const text = await readAll(conn);
  assert.doesNotMatch(text, /EVIL/);
  assert.match(text, /\r\n\r\nr1HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nr2$/);
});

Deno.test("Content-Length lists and repeated equal fields go on as one field, both ways; unequal ones are refused", async () => {
  let seen = "";
  await using origin = startOrigin(async (c) => {
    seen = (await c.readHead())!;
    await c.readBody(5);
    await c.write(
      "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
    );
  });
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n` +
      `Content-Length: 5\r\nConnection: close\r\n\r\nhello`,
  );
  assert.equal(seen.match(/content-length/gi)?.length, 1, seen);
  assert.match(seen, /\r\nContent-Length: 5\r\n/);
  assert.equal(res.match(/content-length/gi)?.length, 1, res);
  assert.match(res, /^HTTP\/1\.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n[\s\S]*\r\n\r\nok$/);
  const bad = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello`,
  );
  assert.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*conflicting Content-Length values\n$/);
});

Deno.test("trailers lose framing, routing and credential fields both ways", async () => {
  let upload = "";
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    for (;;) {
      const line = new TextDecoder().decode((await c.reader.readLine(100))!);
      upload += line + "\n";
      if (line === "") break;
    }
    await c.write(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" +
        "Set-Cookie: s=1\r\nX-Sum: 9\r\nContent-Length: 50\r\nLocation: /evil\r\n\r\n",
    );
  });
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n` +
      `Connection: close\r\n\r\n1\r\nx\r\n0\r\nAuthorization: Basic YTpi\r\nX-Check: 1\r\n` +
      `Host: elsewhere\r\nProxy-Authorization: Basic YTpi\r\nCookie: c=1\r\n\r\n`,
  );
  assert.equal(upload, "1\nx\n0\nX-Check: 1\n\n");
  assert.match(res, /\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 9\r\n\r\n$/);
});

Deno.test("interim responses: at most 8, and they do not restart the response timeout", async (t) => {
  await t.step("a ninth is a 502, and nothing after it reaches the client", async () => {
    await using origin = startOrigin(async (c) => {
      await c.readHead();
      await c.write("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n".repeat(50));
      await c.write("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
    });
    await using proxy = startProxy();
    const res = await rawExchange(proxy.port, getRequest(origin.port));
    assert.equal(res.match(/HTTP\/1\.1 103 Early Hints\r\n/g)?.length, 8);
    assert.match(res, /\r\n\r\nHTTP\/1\.1 502 Bad Gateway\r\n/);
    assert.match(res, /more than 8 interim responses/);
    assert.doesNotMatch(res, /200 OK/);
  });
  await t.step("a 103 every 200 ms still ends at the response timeout", async () => {
    await using origin = startOrigin(async (c) => {
      await c.readHead();
      for (let i = 0; i < 7; i++) {
        try {
          await c.write("HTTP/1.1 103 Early Hints\r\n\r\n");
        } catch {
          return; // the proxy gave up
        }
        await sleep(200);
      }
    });
    await using proxy = startProxy({ responseTimeoutMs: 500 });
    const started = performance.now();
    const res = await rawExchange(proxy.port, getRequest(origin.port));
    const took = performance.now() - started;
    assert.match(res, /HTTP\/1\.1 504 Gateway Timeout\r\n/);
    assert.ok(took < 1000, `took ${took} ms`);
  });
});

Deno.test("--forwarded xff and forwarded tell a real origin who asked; off tells it nothing", async () => {
  await using origin = startHttpOrigin((req) =>
    new Response(
      `xff=${req.headers.get("x-forwarded-for")} fwd=${req.headers.get("forwarded")}`,
    )
  );
  const url = `http://127.0.0.1:${origin.port}/`;
  for (
    const [forwarded, want] of [
      ["off", "xff=null fwd=null"],
      ["xff", "xff=10.1.1.1, 127.0.0.1 fwd=null"],
      ["forwarded", "xff=10.1.1.1 fwd=for=127.0.0.1;proto=http"],
    ] as const
  ) {
    await using proxy = startProxy({ forwarded });
    const sent = forwarded === "off" ? [] : ["-H", "X-Forwarded-For: 10.1.1.1"];
    assert.equal((await curl(["-x", proxy.addr, ...sent, url])).stdout, want);
  }
});

Deno.test("--outgoing-address on loopback: 127.0.0.2 as the source, same for the listener's address, a foreign one refused", async () => {
  const seen: string[] = [];
  await using origin = startHttpOrigin((_req, info) => {
    seen.push((info.remoteAddr as Deno.NetAddr).hostname);
    return new Response("ok");
  });
  const url = `http://127.0.0.1:${origin.port}/`;
  await using fixed = startProxy({ outgoingAddress: "127.0.0.2" });
  assert.equal((await curl(["-x", fixed.addr, url])).stdout, "ok");
  assert.equal((await curl(["-p", "-x", fixed.addr, url])).stdout, "ok");
  assert.deepEqual(seen.splice(0), ["127.0.0.2", "127.0.0.2"]);
  // same: the address the client connected to (the fixture listens on 127.0.0.1).
  await using same = startProxy({ outgoingAddress: "same" });
  assert.equal((await curl(["-x", same.addr, url])).stdout, "ok");
  assert.deepEqual(seen.splice(0), ["127.0.0.1"]);
  // Not an address of this host: refused here, before any packet.
  await using foreign = startProxy({ outgoingAddress: "192.0.2.1" });
  const res = await curl(["-x", foreign.addr, "-s", "-w", " %{http_code}", url]);
  assert.match(res.stdout, /cannot leave from 192\.0\.2\.1: not an address of this host\n 502$/);
  assert.deepEqual(seen, []);
});

/** A WebSocket frame from a client: FIN, text, masked (RFC 6455 §5.2), a short payload. */
function clientFrame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const mask = [1, 2, 3, 4];
  return new Uint8Array([
    0x81,
    0x80 | payload.length,
    ...mask,
    ...payload.map((b, i) => b ^ mask[i % 4]!),
  ]);
}

Deno.test("a WebSocket upgrade in absolute-form is passed on, and after the 101 both ways are a tunnel, logged as one", async () => {
  // A real WebSocket server (Deno's), echoing each message with a prefix.
  await using origin = startHttpOrigin((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("not ws", { status: 400 });
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => socket.send("hi");
    socket.onmessage = (e) => socket.send(`echo ${e.data}`);
    return response;
  });
  await using proxy = startProxy({}, { format: "json" });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode(
    `GET http://127.0.0.1:${origin.port}/chat HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n` +
      "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  ));
  // The handshake's accept value is RFC 6455's own example for this key.
  const opened = await readUntil(conn, (t) => t.includes("hi"));
  assert.match(opened, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(opened, /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
  // (0x81, FIN + text, is not UTF-8: it reads as U+FFFD.)
  assert.ok(
    opened.endsWith(
      "\r\nVia: 1.1 http-proxy\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\uFFFD\x02hi",
    ),
    opened,
  );
  await conn.write(clientFrame("ping"));
  assert.equal(await readUntil(conn, (t) => t.includes("echo ping")), "\uFFFD\x09echo ping");
  conn.close();
  const line = JSON.parse(await proxy.waitForLine(/"status":101/));
  assert.equal(line.reason, "Switching Protocols");
  assert.equal(line.bytes_up, 10); // one masked 4-byte frame: 2 + 4 + 4
  assert.equal(line.bytes_down, 15); // "hi" (4) and "echo ping" (11)
});

Deno.test("an upgraded connection gives back its --max-active-per-host slot: another request to the same origin goes through while it lasts", async () => {
  await using origin = startHttpOrigin((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("plain");
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => socket.send("hi");
    return response;
  });
  await using proxy = startProxy({ maxActivePerHost: 1, connectTimeoutMs: 2000 });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  await conn.write(new TextEncoder().encode(
    `GET http://127.0.0.1:${origin.port}/chat HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n` +
      "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  ));
  assert.match(await readUntil(conn, (t) => t.includes("hi")), /^HTTP\/1\.1 101 /);
  // The tunnel is open; with its slot still taken this would wait 2 s and be a 504.
  const plain = await rawExchange(proxy.port, getRequest(origin.port));
  assert.match(plain, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nplain$/);
  conn.close();
});

Deno.test("without Connection: upgrade the Upgrade field stays hop-by-hop, and an unasked 101 is a 502", async () => {
  await using echo = echoHeadOrigin();
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${echo.port}/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n`,
  );
  assert.doesNotMatch(res.split("\r\n\r\n").slice(1).join(""), /Upgrade/i);
  await using rogue = answerOnce(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n",
  );
  const bad = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${rogue.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
  );
  assert.match(bad, /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*switched protocols without being asked/);
});
