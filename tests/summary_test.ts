import assert from "node:assert/strict";
import type { ExchangeRecord } from "../lib/log.ts";
import { destination, Summary } from "../lib/summary.ts";

function ex(over: Partial<ExchangeRecord>): ExchangeRecord {
  return {
    id: 1,
    start: 0,
    clientIp: "127.0.0.1",
    clientPort: 1,
    method: "GET",
    target: "http://a.test/x",
    bytesUp: 0,
    bytesDown: 0,
    tunnel: false,
    opened: true,
    status: 200,
    totalMs: 10,
    ...over,
  };
}

Deno.test("destination() names host:port for URLs, CONNECT targets and nothing", () => {
  assert.equal(destination(ex({})), "a.test:80");
  assert.equal(destination(ex({ target: "http://A.test:8080/" })), "a.test:8080");
  assert.equal(destination(ex({ target: "http://[::1]/" })), "[::1]:80");
  assert.equal(destination(ex({ target: "http://h:/" })), "h:80");
  assert.equal(destination(ex({ target: "b.test:443", tunnel: true })), "b.test:443");
  assert.equal(destination(ex({ target: "-" })), "-");
});

Deno.test("Summary counts per host, sorts by traffic, and reports percentiles and errors", () => {
  const s = new Summary();
  for (let i = 1; i <= 100; i++) s.add(ex({ totalMs: i, bytesDown: 10 }));
  s.add(
    ex({
      target: "http://big.test/",
      bytesDown: 5000,
      status: 502,
      error: "x",
      errorKind: "dns_error",
    }),
  );
  s.add(ex({ target: "-", status: 400, error: "bad", errorKind: "http_request_error" }));
  const hosts = s.hosts();
  assert.deepEqual(hosts.map((h) => h.host), ["big.test:80", "a.test:80", "-"]);
  const a = hosts[1]!;
  assert.equal(a.requests, 100);
  assert.deepEqual(a.status, { "2xx": 100 });
  assert.equal(a.bytesDown, 1000);
  assert.equal(a.p50Ms, 50); // nearest rank
  assert.equal(a.p95Ms, 95);
  assert.equal(a.maxMs, 100);
  assert.deepEqual(hosts[0]!.errors, { dns_error: 1 });
  const table = s.table().split("\n");
  assert.match(table[0]!, /^summary: 102 exchange\(s\) in \d+ s/);
  assert.match(table[2]!, /^big\.test:80 +1 +0 +0 +0 +0 +1 +0 +0 +5000 .* dns_error=1$/);
  // A worker's counts merge in.
  const other = new Summary();
  other.add(ex({ bytesDown: 7 }));
  s.merge(other.raw());
  const merged = s.hosts().find((h) => h.host === "a.test:80")!;
  assert.equal(merged.requests, 101);
  assert.equal(merged.bytesDown, 1007);
});
