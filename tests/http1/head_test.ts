import assert from "node:assert/strict";
import { BufferedReader, HeadReadError, type Source } from "../../lib/http1/head.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A source that hands out the given pieces one read at a time, then EOF (or hangs). */
function pieces(parts: string[], hang = false): Source & { reads: number } {
  const queue = parts.map((p) => enc.encode(p));
  const src = {
    reads: 0,
    read(buf: Uint8Array): Promise<number | null> {
      src.reads++;
      const next = queue.shift();
      if (next === undefined) return hang ? new Promise(() => {}) : Promise.resolve(null);
      if (next.length > buf.length) {
        buf.set(next.subarray(0, buf.length));
        queue.unshift(next.subarray(buf.length));
        return Promise.resolve(buf.length);
      }
      buf.set(next);
      return Promise.resolve(next.length);
    },
  };
  return src;
}

const opts = { maxBytes: 1024, timeoutMs: 1000 };

Deno.test("readHead() assembles a head split across reads, byte by byte", async () => {
  const text = "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n";
  const r = new BufferedReader(pieces([...text]));
  assert.equal(dec.decode((await r.readHead(opts))!), text);
  assert.equal(await r.readHead(opts), null);
});

Deno.test("readHead() returns pipelined heads one by one and keeps the body bytes", async () => {
  const r = new BufferedReader(
    pieces([
      "GET a HTTP/1.1\r\n\r\nPOST b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET c HTTP/1.1\n\n",
    ]),
  );
  assert.equal(dec.decode((await r.readHead(opts))!), "GET a HTTP/1.1\r\n\r\n");
  assert.match(dec.decode((await r.readHead(opts))!), /^POST b/);
  assert.equal(dec.decode((await r.read(3))!), "abc");
  assert.equal(dec.decode((await r.readHead(opts))!), "GET c HTTP/1.1\n\n");
});

Deno.test("readHead() skips empty lines before a request line", async () => {
  const r = new BufferedReader(pieces(["\r\n\r\n\nGET a HTTP/1.1\r\n\r\n"]));
  assert.equal(dec.decode((await r.readHead(opts))!), "GET a HTTP/1.1\r\n\r\n");
});

Deno.test("readHead() fails with too-large, eof and timeout", async () => {
  const big = new BufferedReader(pieces(["GET a HTTP/1.1\r\nX: " + "a".repeat(2000) + "\r\n\r\n"]));
  await assert.rejects(
    big.readHead(opts),
    (e) => e instanceof HeadReadError && e.reason === "too-large",
  );
  const cut = new BufferedReader(pieces(["GET a HTTP/1.1\r\n"]));
  await assert.rejects(
    cut.readHead(opts),
    (e) => e instanceof HeadReadError && e.reason === "eof" && e.partial,
  );
  const slow = new BufferedReader(pieces(["GET a"], true));
  await assert.rejects(
    slow.readHead({ maxBytes: 1024, timeoutMs: 50 }),
    (e) => e instanceof HeadReadError && e.reason === "timeout" && e.partial,
  );
  const idle = new BufferedReader(pieces([], true));
  await assert.rejects(
    idle.readHead({ maxBytes: 1024, timeoutMs: 1000, idleMs: 50 }),
    (e) => e instanceof HeadReadError && e.reason === "timeout" && !e.partial,
  );
});

Deno.test("readHead() grows its buffer for a head larger than the first read buffer", async () => {
  const text = "GET a HTTP/1.1\r\nX: " + "b".repeat(40_000) + "\r\n\r\n";
  const r = new BufferedReader(pieces([text]), 1024);
  assert.equal((await r.readHead({ maxBytes: 65536, timeoutMs: 1000 }))!.length, text.length);
});

Deno.test("a big head grows the buffer once, to the limit, and the next head gets a small one", async () => {
  // A slow head that doubled its way up left each smaller buffer behind as garbage.
  const big = "GET a HTTP/1.1\r\nX: " + "b".repeat(40_000) + "\r\n\r\n";
  const small = "GET b HTTP/1.1\r\n\r\n";
  const src = pieces([...big.match(/[^]{1,1000}/g)!, small]);
  const sizes: number[] = [];
  const read = src.read;
  src.read = (buf) => {
    // The space offered to each read: a new buffer shows as a jump in what is free.
    sizes.push(buf.byteOffset + buf.length);
    return read(buf);
  };
  const r = new BufferedReader(src);
  assert.equal((await r.readHead({ maxBytes: 65536, timeoutMs: 1000 }))!.length, big.length);
  assert.equal(dec.decode((await r.readHead({ maxBytes: 65536, timeoutMs: 1000 }))!), small);
  assert.deepEqual(sizes.filter((n, i) => n !== sizes[i - 1]), [2048, 65540, 2048]);
});

Deno.test("readLine() wants CRLF and caps the length", async () => {
  const r = new BufferedReader(pieces(["5;a=b\r", "\nrest\n"]));
  assert.equal(dec.decode((await r.readLine(100))!), "5;a=b");
  await assert.rejects(r.readLine(100), /bare LF/);
  const long = new BufferedReader(pieces(["x".repeat(200) + "\r\n"]));
  await assert.rejects(long.readLine(100), /line too long/);
  const cut = new BufferedReader(pieces(["abc"]));
  await assert.rejects(cut.readLine(100), /ended mid-line/);
});

Deno.test("drain() hands over the bytes read past a head", async () => {
  const r = new BufferedReader(pieces(["CONNECT h:443 HTTP/1.1\r\n\r\n\x16\x03\x01"]));
  await r.readHead(opts);
  assert.deepEqual(r.drain(), new Uint8Array([0x16, 3, 1]));
  assert.deepEqual(r.drain(), new Uint8Array(0));
});

Deno.test("each read gets the whole free buffer once what was held is consumed", async () => {
  // Keep-alive heads of 65 bytes, one a read: without the reset to the buffer's front, every
  // read was offered 65 bytes less than the one before, and a response then came in two reads.
  const head = "GET http://127.0.0.1:18700/1k HTTP/1.1\r\nHost: 127.0.0.1:18700\r\n\r\n";
  const src = pieces(Array(40).fill(head));
  const offered: number[] = [];
  const read = src.read;
  src.read = (buf) => (offered.push(buf.length), read(buf));
  const r = new BufferedReader(src);
  for (let i = 0; i < 40; i++) assert.equal(dec.decode((await r.readHead(opts))!), head);
  assert.deepEqual(new Set(offered), new Set([2048]));
  // Held bytes are moved to the front when the room after them gets short.
  const tail = pieces(["x".repeat(1500), "y".repeat(600)]);
  const sizes: number[] = [];
  const tailRead = tail.read;
  tail.read = (buf) => (sizes.push(buf.length), tailRead(buf));
  const t = new BufferedReader(tail);
  assert.equal((await t.read(1400))!.length, 1400); // 100 bytes held at 1400..1500
  assert.equal(await t.fillTo(700, 1000), true);
  assert.deepEqual(sizes, [2048, 1948]);
  assert.equal(new TextDecoder().decode(t.takeBuffered(700)!), "x".repeat(100) + "y".repeat(600));
});

/** A source whose reads complete when the test says: `give` fills the read in flight. */
function manual(): Source & { give(text: string | null): void; fail(err: Error): void } {
  let waiting: { buf: Uint8Array; resolve: (n: number | null) => void; reject: (e: Error) => void };
  return {
    read(buf) {
      return new Promise((resolve, reject) => (waiting = { buf, resolve, reject }));
    },
    give(text) {
      if (text === null) return waiting.resolve(null);
      const bytes = enc.encode(text);
      waiting.buf.set(bytes);
      waiting.resolve(bytes.length);
    },
    fail(err) {
      waiting.reject(err);
    },
  };
}

Deno.test("a head deadline cuts short the read in flight, however it was started", async () => {
  const head = "GET a HTTP/1.1\r\n\r\n";
  // Started by watch() (an idle pooled connection): the head read joins it, and gets its bytes.
  const joined = manual();
  const w = new BufferedReader(joined);
  const seen: boolean[] = [];
  w.watch((gone) => seen.push(gone));
  const got = w.readHead({ maxBytes: 1024, timeoutMs: 1000 });
  joined.give(head);
  assert.equal(dec.decode((await got)!), head);
  assert.deepEqual(seen, [false]);
  // The same, but nothing comes: the head read fails at its deadline, the watcher hears the
  // connection is gone, and a read that completes later changes nothing.
  const late = manual();
  const l = new BufferedReader(late);
  const watched: boolean[] = [];
  l.watch((gone) => watched.push(gone));
  await assert.rejects(
    l.readHead({ maxBytes: 1024, timeoutMs: 1000, idleMs: 60 }),
    (e) => e instanceof HeadReadError && e.reason === "timeout" && !e.partial,
  );
  assert.deepEqual(watched, [true]);
  late.give(head);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(l.buffered, 0);
  await assert.rejects(l.readHead(opts), /reader used after a timed-out read/);
  // Started by a body read that was left in flight: the head deadline still applies.
  const body = manual();
  const b = new BufferedReader(body);
  const left = Promise.race([b.read(10), new Promise((r) => setTimeout(() => r("left"), 20))]);
  assert.equal(await left, "left");
  await assert.rejects(
    b.readHead({ maxBytes: 1024, timeoutMs: 60 }),
    (e) => e instanceof HeadReadError && e.reason === "timeout" && !e.partial,
  );
  body.fail(new Error("closed")); // the caller closes the socket: the body read fails, handled
  await assert.rejects(b.readHead(opts), /reader used after a timed-out read/);
  // A read that fails before the deadline is the head read's failure, not a timeout.
  const reset = manual();
  const rr = new BufferedReader(reset);
  const failing = rr.readHead({ maxBytes: 1024, timeoutMs: 1000 });
  reset.fail(new Error("connection reset"));
  await assert.rejects(failing, /connection reset/);
});
