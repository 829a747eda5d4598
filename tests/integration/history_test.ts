import assert from "node:assert/strict";
import { History, openHistory } from "../../lib/observe/history.ts";
import type { ExchangeRecord } from "../../lib/exchange.ts";
import { adminOf, runCli, startCli, startCliWithAdmin } from "../_fixtures/cli.ts";
import { curl, startHttpOrigin, startOkOrMissingOrigin } from "../_fixtures/servers.ts";

Deno.test("--history keeps every exchange across a restart, and the history subcommand answers as a table, CSV, JSON and tops", async () => {
  await using origin = startOkOrMissingOrigin();
  const dir = await Deno.makeTempDir();
  const db = `${dir}/history.db`;
  const flags = ["--listen", "127.0.0.1:0", "--history", db, "--quiet"];
  const perms = [`--allow-read=${dir}`, `--allow-write=${dir}`];
  try {
    const url = `http://127.0.0.1:${origin.port}`;
    for (const run of [1, 2]) {
      await using cli = await startCli(flags, { denoFlags: perms });
      for (const path of ["/a", "/b", "/missing"]) {
        assert.ok((await curl(["-x", cli.addrs[0]!, `${url}${path}?run=${run}`])).stdout !== "");
      }
      assert.equal(await cli.stop(), 0); // writes what is pending
    }
    const json = await runCli(["history", db, "--format", "json"], perms);
    assert.equal(json.code, 0, json.stderr);
    const rows = JSON.parse(json.stdout);
    assert.equal(rows.length, 6); // both runs
    assert.deepEqual(rows[0].url, `${url}/missing?run=2`); // newest first
    assert.equal(rows[0].status, 404);
    const top = await runCli(["history", db, "--top", "hosts"], perms);
    assert.match(
      top.stdout,
      new RegExp(
        `^host +requests +bytes_up +bytes_down +errors\\n127\\.0\\.0\\.1:${origin.port} +6 +0 +12 +0\\n$`,
      ),
    );
    const misses = await runCli(["history", db, "--status", "4xx", "--format", "csv"], perms);
    assert.equal(misses.stdout.trim().split("\n").length, 3); // header and two 404s
    const mine = await runCli(["history", db, "--client", "127.0.0.1", "--top", "clients"], perms);
    assert.match(mine.stdout, /\n127\.0\.0\.1 +6 /);
    const none = await runCli(["history", db, "--host", "elsewhere.test"], perms);
    assert.equal(none.stdout, "no exchange matches\n");
    const bad = await runCli(["history", db, "--top", "colours"], perms);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /^http-proxy: history: --top: "colours" is not hosts, clients or users/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a kill -9 while the history is being written leaves a database that opens and checks out", async () => {
  await using origin = startHttpOrigin(() => new Response("x"));
  const dir = await Deno.makeTempDir();
  const db = `${dir}/history.db`;
  try {
    await using cli = await startCli(["--listen", "127.0.0.1:0", "--history", db, "--quiet"], {
      denoFlags: [`--allow-read=${dir}`, `--allow-write=${dir}`],
    });
    // Pipelined requests on one connection keep the batches coming; the kill lands among them.
    const [host, port] = cli.addrs[0]!.split(":") as [string, string];
    using conn = await Deno.connect({ hostname: host, port: Number(port) });
    const one = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`;
    const sending = (async () => {
      for (let i = 0; i < 40; i++) await conn.write(new TextEncoder().encode(one.repeat(100)));
    })().catch(() => {});
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await cli.stop("SIGKILL"), 137);
    await sending;
    const check = openHistory(db);
    try {
      const integrity = check.prepare("PRAGMA integrity_check").get() as {
        integrity_check: string;
      };
      assert.equal(integrity.integrity_check, "ok");
      const { n } = check.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number };
      // Batches (a transaction each) written before the kill are all there; none half.
      assert.ok(n > 0, `${n} rows written before the kill`);
    } finally {
      check.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("history retention deletes rows past their age, and the oldest when the file is too big", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const record = (start: number, i: number): ExchangeRecord => ({
      id: i,
      start,
      clientIp: "127.0.0.1",
      clientPort: 1000,
      method: "GET",
      target: `http://h.test/${"p".repeat(200)}${i}`,
      destination: "h.test:80",
      status: 200,
      bytesUp: 0,
      bytesDown: 1,
      tunnel: false,
      opened: true,
    });
    const lines: string[] = [];
    const h = new History(`${dir}/h.db`, {
      maxAgeMs: 3_600_000,
      maxBytes: 1024 ** 3,
      diag: (l) => lines.push(l),
    });
    const now = Date.now();
    for (let i = 0; i < 100; i++) h.closed(record(now - 7_200_000, i)); // two hours old
    for (let i = 0; i < 100; i++) h.closed(record(now, 100 + i));
    h.flush();
    h.retain();
    h.close();
    const sized = new History(`${dir}/h.db`, {
      maxAgeMs: 3_600_000,
      maxBytes: 16 * 1024,
      diag: (l) => lines.push(l),
    });
    for (let i = 0; i < 2000; i++) sized.closed(record(now + i, 1000 + i));
    sized.flush();
    sized.retain();
    sized.close();
    const db = openHistory(`${dir}/h.db`);
    try {
      const { n, oldest } = db.prepare("SELECT count(*) AS n, min(id) AS oldest FROM exchanges")
        .get() as {
          n: number;
          oldest: number;
        };
      assert.ok(n > 0 && n < 2100, `${n} rows kept`);
      assert.ok(oldest >= 100, "the two-hour-old rows are gone");
      const newest = db.prepare("SELECT max(id) AS id FROM exchanges").get() as { id: number };
      assert.equal(newest.id, 2999, "the newest rows stay");
    } finally {
      db.close();
    }
    assert.deepEqual(lines, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with --workers 2, the history and the HAR file get every worker's exchanges", async () => {
  await using origin = startHttpOrigin(() => new Response("w"));
  const dir = await Deno.makeTempDir();
  try {
    const cli = await startCli(
      [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--history",
        `${dir}/h.db`,
        "--har",
        `${dir}/x.har`,
        "--quiet",
      ],
      { denoFlags: ["--unstable-net", "--allow-read", `--allow-write=${dir}`] },
    );
    // Separate connections, so both workers take some.
    for (let i = 0; i < 12; i++) {
      assert.equal(
        (await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/${i}`])).stdout,
        "w",
      );
    }
    assert.equal(await cli.stop(), 0);
    const har = JSON.parse(await Deno.readTextFile(`${dir}/x.har`));
    assert.equal(har.log.entries.length, 12);
    const db = openHistory(`${dir}/h.db`);
    try {
      const { n, ids } = db.prepare(
        "SELECT count(*) AS n, group_concat(id % 2) AS ids FROM exchanges",
      ).get() as {
        n: number;
        ids: string;
      };
      assert.equal(n, 12);
      // Exchange ids are odd from the main thread and even from the worker (step 2).
      assert.ok(ids.includes("0") && ids.includes("1"), `both threads wrote: ${ids}`);
    } finally {
      db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/api/history answers a time range and the filters from the live database, and says what is wrong", async () => {
  await using origin = startOkOrMissingOrigin();
  const dir = await Deno.makeTempDir();
  const db = `${dir}/history.db`;
  const perms = [`--allow-read=${dir}`, `--allow-write=${dir}`];
  try {
    await using cli = await startCli(
      ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--history", db, "--quiet"],
      { denoFlags: perms },
    );
    const admin = await adminOf(cli);
    type Answer = { status: number; body: { rows: Record<string, unknown>[]; error: string } };
    const api = async (query: string): Promise<Answer> => {
      const res = await fetch(`http://${admin}/api/history${query}`);
      return { status: res.status, body: await res.json() };
    };
    const before = Date.now();
    for (const path of ["/a", "/missing"]) {
      await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}${path}`]);
    }
    await curl(["-x", cli.addrs[0]!, `http://localhost:${origin.port}/b`]);
    // Rows are written in batches once a second.
    let all: Answer;
    for (let i = 0;; i++) {
      all = await api("");
      if (all.body.rows.length === 3 || i === 40) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(all.status, 200);
    assert.deepEqual(all.body.rows.map((r) => new URL(String(r.url)).pathname), [
      "/b",
      "/missing",
      "/a",
    ]);
    const host = await api(`?host=localhost&since=${new Date(before).toISOString()}`);
    assert.deepEqual(host.body.rows.map((r) => r.url), [`http://localhost:${origin.port}/b`]);
    assert.equal((await api("?status=4xx")).body.rows[0]!.status, 404);
    assert.equal((await api(`?until=${before}`)).body.rows.length, 0);
    const top = await api("?top=hosts");
    assert.deepEqual(top.body.rows.map((r) => [r.host, r.requests]), [
      [`127.0.0.1:${origin.port}`, 2],
      [`localhost:${origin.port}`, 1],
    ]);
    assert.equal((await api("?limit=1")).body.rows.length, 1);
    for (
      const [query, error] of [
        ["?status=teapot", /^status: "teapot" is not a status/],
        ["?top=colours", /^top: "colours" is not hosts, clients or users/],
        ["?since=yesterday", /^since: "yesterday" is not a time/],
        ["?limit=5000", /^limit: "5000" is not 1 to 1000/],
        ["?colour=red", /^unknown parameter "colour"/],
      ] as const
    ) {
      const bad = await api(query);
      assert.equal(bad.status, 400, query);
      assert.match(bad.body.error, error);
    }
    assert.equal(await cli.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("/api/history without --history is a 404 that says how to turn it on", async () => {
  await using cli = await startCliWithAdmin();
  const { admin } = cli;
  const res = await fetch(`http://${admin}/api/history`);
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), {
    error: "the history is off: start the proxy with --history FILE",
  });
  assert.equal(await cli.stop(), 0);
});
