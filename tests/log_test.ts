import assert from "node:assert/strict";
import {
  createLogger,
  type ExchangeRecord,
  formatJson,
  formatTextClose,
  formatTextOpen,
} from "../lib/log.ts";

function record(over: Partial<ExchangeRecord> = {}): ExchangeRecord {
  return {
    id: 7,
    start: Date.UTC(2026, 10, 27, 14, 10, 2, 500),
    clientIp: "203.0.113.12", // documentation addresses (RFC 5737), formatter input only
    clientPort: 50123,
    method: "GET",
    target: "http://example.com/",
    upstreamIp: "198.51.100.34", // formatter input only
    upstreamPort: 80,
    upstreamUse: "new",
    status: 200,
    reason: "OK",
    bytesUp: 0,
    bytesDown: 1256,
    connectMs: 12.34,
    firstByteMs: 40.06,
    totalMs: 812.4,
    tunnel: false,
    opened: true,
    ...over,
  };
}

Deno.test("text format keeps the two-line shape, with id and duration after it", () => {
  assert.equal(
    formatTextOpen(record(), true),
    "[14:10:02] GET http://example.com/ from 203.0.113.12 -> 198.51.100.34 #7",
  );
  assert.equal(formatTextClose(record(), true), "[14:10:03] 200 OK 1256 bytes 812 ms #7");
});

Deno.test("text format puts the cause after the bytes and adds the request line if nothing was dialed", () => {
  const ex = record({
    status: 502,
    reason: "Bad Gateway",
    bytesDown: 0,
    totalMs: 3,
    opened: false,
    error: "DNS lookup failed: nosuchhost.invalid",
    target: "http://nosuchhost.invalid/",
  });
  delete ex.upstreamIp;
  delete ex.upstreamPort;
  assert.equal(
    formatTextClose(ex, true),
    "[14:10:02] GET http://nosuchhost.invalid/ from 203.0.113.12 #7\n" +
      "[14:10:02] 502 Bad Gateway 0 bytes (DNS lookup failed: nosuchhost.invalid) 3 ms #7",
  );
});

Deno.test("text format logs a tunnel's close with bytes each way and lifetime", () => {
  const ex = record({
    method: "CONNECT",
    target: "example.com:443",
    tunnel: true,
    reason: "Connection established",
    bytesUp: 517,
    bytesDown: 4032,
    totalMs: 2500,
  });
  assert.equal(
    formatTextClose(ex, true),
    "[14:10:05] tunnel closed 517 bytes up 4032 bytes down 2500 ms #7",
  );
});

Deno.test("json format has every field in a stable order", () => {
  const line = formatJson(record({ clientIp: "::1", upstreamIp: "::1" }));
  assert.equal(
    line,
    '{"time":"2026-11-27T14:10:02.500Z","id":7,"client":"[::1]:50123","user":null,"method":"GET",' +
      '"url":"http://example.com/","upstream":"[::1]:80","upstream_conn":"new","status":200,"reason":"OK",' +
      '"bytes_up":0,"bytes_down":1256,"connect_ms":12.3,"first_byte_ms":40.1,"total_ms":812.4,' +
      '"error":null}',
  );
});

Deno.test("createLogger() writes open and close lines to its sink, json only at close, none when quiet", () => {
  const lines: string[] = [];
  const text = createLogger({ sink: (l) => lines.push(l), utc: true });
  const ex = record({ opened: false });
  text.open(ex);
  text.close(ex);
  assert.deepEqual(lines, [
    "[14:10:02] GET http://example.com/ from 203.0.113.12 -> 198.51.100.34 #7",
    "[14:10:03] 200 OK 1256 bytes 812 ms #7",
  ]);
  lines.length = 0;
  const json = createLogger({ sink: (l) => lines.push(l), format: "json" });
  json.open(record());
  json.close(record());
  assert.equal(lines.length, 1);
  assert.equal(JSON.parse(lines[0]!).status, 200);
  lines.length = 0;
  const quiet = createLogger({
    sink: (l) => lines.push(l),
    quiet: true,
    diag: (l) => lines.push(`diag ${l}`),
  });
  quiet.open(record());
  quiet.close(record());
  quiet.info("hello");
  assert.deepEqual(lines, ["diag hello"]);
});
