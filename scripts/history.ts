/**
 * Measures `--history` at a million exchanges: the time to write them (in the proxy's batches),
 * the size on disk, and typical queries of the history subcommand (the top hosts of one client
 * since a time, the newest exchanges of one host, the failures of the last day).
 *
 * Run: `deno task history [--rows N]` (default 1000000). Writes to a temporary folder.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { History, openHistory } from "../lib/observe/history.ts";
import type { ExchangeRecord } from "../lib/exchange.ts";
import { printLine } from "../lib/observe/log.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rows: { type: "string", default: "1000000" } },
});
const count = Number(values.rows);
const dir = await Deno.makeTempDir();
try {
  const file = `${dir}/history.db`;
  const h = new History(file, { maxAgeMs: 30 * 86_400_000, maxBytes: 1024 ** 4, diag: printLine });
  const now = Date.now();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const ex: ExchangeRecord = {
      id: i,
      // A day of traffic, oldest first: 200 clients, 5,000 hosts, some failures.
      start: now - 86_400_000 + Math.floor((i / count) * 86_400_000),
      clientIp: `10.0.${(i % 200) >> 8}.${i % 200}`,
      clientPort: 40000 + (i % 20000),
      method: "GET",
      target: `http://h${i % 5000}.example.test/path/${i}`,
      destination: `h${i % 5000}.example.test:80`,
      upstreamIp: "192.0.2.1",
      upstreamPort: 80,
      status: i % 50 === 0 ? 502 : 200,
      bytesUp: 0,
      bytesDown: 1000 + (i % 5000),
      totalMs: 5 + (i % 100),
      tunnel: false,
      opened: true,
      ...(i % 50 === 0
        ? { error: "Cannot connect", errorKind: "connection_refused" as const }
        : {}),
    };
    h.closed(ex);
  }
  h.close();
  const writeS = (performance.now() - t0) / 1000;
  let bytes = 0;
  for (const f of Deno.readDirSync(dir)) bytes += Deno.statSync(`${dir}/${f.name}`).size;
  printLine(
    `${count.toLocaleString("en-US")} exchanges written in ${writeS.toFixed(1)} s ` +
      `(${((writeS * 1e6) / count).toFixed(1)} µs each, in batches of 5,000), ` +
      `${(bytes / 2 ** 20).toFixed(0)} MiB on disk (${(bytes / count).toFixed(0)} bytes each)`,
  );
  const db = openHistory(file);
  const time = (what: string, sql: string, ...params: (string | number)[]) => {
    const q = db.prepare(sql);
    q.all(...params); // warm
    const t = performance.now();
    const rows = q.all(...params);
    printLine(`  ${what}: ${(performance.now() - t).toFixed(1)} ms (${rows.length} rows)`);
  };
  time(
    "top 10 hosts of one client in the last 6 hours",
    "SELECT host, count(*) n, sum(bytes_down) b FROM exchanges WHERE client_ip = ? AND time >= ? " +
      "GROUP BY host ORDER BY b DESC LIMIT 10",
    "10.0.0.7",
    now - 6 * 3_600_000,
  );
  time(
    "newest 50 exchanges of one host",
    "SELECT * FROM exchanges WHERE (host = ? OR (host >= ? AND host < ?)) ORDER BY time DESC LIMIT 50",
    "h42.example.test",
    "h42.example.test:",
    "h42.example.test;",
  );
  time(
    "every 5xx of the last hour",
    "SELECT * FROM exchanges WHERE status >= 500 AND status < 600 AND time >= ? ORDER BY time DESC",
    now - 3_600_000,
  );
  time(
    "top 10 hosts of the whole day",
    "SELECT host, count(*) n FROM exchanges WHERE time >= ? GROUP BY host ORDER BY n DESC LIMIT 10",
    now - 86_400_000,
  );
  db.close();
} finally {
  await Deno.remove(dir, { recursive: true });
}
