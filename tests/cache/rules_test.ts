// RFC 9111's rules as pure functions: parsing, storability, freshness, age, ranges.
import assert from "node:assert/strict";
import {
  cacheControl,
  cacheKey,
  cacheStatus,
  freshen,
  freshnessLifetime,
  ifRangeHolds,
  initialAge,
  notModified,
  notStorable,
  parseHttpDate,
  parseRange,
  usable,
  varyNames,
  varySignature,
} from "../../lib/cache/rules.ts";

const T = Date.UTC(1994, 10, 6, 8, 49, 37);

Deno.test("parseHttpDate() reads IMF-fixdate and the two obsolete forms, and nothing else (RFC 9110 §5.6.7)", () => {
  assert.equal(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), T);
  assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), T);
  assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994"), T);
  for (
    const bad of [
      "0",
      "-1",
      "",
      "Sun, 06 Nov 1994 08:49:37 UTC",
      "tomorrow",
      "Sun, 06 Foo 1994 08:49:37 GMT",
    ]
  ) {
    assert.equal(parseHttpDate(bad), undefined, bad);
  }
});

Deno.test("cacheControl() splits directives, unquotes arguments, ignores case and keeps the first of a repeat", () => {
  const cc = cacheControl([
    ["Cache-Control", 'Max-Age=60, no-cache="Set-Cookie, X", private'],
    ["cache-control", "max-age=5, s-maxage = 30"],
  ]);
  assert.equal(cc.get("max-age"), "60");
  assert.equal(cc.get("no-cache"), "Set-Cookie, X");
  assert.equal(cc.get("private"), "");
  assert.equal(cc.get("s-maxage"), "30");
});

Deno.test("notStorable() names why a response is not kept (RFC 9111 §3)", () => {
  const ok: [string, string][] = [["Cache-Control", "max-age=60"]];
  assert.equal(notStorable("GET", [], 200, ok), null);
  assert.equal(notStorable("POST", [], 200, ok), "method");
  assert.equal(notStorable("GET", [], 206, ok), "status");
  assert.equal(notStorable("GET", [], 304, ok), "status");
  assert.equal(notStorable("GET", [], 302, []), "no-freshness");
  assert.equal(notStorable("GET", [], 302, ok), null);
  assert.equal(notStorable("GET", [], 404, []), null); // heuristically cacheable
  assert.equal(notStorable("GET", [], 200, [["Cache-Control", "no-store, must-understand"]]), null);
  assert.equal(
    notStorable("GET", [], 299, [["Cache-Control", "must-understand, max-age=9"]]),
    "status",
  );
  assert.equal(
    notStorable("GET", [["Authorization", "x"]], 200, [["Cache-Control", "s-maxage=9"]]),
    null,
  );
  assert.equal(notStorable("GET", [], 200, [["Vary", "Accept, *"]]), "vary-star");
});

Deno.test("freshnessLifetime() and initialAge() follow RFC 9111 §4.2.1 and §4.2.3", () => {
  const date = "Sun, 06 Nov 1994 08:49:37 GMT";
  assert.equal(
    freshnessLifetime(200, [["Expires", "Sun, 06 Nov 1994 09:49:37 GMT"], ["Date", date]], T),
    3600,
  );
  assert.equal(freshnessLifetime(200, [["Cache-Control", "max-age=10"], ["Expires", "x"]], T), 10);
  assert.equal(freshnessLifetime(200, [["Cache-Control", "max-age=bogus"]], T), 0);
  assert.equal(
    freshnessLifetime(200, [["Last-Modified", "Sun, 06 Nov 1994 07:49:37 GMT"], ["Date", date]], T),
    360,
  );
  assert.equal(freshnessLifetime(302, [["Last-Modified", "Sun, 06 Nov 1994 07:49:37 GMT"]], T), 0);
  // Apparent age 10 s; Age 20 plus a 2 s round trip: 22 s.
  const timing = { requestTime: T + 8_000, responseTime: T + 10_000 };
  assert.equal(initialAge([["Date", date], ["Age", "20"]], timing), 22);
  assert.equal(initialAge([["Date", date]], timing), 10);
});

Deno.test("usable() weighs the request's directives against the stored response (RFC 9111 §5.2.1)", () => {
  const stored = {
    status: 200,
    fields: [["Cache-Control", "max-age=100"]] as [string, string][],
    initialAge: 0,
    responseTime: T,
  };
  assert.equal(usable(stored, [], T + 50_000).kind, "fresh");
  assert.equal(usable(stored, [["Cache-Control", "max-age=10"]], T + 50_000).kind, "validate");
  assert.equal(usable(stored, [["Cache-Control", "min-fresh=60"]], T + 50_000).kind, "validate");
  assert.equal(usable(stored, [], T + 150_000).kind, "validate");
  assert.equal(usable(stored, [["Cache-Control", "max-stale"]], T + 150_000).kind, "stale-ok");
  assert.equal(usable(stored, [["Cache-Control", "max-stale=10"]], T + 150_000).kind, "validate");
  assert.equal(usable(stored, [["Pragma", "no-cache"]], T).kind, "validate");
  // Pragma counts only without Cache-Control (§5.4).
  assert.equal(
    usable(stored, [["Pragma", "no-cache"], ["Cache-Control", "max-age=99"]], T).kind,
    "fresh",
  );
});

Deno.test("freshen() takes a 304's fields but never its Content-Length (RFC 9111 §3.2)", () => {
  const out = freshen(
    [["ETag", '"a"'], ["Content-Type", "text/plain"], ["X-Old", "1"]],
    [["ETag", '"a"'], ["X-Old", "2"], ["Content-Length", "0"], ["Connection", "close"]],
  );
  assert.deepEqual(out, [["Content-Type", "text/plain"], ["ETag", '"a"'], ["X-Old", "2"]]);
});

Deno.test("parseRange() and ifRangeHolds() answer one byte range from a complete body (RFC 9110 §14.1.2, §13.1.5)", () => {
  assert.deepEqual(parseRange("bytes=0-0", 10), { start: 0, end: 0 });
  assert.deepEqual(parseRange("bytes=5-", 10), { start: 5, end: 9 });
  assert.deepEqual(parseRange("bytes=8-100", 10), { start: 8, end: 9 });
  assert.deepEqual(parseRange("bytes=-100", 10), { start: 0, end: 9 });
  assert.equal(parseRange("bytes=10-", 10), "unsatisfiable");
  assert.equal(parseRange("bytes=0-1,4-5", 10), null);
  assert.equal(parseRange("items=0-1", 10), null);
  assert.equal(parseRange("bytes=5-2", 10), null);
  const stored: [string, string][] = [["ETag", '"s"'], [
    "Last-Modified",
    "Sun, 06 Nov 1994 08:49:37 GMT",
  ]];
  assert.equal(ifRangeHolds('"s"', stored), true);
  assert.equal(ifRangeHolds('W/"s"', stored), false);
  assert.equal(ifRangeHolds("Sun, 06 Nov 1994 08:49:37 GMT", stored), true);
  assert.equal(ifRangeHolds("Sun, 06 Nov 1994 08:49:38 GMT", stored), false);
});

Deno.test("notModified() prefers If-None-Match with weak comparison, else If-Modified-Since (RFC 9110 §13.2.2)", () => {
  const stored: [string, string][] = [["ETag", 'W/"x"'], [
    "Last-Modified",
    "Sun, 06 Nov 1994 08:49:37 GMT",
  ]];
  assert.equal(notModified([["If-None-Match", '"y", "x"']], stored), true);
  assert.equal(notModified([["If-None-Match", "*"]], stored), true);
  assert.equal(
    notModified(
      [["If-None-Match", '"y"'], ["If-Modified-Since", "Mon, 07 Nov 1994 08:49:37 GMT"]],
      stored,
    ),
    false,
  );
  assert.equal(notModified([["If-Modified-Since", "Mon, 07 Nov 1994 08:49:37 GMT"]], stored), true);
  assert.equal(
    notModified([["If-Modified-Since", "Sat, 05 Nov 1994 08:49:37 GMT"]], stored),
    false,
  );
});

Deno.test("Vary names and signatures, the key and Cache-Status", () => {
  assert.deepEqual(varyNames([["Vary", "Accept-Encoding, accept"], ["vary", "Accept-Encoding"]]), [
    "accept",
    "accept-encoding",
  ]);
  const names = ["accept-encoding"];
  assert.equal(
    varySignature(names, [["Accept-Encoding", "gzip,  br"]]),
    varySignature(names, [["accept-encoding", "gzip"], ["Accept-Encoding", "br"]]),
  );
  assert.notEqual(varySignature(names, [["Accept-Encoding", "gzip"]]), varySignature(names, []));
  assert.equal(cacheKey("example.test", 80, "/a?b"), "http://example.test/a?b");
  assert.equal(cacheKey("::1", 8080, "/"), "http://[::1]:8080/");
  assert.equal(cacheStatus("http-proxy", { hit: true, ttl: 12.7 }), "http-proxy; hit; ttl=12");
  assert.equal(
    cacheStatus("my proxy", { fwd: "uri-miss", fwdStatus: 200, stored: true }),
    '"my proxy"; fwd=uri-miss; fwd-status=200; stored',
  );
});
