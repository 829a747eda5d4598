import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import type { ExchangeRecord } from "../lib/exchange.ts";
import {
  clock,
  createLogger,
  CSV_HEADER,
  formatClf,
  formatCsv,
  formatJson,
  formatSquid,
  formatTextClose,
  formatTextOpen,
  LogFile,
} from "../lib/observe/log.ts";

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

Deno.test("text format logs an upgraded exchange (WebSocket) like a tunnel, naming the protocol", () => {
  const ex = record({
    status: 101,
    reason: "Switching Protocols",
    upgraded: "websocket",
    bytesUp: 10,
    bytesDown: 15,
    totalMs: 60_000,
  });
  assert.equal(
    formatTextClose(ex, true),
    "[14:11:02] 101 upgraded to websocket, closed 10 bytes up 15 bytes down 60000 ms #7",
  );
});

Deno.test("json format has every field in a stable order", () => {
  const line = formatJson(record({ clientIp: "::1", upstreamIp: "::1" }));
  assert.equal(
    line,
    '{"time":"2026-11-27T14:10:02.500Z","id":7,"client":"[::1]:50123","listener":null,"tls":false,"user":null,"method":"GET",' +
      '"url":"http://example.com/","upstream":"[::1]:80","upstream_conn":"new","parent":null,"status":200,"reason":"OK",' +
      '"bytes_up":0,"bytes_down":1256,"dns_ms":null,"connect_ms":12.3,"first_byte_ms":40.1,"total_ms":812.4,' +
      '"error":null,"cache":null}',
  );
});

Deno.test("createLogger() writes open and close lines to its sink, json only at close, none when quiet", () => {
  const lines: string[] = [];
  const text = createLogger({ sink: (l) => lines.push(l), utc: true });
  const ex = record({ opened: false });
  text.opened(ex);
  text.closed(ex);
  assert.deepEqual(lines, [
    "[14:10:02] GET http://example.com/ from 203.0.113.12 -> 198.51.100.34 #7",
    "[14:10:03] 200 OK 1256 bytes 812 ms #7",
  ]);
  lines.length = 0;
  const json = createLogger({ sink: (l) => lines.push(l), format: "json" });
  json.opened(record());
  json.closed(record());
  assert.equal(lines.length, 1);
  assert.equal(JSON.parse(lines[0]!).status, 200);
  lines.length = 0;
  const quiet = createLogger({
    sink: (l) => lines.push(l),
    quiet: true,
    diag: (l) => lines.push(`diag ${l}`),
  });
  quiet.opened(record());
  quiet.closed(record());
  quiet.info("hello");
  assert.deepEqual(lines, ["diag hello"]);
});

Deno.test("clf and combined are the NCSA formats, quoted fields escaped", () => {
  const ex = record({
    version: "HTTP/1.1",
    user: "alice",
    referer: 'http://r/"x"',
    userAgent: "curl/8",
  });
  assert.equal(
    formatClf(ex, true),
    '203.0.113.12 - alice [27/Nov/2026:14:10:02 +0000] "GET http://example.com/ HTTP/1.1" 200 1256',
  );
  assert.equal(
    formatClf(ex, true, true),
    '203.0.113.12 - alice [27/Nov/2026:14:10:02 +0000] "GET http://example.com/ HTTP/1.1" 200 1256 ' +
      '"http://r/\\x22x\\x22" "curl/8"',
  );
  const failed = record({ method: "-", target: "-", status: 400, bytesDown: 0 });
  assert.equal(formatClf(failed, true), '203.0.113.12 - - [27/Nov/2026:14:10:02 +0000] "-" 400 -');
});

Deno.test("csv rows follow the header and survive a real CSV parser, commas and quotes included", () => {
  const ex = record({
    error: 'upstream said "no", twice',
    dnsMs: 1.25,
    upstreamUse: "reused",
    listener: "127.0.0.1:3129",
    tls: true,
  });
  const rows = parse(`${CSV_HEADER}\n${formatCsv(ex)}\n`, { columns: true }) as Record<
    string,
    string
  >[];
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0], {
    time: "2026-11-27T14:10:02.500Z",
    id: "7",
    client: "203.0.113.12:50123",
    user: "",
    method: "GET",
    url: "http://example.com/",
    upstream: "198.51.100.34:80",
    upstream_conn: "reused",
    status: "200",
    reason: "OK",
    bytes_up: "0",
    bytes_down: "1256",
    dns_ms: "1.3",
    connect_ms: "12.3",
    first_byte_ms: "40.1",
    total_ms: "812.4",
    error: 'upstream said "no", twice',
    listener: "127.0.0.1:3129",
    tls: "tls",
    parent: "",
    cache: "",
  });
});

Deno.test("squid format has squid's columns and result codes", () => {
  assert.equal(
    formatSquid(record({ contentType: "text/html; charset=utf-8" })),
    "1795788602.500    812 203.0.113.12 TCP_MISS/200 1256 GET http://example.com/ - " +
      "HIER_DIRECT/198.51.100.34 text/html",
  );
  const tunnel = record({
    method: "CONNECT",
    target: "example.com:443",
    tunnel: true,
    bytesDown: 4032,
    user: "bob",
  });
  assert.match(
    formatSquid(tunnel),
    / TCP_TUNNEL\/200 4032 CONNECT example\.com:443 bob HIER_DIRECT\/198\.51\.100\.34 -$/,
  );
  const denied = record({ status: 403, bytesDown: 0 });
  delete denied.upstreamIp;
  assert.match(
    formatSquid(denied),
    / TCP_DENIED\/403 0 GET http:\/\/example\.com\/ - HIER_NONE\/- -$/,
  );
});

Deno.test("createLogger() writes the csv header first, unless told the file already has rows", () => {
  const lines: string[] = [];
  const log = createLogger({ format: "csv", sink: (l) => lines.push(l) });
  log.closed(record());
  assert.equal(lines[0], CSV_HEADER);
  assert.equal(lines.length, 2);
  const more: string[] = [];
  createLogger({ format: "csv", sink: (l) => more.push(l), csvHeader: false }).closed(record());
  assert.equal(more.length, 1);
});

Deno.test("LogFile writes every line once, in order, across flushes, with UTF-8 and a line bigger than its buffer", async () => {
  const path = await Deno.makeTempFile({ suffix: ".log" });
  try {
    const file = new LogFile(path);
    const lines: string[] = [];
    // 700 lines of about 200 bytes fill the 64 KiB buffer twice; one of 100,000 chars goes
    // straight out between them; non-ASCII takes up to 3 bytes a char.
    for (let i = 0; i < 700; i++) lines.push(`${i} ${"x".repeat(190)} é€`);
    lines.splice(350, 0, "big " + "y".repeat(100_000));
    for (const line of lines) file.write(line);
    file.close();
    assert.equal(await Deno.readTextFile(path), lines.join("\n") + "\n");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("clock: HH:MM:SS, the same text within a second and the next one after it, UTC and local kept apart", () => {
  const t = Date.UTC(2026, 11, 8, 13, 59, 59, 10);
  const local = (ms: number) => {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map((n) => String(n).padStart(2, "0")).join(":");
  };
  assert.equal(clock(t, true), "13:59:59");
  assert.equal(clock(t + 980, true), "13:59:59");
  assert.equal(clock(t + 990, true), "14:00:00");
  assert.equal(clock(t + 990, false), local(t + 990));
  assert.equal(clock(t, false), local(t));
  assert.equal(clock(t + 990, true), "14:00:00");
  assert.equal(clock(t - 60_000, true), "13:58:59");
  assert.equal(clock(t - 59_020, true), "13:58:59"); // 13:58:59.990
  assert.equal(clock(t - 59_010, true), "13:59:00");
});
