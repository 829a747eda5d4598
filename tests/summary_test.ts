import assert from "node:assert/strict";
import type { ExchangeRecord } from "../lib/exchange.ts";
import { MAX_HOSTS, OTHER, Summary } from "../lib/observe/summary.ts";

function ex(over: Partial<ExchangeRecord> & { destination?: string | undefined }): ExchangeRecord {
  return <ExchangeRecord> {
    id: 1,
    start: 0,
    clientIp: "127.0.0.1",
    clientPort: 1,
    method: "GET",
    target: "http://a.test/x",
    destination: "a.test:80",
    bytesUp: 0,
    bytesDown: 0,
    tunnel: false,
    opened: true,
    status: 200,
    totalMs: 10,
    ...over,
  };
}

Deno.test("Summary holds at most MAX_HOSTS rows: the least traffic folds into (other), nothing is lost, the table is bounded", () => {
  const s = new Summary();
  s.closed(ex({ destination: "big.test:80", bytesDown: 1_000_000 }));
  const long = "x".repeat(10_000) + ".test:80";
  s.closed(ex({ destination: long, bytesDown: 500_000 }));
  for (let i = 0; i < 1200; i++) s.closed(ex({ destination: `h${i}.test:80`, bytesDown: 1 }));
  const hosts = s.hosts();
  assert.equal(hosts.length, MAX_HOSTS + 1);
  assert.deepEqual(hosts.slice(0, 2).map((h) => h.host), ["big.test:80", long]);
  const other = hosts.find((h) => h.host === OTHER)!;
  assert.equal(other.requests, 1202 - MAX_HOSTS);
  assert.equal(hosts.reduce((n, h) => n + h.requests, 0), 1202);
  assert.equal(hosts.reduce((n, h) => n + h.bytesDown, 0), 1_501_200);
  const lines = s.table().split("\n");
  // The host table, then the table of clients (every exchange came from one client).
  const table = lines.slice(0, lines.indexOf("by client, most traffic first"));
  assert.equal(table.length, 2 + 50 + 1);
  assert.equal(
    table.at(-1),
    `... ${MAX_HOSTS + 1 - 50} more host(s) (all of them: --summary-json)`,
  );
  assert.equal(lines.length, table.length + 3);
  assert.ok(table.every((l) => l.length < 300), "every line is bounded");
  assert.match(table[3]!, /^x{57}\.\.\. /);
  // Merging a worker's rows keeps the cap.
  const worker = new Summary();
  for (let i = 0; i < 500; i++) worker.closed(ex({ destination: `w${i}.test:80`, bytesDown: 2 }));
  s.merge(worker.raw());
  assert.equal(s.hosts().length, MAX_HOSTS + 1);
  assert.equal(s.hosts().reduce((n, h) => n + h.requests, 0), 1702);
});

Deno.test("Summary counts per host, sorts by traffic, and reports percentiles and errors", () => {
  const s = new Summary();
  for (let i = 1; i <= 100; i++) s.closed(ex({ totalMs: i, bytesDown: 10 }));
  s.closed(
    ex({
      target: "http://big.test/",
      destination: "big.test:80",
      bytesDown: 5000,
      status: 502,
      error: "x",
      errorKind: "dns_error",
    }),
  );
  const unparsed = ex({ target: "-", status: 400, error: "bad", errorKind: "http_request_error" });
  delete unparsed.destination;
  s.closed(unparsed);
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
  other.closed(ex({ bytesDown: 7 }));
  s.merge(other.raw());
  const merged = s.hosts().find((h) => h.host === "a.test:80")!;
  assert.equal(merged.requests, 101);
  assert.equal(merged.bytesDown, 1007);
});

Deno.test("merging workers' summaries without an (other) row yet still keeps MAX_HOSTS own rows", () => {
  const s = new Summary();
  const worker = new Summary();
  for (let i = 0; i < MAX_HOSTS; i++) s.closed(ex({ destination: `a${i}.test:80`, bytesDown: 5 }));
  worker.closed(ex({ destination: "b.test:80", bytesDown: 1 }));
  s.merge(worker.raw());
  const hosts = s.hosts();
  assert.equal(hosts.filter((h) => h.host !== OTHER).length, MAX_HOSTS);
  assert.equal(hosts.find((h) => h.host === OTHER)?.requests, 1);
});

Deno.test("Summary counts per client address and per user, with each one's top destinations, bounded like the hosts", () => {
  const s = new Summary();
  for (let i = 0; i < 5; i++) {
    s.closed(ex({ clientIp: "192.0.2.1", user: "ann", destination: "a.test:80", bytesDown: 100 }));
  }
  s.closed(ex({ clientIp: "192.0.2.1", user: "ann", destination: "b.test:80", bytesDown: 10 }));
  s.closed(ex({ clientIp: "192.0.2.2", destination: "a.test:80", bytesDown: 1, error: "x" }));
  assert.deepEqual(s.clients().map((c) => [c.key, c.requests, c.bytesDown, c.errors]), [
    ["192.0.2.1", 6, 510, 0],
    ["192.0.2.2", 1, 1, 1],
  ]);
  assert.deepEqual(s.clients()[0]!.top, [
    { host: "a.test:80", requests: 5 },
    { host: "b.test:80", requests: 1 },
  ]);
  assert.deepEqual(s.users().map((u) => [u.key, u.requests]), [["ann", 6]]);
  const text = s.table();
  assert.match(
    text,
    /\nby client, most traffic first\nclient {5}requests .* top destinations\n192\.0\.2\.1 .* a\.test:80 5, b\.test:80 1\n/,
  );
  assert.match(text, /\nby user, most traffic first\nuser .*\nann /);
  // A client that spreads over many destinations keeps a bounded top list.
  for (let i = 0; i < 100; i++) {
    s.closed(ex({ clientIp: "192.0.2.3", destination: `d${i}.test:80` }));
  }
  assert.ok(s.clients().find((c) => c.key === "192.0.2.3")!.top.length <= 3);
  // Thousands of clients: bounded, nothing lost.
  for (let i = 0; i < 1500; i++) s.closed(ex({ clientIp: `10.0.${i >> 8}.${i & 255}` }));
  assert.equal(s.clients().length, MAX_HOSTS + 1);
  assert.equal(s.clients().reduce((n, c) => n + c.requests, 0), 7 + 100 + 1500);
  // And they merge from workers.
  const merged = new Summary();
  merged.merge(s.raw());
  assert.deepEqual(merged.users(), s.users());
});

Deno.test("Summary counts the cache: hits of cacheable requests, bytes from the store, merged across threads", () => {
  const s = new Summary();
  s.closed(ex({ cache: "MISS", bytesDown: 100 }));
  s.closed(ex({ cache: "HIT", bytesDown: 100 }));
  s.closed(ex({ cache: "REFRESH_UNMODIFIED", bytesDown: 50 }));
  s.closed(ex({})); // not cacheable: not counted
  const worker = new Summary();
  worker.closed(ex({ cache: "CF_HIT", bytesDown: 10 }));
  s.merge(worker.raw());
  assert.deepEqual(s.toJSON().cache, { lookups: 4, hits: 3, servedBytes: 160 });
  assert.match(
    s.table(),
    /^cache: 3 of 4 cacheable request\(s\) answered from the cache \(75\.0%\), 160 bytes not fetched again$/m,
  );
  assert.equal(new Summary().toJSON().cache, undefined);
  assert.doesNotMatch(new Summary().table(), /^cache:/m);
});
