import assert from "node:assert/strict";
import {
  Authenticator,
  FAILURE_BURST,
  FAILURE_REFILL_MS,
  fileCredentials,
  hashLine,
  ITERATIONS,
  pbkdf2,
  plainCredential,
} from "../../lib/policy/auth.ts";
import { checkClient } from "../../lib/policy/policy.ts";
import { Collector, ROOT, runCli } from "../_fixtures/cli.ts";
import { hasTool } from "../_fixtures/tools.ts";
import {
  curl,
  rawExchange,
  startHttpOrigin,
  startOrigin,
  startProxy,
} from "../_fixtures/servers.ts";

const basic = (text: string) => `Proxy-Authorization: Basic ${btoa(text)}\r\n`;

Deno.test("--auth: no, wrong or malformed credentials get 407 with a Basic challenge; right ones pass", async (t) => {
  const cred = await plainCredential("alice:s3cret");
  await using origin = startOrigin(async (c) => {
    for (;;) {
      const head = await c.readHead();
      if (head === null) return;
      assert.doesNotMatch(head, /proxy-authorization/i, "credentials are never forwarded");
      await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nin");
    }
  });
  await using proxy = startProxy({ auth: ["alice:s3cret"] }, {
    auth: new Authenticator([cred as Exclude<typeof cred, string>]),
  });
  const get = (extra: string) =>
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n${extra}Connection: close\r\n\r\n`;
  const denied: [string, string][] = [
    ["none", ""],
    ["wrong password", basic("alice:nope")],
    ["unknown user", basic("bob:s3cret")],
    ["empty password", basic("alice:")],
    ["no colon", basic("alices3cret")],
    ["bad base64", "Proxy-Authorization: Basic !!!notbase64\r\n"],
    ["another scheme", "Proxy-Authorization: Bearer abc\r\n"],
    ["two headers", basic("alice:s3cret") + basic("alice:s3cret")],
  ];
  for (const [name, extra] of denied) {
    await t.step(name, async () => {
      const res = await rawExchange(proxy.port, get(extra));
      assert.match(res, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
      assert.match(res, /\r\nProxy-Authenticate: Basic realm="http-proxy", charset="UTF-8"\r\n/);
    });
  }
  await t.step("lower-case scheme, right credentials", async () => {
    const res = await rawExchange(
      proxy.port,
      get(`Proxy-Authorization: basic ${btoa("alice:s3cret")}\r\n`),
    );
    assert.match(res, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nin$/);
  });
  await t.step("curl -U", async () => {
    const res = await curl([
      "-x",
      proxy.addr,
      "-U",
      "alice:s3cret",
      `http://127.0.0.1:${origin.port}/`,
    ]);
    assert.equal(res.stdout, "in");
  });
  await t.step("CONNECT needs credentials too", async () => {
    const no = await rawExchange(proxy.port, `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\n\r\n`, {
      halfClose: true,
    });
    assert.match(no, /^HTTP\/1\.1 407 /);
    const yes = await curl([
      "-p",
      "-x",
      proxy.addr,
      "-U",
      "alice:s3cret",
      `http://127.0.0.1:${origin.port}/`,
    ]);
    assert.equal(yes.stdout, "in");
  });
  // The user is logged; the password never is.
  await proxy.waitForLine(/ GET http:\/\/127\.0\.0\.1:\d+\/ from alice@127\.0\.0\.1 -> /);
  assert.ok(proxy.lines.every((l) => !l.includes("s3cret") && !l.includes(btoa("alice:s3cret"))));
  await proxy.waitForLine(
    / 407 Proxy Authentication Required 0 bytes \(proxy authentication required\)/,
  );
  // A rejected user name is the client's text: it never reaches the log (no forged lines).
  const forged = "\x1b[2J\n[12:00:00] 200 OK";
  const res = await rawExchange(proxy.port, get(basic(`${forged}:x`)));
  assert.match(res, /^HTTP\/1\.1 407 [\s\S]*wrong user name or password\n$/);
  await proxy.waitForLine(
    / 407 Proxy Authentication Required 0 bytes \(wrong user name or password\)/,
  );
  assert.ok(proxy.lines.every((l) => !l.includes("\x1b") && !l.includes("12:00:00")));
});

Deno.test("a 407 to a request without a body keeps the connection for the retry", async () => {
  const cred = await plainCredential("u:p");
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nin");
  });
  await using proxy = startProxy({ auth: ["u:p"] }, {
    auth: new Authenticator([cred as Exclude<typeof cred, string>]),
  });
  const get = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n`;
  const res = await rawExchange(
    proxy.port,
    get + "\r\n" + get + basic("u:p") + "Connection: close\r\n\r\n",
  );
  assert.match(res, /^HTTP\/1\.1 407 [\s\S]*HTTP\/1\.1 200 OK\r\n[\s\S]*in$/);
});

Deno.test("--auth-file users verify against their PBKDF2-SHA256 hashes", async () => {
  const line = await hashLine("carol", "pa:ss wörd", 1000);
  assert.match(line, /^carol:pbkdf2-sha256\$1000\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
  const creds = fileCredentials(`# users\n\n${line}\n`);
  assert.ok(Array.isArray(creds));
  const auth = new Authenticator(creds);
  const field = (text: string): [string, string][] => [[
    "Proxy-Authorization",
    `Basic ${btoa(String.fromCharCode(...new TextEncoder().encode(text)))}`,
  ]];
  assert.equal(await auth.check(field("carol:pa:ss wörd")), "carol");
  await assert.rejects(
    auth.check(field("carol:pa:ss word")),
    (e) => (e as { status: number }).status === 407,
  );
  assert.match(String(fileCredentials("dave:plain")), /line 1 is not "user:pbkdf2-sha256/);
});

Deno.test("with auth and no --allow, clients from anywhere may try their credentials", () => {
  assert.doesNotThrow(() => checkClient("203.0.113.9", { allow: [], open: false, auth: ["a:b"] }));
  assert.throws(
    () => checkClient("203.0.113.9", { allow: [], open: false, auth: [] }),
    /not allowed/,
  );
});

Deno.test("hash-password prints a line --auth-file accepts; bad auth settings exit 2", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", `${ROOT}main.ts`, "hash-password", "erin"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode("correct horse\n"));
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const line = new TextDecoder().decode(out.stdout).trim();
  assert.match(line, /^erin:pbkdf2-sha256\$600000\$/);
  const creds = fileCredentials(line);
  assert.ok(Array.isArray(creds));
  assert.equal(
    await new Authenticator(creds).check([[
      "Proxy-Authorization",
      `Basic ${btoa("erin:correct horse")}`,
    ]]),
    "erin",
  );
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/users`, "nonsense line\n");
    const bad = await runCli(["--auth-file", `${dir}/users`], [`--allow-read=${dir}`]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.stderr,
      /^http-proxy: --auth-file: ".*users" line 1 is not "user:pbkdf2-sha256/,
    );
    const noRead = await runCli(["--auth-file", `${dir}/users`]);
    assert.equal(noRead.code, 2);
    assert.match(noRead.stderr, /--auth-file: no permission to read/);
    const empty = await runCli(["--auth", "frank:"]);
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /^http-proxy: --auth: empty password for user "frank"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A Proxy-Authorization field for `user:password`. */
function basicField(text: string): [string, string][] {
  return [[
    "Proxy-Authorization",
    `Basic ${btoa(String.fromCharCode(...new TextEncoder().encode(text)))}`,
  ]];
}

Deno.test("password hashing is bounded: 2 at once, 16 waiting, the rest 503; unknown users cost the default", async () => {
  const line = await hashLine("ann", "right", 1_500_000);
  const creds = fileCredentials(line) as Exclude<ReturnType<typeof fileCredentials>, string>;
  const gates: (() => void)[] = [];
  const costs: number[] = [];
  let running = 0;
  let most = 0;
  // A hash that waits to be let go, so the test sees how many run and wait.
  const hash = async (password: string, salt: Uint8Array<ArrayBuffer>, iterations: number) => {
    costs.push(iterations);
    most = Math.max(most, ++running);
    await new Promise<void>((r) => gates.push(r));
    running--;
    return await pbkdf2(password, salt, 1000);
  };
  const auth = new Authenticator(creds, { hash });
  // 20 wrong passwords from 20 addresses, all at once.
  let settled = 0;
  const tries = Array.from(
    { length: 20 },
    (_, i) =>
      auth.check(basicField(`ghost${i}:x`), `198.51.100.${i}`).catch((e) => e.status)
        .finally(() => settled++),
  );
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(gates.length, 2);
  // Let the hashes go one by one until every try has its answer. (Waiting only while a gate
  // was open or a hash running ended early when the next hash had not started yet: between
  // one hash's release and the next one's start lies a real PBKDF2, slow on a loaded machine.)
  for (let i = 0; settled < 20 && i < 10_000; i++) {
    gates.shift()?.();
    await new Promise((r) => setTimeout(r, 1));
  }
  const statuses = await Promise.all(tries);
  assert.deepEqual(statuses.filter((s) => s === 503).length, 2);
  assert.deepEqual(statuses.filter((s) => s === 407).length, 18);
  assert.equal(most, 2);
  // Unknown users are charged the default cost, not the dearest line in the file.
  assert.ok(costs.every((c) => c === ITERATIONS), String(costs));
  // The known user with the dear line pays its own cost.
  const ok = auth.check(basicField("ann:right"), "198.51.100.99");
  await new Promise((r) => setTimeout(r, 10));
  gates.shift()!();
  // (its hash is really of 1000 iterations here, so the check fails: the cost is what counts)
  await ok.catch(() => {});
  assert.equal(costs.at(-1), 1_500_000);
  assert.match(
    String(fileCredentials(line.replace("$1500000$", "$2000001$"))),
    /^line 1 asks for 2000001 iterations, more than 2000000/,
  );
});

Deno.test("failed logins are rate-limited per client address (a /64 for IPv6); a verified user stays fast", async () => {
  let clock = 0;
  let hashes = 0;
  const creds = fileCredentials(await hashLine("bob", "pw", 1000));
  const auth = new Authenticator(creds as Exclude<typeof creds, string>, {
    now: () => clock,
    hash: (p, s, n) => (hashes++, pbkdf2(p, s, n)),
  });
  assert.equal(await auth.check(basicField("bob:pw"), "203.0.113.5"), "bob");
  const status = (text: string, ip: string) =>
    auth.check(basicField(text), ip).then(() => 200, (e) => e.status);
  for (let i = 0; i < FAILURE_BURST; i++) {
    assert.equal(await status("bob:wrong", "203.0.113.5"), 407);
  }
  const before = hashes;
  const limited = await auth.check(basicField("bob:guess"), "203.0.113.5").catch((e) => e);
  assert.equal(limited.status, 429);
  assert.match(limited.message, /^too many failed logins from 203\.0\.113\.5; retry in 2 s$/);
  assert.deepEqual(limited.headers, [["Retry-After", "2"]]);
  assert.equal(hashes, before, "a limited client costs no hash");
  // The verified credential is remembered: it passes without a token or a hash.
  assert.equal(await status("bob:pw", "203.0.113.5"), 200);
  // Another address is not affected; another host in the same IPv6 /64 is.
  assert.equal(await status("bob:wrong", "203.0.113.6"), 407);
  for (let i = 0; i < FAILURE_BURST; i++) await status("bob:wrong", "2001:db8:1:2::a");
  assert.equal(await status("bob:wrong", "2001:db8:1:2::b"), 429);
  assert.equal(await status("bob:wrong", "2001:db8:1:3::b"), 407);
  // The /64 is read from the address, not its spelling: 2001:db8::1 and 2001:db8::2 share one.
  for (let i = 0; i < FAILURE_BURST; i++) await status("bob:wrong", "2001:db8::1");
  assert.equal(await status("bob:wrong", "2001:db8::2"), 429);
  assert.equal(await status("bob:wrong", "2001:db8:0:1::2"), 407);
  // Time gives tries back: one per FAILURE_REFILL_MS.
  clock += FAILURE_REFILL_MS;
  assert.equal(await status("bob:wrong", "203.0.113.5"), 407);
  assert.equal(await status("bob:wrong", "203.0.113.5"), 429);
});

Deno.test("a rate-limited client gets 429 with Retry-After over the wire", async () => {
  await using origin = startHttpOrigin(() => new Response("in"));
  const creds = fileCredentials(await hashLine("u", "p", 1000));
  await using proxy = startProxy({}, {
    auth: new Authenticator(creds as Exclude<typeof creds, string>),
  });
  const get = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n` +
    `Proxy-Authorization: Basic ${btoa("u:bad")}\r\n\r\n`;
  const res = await rawExchange(
    proxy.port,
    get.repeat(FAILURE_BURST) + get.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
  );
  assert.equal(res.match(/HTTP\/1\.1 407 /g)?.length, FAILURE_BURST);
  assert.match(
    res,
    /HTTP\/1\.1 429 Too Many Requests\r\n[\s\S]*Retry-After: 2\r\n[\s\S]*too many failed logins from 127\.0\.0\.1; retry in 2 s\n$/,
  );
});

// Made by Apache's htpasswd 2.4 (Debian apache2-utils) for alice / s3cret, 2026-11-27.
const HTPASSWD = {
  bcrypt: "alice:$2y$05$2U.Aad6hTKq0D/gFAm9pfe/w2dFrlYapmqf2iDf77n.hbwvjn6mQC", // -B -C 5
  apr1: "alice:$apr1$yk8YIOJ4$gKCfOoXiguYOsdRBBMGYm/", // -m
  sha: "alice:{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg=", // -s
  crypt: "alice:OZ0yr.uuSQUi.", // -d
};

Deno.test("--auth-file takes htpasswd -B bcrypt lines and names the weak schemes it refuses", async () => {
  const creds = fileCredentials(`# made with htpasswd -B\n${HTPASSWD.bcrypt}\n`);
  assert.ok(Array.isArray(creds));
  const auth = new Authenticator(creds);
  assert.equal(await auth.check(basicField("alice:s3cret")), "alice");
  await assert.rejects(auth.check(basicField("alice:wrong")), /wrong user name or password/);
  for (
    const [line, why] of [
      [HTPASSWD.apr1, /line 1 uses MD5-crypt \(\$apr1\$, htpasswd -m\), a weak scheme/],
      [HTPASSWD.sha, /line 1 uses unsalted SHA-1 \(\{SHA\}, htpasswd -s\)/],
      [HTPASSWD.crypt, /line 1 uses DES crypt \(htpasswd -d\)/],
      ["alice:$2y$13$" + "a".repeat(53), /line 1 is bcrypt with cost 13; accepted: 4 to 12/],
    ] as const
  ) {
    const got = fileCredentials(line);
    assert.equal(typeof got, "string", line);
    assert.match(got as string, why);
    assert.match(got as string, /htpasswd -B|hash-password/);
  }
});

const hasHtpasswd = await hasTool("htpasswd", ["-nbB", "x", "y"]);

Deno.test({
  name: "a file made by htpasswd -B right now logs curl in through the proxy (needs htpasswd)",
  ignore: !hasHtpasswd, // .ci/run installs Debian's apache2-utils
  async fn() {
    const made = await new Deno.Command("htpasswd", { args: ["-nbB", "bea", "pa55 word"] })
      .output();
    const creds = fileCredentials(new TextDecoder().decode(made.stdout));
    assert.ok(Array.isArray(creds));
    await using origin = startHttpOrigin(() => new Response("in"));
    await using proxy = startProxy({}, { auth: new Authenticator(creds) });
    const url = `http://127.0.0.1:${origin.port}/`;
    assert.equal((await curl(["-x", proxy.addr, "-U", "bea:pa55 word", url])).stdout, "in");
    const wrong = await curl([
      "-x",
      proxy.addr,
      "-U",
      "bea:nope",
      "-s",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      url,
    ]);
    assert.equal(wrong.stdout, "407");
  },
});

const hasScript = await hasTool("script", ["-qec", "true", "/dev/null"]);

Deno.test({
  name:
    "hash-password on a terminal asks twice without echo, and refuses two different answers (needs script)",
  ignore: !hasScript, // util-linux's script gives the command a terminal
  async fn() {
    for (const [second, code] of [["tr0ub4dor", 0], ["other", 2]] as const) {
      const child = new Deno.Command("script", {
        args: ["-qec", `${Deno.execPath()} run ${ROOT}main.ts hash-password gil`, "/dev/null"],
        stdin: "piped",
        stdout: "piped",
        stderr: "null", // script puts the command's stdout and stderr both on its stdout
        env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
      }).spawn();
      const out = new Collector(child.stdout);
      const w = child.stdin.getWriter();
      await out.waitFor(/Password for gil: /);
      await w.write(new TextEncoder().encode("tr0ub4dor\r"));
      await out.waitFor(/Again: /);
      await w.write(new TextEncoder().encode(`${second}\r`));
      const status = await child.status;
      await w.close().catch(() => {});
      await out.done;
      assert.equal(status.code, code, out.text);
      assert.doesNotMatch(out.text, /tr0ub4dor|other/); // never echoed
      if (code === 0) {
        const line = /gil:pbkdf2-sha256\S+/.exec(out.text)![0];
        const creds = fileCredentials(line) as Exclude<ReturnType<typeof fileCredentials>, string>;
        assert.equal(await new Authenticator(creds).check(basicField("gil:tr0ub4dor")), "gil");
      } else assert.match(out.text, /the two passwords differ; nothing written/);
    }
  },
});
