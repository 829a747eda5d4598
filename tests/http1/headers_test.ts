import assert from "node:assert/strict";
import {
  borrowOut,
  clientWantsKeepAlive,
  connectionFields,
  headBytes,
  OUT_SIZE,
  returnOut,
} from "../../lib/http1/headers.ts";
import type { RequestHead } from "../../lib/http1/parse.ts";

function head(minor: 0 | 1, fields: [string, string][] = []): RequestHead {
  return { method: "GET", target: "http://a.test/", minor, fields };
}

Deno.test("the keep-alive decision and the Connection field live in one place (RFC 9112 §9.3)", () => {
  assert.equal(clientWantsKeepAlive(head(1)), true);
  assert.equal(clientWantsKeepAlive(head(1, [["Connection", "close"]])), false);
  assert.equal(clientWantsKeepAlive(head(1, [["Proxy-Connection", "Close"]])), false);
  assert.equal(clientWantsKeepAlive(head(0)), false);
  assert.equal(clientWantsKeepAlive(head(0, [["Connection", "Keep-Alive"]])), true);
  assert.equal(clientWantsKeepAlive(head(0, [["Proxy-Connection", "keep-alive"]])), true);
  assert.deepEqual(connectionFields(false, 1), [["Connection", "close"]]);
  assert.deepEqual(connectionFields(false, 0), [["Connection", "close"]]);
  assert.deepEqual(connectionFields(true, 1), []);
  assert.deepEqual(connectionFields(true, 0), [["Connection", "keep-alive"]]);
});

Deno.test("headBytes() writes a head byte for byte (obs-text too) and its body, into a lent buffer when they fit", () => {
  const head = { line: "HTTP/1.1 200 OK", fields: [["Content-Length", "2"]] as [string, string][] };
  const ascii = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
  const out = borrowOut();
  const both = headBytes(head, new Uint8Array([111, 107]), out);
  assert.equal(both.buffer, out.buffer); // no new array
  assert.equal(new TextDecoder().decode(both), ascii + "ok");
  // A char past ASCII is one byte (ISO-8859-1), not UTF-8's two.
  const latin = headBytes({ line: "HTTP/1.1 200 OK", fields: [["X", "caf\xe9\xff"]] }, null, out);
  assert.deepEqual([...latin.subarray(20, 25)], [99, 97, 102, 0xe9, 0xff]);
  assert.equal(latin.length, "HTTP/1.1 200 OK\r\nX: caf\xe9\xff\r\n\r\n".length);
  // Too big for the buffer: a new array.
  const big = headBytes(head, new Uint8Array(OUT_SIZE), out);
  assert.notEqual(big.buffer, out.buffer);
  assert.equal(big.length, ascii.length + OUT_SIZE);
  returnOut(out);
  assert.equal(borrowOut(), out);
});
