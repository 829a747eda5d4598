/**
 * `http-proxy history FILE`: answers from a `--history` database in the terminal: the exchanges
 * that match (newest first), or the top hosts, clients or users among them, as a table, CSV or
 * JSON. It reads while the proxy writes (WAL), and never changes the data.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { StartupError } from "../errors.ts";
import { asciiJson, csvField, escapeText, printLine } from "../observe/log.ts";
import {
  type HistoryQuery,
  HistoryQueryError,
  openHistory,
  queryHistory,
} from "../observe/history.ts";
import { parseDuration } from "./config.ts";

const USAGE = "usage: http-proxy history FILE [--since DUR|TIME] [--client IP] [--user NAME] " +
  "[--host HOST] [--status 200|4xx|none] [--top hosts|clients|users] [--format table|csv|json] " +
  "[--limit N]";

function fail(message: string): never {
  throw new StartupError(`history: ${message}`, 2);
}

/** `--since`: a duration back from now (`2h`, `7d`) or a date and time (`2026-11-27T09:00`). */
function since(text: string): number {
  const days = /^(\d+)d$/.exec(text);
  if (days) return Date.now() - Number(days[1]) * 86_400_000;
  if (/^\d/.test(text) && !/[-T:]/.test(text)) return Date.now() - parseDuration("since", text);
  const at = Date.parse(text);
  if (Number.isNaN(at)) fail(`--since: "${text}" is neither a duration (2h, 7d) nor a time`);
  return at;
}

/**
 * Runs the subcommand.
 *
 * @param args The arguments after `history`.
 * @returns The exit code.
 */
export function historyCommand(args: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        since: { type: "string", default: "24h" },
        client: { type: "string" },
        user: { type: "string" },
        host: { type: "string" },
        status: { type: "string" },
        top: { type: "string" },
        format: { type: "string", default: "table" },
        limit: { type: "string", default: "50" },
      },
    });
  } catch (err) {
    fail(`${(err as Error).message.split("\n")[0]}; ${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) fail(USAGE);
  const file = positionals[0]!;
  try {
    Deno.statSync(file);
  } catch (err) {
    throw new StartupError(`history: cannot open "${file}": ${(err as Error).message}`, 1);
  }
  const format = values.format;
  if (format !== "table" && format !== "csv" && format !== "json") {
    fail(`--format: "${format}" is not table, csv or json`);
  }
  const limit = Number(values.limit);
  if (!/^\d{1,6}$/.test(values.limit) || limit < 1) {
    fail(`--limit: "${values.limit}" is not 1 to 999999`);
  }
  const query: HistoryQuery = { since: since(values.since), limit };
  if (values.client) query.client = values.client;
  if (values.user) query.user = values.user;
  if (values.host) query.host = values.host;
  if (values.status) query.status = values.status;
  if (values.top !== undefined) query.top = values.top;
  const db = openHistory(file);
  let rows: Record<string, unknown>[];
  try {
    rows = queryHistory(db, query);
  } catch (err) {
    if (err instanceof HistoryQueryError) fail(`--${err.field}: ${err.message}`);
    throw err;
  } finally {
    db.close();
  }
  const columns = rows[0] ? Object.keys(rows[0]) : [];
  if (format === "json") {
    printLine(asciiJson(rows, 1));
  } else if (format === "csv") {
    printLine(
      [
        columns.join(","),
        ...rows.map((r) => columns.map((c) => csvField(r[c] as string)).join(",")),
      ].join("\n"),
    );
  } else if (rows.length === 0) {
    printLine("no exchange matches");
  } else {
    const cells = rows.map((r) => columns.map((c) => escapeText(String(r[c] ?? "-")).slice(0, 80)));
    const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
    const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
    printLine([line(columns), ...cells.map(line)].join("\n"));
  }
  return 0;
}
