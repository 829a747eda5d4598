import assert from "node:assert/strict";
import {
  closest,
  configFileArgs,
  DEFAULTS,
  HELP,
  OPTIONS,
  parseCommand,
  parseDuration,
  parseSize,
  readmeFlagTable,
  stripJsonc,
  UsageError,
} from "../lib/cli/config.ts";

function run(args: string[]) {
  const cmd = parseCommand(args);
  assert.equal(cmd.kind, "run");
  return (cmd as { config: typeof DEFAULTS }).config;
}

Deno.test("parseCommand() gives the defaults with no flags", () => {
  assert.deepEqual(run([]), DEFAULTS);
  assert.deepEqual(parseCommand(["--help"]), { kind: "help" });
  assert.deepEqual(parseCommand(["-V"]), { kind: "version" });
});

Deno.test("parseCommand() reads every flag", () => {
  const c = run([
    "--listen",
    "127.0.0.1:0",
    "--listen",
    "[::1]:9000",
    "--connect-ports",
    "443, 8443",
    "--max-header-bytes",
    "32KiB",
    "--header-timeout",
    "500ms",
    "--idle-timeout",
    "2m",
    "--connect-timeout",
    "3",
    "--response-timeout",
    "1.5s",
    "--grace",
    "0",
    "--log-format",
    "json",
    "--log-file",
    "a.log",
    "--quiet",
    "--utc",
  ]);
  assert.deepEqual(c.listen, [{ hostname: "127.0.0.1", port: 0 }, { hostname: "::1", port: 9000 }]);
  assert.deepEqual(c.connectPorts, new Set([443, 8443]));
  assert.equal(c.maxHeaderBytes, 32768);
  assert.equal(c.headerTimeoutMs, 500);
  assert.equal(c.idleTimeoutMs, 120_000);
  assert.equal(c.connectTimeoutMs, 3000);
  assert.equal(c.responseTimeoutMs, 1500);
  assert.equal(c.graceMs, 0);
  assert.equal(c.logFormat, "json");
  assert.equal(c.logFile, "a.log");
  assert.equal(c.quiet, true);
  assert.equal(c.utc, true);
  assert.equal(run(["--connect-ports", "any"]).connectPorts, "any");
});

Deno.test("parseCommand() names the flag in a one-line error", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--nope"], /^unknown flag --nope \(see --help\)$/],
    [["--listen"], /^--listen: needs a value/],
    [["--quiet=yes"], /^--quiet: takes no value/],
    [["extra"], /^unexpected argument extra/],
    [["--listen", "8081"], /^--listen: bad address "8081"/],
    [["--listen", "127.0.0.1:70000"], /^--listen: bad address/],
    [["--listen", "::1:80"], /^--listen: bad address/],
    [["--header-timeout", "soon"], /^--header-timeout: bad duration "soon"/],
    [["--connect-timeout", "0"], /^--connect-timeout: bad duration "0"/],
    [["--grace", "-1s"], /^--grace: needs a value; for one starting with "-" write --grace=VALUE/],
    [["--grace=-1s"], /^--grace: bad duration "-1s"/],
    [["--max-header-bytes", "12"], /^--max-header-bytes: bad size "12"/],
    [["--max-header-bytes", "1GiB"], /^--max-header-bytes: bad size/],
    [["--connect-ports", "443,x"], /^--connect-ports: bad port "x"/],
    [["--connect-ports", "0"], /^--connect-ports: bad port "0"/],
    [["--log-format", "xml"], /^--log-format: unknown format "xml"/],
    [["--log-file", ""], /^--log-file: empty path/],
  ];
  for (const [args, re] of cases) {
    await t.step(args.join(" "), () => {
      assert.throws(
        () => parseCommand(args),
        (e) => e instanceof UsageError && re.test(e.message) && !e.message.includes("\n"),
      );
    });
  }
});

Deno.test("parseDuration() and parseSize() know their units", () => {
  assert.equal(parseDuration("x", "250ms"), 250);
  assert.equal(parseDuration("x", "10"), 10_000);
  assert.equal(parseDuration("x", "1h"), 3_600_000);
  assert.equal(parseSize("x", "65536"), 65536);
  assert.equal(parseSize("x", "64k"), 65536);
  assert.equal(parseSize("x", "1MiB"), 1 << 20);
});

Deno.test("destination rules parse every documented form and reject the rest", () => {
  const c = run([
    "--deny-dest",
    "example.com",
    "--deny-dest",
    "*.Example.ORG.",
    "--deny-dest",
    "198.51.100.0/24:25",
    "--deny-dest",
    ":25",
    "--allow-dest",
    "[fd00::]/8:443",
    "--allow-dest",
    "fd00::1",
    "--block-private",
  ]);
  assert.deepEqual(c.denyDest.map((r) => [r.kind, r.name ?? r.range?.text, r.port]), [
    ["name", "example.com", undefined],
    ["suffix", "example.org", undefined],
    ["range", "198.51.100.0/24", 25],
    ["any", undefined, 25],
  ]);
  assert.deepEqual(c.allowDest.map((r) => [r.kind, r.range?.prefix, r.port]), [
    ["range", 8, 443],
    ["range", 128, undefined],
  ]);
  assert.equal(c.blockPrivate, true);
  for (const bad of ["", "bad_name", "198.51.100.0/99", ":0", ":70000", "exa mple.com", "*."]) {
    assert.throws(() => parseCommand(["--deny-dest", bad]), /--deny-dest: bad rule/, bad);
  }
});

Deno.test("limit flags parse, and zero header fields is refused", () => {
  const c = run([
    "--max-connections",
    "50",
    "--max-connections-per-ip",
    "0",
    "--rate",
    "20",
    "--max-header-fields",
    "64",
    "--max-request-line",
    "4KiB",
    "--tunnel-idle-timeout",
    "30s",
  ]);
  assert.deepEqual(
    [
      c.maxConnections,
      c.maxConnectionsPerIp,
      c.rate,
      c.maxHeaderFields,
      c.maxRequestLine,
      c.tunnelIdleTimeoutMs,
    ],
    [50, 0, 20, 64, 4096, 30_000],
  );
  assert.throws(() => parseCommand(["--max-header-fields", "0"]), /must be at least 1/);
  assert.throws(() => parseCommand(["--rate", "fast"]), /--rate: bad number "fast"/);
});

Deno.test("configFileArgs() turns JSON into flags the command line overrides", () => {
  const file = JSON.stringify({
    listen: ["127.0.0.1:0", "[::1]:0"],
    "block-private": true,
    utc: false,
    "max-connections": 20,
    "log-format": "json",
  });
  const args = configFileArgs(file, "p.json", ["--log-format", "text"]);
  assert.deepEqual(args, [
    "--listen=127.0.0.1:0",
    "--listen=[::1]:0",
    "--block-private",
    "--max-connections=20",
  ]);
  const c = run([...args, "--log-format", "text"]);
  assert.equal(c.logFormat, "text");
  assert.equal(c.maxConnections, 20);
  assert.equal(c.listen.length, 2);
  // A list on the command line replaces the file's list, not adds to it.
  assert.deepEqual(
    configFileArgs(file, "p.json", ["--listen", "127.0.0.1:1"]).filter((a) =>
      a.startsWith("--listen")
    ),
    [],
  );
  const bad: [string, RegExp][] = [
    ["{", /--config p\.json: not valid JSON/],
    ["[]", /expected a JSON object/],
    ['{"lisen": "x"}', /--config p\.json: unknown key "lisen"; did you mean "listen"\? \(see/],
    ['{"colour": "x"}', /unknown key "colour" \(see --help\)/],
    ['{"quiet": true /* unclosed', /not valid JSON/],
    ['{"quiet": "yes"}', /"quiet" must be true or false/],
    ['{"grace": ["1s", "2s"]}', /"grace" takes one value, not a list/],
    ['{"listen": [{}]}', /"listen" must be a string or a number/],
    ['{"config": "again.json"}', /unknown key "config"/],
  ];
  for (const [text, re] of bad) assert.throws(() => configFileArgs(text, "p.json", []), re, text);
  // A bad value in the file is reported under its key's flag name.
  assert.throws(
    () => run(configFileArgs('{"header-timeout": "soon"}', "p.json", [])),
    /--header-timeout: bad duration "soon"/,
  );
});

Deno.test("--config files may hold comments and trailing commas, and lists for comma-list flags", () => {
  const text = `{
    // the office proxy
    "listen": ["127.0.0.1:0",], /* one for now */
    "connect-ports": [443, 8443],
    "log-file": "/tmp//a.log", "log-format": "json", // a path keeps its slashes
    "deny-dest": ["*.ads.example", /* , "x" */ "*.track.example",],
  }`;
  const args = configFileArgs(text, "p.json", []);
  assert.deepEqual(args, [
    "--listen=127.0.0.1:0",
    "--connect-ports=443,8443",
    "--log-file=/tmp//a.log",
    "--log-format=json",
    "--deny-dest=*.ads.example",
    "--deny-dest=*.track.example",
  ]);
  assert.deepEqual(run(args).connectPorts, new Set([443, 8443]));
  // Positions in errors still point into the file: comments become spaces.
  assert.equal(stripJsonc('{"a": 1, // x\n}').length, '{"a": 1, // x\n}'.length);
  assert.equal(
    stripJsonc(String.raw`{"s": "// not a comment", "t": "\\" /* c */, "u": "\" /* no */"}`),
    String.raw`{"s": "// not a comment", "t": "\\"        , "u": "\" /* no */"}`,
  );
});

Deno.test("an unknown flag or key suggests the closest known one", () => {
  assert.throws(
    () => run(["--lisen", "x"]),
    /^UsageError: unknown flag --lisen; did you mean --listen\? \(see --help\)$/,
  );
  assert.throws(() => run(["--block-privat"]), /did you mean --block-private\?/);
  assert.throws(() => run(["--zzz"]), /^UsageError: unknown flag --zzz \(see --help\)$/);
  assert.equal(closest("conect-ports", ["connect-ports", "listen"]), "connect-ports");
  assert.equal(closest("x", ["connect-ports", "listen"]), undefined);
});

Deno.test("the README's flag table is the one made from the option table, row for row", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## Flags\n"), readme.indexOf("\nDurations take"));
  const cells = (line: string) =>
    line.trim().replace(/^\||\|$/g, "").split(/(?<!\\)\|/).map((c) => c.trim());
  const rows = (lines: string[]) =>
    lines.filter((l) => l.startsWith("|") && !/^\|[\s|:-]+\|$/.test(l)).map(cells);
  assert.deepEqual(rows(section.split("\n")), rows(readmeFlagTable()));
});

Deno.test("every option row is a flag parseArgs knows, and --help names each with its default", () => {
  for (const o of OPTIONS) {
    assert.ok(HELP.includes(`--${o.name}`), `--${o.name} missing from --help`);
    if (o.shown) assert.ok(HELP.includes(`[${o.shown}]`), `[${o.shown}] missing from --help`);
    if (o.name === "help" || o.name === "version" || o.name === "config") continue;
    // Each row sets a field; its default (if the field has one) is the row's own.
    assert.ok(o.key !== undefined, `--${o.name} sets nothing`);
    assert.deepEqual(
      (DEFAULTS as unknown as Record<string, unknown>)[o.key],
      o.default,
      `--${o.name}'s default`,
    );
    assert.equal(o.key in DEFAULTS, o.default !== undefined, `--${o.name}'s default`);
  }
});

Deno.test("--via-name takes one token of 1 to 64 characters", () => {
  assert.equal(run(["--via-name", "edge-1.example_~!"]).viaName, "edge-1.example_~!");
  assert.equal(run(["--via-name", "a".repeat(64)]).viaName, "a".repeat(64));
  for (const bad of ["", "a b", "a".repeat(65), "proxy/1", "caf\u00e9", "a\tb", "(x)"]) {
    assert.throws(
      () => parseCommand(["--via-name", bad]),
      /--via-name: ".*" is not a single token of 1 to 64 characters/,
      JSON.stringify(bad),
    );
  }
});
