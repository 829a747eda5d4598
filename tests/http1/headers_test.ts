import assert from "node:assert/strict";
import { clientWantsKeepAlive, connectionFields } from "../../lib/http1/headers.ts";
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
