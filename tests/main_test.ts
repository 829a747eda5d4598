import assert from "node:assert/strict";
import { hashLine } from "../lib/policy/auth.ts";
import { ROOT, runCli, startCli } from "./_fixtures/cli.ts";
import { curl, readAll, readUntil, startHttpOrigin, startOrigin } from "./_fixtures/servers.ts";

Deno.test("--help lists every flag with its default; --version prints the version", async () => {
  const help = await runCli(["--help"]);
  assert.equal(help.code, 0);
  for (
    const flag of [
      "--listen ADDR",
      "--connect-ports",
      "--max-header-bytes",
      "--header-timeout",
      "--idle-timeout",
      "--connect-timeout",
      "--response-timeout",
      "--grace",
      "--log-format",
      "--log-file",
      "--quiet",
      "--utc",
      "--help",
      "--version",
    ]
  ) assert.ok(help.stdout.includes(flag), `${flag} missing from --help`);
  for (const def of ["[127.0.0.1:8081]", "[443]", "[64KiB]", "[10s]", "[60s]", "[5s]", "[text]"]) {
    assert.ok(help.stdout.includes(def), `${def} missing from --help`);
  }
  const version = await runCli(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^http-proxy \d+\.\d+\.\d+\n$/);
});

Deno.test("a bad command line exits 2 with one line naming the flag", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--bogus"], /^http-proxy: unknown flag --bogus \(see --help\)\n$/],
    [["--listen", "nonsense"], /^http-proxy: --listen: bad address "nonsense"/],
    [["--header-timeout", "10 parsecs"], /^http-proxy: --header-timeout: bad duration/],
    [["--log-format", "yaml"], /^http-proxy: --log-format: unknown format "yaml"/],
  ];
  for (const [args, re] of cases) {
    await t.step(args.join(" "), async () => {
      const res = await runCli(args);
      assert.equal(res.code, 2);
      assert.match(res.stderr, re);
      assert.equal(res.stderr.trimEnd().split("\n").length, 1, res.stderr);
      assert.equal(res.stdout, "");
    });
  }
});

Deno.test("an address already in use exits 1 with one line", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const res = await runCli(["--listen", `127.0.0.1:${taken.addr.port}`]);
  assert.equal(res.code, 1);
  assert.equal(
    res.stderr,
    `http-proxy: cannot listen on 127.0.0.1:${taken.addr.port}: address already in use\n`,
  );
});

Deno.test("--log-file without write permission exits 2 with a hint", async () => {
  const res = await runCli(["--log-file", "/tmp/nowhere.log"]);
  assert.equal(res.code, 2);
  assert.match(
    res.stderr,
    /--log-file: no permission to write "\/tmp\/nowhere\.log"; run with --allow-write=\/tmp\/nowhere\.log/,
  );
});

Deno.test("the CLI listens on every --listen address, proxies curl -x, logs, and stops on SIGTERM", async () => {
  await using origin = startHttpOrigin(() => new Response("smoke"));
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--utc"]);
  assert.equal(cli.addrs.length, 2);
  assert.match(cli.addrs[0]!, /^127\.0\.0\.1:\d+$/);
  assert.match(cli.addrs[1]!, /^\[::1\]:\d+$/);
  for (const addr of cli.addrs) {
    const res = await curl(["-x", `http://${addr}`, `http://127.0.0.1:${origin.port}/smoke`]);
    assert.equal(res.stdout, "smoke");
  }
  await cli.stdout.waitFor(
    new RegExp(
      `\\] GET http://127\\.0\\.0\\.1:${origin.port}/smoke from ::1 -> 127\\.0\\.0\\.1 \\(reused\\) #2\\n`,
    ),
  );
  await cli.stdout.waitFor(/\] 200 OK 5 bytes \d+ ms #2\n/);
  assert.equal(await cli.stop("SIGTERM"), 0);
  assert.match(cli.stderr.text, /SIGTERM: shutting down/);
  // stderr holds the startup, policy and shutdown lines and the exit summary, nothing else.
  const lines = cli.stderr.text.trimEnd().split("\n");
  assert.match(lines[0]!, /listening on/);
  assert.equal(
    lines[1]!,
    "policy: clients loopback only, no authentication; destinations: this host: clients on it " +
      "only; link-local and metadata: denied; private networks: reachable",
  );
  assert.match(lines[2]!, /^SIGTERM: shutting down/);
  assert.match(
    lines[3]!,
    /^summary: 2 exchange\(s\) in \d+ s, by destination, most traffic first$/,
  );
  assert.match(
    lines[4]!,
    /^host +requests +1xx +2xx +3xx +4xx +5xx +none +bytes up +bytes down +p50 ms +p95 ms +max ms +errors$/,
  );
  assert.match(
    lines[5]!,
    new RegExp(
      `^127\\.0\\.0\\.1:${origin.port} +2 +0 +2 +0 +0 +0 +0 +0 +10 +[\\d.]+ +[\\d.]+ +[\\d.]+ +-$`,
    ),
  );
  // Then who asked: one request from each loopback address.
  assert.equal(lines[6], "by client, most traffic first");
  assert.match(lines[7]!, /^client +requests +bytes up +bytes down +errors +top destinations$/);
  assert.deepEqual(
    lines.slice(8, 10).map((l) => l.split(/ +/).slice(0, 5)).sort(),
    [["127.0.0.1", "1", "0", "5", "0"], ["::1", "1", "0", "5", "0"]],
  );
  assert.deepEqual(lines.slice(10), ["stopped"]);
});

Deno.test("--log-file appends json lines and --quiet keeps stdout empty", async () => {
  await using origin = startHttpOrigin(() => new Response("to file"));
  const dir = await Deno.makeTempDir();
  const file = `${dir}/access.log`;
  await Deno.writeTextFile(file, "existing line\n");
  try {
    await using cli = await startCli([
      "--listen",
      "127.0.0.1:0",
      "--log-format",
      "json",
      "--log-file",
      file,
    ], {
      denoFlags: [`--allow-write=${dir}`],
    });
    const res = await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/f`]);
    assert.equal(res.stdout, "to file");
    assert.equal(await cli.stop("SIGINT"), 0);
    const lines = (await Deno.readTextFile(file)).trimEnd().split("\n");
    assert.equal(lines[0], "existing line");
    assert.equal(lines.length, 2);
    const entry = JSON.parse(lines[1]!);
    assert.deepEqual(Object.keys(entry), [
      "time",
      "id",
      "client",
      "listener",
      "tls",
      "user",
      "method",
      "url",
      "upstream",
      "upstream_conn",
      "parent",
      "status",
      "reason",
      "bytes_up",
      "bytes_down",
      "dns_ms",
      "connect_ms",
      "first_byte_ms",
      "total_ms",
      "error",
      "cache",
    ]);
    assert.equal(entry.url, `http://127.0.0.1:${origin.port}/f`);
    assert.equal(entry.upstream, `127.0.0.1:${origin.port}`);
    assert.equal(entry.status, 200);
    assert.equal(entry.bytes_down, 7);
    assert.match(entry.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.match(entry.client, /^127\.0\.0\.1:\d+$/);
    assert.equal(cli.stdout.text, "");

    await using quiet = await startCli(["--listen", "127.0.0.1:0", "--quiet"]);
    await curl(["-x", quiet.addrs[0]!, `http://127.0.0.1:${origin.port}/q`]);
    assert.equal(await quiet.stop(), 0);
    assert.equal(quiet.stdout.text, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGINT lets an exchange in flight finish within --grace, then exits 0", async () => {
  const { promise: gotRequest, resolve } = Promise.withResolvers<void>();
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    resolve();
    await new Promise((r) => setTimeout(r, 300));
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
  });
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--grace", "5s"]);
  const [host, port] = cli.addrs[0]!.split(":");
  using conn = await Deno.connect({ hostname: host!, port: Number(port) });
  await conn.write(
    new TextEncoder().encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`),
  );
  await gotRequest;
  // An idle keep-alive connection is closed at once, not waited for.
  using idle = await Deno.connect({ hostname: host!, port: Number(port) });
  cli.child.kill("SIGINT");
  assert.equal(await readAll(idle), "");
  const text = await readAll(conn);
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Connection: close\r\n\r\nlate$/);
  assert.equal(await cli.stop("SIGINT"), 0);
  assert.match(cli.stdout.text, / 200 OK 4 bytes /);
});

Deno.test("--grace cuts off an exchange that takes longer", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nslow");
    await c.reader.read(1); // until the proxy closes
  });
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--grace", "200ms"]);
  const [host, port] = cli.addrs[0]!.split(":");
  using conn = await Deno.connect({ hostname: host!, port: Number(port) });
  await conn.write(
    new TextEncoder().encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`),
  );
  await cli.stdout.waitFor(/ GET /);
  const started = Date.now();
  assert.equal(await cli.stop("SIGTERM"), 0);
  assert.ok(Date.now() - started < 4000, "exited within the grace period and some slack");
  assert.match(await readAll(conn), /\r\n\r\nslow$/);
});

Deno.test("--workers 2 serves from two threads with unique exchange ids and stops on SIGTERM", async () => {
  await using origin = startHttpOrigin(() => new Response("w"));
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--workers", "2"], {
    denoFlags: ["--unstable-net", `--allow-read=${ROOT}`],
  });
  assert.match(cli.stderr.text, /listening on 127\.0\.0\.1:\d+ \(2 workers\)/);
  // Each curl is a new connection; the kernel spreads them over both workers' listeners.
  for (let i = 0; i < 24; i++) {
    const res = await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/${i}`]);
    assert.equal(res.stdout, "w", res.stderr + cli.stderr.text);
  }
  const done = () => [...cli.stdout.text.matchAll(/\] 200 OK 1 bytes \d+ ms #(\d+)\n/g)];
  for (let i = 0; i < 200 && done().length < 24; i++) await new Promise((r) => setTimeout(r, 25));
  const ids = done().map((m) => Number(m[1]));
  assert.equal(new Set(ids).size, 24, "ids are unique");
  assert.ok(ids.some((id) => id % 2 === 1), "worker 0 (odd ids) served some");
  assert.ok(ids.some((id) => id % 2 === 0), "worker 1 (even ids) served some");
  assert.equal(await cli.stop("SIGTERM"), 0);
  assert.match(cli.stderr.text, /stopped\n$/);
});

Deno.test("--workers without --unstable-net or read access exits 2 saying what is missing", async () => {
  const noUnstable = await runCli(["--listen", "127.0.0.1:0", "--workers", "2"], [
    `--allow-read=${ROOT}`,
  ]);
  assert.equal(noUnstable.code, 2);
  assert.match(
    noUnstable.stderr,
    /^http-proxy: --workers: needs the --unstable-net flag of deno run/,
  );
  const noRead = await runCli(["--listen", "127.0.0.1:0", "--workers", "2"], ["--unstable-net"]);
  assert.equal(noRead.code, 2);
  assert.match(
    noRead.stderr,
    /^http-proxy: --workers: each worker loads this program again; run with --allow-read=/,
  );
  const bad = await runCli(["--workers", "0"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--workers: bad count "0"/);
});

Deno.test("listening on a non-loopback address without --allow or --open refuses to start", async () => {
  const res = await runCli(["--listen", "0.0.0.0:0"]);
  assert.equal(res.code, 2);
  assert.equal(
    res.stderr,
    "http-proxy: --listen 0.0.0.0:0: a proxy on a non-loopback address serves anyone who " +
      "reaches it; name its clients with --allow CIDR, require --auth, or pass --open\n",
  );
  const v6 = await runCli(["--listen", "[::]:0"]);
  assert.equal(v6.code, 2);
  assert.match(v6.stderr, /--listen \[::\]:0: a proxy on a non-loopback address/);
  const bad = await runCli(["--allow", "198.51.100.0/40"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^http-proxy: --allow: bad address range "198\.51\.100\.0\/40"/);
});

Deno.test("--config reads flags from a JSON file; the command line wins; errors name the key", async () => {
  await using origin = startHttpOrigin(() => new Response("cfg"));
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/proxy.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({ listen: "127.0.0.1:0", "log-format": "json", utc: true }),
    );
    await using cli = await startCli(["--config", file, "--log-format", "text"], {
      denoFlags: [`--allow-read=${dir}`],
    });
    assert.equal(
      (await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/`])).stdout,
      "cfg",
    );
    await cli.stdout.waitFor(/\] 200 OK 3 bytes \d+ ms #1\n/); // text, not json: the flag won
    assert.equal(await cli.stop(), 0);
    await Deno.writeTextFile(file, '{"listen": "127.0.0.1:0", "colour": "blue"}');
    const unknown = await runCli(["--config", file], [`--allow-read=${dir}`]);
    assert.equal(unknown.code, 2);
    assert.equal(
      unknown.stderr,
      `http-proxy: --config ${file}: unknown key "colour" (see --help)\n`,
    );
    const noRead = await runCli(["--config", file]);
    assert.equal(noRead.code, 2);
    assert.match(noRead.stderr, /--config: no permission to read/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task run, as the README shows it, reads a config, a password file and writes a log outside the project", async () => {
  await using origin = startHttpOrigin(() => new Response("office"));
  const dir = await Deno.makeTempDir(); // /tmp: outside the project folder
  try {
    await Deno.writeTextFile(`${dir}/users`, `${await hashLine("alice", "s3cret")}\n`);
    await Deno.writeTextFile(
      `${dir}/proxy.jsonc`,
      `{
        // an office setup, as the README's
        "listen": ["127.0.0.1:0"],
        "auth-file": "${dir}/users",
        "log-file": "${dir}/access.log",
        "log-format": "json",
        "connect-ports": [443, 8443], /* a list where the flag takes a comma list */
      }`,
    );
    await using cli = await startCli(["--config", `${dir}/proxy.jsonc`], { task: true });
    const url = `http://127.0.0.1:${origin.port}/`;
    assert.equal((await curl(["-x", cli.addrs[0]!, "-U", "alice:s3cret", url])).stdout, "office");
    assert.match(
      (await curl(["-x", cli.addrs[0]!, "-s", "-o", "/dev/null", "-w", "%{http_code}", url]))
        .stdout,
      /^407$/,
    );
    assert.equal(await cli.stop(), 0);
    const lines = (await Deno.readTextFile(`${dir}/access.log`)).trim().split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.status, l.user ?? null]), [[200, "alice"], [407, null]]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--deny-dest-file: a hosts-format list refuses its names at once, says its size, and a missing file is one line", async () => {
  await using origin = startHttpOrigin(() => new Response("fine"));
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/hosts`,
      "# blocked\n127.0.0.1 localhost\n0.0.0.0 ads.example.test\n0.0.0.0 t.example.test # x\n!!\n",
    );
    await using cli = await startCli(
      ["--listen", "127.0.0.1:0", "--deny-dest-file", `${dir}/hosts`],
      { denoFlags: [`--allow-read=${dir}`] },
    );
    await cli.stderr.waitFor(
      /; --deny-dest-file \(2 names from 1 file\(s\), 1 line\(s\) ignored, first .*hosts:5 "!!"\)\n/,
    );
    const refused = await curl([
      "-x",
      cli.addrs[0]!,
      "-s",
      "-w",
      "%{http_code}",
      "http://img.ads.example.test/",
    ]);
    assert.match(
      refused.stdout,
      /is denied by --deny-dest-file \(listed: ads\.example\.test\)\n403$/,
    );
    assert.equal(
      (await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/`])).stdout,
      "fine",
    );
    assert.equal(await cli.stop(), 0);
    const missing = await runCli(["--deny-dest-file", `${dir}/nope`], [`--allow-read=${dir}`]);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /^http-proxy: --deny-dest-file: cannot read ".*nope": No such file/,
    );
    const denied = await runCli(["--allow-dest-file", `${dir}/hosts`]);
    assert.equal(denied.code, 2);
    assert.match(
      denied.stderr,
      /--allow-dest-file: no permission to read .*; run with --allow-read=/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP reloads the config, password file and lists; open tunnels and keep-alive clients carry on; a bad file keeps the running config", async () => {
  await using origin = startHttpOrigin(() => new Response("ok"));
  // A tunnel's far end: echoes what it gets.
  await using echo = startOrigin(async (c) => {
    for (;;) {
      const piece = await c.reader.read(1024);
      if (piece === null) return;
      await c.write(piece.slice());
    }
  });
  const dir = await Deno.makeTempDir();
  const file = `${dir}/proxy.jsonc`;
  const config = (extra: string) =>
    Deno.writeTextFile(
      file,
      `{
        "listen": "127.0.0.1:0", "connect-ports": "any",
        "auth-file": "${dir}/users", "deny-dest-file": "${dir}/deny",
        ${extra}
      }`,
    );
  try {
    await Deno.writeTextFile(`${dir}/users`, `${await hashLine("alice", "a1")}\n`);
    await Deno.writeTextFile(`${dir}/deny`, "0.0.0.0 first.example.test\n");
    await config(`"log-format": "text"`);
    await using cli = await startCli(["--config", file], { denoFlags: [`--allow-read=${dir}`] });
    const proxy = cli.addrs[0]!;
    const [host, port] = proxy.split(":") as [string, string];
    const alice = `Proxy-Authorization: Basic ${btoa("alice:a1")}\r\n`;
    // An open tunnel and an open keep-alive connection, both alice's.
    using tunnel = await Deno.connect({ hostname: host, port: Number(port) });
    await tunnel.write(enc.encode(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n${alice}\r\n`));
    assert.match(await readUntil(tunnel, (t) => t.includes("\r\n\r\n")), /^HTTP\/1\.1 200 /);
    using keepAlive = await Deno.connect({ hostname: host, port: Number(port) });
    const get = (auth: string) =>
      enc.encode(`GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n${auth}\r\n`);
    await keepAlive.write(get(alice));
    assert.match(
      await readUntil(keepAlive, (t) => t.endsWith("ok")),
      /^HTTP\/1\.1 200 OK\r\n[\s\S]*ok$/,
    );

    // Alice leaves, bob arrives, a name is listed, and a restart-only setting changes.
    await Deno.writeTextFile(`${dir}/users`, `${await hashLine("bob", "b2")}\n`);
    await Deno.writeTextFile(`${dir}/deny`, "second.example.test\n");
    await config(`"log-format": "json"`);
    cli.child.kill("SIGHUP");
    await cli.stderr.waitFor(/reload: SIGHUP: config, password file and lists read again\n/);
    assert.match(
      cli.stderr.text,
      /reload: --log-format changed, which needs a restart; kept as it runs\n/,
    );
    assert.match(
      cli.stderr.text,
      /Basic proxy authentication \(1 user\(s\)\).*--deny-dest-file \(1 names/,
    );
    // The tunnel carries on.
    await tunnel.write(enc.encode("still there?"));
    assert.equal(await readUntil(tunnel, (t) => t.length >= 12), "still there?");
    // The keep-alive connection's next request meets the new users.
    await keepAlive.write(get(alice));
    assert.match(await readUntil(keepAlive, (t) => t.includes("\r\n\r\n")), /^HTTP\/1\.1 407 /);
    const viaBob = (url: string) =>
      curl(["-x", proxy, "-U", "bob:b2", "-s", "-w", " %{http_code}", url]);
    assert.equal((await viaBob(`http://127.0.0.1:${origin.port}/`)).stdout, "ok 200");
    assert.match(
      (await viaBob("http://second.example.test/")).stdout,
      /listed: second\.example\.test\)\n 403$/,
    );
    // Still text: the log format needs a restart.
    await cli.stdout.waitFor(/\] 200 OK 2 bytes \d+ ms #\d+\n/);

    // A config that does not parse: nothing changes.
    await Deno.writeTextFile(file, "{ nope");
    cli.child.kill("SIGHUP");
    await cli.stderr.waitFor(
      /reload: SIGHUP: kept the running config: --config .*proxy\.jsonc: not valid JSON/,
    );
    assert.equal((await viaBob(`http://127.0.0.1:${origin.port}/`)).stdout, "ok 200");
    assert.equal(await cli.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const enc = new TextEncoder();

Deno.test("SIGUSR2 prints the summary; --summary-json writes it; workers' counts are merged", async () => {
  await using origin = startHttpOrigin(() => new Response("abc"));
  const dir = await Deno.makeTempDir();
  try {
    const json = `${dir}/summary.json`;
    await using cli = await startCli(
      ["--listen", "127.0.0.1:0", "--workers", "2", "--summary-json", json, "--quiet"],
      { denoFlags: ["--unstable-net", `--allow-read=${ROOT}`, `--allow-write=${dir}`] },
    );
    for (let i = 0; i < 10; i++) {
      await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/${i}`]);
    }
    cli.child.kill("SIGUSR2");
    await cli.stderr.waitFor(new RegExp(`127\\.0\\.0\\.1:${origin.port} +10 +0 +10 `));
    assert.equal(await cli.stop(), 0);
    const data = JSON.parse(await Deno.readTextFile(json));
    const host = data.hosts.find((h: { host: string }) => h.host === `127.0.0.1:${origin.port}`);
    assert.equal(host.requests, 10);
    assert.equal(host.bytesDown, 30);
    assert.deepEqual(host.status, { "2xx": 10 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
