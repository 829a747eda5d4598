import assert from "node:assert/strict";
import { parse } from "csv-parse/sync";
import { runCli, startCli } from "../_fixtures/cli.ts";
import { curl, readAll, startHttpOrigin, startOrigin, startProxy } from "../_fixtures/servers.ts";
import { hasTool } from "../_fixtures/tools.ts";

/** One real exchange through a proxy logging in `format`; returns the log lines. */
async function logged(format: "clf" | "combined" | "csv" | "squid" | "json") {
  await using origin = startHttpOrigin(() =>
    new Response("twelve bytes", { headers: { "content-type": "text/plain; charset=utf-8" } })
  );
  await using proxy = startProxy({ utc: true }, { format });
  const res = await curl([
    "-x",
    proxy.addr,
    "-A",
    'agent "007"',
    "-e",
    "http://ref.test/",
    `http://127.0.0.1:${origin.port}/p?q=1`,
  ]);
  assert.equal(res.stdout, "twelve bytes");
  await proxy.waitForLine(format === "csv" ? /^\d{4}-/ : /./);
  return { lines: proxy.lines, port: origin.port };
}

Deno.test("each log format carries the real exchange, field by field", async (t) => {
  await t.step("combined", async () => {
    const { lines, port } = await logged("combined");
    const m =
      /^(\S+) - (\S+) \[(\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000)\] "([^"]*)" (\d{3}) (\S+) "([^"]*)" "([^"]*)"$/
        .exec(lines[0]!);
    assert.ok(m, lines[0]);
    assert.deepEqual(m.slice(1, 3), ["127.0.0.1", "-"]);
    assert.equal(m[4], `GET http://127.0.0.1:${port}/p?q=1 HTTP/1.1`);
    assert.deepEqual(m.slice(5), ["200", "12", "http://ref.test/", "agent \\x22007\\x22"]);
  });
  await t.step("clf", async () => {
    const { lines } = await logged("clf");
    assert.match(
      lines[0]!,
      /^127\.0\.0\.1 - - \[[^\]]+\] "GET http:\/\/127\.0\.0\.1:\d+\/p\?q=1 HTTP\/1\.1" 200 12$/,
    );
  });
  await t.step("csv", async () => {
    const { lines, port } = await logged("csv");
    const [row] = parse(lines.join("\n"), { columns: true }) as Record<string, string>[];
    assert.equal(row!.url, `http://127.0.0.1:${port}/p?q=1`);
    assert.equal(row!.upstream, `127.0.0.1:${port}`);
    assert.equal(row!.upstream_conn, "new");
    assert.equal(row!.status, "200");
    assert.equal(row!.bytes_down, "12");
    assert.equal(row!.dns_ms, "0");
    for (const k of ["connect_ms", "first_byte_ms", "total_ms"]) assert.ok(Number(row![k]) >= 0, k);
    assert.ok(Number(row!.first_byte_ms) <= Number(row!.total_ms));
  });
  await t.step("squid", async () => {
    const { lines, port } = await logged("squid");
    assert.match(
      lines[0]!,
      new RegExp(
        `^\\d+\\.\\d{3} +\\d+ 127\\.0\\.0\\.1 TCP_MISS/200 12 GET http://127\\.0\\.0\\.1:${port}/p\\?q=1 - HIER_DIRECT/127\\.0\\.0\\.1 text/plain$`,
      ),
    );
  });
  await t.step("json timings", async () => {
    const { lines } = await logged("json");
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.dns_ms, 0); // an IP literal needs no lookup
    assert.equal(entry.upstream_conn, "new");
    assert.ok(entry.connect_ms <= entry.first_byte_ms && entry.first_byte_ms <= entry.total_ms);
  });
});

Deno.test("--log-format csv writes its header once per file, not again when appending", async () => {
  await using origin = startHttpOrigin(() => new Response("x"));
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/access.csv`;
    for (let run = 0; run < 2; run++) {
      await using cli = await startCli([
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "csv",
        "--log-file",
        file,
      ], {
        denoFlags: [`--allow-write=${dir}`],
      });
      await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(await cli.stop(), 0);
    }
    const rows = parse(await Deno.readTextFile(file), { columns: true }) as Record<
      string,
      string
    >[];
    assert.equal(rows.length, 2);
    assert.ok(rows.every((r) => r.status === "200"));
    const bad = await runCli(["--log-format", "xml"]);
    assert.match(bad.stderr, /expected text, json, clf, combined, csv, squid/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP reopens --log-file under its name (logrotate), losing no line", async () => {
  await using origin = startHttpOrigin(() => new Response("x"));
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/access.log`;
    await using cli = await startCli(["--listen", "127.0.0.1:0", "--log-file", file], {
      denoFlags: [`--allow-write=${dir}`],
    });
    await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/before`]);
    // Lines are buffered but written within a second.
    for (let i = 0; i < 40 && !(await Deno.readTextFile(file)).includes("/before"); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await Deno.rename(file, `${file}.1`);
    cli.child.kill("SIGHUP");
    await new Promise((r) => setTimeout(r, 200));
    await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/after`]);
    assert.equal(await cli.stop(), 0); // exit flushes
    const old = await Deno.readTextFile(`${file}.1`);
    const fresh = await Deno.readTextFile(file);
    assert.match(old, /GET http:\/\/127\.0\.0\.1:\d+\/before /);
    assert.doesNotMatch(old, /\/after/);
    assert.match(fresh, /GET http:\/\/127\.0\.0\.1:\d+\/after /);
    assert.match(fresh, /\] 200 OK 1 bytes \d+ ms #2\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a log file that cannot be written (disk full) is reported once, and proxying goes on", async () => {
  await using origin = startHttpOrigin(() => new Response("still here"));
  // /dev/full fails every write with ENOSPC; Deno wants -A for a device file.
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--log-file", "/dev/full"], {
    denoFlags: ["-A"],
  });
  for (let i = 0; i < 3; i++) {
    const res = await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(res.stdout, "still here");
  }
  await cli.stderr.waitFor(/--log-file: cannot write to "\/dev\/full": No space left on device/);
  assert.equal(await cli.stop(), 0);
  assert.equal(cli.stderr.text.match(/cannot write/g)?.length, 1, "reported once");
});

const hasGoAccess = await hasTool("goaccess");

Deno.test({
  name:
    "GoAccess reads the clf and combined logs of real exchanges with no line rejected (needs goaccess)",
  ignore: !hasGoAccess, // .ci/run installs Debian's goaccess
  async fn() {
    for (const [format, goFormat] of [["combined", "COMBINED"], ["clf", "COMMON"]] as const) {
      const { lines } = await logged(format);
      const more = await logged(format);
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/access.log`, [...lines, ...more.lines].join("\n") + "\n");
        const out = await new Deno.Command("goaccess", {
          args: [
            `${dir}/access.log`,
            `--log-format=${goFormat}`,
            "--no-global-config",
            "-o",
            `${dir}/report.json`,
          ],
          stdout: "null",
          stderr: "piped",
        }).output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        const report = JSON.parse(await Deno.readTextFile(`${dir}/report.json`));
        assert.equal(report.general.total_requests, 2, format);
        assert.equal(report.general.valid_requests, 2, format);
        assert.equal(report.general.failed_requests, 0, format);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  },
});

Deno.test("no format can be forged: client and origin text is escaped to printable ASCII, CSV formulas are neutralised", async (t) => {
  const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
  // An origin whose reason phrase is a formula with a tab and a C1 CSI (0x9b) in it, and whose
  // Content-Type carries raw bytes.
  const reason = '=HYPERLINK("http://evil.test")\t\x9b2J';
  await using origin = startOrigin(async (c) => {
    for (;;) {
      if ((await c.readHead()) === null) return;
      await c.write(
        latin1(
          `HTTP/1.1 200 ${reason}\r\nContent-Type: text/html\x9b\xff\r\nContent-Length: 2\r\n\r\nok`,
        ),
      );
    }
  });
  // A method a spreadsheet reads as arithmetic, a target with raw bytes (C1 NEL, CSI), a
  // User-Agent with a tab and CSI, a Referer with an ESC-like byte sequence spelled out.
  const target = `http://127.0.0.1:${origin.port}/a\x85b\x9b[2J?x=\xe9`;
  const request = latin1(
    `-1+1 ${target} HTTP/1.1\r\nHost: x\r\nUser-Agent: a\tb\x9b[31m\r\n` +
      `Referer: \\x1b[2J\r\nConnection: close\r\n\r\n`,
  );
  for (const format of ["text", "json", "clf", "combined", "csv", "squid"] as const) {
    await t.step(format, async () => {
      await using proxy = startProxy({}, { format });
      using conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      await conn.write(request);
      assert.match(await readAll(conn), /^HTTP\/1\.1 200 /);
      await proxy.waitForLine(format === "text" ? / bytes / : /1\+1/);
      for (const line of proxy.lines) assert.match(line, /^[\x20-\x7e]*$/, `${format}: ${line}`);
      const all = proxy.lines.join("\n");
      if (format === "json") {
        // Escaped as \u00XX: the same text once parsed.
        const rec = JSON.parse(proxy.lines[0]!);
        assert.equal(rec.reason, reason);
        assert.equal(rec.url, target);
        assert.match(proxy.lines[0]!, /\\u009b/);
      } else {
        assert.ok(all.includes("/a\\x85b\\x9b[2J?x=\\xe9"), all);
      }
      if (format === "text") {
        assert.ok(all.includes('200 =HYPERLINK("http://evil.test")\\x09\\x9b2J'), all);
      }
      if (format === "combined") assert.ok(all.endsWith('"\\x5cx1b[2J" "a\\x09b\\x9b[31m"'), all);
      if (format === "squid") assert.match(all, / text\/html\\x9b\\xff$/);
      if (format === "csv") {
        const [, row] = parse(all) as string[][];
        assert.equal(row![4], "'-1+1");
        assert.equal(row![9], `'=HYPERLINK("http://evil.test")\\x09\\x9b2J`);
      }
    });
  }
});
