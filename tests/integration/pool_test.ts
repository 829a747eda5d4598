import assert from "node:assert/strict";
import {
  curl,
  getRequest,
  rawExchange,
  readUntil,
  sleep,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

/** An origin that serves keep-alive responses on each connection until the peer closes. */
function keepAliveOrigin(
  response = (n: number) => `HTTP/1.1 200 OK\r\nContent-Length: ${String(n).length}\r\n\r\n${n}`,
) {
  let served = 0;
  return startOrigin(async (c) => {
    for (;;) {
      const head = await c.readHead();
      if (head === null) return;
      await c.write(response(++served));
    }
  });
}

/**
 * An origin whose first connection serves one response, then closes without answering when the
 * second request arrives on it (as a server whose idle timeout fired meanwhile); later
 * connections answer every request. Bodies say which connection answered: c1, c2, …
 */
function staleOrigin() {
  let conns = 0;
  return startOrigin(async (c) => {
    const mine = ++conns;
    for (let n = 0;; n++) {
      const head = await c.readHead();
      if (head === null) return;
      if (mine === 1 && n === 1) return;
      await c.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nc${mine}`);
    }
  });
}

Deno.test("the pool reuses an upstream connection across client connections and logs it", async () => {
  await using origin = keepAliveOrigin();
  await using proxy = startProxy();
  for (let i = 1; i <= 3; i++) {
    const res = await rawExchange(proxy.port, getRequest(origin.port));
    assert.match(res, new RegExp(`\\r\\n\\r\\n${i}$`));
  }
  assert.equal(origin.accepted, 1);
  assert.equal(proxy.lines.filter((l) => / -> 127\.0\.0\.1 #\d+$/.test(l)).length, 1);
  assert.equal(proxy.lines.filter((l) => / -> 127\.0\.0\.1 \(reused\) #\d+$/.test(l)).length, 2);
  assert.equal(proxy.server.idleUpstreams, 1);
});

Deno.test("a reused connection found closed is retried once on a new one for an idempotent request", async () => {
  await using origin = staleOrigin();
  await using proxy = startProxy();
  assert.match(await rawExchange(proxy.port, getRequest(origin.port)), /\r\n\r\nc1$/);
  assert.match(await rawExchange(proxy.port, getRequest(origin.port)), /\r\n\r\nc2$/);
  assert.equal(origin.accepted, 2);
  const reused = await proxy.waitForLine(/ -> 127\.0\.0\.1 \(reused\) #\d+$/);
  const id = reused.slice(reused.lastIndexOf("#"));
  assert.ok((await proxy.waitForLine(/ -> 127\.0\.0\.1 \(retry\) #\d+$/)).endsWith(id));
  assert.ok((await proxy.waitForLine(/\] 200 OK 2 bytes \d+ ms #\d+$/, 2)).endsWith(id));
});

Deno.test("a request with a body is never retried: the stale connection is a 502", async () => {
  await using origin = staleOrigin();
  await using proxy = startProxy();
  await rawExchange(proxy.port, getRequest(origin.port));
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`,
  );
  assert.match(
    res,
    /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*closed the connection without a response\n$/,
  );
  assert.equal(origin.accepted, 1);
});

Deno.test("connections are not reused after a close-delimited, Connection: close or HTTP/1.0 response", async (t) => {
  const cases: [string, string][] = [
    ["until close", "HTTP/1.1 200 OK\r\n\r\nbody"],
    ["Connection: close", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"],
    ["HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbody"],
  ];
  for (const [name, response] of cases) {
    await t.step(name, async () => {
      await using origin = startOrigin(async (c) => {
        // Keep the socket open after answering (except where that is the framing), so only
        // the proxy's choice decides reuse.
        if ((await c.readHead()) === null) return;
        await c.write(response);
        if (name !== "until close") await c.reader.read(1);
      });
      await using proxy = startProxy();
      for (let i = 0; i < 2; i++) {
        assert.match(
          await rawExchange(proxy.port, getRequest(origin.port)),
          /\r\n\r\n(4\r\n)?body/,
        );
      }
      assert.equal(origin.accepted, 2);
      assert.equal(proxy.server.idleUpstreams, 0);
    });
  }
});

Deno.test("an idle upstream connection the origin closes leaves the pool at once", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    await sleep(50); // then close, without having said so
  });
  await using proxy = startProxy();
  await rawExchange(proxy.port, getRequest(origin.port));
  for (let i = 0; i < 100 && proxy.server.idleUpstreams > 0; i++) await sleep(10);
  assert.equal(proxy.server.idleUpstreams, 0);
  assert.match(await rawExchange(proxy.port, getRequest(origin.port)), /ok$/);
  assert.equal(
    proxy.lines.filter((l) => l.includes("(reused)") || l.includes("(retry)")).length,
    0,
  );
});

Deno.test("--upstream-idle-timeout drops idle connections and --max-idle-per-host caps them", async () => {
  await using origin = keepAliveOrigin();
  await using proxy = startProxy({ upstreamIdleTimeoutMs: 100, maxIdlePerHost: 2 });
  // Three requests in flight at once need three connections; only two stay.
  const slow = (n: number) => curl(["-x", proxy.addr, `http://127.0.0.1:${origin.port}/${n}`]);
  await Promise.all([slow(1), slow(2), slow(3)]);
  assert.ok(proxy.server.idleUpstreams <= 2);
  for (let i = 0; i < 100 && proxy.server.idleUpstreams > 0; i++) await sleep(10);
  assert.equal(proxy.server.idleUpstreams, 0);
});

Deno.test("--max-idle-per-host 0 sends Connection: close upstream and never reuses", async () => {
  const heads: string[] = [];
  await using origin = startOrigin(async (c) => {
    for (;;) {
      const head = await c.readHead();
      if (head === null) return;
      heads.push(head);
      await c.write("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    }
  });
  await using proxy = startProxy({ maxIdlePerHost: 0 });
  await rawExchange(proxy.port, getRequest(origin.port));
  await rawExchange(proxy.port, getRequest(origin.port));
  assert.equal(origin.accepted, 2);
  assert.ok(heads.every((h) => h.endsWith("Connection: close\r\n\r\n")));
});

Deno.test("--max-dials-per-host: a crowd of new clients dials a few at a time, each waits its turn, none fails", async () => {
  await using origin = keepAliveOrigin();
  let dialling = 0;
  let most = 0;
  // Each dial takes 100 ms (a far origin): the crowd would otherwise dial all at once.
  const connect = async (options: Deno.ConnectOptions) => {
    dialling++;
    most = Math.max(most, dialling);
    try {
      await sleep(100);
      return await Deno.connect(options);
    } finally {
      dialling--;
    }
  };
  await using proxy = startProxy({ maxDialsPerHost: 2 }, { connect });
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => rawExchange(proxy.port, getRequest(origin.port))),
  );
  for (const a of answers) assert.match(a, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(most, 2, "at most two dials at once");
  // Every request got a connection; some took one another had released instead of dialling.
  assert.ok(origin.accepted <= 10 && origin.accepted >= 2, `${origin.accepted} dials`);
  assert.equal(proxy.lines.filter((l) => / 200 /.test(l)).length, 10);
});

Deno.test("--max-dials-per-host: a request that gets no dial slot within --connect-timeout is a 504 that says why", async () => {
  await using origin = keepAliveOrigin();
  const connect = async (options: Deno.ConnectOptions) => {
    await sleep(600);
    return await Deno.connect(options);
  };
  await using proxy = startProxy({ maxDialsPerHost: 1, connectTimeoutMs: 300 }, { connect });
  const [first, second] = await Promise.all([
    rawExchange(proxy.port, getRequest(origin.port)),
    rawExchange(proxy.port, getRequest(origin.port)),
  ]);
  // Both time out: the first dialling (its dial outlasts the timeout), the second waiting.
  assert.match(first!, /^HTTP\/1\.1 504 /);
  assert.match(second!, /^HTTP\/1\.1 504 /);
  assert.ok(
    [first, second].some((a) => /no dial slot within 300 ms \(--max-dials-per-host 1\)/.test(a!)),
    `${first}\n${second}`,
  );
});

/** An origin that holds each response until told, counting the requests it holds at once. */
function holdingOrigin() {
  const held: (() => void)[] = [];
  const state = { now: 0, most: 0, seen: 0 };
  const origin = startOrigin(async (c) => {
    for (;;) {
      const head = await c.readHead();
      if (head === null) return;
      state.seen++;
      state.most = Math.max(state.most, ++state.now);
      await new Promise<void>((r) => held.push(r));
      state.now--;
      await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
  });
  return { origin, state, held };
}

Deno.test("--max-active-per-host: past the limit, requests wait in the proxy and go in turn as earlier ones end", async () => {
  const { origin, state, held } = holdingOrigin();
  await using _ = origin;
  await using proxy = startProxy({ maxActivePerHost: 2 });
  const answers = Promise.all(
    Array.from({ length: 6 }, () => rawExchange(proxy.port, getRequest(origin.port))),
  );
  // Release the held responses one at a time; each frees a slot for the next request.
  let released = 0;
  while (released < 6) {
    const next = held.shift();
    if (!next) {
      await sleep(10);
      continue;
    }
    assert.ok(state.now <= 2, `${state.now} requests at the origin at once`);
    next();
    released++;
  }
  for (const a of await answers) assert.match(a, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nok$/);
  assert.equal(state.most, 2, "at most two requests in flight to the origin");
  assert.equal(state.seen, 6);
  assert.equal(proxy.lines.filter((l) => / 200 /.test(l)).length, 6);
});

Deno.test("--max-active-per-host: clients waiting for a slot hand their idle upstream connections to the pool, which keeps --max-idle-per-host of them", async () => {
  // The origin answers at once, except /hold, which waits until told; it counts its open
  // connections.
  const state = { open: 0 };
  const held: (() => void)[] = [];
  await using origin = startOrigin(async (c) => {
    state.open++;
    try {
      for (;;) {
        const head = await c.readHead();
        if (head === null) return;
        if (head.startsWith("GET /hold ")) await new Promise<void>((r) => held.push(r));
        await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      }
    } finally {
      state.open--;
    }
  });
  await using proxy = startProxy({ maxActivePerHost: 1, maxIdlePerHost: 1 });
  const request = (path: string) =>
    new TextEncoder().encode(
      `GET http://127.0.0.1:${origin.port}${path} HTTP/1.1\r\nHost: x\r\n\r\n`,
    );
  // Four keep-alive clients, one request each in turn: each keeps the upstream connection it
  // used (none is idle in the pool when the next one asks, so each dials).
  const clients: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      clients.push(conn);
      await conn.write(request("/"));
      assert.match(await readUntil(conn, (t) => t.endsWith("ok")), /^HTTP\/1\.1 200 OK\r\n/);
    }
    assert.equal(state.open, 4);
    // A fifth client takes the one slot with a request the origin holds.
    const fifth = rawExchange(proxy.port, getRequest(origin.port, "/hold"));
    while (held.length === 0) await sleep(5);
    // The four ask again and wait for the slot: their connections go to the pool, which keeps
    // one and closes the others.
    for (const conn of clients) await conn.write(request("/"));
    for (let waited = 0; state.open > 2 && waited < 2000; waited += 10) await sleep(10);
    assert.equal(state.open, 2, "the held request's connection and one idle in the pool");
    held.shift()!();
    assert.match(await fifth, /^HTTP\/1\.1 200 OK\r\n/);
    for (const conn of clients) {
      assert.match(await readUntil(conn, (t) => t.endsWith("ok")), /^HTTP\/1\.1 200 OK\r\n/);
    }
  } finally {
    for (const conn of clients) conn.close();
    for (const release of held.splice(0)) release(); // (after a failure: the origin can end)
  }
  assert.equal(proxy.lines.filter((l) => / 200 /.test(l)).length, 9);
});

Deno.test("--max-active-per-host: OPTIONS with Max-Forwards: 0 is answered by the proxy at once, even with every slot to the origin taken", async () => {
  const { origin, state, held } = holdingOrigin();
  await using _ = origin;
  await using proxy = startProxy({ maxActivePerHost: 1, connectTimeoutMs: 2000 });
  const first = rawExchange(proxy.port, getRequest(origin.port));
  while (state.seen === 0) await sleep(5);
  const started = performance.now();
  const options = await rawExchange(
    proxy.port,
    `OPTIONS http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: 127.0.0.1:${origin.port}\r\n` +
      "Max-Forwards: 0\r\nConnection: close\r\n\r\n",
  );
  const took = performance.now() - started;
  assert.match(options, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(options, /\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT\r\n/);
  assert.ok(took < 1000, `the answer took ${Math.round(took)} ms: it waited for the slot`);
  held.shift()!();
  assert.match(await first, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(state.seen, 1, "the OPTIONS never reached the origin");
});

Deno.test("--max-active-per-host: a request that gets no connection within --connect-timeout is a 504 that says why, and the slot holders finish", async () => {
  const { origin, state, held } = holdingOrigin();
  await using _ = origin;
  await using proxy = startProxy({ maxActivePerHost: 1, connectTimeoutMs: 300 });
  const first = rawExchange(proxy.port, getRequest(origin.port));
  while (state.seen === 0) await sleep(5);
  const second = await rawExchange(proxy.port, getRequest(origin.port));
  assert.match(second, /^HTTP\/1\.1 504 /);
  assert.match(second, /no connection free within 300 ms \(--max-active-per-host 1\)/);
  held.shift()!();
  assert.match(await first, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(state.seen, 1, "the second request never reached the origin");
  // The slot came back: a third request goes through.
  const third = rawExchange(proxy.port, getRequest(origin.port));
  while (held.length === 0) await sleep(5);
  held.shift()!();
  assert.match(await third, /^HTTP\/1\.1 200 OK\r\n/);
});

Deno.test("one keep-alive client alternating between two origins reaches each, on its own upstream connection", async () => {
  // A connection reuses its last request's route names when the next names the same host and
  // port (handle_conn.ts target): one that names another must get that one's names and pool.
  await using a = keepAliveOrigin((n) => `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na${n}`);
  await using b = keepAliveOrigin((n) => `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nb${n}`);
  await using proxy = startProxy();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const got: string[] = [];
  for (const [origin, path] of [[a, "/1"], [a, "/2"], [b, "/3"], [a, "/4"], [b, "/5"]] as const) {
    await conn.write(
      new TextEncoder().encode(
        `GET http://127.0.0.1:${origin.port}${path} HTTP/1.1\r\nHost: x\r\n\r\n`,
      ),
    );
    const text = await readUntil(conn, (t) => /\r\n\r\n[ab]\d$/.test(t));
    got.push(text.slice(-2));
  }
  assert.deepEqual(got, ["a1", "a2", "b1", "a3", "b2"]);
  assert.equal(a.accepted, 1);
  assert.equal(b.accepted, 1);
  const paths = proxy.lines.filter((l) => / GET http:/.test(l)).map((l) =>
    / GET http:\/\/127\.0\.0\.1:(\d+)(\/\d)/.exec(l)?.slice(1).join("")
  );
  assert.deepEqual(paths, [
    `${a.port}/1`,
    `${a.port}/2`,
    `${b.port}/3`,
    `${a.port}/4`,
    `${b.port}/5`,
  ]);
});
