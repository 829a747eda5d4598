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
  const table = s.table().split("\n");
  assert.equal(table.length, 2 + 50 + 1);
  assert.equal(
    table.at(-1),
    `... ${MAX_HOSTS + 1 - 50} more host(s) (all of them: --summary-json)`,
  );
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
