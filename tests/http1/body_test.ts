import assert from "node:assert/strict";
import { BodyError, chunk, copyChunked, copyLength, copyUntilClose } from "../../lib/http1/body.ts";
import { BufferedReader } from "../../lib/http1/head.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function source(text: string) {
  const bytes = enc.encode(text);
  let off = 0;
  return new BufferedReader({
    read(buf: Uint8Array) {
      if (off >= bytes.length) return Promise.resolve(null);
      const n = Math.min(buf.length, bytes.length - off, 7); // small reads on purpose
      buf.set(bytes.subarray(off, off + n));
      off += n;
      return Promise.resolve(n);
    },
  });
}

async function rest(src: BufferedReader): Promise<string> {
  let text = "";
  for (let piece = await src.read(100); piece; piece = await src.read(100)) {
    text += dec.decode(piece);
  }
  return text;
}

/** Decodes chunked text (well-formed, as the proxy writes it) into payload and trailer lines. */
function unchunk(text: string): { payload: string; trailers: string } {
  let payload = "";
  let at = 0;
  for (;;) {
    const eol = text.indexOf("\r\n", at);
    const size = parseInt(text.slice(at, eol), 16);
    at = eol + 2;
    if (size === 0) return { payload, trailers: text.slice(at) };
    payload += text.slice(at, at + size);
    assert.equal(text.slice(at + size, at + size + 2), "\r\n");
    at += size + 2;
  }
}

function sink() {
  let text = "";
  return {
    get text() {
      return text;
    },
    write(p: Uint8Array) {
      text += dec.decode(p);
      return Promise.resolve(p.length);
    },
  };
}

Deno.test("copyLength() copies exactly n bytes and leaves the rest", async () => {
  const src = source("hello worldNEXT");
  const out = sink();
  assert.equal(await copyLength(src, out, 11), 11);
  assert.equal(out.text, "hello world");
  assert.equal(await rest(src), "NEXT");
});

Deno.test("copyLength() fails on the read side when the source ends early", async () => {
  await assert.rejects(
    copyLength(source("abc"), sink(), 10),
    (e) =>
      e instanceof BodyError && e.side === "read" && /ended after 3 of 10 bytes/.test(e.message),
  );
});

Deno.test("copyLength() and copyUntilClose() can re-frame as chunked", async () => {
  const out = sink();
  await copyUntilClose(source("abcdefghij"), out, { out: "chunked" });
  assert.deepEqual(unchunk(out.text), { payload: "abcdefghij", trailers: "\r\n" });
  const out2 = sink();
  await copyLength(source("abc"), out2, 3, { out: "chunked" });
  assert.equal(out2.text, "3\r\nabc\r\n0\r\n\r\n");
});

Deno.test("copyChunked() decodes, keeps trailers when re-chunking, drops them when raw", async () => {
  const body =
    '3;ext="x"\r\nabc\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\n\r\nNEXT';
  const chunked = sink();
  const src = source(body);
  assert.equal(await copyChunked(src, chunked, { out: "chunked" }), 13);
  assert.deepEqual(unchunk(chunked.text), {
    payload: "abc0123456789",
    trailers: "X-T: 1\r\n\r\n", // Content-Length is not allowed in a trailer
  });
  assert.equal(await rest(src), "NEXT");
  const raw = sink();
  await copyChunked(source(body), raw, { out: "raw" });
  assert.equal(raw.text, "abc0123456789");
});

Deno.test("copyChunked() rejects malformed framing", async (t) => {
  const cases: [string, RegExp][] = [
    ["g\r\n", /malformed chunk size line/],
    ["-1\r\n", /malformed chunk size line/],
    [" 3\r\nabc\r\n0\r\n\r\n", /malformed chunk size line/],
    ["0x3\r\nabc\r\n0\r\n\r\n", /malformed chunk size line/],
    ["3\nabc\r\n0\r\n\r\n", /bare LF/],
    ["3\r\nabcX\r\n0\r\n\r\n", /line too long|not followed by CRLF/],
    ["1234567890123456\r\n", /malformed chunk size line/],
    ["3;\x01\r\nabc\r\n0\r\n\r\n", /malformed chunk size line/],
    ["0\r\nBad Trailer: x\r\n\r\n", /malformed trailer/],
  ];
  for (const [body, re] of cases) {
    await t.step(JSON.stringify(body), async () => {
      await assert.rejects(
        copyChunked(source(body), sink()),
        (e) => e instanceof BodyError && e.side === "read" && e.malformed && re.test(e.message),
      );
    });
  }
  await t.step("cut short is not malformed", async () => {
    await assert.rejects(
      copyChunked(source("5\r\nab"), sink()),
      (e) => e instanceof BodyError && !e.malformed && /ended inside a chunk/.test(e.message),
    );
  });
});

Deno.test("a failing sink is a write-side BodyError", async () => {
  const broken = { write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")) };
  await assert.rejects(
    copyLength(source("abc"), broken, 3),
    (e) => e instanceof BodyError && e.side === "write",
  );
});

Deno.test("chunk() frames a piece in the buffer it is given when it fits, else in a new array", () => {
  const piece = enc.encode("abc");
  assert.equal(dec.decode(chunk(piece)), "3\r\nabc\r\n");
  const into = new Uint8Array(16).fill(0x7e);
  const framed = chunk(piece, into);
  assert.equal(dec.decode(framed), "3\r\nabc\r\n");
  assert.equal(framed.buffer, into.buffer, "a view of the given buffer");
  const small = new Uint8Array(7);
  const grown = chunk(piece, small);
  assert.equal(dec.decode(grown), "3\r\nabc\r\n");
  assert.notEqual(grown.buffer, small.buffer, "too small: a new array");
  const big = new Uint8Array(256 * 1024).fill(0x61);
  const framedBig = chunk(big, new Uint8Array(256 * 1024 + 16));
  assert.equal(dec.decode(framedBig.subarray(0, 7)), "40000\r\n");
  assert.equal(framedBig.length, 7 + big.length + 2);
  assert.equal(dec.decode(framedBig.subarray(-2)), "\r\n");
});

Deno.test("a bulk copy re-framed as chunked frames every piece past the first 64 KiB in one reused buffer", async () => {
  // 4 MiB in reads of up to 256 KiB, as a socket gives them.
  const total = 4 * 1024 * 1024;
  let off = 0;
  const src = new BufferedReader({
    read(buf: Uint8Array) {
      if (off >= total) return Promise.resolve(null);
      const n = Math.min(buf.length, total - off, 256 * 1024);
      // Each 64 KiB of the body holds one letter, a..z in turn, so a piece out of place shows.
      for (let i = 0; i < n;) {
        const block = Math.floor((off + i) / 65536);
        const end = Math.min(n, (block + 1) * 65536 - off);
        buf.fill(0x61 + block % 26, i, end);
        i = end;
      }
      off += n;
      return Promise.resolve(n);
    },
  });
  const buffers = new Set<ArrayBufferLike>();
  let framed = "";
  const out = {
    write(p: Uint8Array) {
      if (p.length > 64 * 1024) buffers.add(p.buffer);
      framed += dec.decode(p);
      return Promise.resolve(p.length);
    },
  };
  assert.equal(await copyLength(src, out, total, { out: "chunked" }), total);
  const { payload } = unchunk(framed);
  assert.equal(payload.length, total);
  for (let at = 0; at < total; at += 65536) {
    assert.equal(payload.charCodeAt(at), 0x61 + (at / 65536) % 26, `byte ${at}`);
    assert.equal(payload.charCodeAt(at + 65535), 0x61 + (at / 65536) % 26, `byte ${at + 65535}`);
  }
  // A new array a piece was garbage outside the heap: 90 MiB of it during a 256 MiB upload.
  assert.equal(buffers.size, 1, `${buffers.size} buffers for the large chunks`);
});
