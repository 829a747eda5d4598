import assert from "node:assert/strict";
import { Authenticator, fileCredentials, hashLine, plainCredential } from "../../lib/auth.ts";
import { checkClient } from "../../lib/policy.ts";
import { ROOT, runCli } from "../_fixtures/cli.ts";
import { curl, rawExchange, startOrigin, startProxy } from "../_fixtures/servers.ts";

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
