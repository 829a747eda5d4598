// The shared cache (--cache), rule by rule from RFC 9111, over real sockets: an origin that
// counts its requests (and records their heads), the proxy with a cache in a temporary folder,
// raw HTTP/1.1 requests through it.
import assert from "node:assert/strict";
import { Cache, MAX_BACKGROUND } from "../../lib/cache/cache.ts";
import { httpDate } from "../../lib/cache/rules.ts";
import { DatabaseSync } from "node:sqlite";
import { runCli, startCli, startCliWithAdmin } from "../_fixtures/cli.ts";
import { concat, readAll, readUntil, sleep, startProxy } from "../_fixtures/servers.ts";

/** One parsed response. */
interface Reply {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** What the origin saw: each request's method, path and headers. */
interface Seen {
  method: string;
  path: string;
  headers: Headers;
}

type Handler = (req: Request, n: number) => Response | Promise<Response>;

/** An origin that counts its requests; `handler` gets the request and its number (1, 2, …). */
function countingOrigin(handler: Handler) {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push({ method: req.method, path: new URL(req.url).pathname, headers: req.headers });
    return handler(req, seen.length);
  });
  return {
    port: server.addr.port,
    seen,
    get count() {
      return seen.length;
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/** A proxy with a cache in a fresh folder, both gone (and the folder deleted) at dispose. */
async function cachingProxy(
  options: { dir?: string; format?: "squid" | "json" | "text"; maxActivePerHost?: number } = {},
) {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "http-proxy-cache-test-" });
  const cache = new Cache({
    dir,
    maxBytes: 512 * 1024 ** 2, // one response may take 64 MiB
    memBytes: 8 * 1024 ** 2,
    diag: () => {},
  });
  const proxy = startProxy(
    {
      cache: true,
      ...(options.maxActivePerHost === undefined ? {} : {
        maxActivePerHost: options.maxActivePerHost,
        connectTimeoutMs: 2000,
      }),
    },
    { cache, format: options.format ?? "squid" },
  );
  return {
    proxy,
    cache,
    dir,
    async [Symbol.asyncDispose]() {
      await proxy[Symbol.asyncDispose]();
      await cache.close();
      if (!options.dir) await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * An origin and a caching proxy, with one GET of `/a` already through it (and its response
 * stored, when it may be). Both go at dispose.
 */
async function primed(handler: Handler) {
  const origin = countingOrigin(handler);
  const c = await cachingProxy();
  await ask(c.proxy.port, url(origin.port));
  await sleep(30); // the body is committed just after the response
  return {
    origin,
    c,
    async [Symbol.asyncDispose]() {
      await c[Symbol.asyncDispose]();
      await origin[Symbol.asyncDispose]();
    },
  };
}

const dec = new TextDecoder("latin1");

/** Sends one request through the proxy (Connection: close) and parses the answer. */
async function ask(
  proxyPort: number,
  url: string,
  headers: Record<string, string> = {},
  method = "GET",
  body?: string,
): Promise<Reply> {
  const u = new URL(url);
  const lines = [`${method} ${url} HTTP/1.1`, `Host: ${u.host}`, "Connection: close"];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  if (body !== undefined) lines.push(`Content-Length: ${body.length}`);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n" + (body ?? "")));
  return parseReply(await readAll(conn));
}

function parseReply(text: string): Reply {
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end > 0, `no head in ${JSON.stringify(text)}`);
  const [statusLine, ...fieldLines] = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const l of fieldLines) {
    const i = l.indexOf(":");
    const name = l.slice(0, i).toLowerCase();
    const value = l.slice(i + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  return { status: Number(statusLine!.split(" ")[1]), headers, body: text.slice(end + 4) };
}

function url(port: number, path = "/a"): string {
  return `http://127.0.0.1:${port}${path}`;
}

Deno.test("cache: a response with max-age is stored and the next request is a hit with Age and Cache-Status (RFC 9111 §3, §4.2, §5.1; RFC 9211)", async () => {
  await using origin = countingOrigin(() =>
    new Response("hello", { headers: { "cache-control": "max-age=60", "x-from": "origin" } })
  );
  await using c = await cachingProxy();
  const first = await ask(c.proxy.port, url(origin.port));
  assert.equal(first.body, "hello");
  assert.match(
    first.headers.get("cache-status")!,
    /^http-proxy; fwd=uri-miss; fwd-status=200; stored$/,
  );
  await sleep(50); // the body is committed just after the response
  const second = await ask(c.proxy.port, url(origin.port));
  assert.equal(second.status, 200);
  assert.equal(second.body, "hello");
  assert.equal(second.headers.get("x-from"), "origin");
  assert.equal(second.headers.get("content-length"), "5");
  assert.match(second.headers.get("age")!, /^\d+$/);
  assert.match(second.headers.get("cache-status")!, /^http-proxy; hit; ttl=(5[89]|60)$/);
  assert.equal(origin.count, 1);
  await c.proxy.waitForLine(/ TCP_HIT\/200 5 GET /);
  await c.proxy.waitForLine(/ TCP_MISS\/200 5 GET /);
});

Deno.test("cache: a hit is served while every --max-active-per-host slot to its origin is taken (it waits for none)", async () => {
  let release = () => {};
  const holding = new Promise<void>((r) => (release = r));
  await using origin = countingOrigin(async (req) => {
    if (new URL(req.url).pathname === "/slow") await holding;
    return new Response("hello", { headers: { "cache-control": "max-age=60" } });
  });
  await using c = await cachingProxy({ maxActivePerHost: 1 });
  assert.equal((await ask(c.proxy.port, url(origin.port))).body, "hello");
  await sleep(50); // the body is committed just after the response
  const slow = ask(c.proxy.port, url(origin.port, "/slow"));
  while (origin.count < 2) await sleep(5); // /slow holds the one slot now
  const started = performance.now();
  const hit = await ask(c.proxy.port, url(origin.port));
  const took = performance.now() - started;
  release();
  assert.equal(hit.status, 200);
  assert.equal(hit.body, "hello");
  assert.match(hit.headers.get("cache-status")!, /^http-proxy; hit; /);
  assert.ok(took < 1000, `the hit took ${Math.round(took)} ms: it waited for the slot`);
  assert.equal((await slow).body, "hello");
  assert.equal(origin.count, 2);
});

Deno.test("cache: no-store (response or request), private and Vary: * keep a response out (RFC 9111 §3, §5.2.1.5, §5.2.2.5, §5.2.2.7, §4.1)", async (t) => {
  for (
    const [name, responseCc, requestHeaders, extra] of [
      ["response no-store", "no-store, max-age=60", {}, {}],
      ["private", "private, max-age=60", {}, {}],
      ["request no-store", "max-age=60", { "Cache-Control": "no-store" }, {}],
      ["Vary: *", "max-age=60", {}, { vary: "*" }],
    ] as const
  ) {
    await t.step(name, async () => {
      await using origin = countingOrigin(() =>
        new Response("x", { headers: { "cache-control": responseCc, ...extra } })
      );
      await using c = await cachingProxy();
      await ask(c.proxy.port, url(origin.port), requestHeaders);
      await sleep(30);
      const again = await ask(c.proxy.port, url(origin.port), requestHeaders);
      assert.equal(again.body, "x");
      assert.equal(origin.count, 2);
      assert.doesNotMatch(again.headers.get("cache-status")!, /stored/);
    });
  }
});

Deno.test("cache: a request with Authorization is stored only when the response says public, must-revalidate or s-maxage (RFC 9111 §3.5)", async () => {
  await using origin = countingOrigin((req) =>
    new Response("secret", {
      headers: {
        "cache-control": new URL(req.url).pathname === "/pub" ? "public, max-age=60" : "max-age=60",
      },
    })
  );
  await using c = await cachingProxy();
  const auth = { Authorization: "Basic dTpw" };
  await ask(c.proxy.port, url(origin.port, "/plain"), auth);
  await ask(c.proxy.port, url(origin.port, "/pub"), auth);
  await sleep(30);
  await ask(c.proxy.port, url(origin.port, "/plain"), auth);
  const pub = await ask(c.proxy.port, url(origin.port, "/pub"), auth);
  assert.match(pub.headers.get("cache-status")!, /hit/);
  assert.deepEqual(origin.seen.map((s) => s.path), ["/plain", "/pub", "/plain"]);
});

Deno.test("cache: s-maxage wins over max-age for a shared cache, Expires counts from Date, an invalid Expires is stale (RFC 9111 §4.2.1, §5.3)", async (t) => {
  for (
    const [name, headers, hit] of [
      ["s-maxage=60 over max-age=0", { "cache-control": "max-age=0, s-maxage=60" }, true],
      ["Expires an hour after Date", {
        date: httpDate(Date.now()),
        expires: httpDate(Date.now() + 3_600_000),
      }, true],
      [
        "Expires before Date",
        { date: httpDate(Date.now()), expires: httpDate(Date.now() - 1000) },
        false,
      ],
      ["Expires: 0", { expires: "0" }, false],
    ] as const
  ) {
    await t.step(name, async () => {
      await using primedOrigin = await primed(() => new Response("e", { headers }));
      const { origin, c } = primedOrigin;
      await ask(c.proxy.port, url(origin.port));
      assert.equal(origin.count, hit ? 1 : 2);
    });
  }
});

Deno.test("cache: Last-Modified alone gives a heuristic freshness, a tenth of its age (RFC 9111 §4.2.2)", async () => {
  await using primedOrigin = await primed(() =>
    new Response("h", { headers: { "last-modified": httpDate(Date.now() - 10 * 86_400_000) } })
  );
  const { origin, c } = primedOrigin;
  const again = await ask(c.proxy.port, url(origin.port));
  assert.equal(origin.count, 1);
  // A tenth of ten days, capped at one day.
  assert.match(again.headers.get("cache-status")!, /ttl=8639\d$/);
});

Deno.test("cache: a stale response is validated with If-None-Match and If-Modified-Since; a 304 updates its stored fields (RFC 9111 §4.3.1, §4.3.4)", async () => {
  const lastModified = httpDate(Date.now() - 60_000);
  await using primedOrigin = await primed((req, n) => {
    if (n > 1 && req.headers.get("if-none-match") === '"v1"') {
      return new Response(null, {
        status: 304,
        headers: { etag: '"v1"', "cache-control": "max-age=60", "x-version": "two" },
      });
    }
    return new Response("body-v1", {
      headers: {
        etag: '"v1"',
        "last-modified": lastModified,
        "cache-control": "max-age=0",
        "x-version": "one",
      },
    });
  });
  const { origin, c } = primedOrigin;
  const refreshed = await ask(c.proxy.port, url(origin.port));
  assert.equal(refreshed.status, 200);
  assert.equal(refreshed.body, "body-v1");
  assert.equal(refreshed.headers.get("x-version"), "two");
  assert.match(refreshed.headers.get("cache-status")!, /fwd=stale; fwd-status=304/);
  assert.equal(origin.seen[1]!.headers.get("if-none-match"), '"v1"');
  assert.equal(origin.seen[1]!.headers.get("if-modified-since"), lastModified);
  // The 304's max-age=60 is now the stored one: the third request is a hit.
  const third = await ask(c.proxy.port, url(origin.port));
  assert.match(third.headers.get("cache-status")!, /hit/);
  assert.equal(third.headers.get("x-version"), "two");
  assert.equal(origin.count, 2);
  await c.proxy.waitForLine(/ TCP_REFRESH_UNMODIFIED\/200 7 GET /);
});

Deno.test("cache: a validation answered with a new 200 replaces the stored response (TCP_REFRESH_MODIFIED)", async () => {
  await using primedOrigin = await primed((_req, n) =>
    new Response(`v${n}`, {
      headers: { etag: `"v${n}"`, "cache-control": n === 1 ? "max-age=0" : "max-age=60" },
    })
  );
  const { origin, c } = primedOrigin;
  const second = await ask(c.proxy.port, url(origin.port));
  assert.equal(second.body, "v2");
  await sleep(30);
  const third = await ask(c.proxy.port, url(origin.port));
  assert.equal(third.body, "v2");
  assert.equal(origin.count, 2);
  await c.proxy.waitForLine(/ TCP_REFRESH_MODIFIED\/200 2 GET /);
});

Deno.test("cache: request directives: no-cache and Pragma validate, max-age=0 validates, max-stale accepts stale, min-fresh asks for more (RFC 9111 §5.2.1, §5.4)", async (t) => {
  for (
    const [name, responseCc, request, goesToOrigin] of [
      ["no-cache", "max-age=60", { "Cache-Control": "no-cache" }, true],
      ["Pragma: no-cache", "max-age=60", { Pragma: "no-cache" }, true],
      ["max-age=0", "max-age=60", { "Cache-Control": "max-age=0" }, true],
      ["min-fresh beyond the ttl", "max-age=60", { "Cache-Control": "min-fresh=120" }, true],
      ["min-fresh within the ttl", "max-age=60", { "Cache-Control": "min-fresh=10" }, false],
      ["max-stale on a stale response", "max-age=0", { "Cache-Control": "max-stale=600" }, false],
      ["max-stale past must-revalidate", "max-age=0, must-revalidate", {
        "Cache-Control": "max-stale=600",
      }, true],
      ["response no-cache", "no-cache, max-age=60", {}, true],
    ] as const
  ) {
    await t.step(name, async () => {
      await using primedOrigin = await primed(() =>
        new Response("d", { headers: { "cache-control": responseCc, etag: '"d"' } })
      );
      const { origin, c } = primedOrigin;
      await ask(c.proxy.port, url(origin.port), request);
      assert.equal(origin.count, goesToOrigin ? 2 : 1);
    });
  }
});

Deno.test("cache: only-if-cached answers 504 without a stored response and the stored one with it (RFC 9111 §5.2.1.7)", async () => {
  await using origin = countingOrigin(() =>
    new Response("o", { headers: { "cache-control": "max-age=60" } })
  );
  await using c = await cachingProxy();
  const miss = await ask(c.proxy.port, url(origin.port), { "Cache-Control": "only-if-cached" });
  assert.equal(miss.status, 504);
  assert.match(miss.body, /only-if-cached/);
  assert.equal(origin.count, 0);
  await ask(c.proxy.port, url(origin.port));
  await sleep(30);
  const hit = await ask(c.proxy.port, url(origin.port), { "Cache-Control": "only-if-cached" });
  assert.equal(hit.status, 200);
  assert.equal(hit.body, "o");
  assert.equal(origin.count, 1);
});

Deno.test("cache: Vary keeps one response per value of the fields it names (RFC 9111 §4.1)", async () => {
  await using origin = countingOrigin((req) =>
    new Response(`lang=${req.headers.get("accept-language")}`, {
      headers: { "cache-control": "max-age=60", vary: "Accept-Language" },
    })
  );
  await using c = await cachingProxy();
  await ask(c.proxy.port, url(origin.port), { "Accept-Language": "en" });
  await ask(c.proxy.port, url(origin.port), { "Accept-Language": "fr" });
  await sleep(30);
  const en = await ask(c.proxy.port, url(origin.port), { "Accept-Language": "en" });
  const fr = await ask(c.proxy.port, url(origin.port), { "Accept-Language": "fr" });
  const de = await ask(c.proxy.port, url(origin.port), { "Accept-Language": "de" });
  assert.equal(en.body, "lang=en");
  assert.equal(fr.body, "lang=fr");
  assert.equal(de.body, "lang=de");
  assert.match(en.headers.get("cache-status")!, /hit/);
  assert.match(de.headers.get("cache-status")!, /fwd=vary-miss/);
  assert.equal(origin.count, 3);
});

Deno.test("cache: an unsafe method's success invalidates its target and a same-origin Location (RFC 9111 §4.4)", async () => {
  await using origin = countingOrigin((req) =>
    req.method === "POST"
      ? new Response("posted", { status: 201, headers: { location: "/b" } })
      : new Response(new URL(req.url).pathname, { headers: { "cache-control": "max-age=60" } })
  );
  await using c = await cachingProxy();
  await ask(c.proxy.port, url(origin.port, "/a"));
  await ask(c.proxy.port, url(origin.port, "/b"));
  await ask(c.proxy.port, url(origin.port, "/c"));
  await sleep(30);
  const posted = await ask(c.proxy.port, url(origin.port, "/a"), {}, "POST", "x=1");
  assert.equal(posted.status, 201);
  await ask(c.proxy.port, url(origin.port, "/a"));
  await ask(c.proxy.port, url(origin.port, "/b"));
  const c3 = await ask(c.proxy.port, url(origin.port, "/c"));
  assert.match(c3.headers.get("cache-status")!, /hit/);
  assert.deepEqual(origin.seen.map((s) => `${s.method} ${s.path}`), [
    "GET /a",
    "GET /b",
    "GET /c",
    "POST /a",
    "GET /a",
    "GET /b",
  ]);
});

Deno.test("cache: HEAD is answered from a stored GET, with its Content-Length and no body (RFC 9110 §9.3.2)", async () => {
  await using primedOrigin = await primed(() =>
    new Response("0123456789", { headers: { "cache-control": "max-age=60" } })
  );
  const { origin, c } = primedOrigin;
  const head = await ask(c.proxy.port, url(origin.port), {}, "HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "10");
  assert.equal(head.body, "");
  assert.equal(origin.count, 1);
});

Deno.test("cache: a byte range is answered from a complete stored response: 206, 416, If-Range (RFC 9110 §14, §13.1.5)", async () => {
  await using primedOrigin = await primed(() =>
    new Response("0123456789", { headers: { "cache-control": "max-age=60", etag: '"r1"' } })
  );
  const { origin, c } = primedOrigin;
  const part = await ask(c.proxy.port, url(origin.port), { Range: "bytes=2-5" });
  assert.equal(part.status, 206);
  assert.equal(part.body, "2345");
  assert.equal(part.headers.get("content-range"), "bytes 2-5/10");
  assert.equal(part.headers.get("content-length"), "4");
  const suffix = await ask(c.proxy.port, url(origin.port), { Range: "bytes=-3" });
  assert.equal(suffix.body, "789");
  const past = await ask(c.proxy.port, url(origin.port), { Range: "bytes=20-" });
  assert.equal(past.status, 416);
  assert.equal(past.headers.get("content-range"), "bytes */10");
  const otherTag = await ask(c.proxy.port, url(origin.port), {
    Range: "bytes=2-5",
    "If-Range": '"r0"',
  });
  assert.equal(otherTag.status, 200);
  assert.equal(otherTag.body, "0123456789");
  const sameTag = await ask(c.proxy.port, url(origin.port), {
    Range: "bytes=2-5",
    "If-Range": '"r1"',
  });
  assert.equal(sameTag.status, 206);
  assert.equal(origin.count, 1);
});

Deno.test("cache: a client's own If-None-Match is answered 304 from a fresh stored response (RFC 9110 §13.2.2)", async () => {
  await using primedOrigin = await primed(() =>
    new Response("tagged", { headers: { "cache-control": "max-age=60", etag: '"t1"' } })
  );
  const { origin, c } = primedOrigin;
  const same = await ask(c.proxy.port, url(origin.port), { "If-None-Match": 'W/"t1"' });
  assert.equal(same.status, 304);
  assert.equal(same.body, "");
  assert.equal(same.headers.get("etag"), '"t1"');
  const other = await ask(c.proxy.port, url(origin.port), { "If-None-Match": '"t0"' });
  assert.equal(other.status, 200);
  assert.equal(other.body, "tagged");
  assert.equal(origin.count, 1);
});

Deno.test("cache: stale-if-error serves the stale response when the origin fails (RFC 5861 §4)", async () => {
  await using primedOrigin = await primed((_req, n) =>
    n === 1
      ? new Response("good", { headers: { "cache-control": "max-age=0, stale-if-error=600" } })
      : new Response("broken", { status: 503 })
  );
  const { origin, c } = primedOrigin;
  const stale = await ask(c.proxy.port, url(origin.port));
  assert.equal(stale.status, 200);
  assert.equal(stale.body, "good");
  assert.match(stale.headers.get("cache-status")!, /fwd=stale; fwd-status=503/);
  assert.equal(origin.count, 2);
  await c.proxy.waitForLine(/ TCP_REFRESH_FAIL_OLD\/200 4 GET /);
});

Deno.test("cache: a chunked response is stored whole and served with a Content-Length", async () => {
  await using origin = countingOrigin(() =>
    new Response(
      new ReadableStream({
        start(ctl) {
          ctl.enqueue(new TextEncoder().encode("chunk-one,"));
          ctl.enqueue(new TextEncoder().encode("chunk-two"));
          ctl.close();
        },
      }),
      { headers: { "cache-control": "max-age=60" } },
    )
  );
  await using c = await cachingProxy();
  const first = await ask(c.proxy.port, url(origin.port));
  assert.equal(first.headers.get("transfer-encoding"), "chunked");
  await sleep(50);
  const second = await ask(c.proxy.port, url(origin.port));
  assert.equal(second.body, "chunk-one,chunk-two");
  assert.equal(second.headers.get("content-length"), "19");
  assert.equal(origin.count, 1);
});

Deno.test("cache: a large body streams to the client while it is stored, and is served from its file after a restart", async () => {
  const size = 3 * 1024 * 1024 + 17;
  const payload = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
  await using origin = countingOrigin(() =>
    new Response(payload, { headers: { "cache-control": "max-age=600" } })
  );
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-cache-test-" });
  try {
    {
      await using c = await cachingProxy({ dir });
      const first = await rawGet(c.proxy.port, url(origin.port, "/big"));
      assert.deepEqual(first, payload);
    }
    // A new store over the same folder: the index and the files survived.
    await using c = await cachingProxy({ dir });
    const again = await rawGet(c.proxy.port, url(origin.port, "/big"));
    assert.equal(again.length, size);
    assert.deepEqual(again, payload);
    // A range from the file: past the first piece, across a piece boundary.
    const part = await rawGet(c.proxy.port, url(origin.port, "/big"), {
      Range: "bytes=300000-1000000",
    });
    assert.deepEqual(part, payload.subarray(300000, 1000001));
    assert.equal(origin.count, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** GET through the proxy, returning the body bytes (chunked framing undone). */
async function rawGet(
  proxyPort: number,
  target: string,
  headers: Record<string, string> = {},
): Promise<Uint8Array> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  await conn.write(
    new TextEncoder().encode(
      `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${extra}\r\n`,
    ),
  );
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return bodyOf(concat(chunks));
}

/** The body of a whole response (head and all), its chunked framing undone. */
function bodyOf(all: Uint8Array): Uint8Array {
  const text = dec.decode(all);
  const end = text.indexOf("\r\n\r\n");
  if (!/transfer-encoding: chunked/i.test(text.slice(0, end))) return all.subarray(end + 4);
  const out: Uint8Array[] = [];
  let pos = end + 4;
  for (;;) {
    const lineEnd = text.indexOf("\r\n", pos);
    const n = parseInt(text.slice(pos, lineEnd), 16);
    if (n === 0) break;
    out.push(all.subarray(lineEnd + 2, lineEnd + 2 + n));
    pos = lineEnd + 2 + n + 2;
  }
  return concat(out);
}

Deno.test("cache: the json log has a cache field, the text log names the result", async () => {
  await using origin = countingOrigin(() =>
    new Response("j", { headers: { "cache-control": "max-age=60" } })
  );
  {
    await using c = await cachingProxy({ format: "json" });
    await ask(c.proxy.port, url(origin.port));
    await sleep(30);
    await ask(c.proxy.port, url(origin.port));
    const hit = JSON.parse(await c.proxy.waitForLine(/"cache":"HIT"/));
    assert.equal(hit.status, 200);
    assert.equal(hit.upstream, null);
    assert.equal(JSON.parse(await c.proxy.waitForLine(/"cache":"MISS"/)).bytes_down, 1);
  }
  await using c = await cachingProxy({ format: "text" });
  await ask(c.proxy.port, url(origin.port));
  await sleep(30);
  await ask(c.proxy.port, url(origin.port));
  await c.proxy.waitForLine(/\] 200 OK 1 bytes \d+ ms cache HIT #\d+$/);
});

Deno.test("cache: kill -9 while a body is being written never leaves a partial or mismatched body to serve after a restart", async () => {
  const big = 4 * 1024 * 1024;
  const whole = new Uint8Array(big).map((_, i) => (i * 13) & 0xff);
  const done = new Uint8Array(300 * 1024).map((_, i) => (i * 3) & 0xff);
  const release = Promise.withResolvers<void>();
  let slowCalls = 0;
  await using origin = countingOrigin((req) => {
    const path = new URL(req.url).pathname;
    const headers = { "cache-control": "max-age=600", "content-length": String(big) };
    if (path === "/done") {
      return new Response(done, { headers: { "cache-control": "max-age=600" } });
    }
    if (path === "/truncated") return new Response(whole, { headers });
    slowCalls++;
    if (slowCalls > 1) return new Response(whole, { headers });
    // The first time, half the body, then nothing until the test ends.
    return new Response(
      new ReadableStream({
        async start(ctl) {
          ctl.enqueue(whole.slice(0, big / 2));
          await release.promise;
          ctl.close();
        },
      }),
      { headers },
    );
  });
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-cache-crash-" });
  const flags = ["--listen", "127.0.0.1:0", "--quiet", "--cache", "--cache-dir", dir];
  const perms = { denoFlags: ["--allow-read", "--allow-write"] };
  try {
    {
      await using cli = await startCli(flags, perms);
      const port = Number(cli.addrs[0]!.split(":").pop());
      assert.deepEqual(await rawGet(port, url(origin.port, "/done")), done);
      assert.equal((await rawGet(port, url(origin.port, "/truncated"))).length, big);
      await sleep(300); // both committed
      // Half of /slow arrives, so its body file is half written when the proxy dies.
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(
        new TextEncoder().encode(`GET ${url(origin.port, "/slow")} HTTP/1.1\r\nHost: x\r\n\r\n`),
      );
      let got = 0;
      const buf = new Uint8Array(65536);
      while (got < big / 2) {
        const n = await conn.read(buf);
        if (n === null) break;
        got += n;
      }
      const partial = [...Deno.readDirSync(`${dir}/tmp`)];
      assert.equal(partial.length, 1, "the body being written is under tmp/");
      assert.equal(await cli.stop("SIGKILL"), 137);
    }
    release.resolve();
    // Someone's hands (or a disk) shortened a stored body: it must not be served.
    const index = new DatabaseSync(`${dir}/index.sqlite`);
    const row = index.prepare("SELECT file FROM entries WHERE key LIKE '%/truncated'").get() as {
      file: string;
    };
    index.close();
    await Deno.truncate(`${dir}/objects/${row.file}`, 1000);

    await using cli = await startCli(flags, perms);
    const port = Number(cli.addrs[0]!.split(":").pop());
    assert.deepEqual([...Deno.readDirSync(`${dir}/tmp`)], [], "tmp/ is emptied at startup");
    assert.deepEqual(await rawGet(port, url(origin.port, "/done")), done);
    assert.deepEqual(await rawGet(port, url(origin.port, "/slow")), whole);
    assert.deepEqual(await rawGet(port, url(origin.port, "/truncated")), whole);
    // /done came from the store; /slow and /truncated from the origin again.
    assert.deepEqual(origin.seen.map((s) => s.path), [
      "/done",
      "/truncated",
      "/slow",
      "/slow",
      "/truncated",
    ]);
    assert.match(
      cli.stderr.text,
      /--cache: dropped ".*\/truncated": its body file has the wrong size/,
    );
  } finally {
    release.resolve();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cache: 50 concurrent misses for one URL make one upstream request, and every client gets the whole body as it arrives (collapsed forwarding)", async () => {
  const size = 512 * 1024;
  const payload = new Uint8Array(size).map((_, i) => (i * 5) & 0xff);
  const go = Promise.withResolvers<void>();
  await using origin = countingOrigin(() =>
    new Response(
      new ReadableStream({
        async start(ctl) {
          // The head goes at once, the body only once every client is waiting.
          ctl.enqueue(payload.slice(0, 1000));
          await go.promise;
          ctl.enqueue(payload.slice(1000));
          ctl.close();
        },
      }),
      { headers: { "cache-control": "max-age=60" } },
    )
  );
  await using c = await cachingProxy();
  const target = url(origin.port, "/shared");
  const first = rawGet(c.proxy.port, target);
  while (origin.count === 0) await sleep(5);
  const others = Array.from({ length: 49 }, () => rawGet(c.proxy.port, target));
  await sleep(300);
  go.resolve();
  const bodies = await Promise.all([first, ...others]);
  for (const b of bodies) assert.deepEqual(b, payload);
  assert.equal(origin.count, 1);
  const collapsed = c.proxy.lines.filter((l) => / TCP_CF_HIT\/200 524288 GET /.test(l));
  assert.equal(collapsed.length, 49);
});

Deno.test("cache: within stale-while-revalidate the stale response answers at once and is validated in the background (RFC 5861 §3)", async () => {
  await using primedOrigin = await primed((req, n) =>
    n === 1
      ? new Response("v1", {
        headers: { etag: '"v1"', "cache-control": "max-age=0, stale-while-revalidate=60" },
      })
      : new Response(`v${n}:${req.headers.get("if-none-match")}`, {
        headers: { etag: `"v${n}"`, "cache-control": "max-age=60" },
      })
  );
  const { origin, c } = primedOrigin;
  const stale = await ask(c.proxy.port, url(origin.port));
  assert.equal(stale.body, "v1");
  assert.match(stale.headers.get("cache-status")!, /^http-proxy; hit; ttl=-\d+$/);
  while (origin.count < 2) await sleep(10);
  await sleep(100); // its body stored
  const fresh = await ask(c.proxy.port, url(origin.port));
  assert.equal(fresh.body, 'v2:"v1"');
  assert.match(fresh.headers.get("cache-status")!, /hit/);
  assert.equal(origin.count, 2);
  await c.proxy.waitForLine(/ TCP_STALE_HIT\/200 2 GET /);
  // The background request wrote no log line of its own.
  assert.equal(c.proxy.lines.length, 3);
});

Deno.test("cache: the admin listener shows the hit ratio (/api/cache, /metrics) and purges a URL or everything with DELETE", async () => {
  await using origin = countingOrigin(() =>
    new Response("admin", { headers: { "cache-control": "max-age=60" } })
  );
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-cache-admin-" });
  try {
    await using cli = await startCliWithAdmin(["--cache", "--cache-dir", dir], {
      denoFlags: ["--allow-read", "--allow-write"],
    });
    const admin = `http://${cli.admin}`;
    const port = Number(cli.addrs[0]!.split(":").pop());
    await ask(port, url(origin.port, "/p"));
    await sleep(50);
    await ask(port, url(origin.port, "/p"));
    const stats = await (await fetch(`${admin}/api/cache`)).json();
    assert.equal(stats.entries, 1);
    assert.equal(stats.bytes, 5);
    assert.equal(stats.hits, 1);
    assert.equal(stats.lookups, 2);
    assert.equal(stats.hitRatio, 0.5);
    assert.equal(stats.servedBytes, 5);
    const metrics = await (await fetch(`${admin}/metrics`)).text();
    assert.match(metrics, /^http_proxy_cache_requests_total\{result="HIT"\} 1$/m);
    assert.match(metrics, /^http_proxy_cache_requests_total\{result="MISS"\} 1$/m);
    assert.match(metrics, /^http_proxy_cache_bytes\{tier="disk"\} 5$/m);
    // Not through a form post or a bare DELETE.
    const post = await fetch(`${admin}/api/cache?all=1`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
    const bare = await fetch(`${admin}/api/cache`, { method: "DELETE" });
    assert.equal(bare.status, 400);
    assert.match((await bare.json()).error, /^url: /);
    const purged = await fetch(
      `${admin}/api/cache?url=${encodeURIComponent(url(origin.port, "/p"))}`,
      { method: "DELETE" },
    );
    assert.deepEqual(await purged.json(), { purged: 1 });
    const again = await ask(port, url(origin.port, "/p"));
    assert.match(again.headers.get("cache-status")!, /fwd=uri-miss/);
    assert.equal(origin.count, 2);
    await sleep(50);
    const all = await fetch(`${admin}/api/cache?all=1`, { method: "DELETE" });
    assert.deepEqual(await all.json(), { purged: 1 });
    assert.deepEqual([...Deno.readDirSync(`${dir}/objects`)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cache: the history keeps each exchange's cache result and the HAR file has it as _cache", async () => {
  await using origin = countingOrigin(() =>
    new Response("hist", { headers: { "cache-control": "max-age=60" } })
  );
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-cache-history-" });
  const perms = ["--allow-read", "--allow-write"];
  try {
    {
      await using cli = await startCli([
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--cache",
        "--cache-dir",
        `${dir}/cache`,
        "--history",
        `${dir}/h.db`,
        "--har",
        `${dir}/t.har`,
      ], { denoFlags: perms });
      const port = Number(cli.addrs[0]!.split(":").pop());
      await ask(port, url(origin.port, "/h"));
      await sleep(50);
      await ask(port, url(origin.port, "/h"));
      assert.equal(await cli.stop("SIGTERM"), 0);
    }
    const out = await runCli(["history", `${dir}/h.db`, "--format", "json"], perms);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(JSON.parse(out.stdout).map((r: { cache: string }) => r.cache), [
      "HIT",
      "MISS",
    ]);
    const har = JSON.parse(await Deno.readTextFile(`${dir}/t.har`));
    assert.deepEqual(har.log.entries.map((e: { _cache: string }) => e._cache), ["MISS", "HIT"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cache: the client whose request fetched a response may leave or stall: the clients waiting on it still get all of it, and the origin is asked once", async (t) => {
  // 32 MiB: more than a stalled client's socket buffers take, so a fetch tied to that client's
  // pace would stop.
  const size = 32 * 1024 * 1024;
  const payload = new Uint8Array(size).map((_, i) => (i * 11) & 0xff);
  for (const leader of ["leaves", "stalls"] as const) {
    await t.step(`the first client ${leader}`, async () => {
      const go = Promise.withResolvers<void>();
      await using origin = countingOrigin(() =>
        new Response(
          new ReadableStream({
            async start(ctl) {
              ctl.enqueue(payload.slice(0, 64 * 1024));
              await go.promise;
              ctl.enqueue(payload.slice(64 * 1024));
              ctl.close();
            },
          }),
          { headers: { "cache-control": "max-age=60", "content-length": String(size) } },
        )
      );
      await using c = await cachingProxy({ format: "json" });
      const target = url(origin.port, "/leader");
      // The first client reads its head and a little; then, once the others wait on its
      // response, it leaves, or never reads again.
      const first = await Deno.connect({ hostname: "127.0.0.1", port: c.proxy.port });
      await first.write(new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`));
      await first.read(new Uint8Array(1024));
      const others = Array.from({ length: 3 }, () => rawGet(c.proxy.port, target));
      await sleep(200);
      if (leader === "leaves") first.close();
      await sleep(100);
      go.resolve();
      for (const body of await Promise.all(others)) assert.deepEqual(body, payload);
      if (leader === "stalls") first.close();
      assert.equal(origin.count, 1);
      await c.proxy.waitForLine(/"error":"client closed the connection"/);
      // Stored whole: the next one is a hit.
      await sleep(100);
      const hit = await ask(c.proxy.port, target, { Range: "bytes=0-9" });
      assert.match(hit.headers.get("cache-status")!, /hit/);
      assert.equal(origin.count, 1);
    });
  }
});

Deno.test("cache: when every client of a response being fetched leaves with more than 1 MiB to come, the fetch gives up and nothing is stored", async () => {
  const size = 8 * 1024 * 1024;
  const go = Promise.withResolvers<void>();
  const upstreamClosed = Promise.withResolvers<void>();
  await using origin = countingOrigin(() =>
    new Response(
      new ReadableStream({
        async start(ctl) {
          ctl.enqueue(new Uint8Array(64 * 1024));
          await go.promise;
          ctl.enqueue(new Uint8Array(size - 64 * 1024));
          ctl.close();
        },
        cancel() {
          upstreamClosed.resolve();
        },
      }),
      { headers: { "cache-control": "max-age=60", "content-length": String(size) } },
    )
  );
  await using c = await cachingProxy();
  const target = url(origin.port, "/alone");
  {
    using only = await Deno.connect({ hostname: "127.0.0.1", port: c.proxy.port });
    await only.write(new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`));
    await only.read(new Uint8Array(1024));
  }
  // The proxy closes its upstream connection: the origin's stream is cancelled.
  await upstreamClosed.promise;
  go.resolve();
  assert.deepEqual([...Deno.readDirSync(`${c.dir}/tmp`)], []);
  assert.deepEqual([...Deno.readDirSync(`${c.dir}/objects`)], []);
  await ask(c.proxy.port, target, { Range: "bytes=0-0" });
  assert.equal(origin.count, 2);
});

Deno.test("cache: a 200 to HEAD freshens the stored GET it matches, and a stored GET it contradicts is forgotten (RFC 9111 §4.3.5)", async (t) => {
  for (
    const [name, tag, kept] of [["same ETag", '"h1"', true], ["other ETag", '"h2"', false]] as const
  ) {
    await t.step(name, async () => {
      await using primedOrigin = await primed((req) =>
        req.method === "HEAD"
          ? new Response(null, {
            headers: {
              etag: tag,
              "cache-control": "max-age=60",
              "x-checked": "by head",
              "content-length": "8",
            },
          })
          : new Response("get body", { headers: { etag: '"h1"', "cache-control": "max-age=0" } })
      );
      const { origin, c } = primedOrigin;
      const head = await ask(c.proxy.port, url(origin.port), {}, "HEAD");
      assert.equal(head.status, 200);
      const get = await ask(c.proxy.port, url(origin.port));
      assert.equal(get.body, "get body");
      if (kept) {
        assert.match(get.headers.get("cache-status")!, /hit/);
        assert.equal(get.headers.get("x-checked"), "by head");
        assert.deepEqual(origin.seen.map((s) => s.method), ["GET", "HEAD"]);
      } else {
        assert.match(get.headers.get("cache-status")!, /fwd=uri-miss/);
        assert.deepEqual(origin.seen.map((s) => s.method), ["GET", "HEAD", "GET"]);
      }
    });
  }
});

Deno.test("cache: at most 64 background validations run at once; past that the stale response still answers", async () => {
  const release = Promise.withResolvers<void>();
  const paths = Array.from({ length: 80 }, (_, i) => `/swr${i}`);
  await using origin = countingOrigin(async (req) => {
    if (req.headers.has("if-none-match")) {
      await release.promise; // the validations hang until the test lets them go
      return new Response(null, { status: 304, headers: { etag: '"s"' } });
    }
    return new Response("stale", {
      headers: { etag: '"s"', "cache-control": "max-age=0, stale-while-revalidate=600" },
    });
  });
  await using c = await cachingProxy();
  try {
    for (const p of paths) await ask(c.proxy.port, url(origin.port, p));
    await sleep(100);
    const answers = await Promise.all(paths.map((p) => ask(c.proxy.port, url(origin.port, p))));
    for (const a of answers) assert.equal(a.body, "stale");
    await sleep(200);
    assert.equal(origin.count - paths.length, MAX_BACKGROUND);
  } finally {
    release.resolve();
  }
});

Deno.test("cache: with --workers 2 both threads share the store, and an invalidation in one reaches what the other holds in memory", async () => {
  let version = 1;
  await using origin = countingOrigin((req) => {
    if (req.method === "POST") {
      version++;
      return new Response(null, { status: 204 });
    }
    return new Response(`v${version}`, { headers: { "cache-control": "max-age=600" } });
  });
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-cache-workers-" });
  try {
    await using cli = await startCli(
      [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--log-format",
        "json",
        "--cache",
        "--cache-dir",
        dir,
      ],
      { denoFlags: ["--unstable-net", "--allow-read", "--allow-write"] },
    );
    assert.match(cli.stderr.text, /\(2 workers\)/);
    const port = Number(cli.addrs[0]!.split(":").pop());
    const target = url(origin.port, "/shared");
    const lines = () =>
      cli.stdout.text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
    // Each request is a new connection: the kernel spreads them over both threads.
    const round = async (expect: string) => {
      const before = lines().length;
      for (let i = 0; i < 24; i++) {
        assert.equal((await ask(port, target)).body, expect);
        await sleep(10);
      }
      for (let i = 0; i < 200 && lines().length < before + 24; i++) await sleep(25);
      const ids = lines().slice(before).map((l) => l.id as number);
      assert.ok(ids.some((id) => id % 2 === 1) && ids.some((id) => id % 2 === 0), "both threads");
    };
    await round("v1");
    const gets = () => origin.seen.filter((s) => s.method === "GET").length;
    assert.ok(gets() <= 2, `${gets()} upstream GETs: at most one per thread`);
    const posted = await ask(port, target, {}, "POST", "x");
    assert.equal(posted.status, 204);
    await sleep(100);
    await round("v2");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cache: a 204 with freshness is stored and its first client is answered at once (no body to wait for)", async () => {
  await using origin = countingOrigin(() =>
    new Response(null, { status: 204, headers: { "cache-control": "max-age=60" } })
  );
  await using c = await cachingProxy();
  // Kept alive: a client waiting on a body that never comes would see no answer here.
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: c.proxy.port });
  const request = `GET ${url(origin.port)} HTTP/1.1\r\nHost: x\r\n\r\n`;
  await conn.write(new TextEncoder().encode(request));
  const first = await readUntil(conn, (t) => t.includes("\r\n\r\n"), 2000);
  assert.match(first, /^HTTP\/1\.1 204 /);
  await c.proxy.waitForLine(/ TCP_MISS\/204 0 GET /);
  await sleep(50);
  const again = await ask(c.proxy.port, url(origin.port));
  assert.equal(again.status, 204);
  assert.match(again.headers.get("cache-status")!, /hit/);
  assert.equal(origin.count, 1);
});
