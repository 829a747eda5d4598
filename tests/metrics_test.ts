import assert from "node:assert/strict";
import type { ExchangeRecord } from "../lib/exchange.ts";
import { Metrics } from "../lib/observe/metrics.ts";

function record(id: number): ExchangeRecord {
  return {
    id,
    start: 0,
    clientIp: "127.0.0.1",
    clientPort: 1,
    method: "GET",
    target: "-",
    bytesUp: 0,
    bytesDown: 0,
    tunnel: false,
    opened: false,
  };
}

Deno.test("Metrics keeps the latest exchanges in order, oldest first, at most `keep`", () => {
  const m = new Metrics(3);
  for (let id = 1; id <= 5; id++) m.closed(record(id));
  assert.deepEqual(m.recent().map((e) => e.id), [3, 4, 5]);
  const two = new Metrics(3);
  two.closed(record(9));
  assert.deepEqual(two.recent().map((e) => e.id), [9]);
});

Deno.test("Metrics gives only known methods a series of their own: any other is OTHER", () => {
  const m = new Metrics();
  for (let i = 0; i < 1000; i++) m.closed({ ...record(i), method: `X${i}`.padEnd(8000, "Z") });
  m.closed({ ...record(1000), method: "PATCH", status: 204 });
  const gauges = { connections: () => 0, idleUpstreams: () => 0 };
  const lines = m.render(gauges).split("\n").filter((l) =>
    l.startsWith("http_proxy_requests_total{")
  );
  assert.deepEqual(lines, [
    'http_proxy_requests_total{method="OTHER",status_class="none"} 1000',
    'http_proxy_requests_total{method="PATCH",status_class="2xx"} 1',
  ]);
});
