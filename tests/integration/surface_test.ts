import assert from "node:assert/strict";
import { hashLine } from "../../lib/policy/auth.ts";
import { parseDestRule } from "../../lib/policy/policy.ts";
import type { ResolveFn } from "../../lib/upstream/dial.ts";
import { adminOf, runCli, startCli } from "../_fixtures/cli.ts";
import { curl, rawExchange, sleep, startHttpOrigin, startProxy } from "../_fixtures/servers.ts";
import { listeningPorts } from "../_fixtures/sockets.ts";

const portOf = (addr: string) => Number(addr.slice(addr.lastIndexOf(":") + 1));

Deno.test("SIGUSR1 opens no debugger: it is closed at once with a warning; SIGHUP and SIGUSR2 open nothing; the proxy still serves", async () => {
  await using origin = startHttpOrigin(() => new Response("still serving"));
  await using cli = await startCli(
    ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--quiet"],
    { denoFlags: ["--allow-sys"] },
  );
  const admin = await adminOf(cli);
  const ours = [portOf(cli.addrs[0]!), portOf(admin)].sort((a, b) => a - b);
  assert.deepEqual(await listeningPorts(cli.child.pid), ours);
  // Deno arms its SIGUSR1 handler 500 ms after start (denoland/deno#35738).
  await sleep(700);
  for (const signal of ["SIGHUP", "SIGUSR2", "SIGUSR1"] as const) {
    cli.child.kill(signal);
    await sleep(150);
    assert.deepEqual(await listeningPorts(cli.child.pid), ours, `after ${signal}`);
  }
  // The warning proves Deno did open its debugger and the proxy closed it.
  await cli.stderr.waitFor(
    /warning: SIGUSR1 made Deno open a debugger on 127\.0\.0\.1:9229; closed it\. Do not send SIGUSR1/,
  );
  const res = await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/`]);
  assert.equal(res.stdout, "still serving");
  // A second SIGUSR1 is handled the same way.
  cli.child.kill("SIGUSR1");
  await cli.stderr.waitFor(/closed it[^\n]*\n[\s\S]*closed it/);
  assert.deepEqual(await listeningPorts(cli.child.pid), ours);
  assert.equal(await cli.stop("SIGINT"), 0);
  assert.equal(cli.stderr.text.match(/warning: SIGUSR1/g)?.length, 2, "one line per signal");
});

Deno.test("without --allow-sys the debugger cannot be closed, so SIGUSR1 stops the proxy at once (exit 1)", async () => {
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--quiet"]);
  await sleep(700);
  const started = performance.now();
  cli.child.kill("SIGUSR1");
  const code = await cli.stop("SIGUSR1").catch(() => -1);
  assert.equal(code, 1);
  assert.ok(performance.now() - started < 3000, "stops with no grace period");
  assert.match(
    cli.stderr.text,
    /SIGUSR1 made Deno open an unauthenticated debugger on 127\.0\.0\.1:9229 and this process may not close it \(run with --allow-sys\): stopping now/,
  );
  assert.match(cli.stderr.text, /SIGUSR1: shutting down, 0 connection\(s\) open, up to 0 ms grace/);
});

Deno.test("the proxy's own port and the admin port are never destinations, by absolute form or CONNECT", async () => {
  await using cli = await startCli([
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--connect-ports",
    "any",
  ]);
  const admin = await adminOf(cli);
  const proxyPort = portOf(cli.addrs[0]!);
  const cases = [
    [
      `GET http://${admin}/api/recent HTTP/1.1\r\nHost: ${admin}\r\n\r\n`,
      "this proxy's admin listener",
    ],
    [
      `GET http://localhost:${portOf(admin)}/metrics HTTP/1.1\r\nHost: x\r\n\r\n`,
      "this proxy's admin listener",
    ],
    [`CONNECT ${admin} HTTP/1.1\r\n\r\n`, "this proxy's admin listener"],
    [`CONNECT 127.0.0.1:${proxyPort} HTTP/1.1\r\n\r\n`, "this proxy itself"],
    [`CONNECT 0.0.0.0:${proxyPort} HTTP/1.1\r\n\r\n`, "this proxy itself"],
    [`GET http://127.0.0.1:${proxyPort}/ HTTP/1.1\r\nHost: x\r\n\r\n`, "this proxy itself"],
  ] as const;
  for (const [request, what] of cases) {
    const res = await rawExchange(proxyPort, request, { halfClose: true });
    assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/, request);
    assert.match(res, new RegExp(`is denied \\(it is ${what}\\)\\n$`));
  }
  // CONNECT to its own port would nest tunnels: it stays at one socket.
  assert.deepEqual(
    await listeningPorts(cli.child.pid),
    [proxyPort, portOf(admin)].sort((a, b) => a - b),
  );
  assert.equal(await cli.stop(), 0);
  assert.equal(cli.stdout.text.match(/ 403 Forbidden /g)?.length, cases.length);
});

Deno.test("a name that resolves to this host is refused (DNS rebinding) unless it is localhost or in --allow-dest", async () => {
  await using origin = startHttpOrigin(() => new Response("local dev server"));
  const hosts: Record<string, string[]> = {
    "rebind.test": ["127.0.0.1"],
    "dev.test": ["127.0.0.1"],
    localhost: ["127.0.0.1"],
    "app.localhost": ["127.0.0.1"],
  };
  const resolve: ResolveFn = (name) => Promise.resolve(hosts[name] ?? [name]);
  // One proxy names dev.test in --allow-dest; the other has no destination rules at all.
  await using proxy = startProxy({ allowDest: [parseDestRule("dev.test")!] }, { resolve });
  await using plain = startProxy({}, { resolve });
  for (const host of ["rebind.test", "REBIND.test."]) {
    const res = await rawExchange(
      plain.port,
      `GET http://${host}:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
      { halfClose: true },
    );
    assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/, host);
    assert.match(
      res,
      /destination rebind\.test \(127\.0\.0\.1\) is denied \(a name that resolves to this host could be DNS rebinding; use localhost or the address, or name it in --allow-dest\)\n$/,
    );
  }
  const tunnel = await rawExchange(
    plain.port,
    `CONNECT rebind.test:${origin.port} HTTP/1.1\r\n\r\n`,
    {
      halfClose: true,
    },
  );
  assert.match(tunnel, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*could be DNS rebinding/);
  for (const host of ["localhost", "app.localhost", "127.0.0.1"]) {
    const res = await curl(["-x", plain.addr, `http://${host}:${origin.port}/`]);
    assert.equal(res.stdout, "local dev server", host);
  }
  const named = await curl(["-x", proxy.addr, `http://dev.test:${origin.port}/`]);
  assert.equal(named.stdout, "local dev server");
  assert.equal(plain.lines.filter((l) => l.includes(" -> ")).length, 3, "denied ones never dialed");
});

Deno.test("--admin: loopback by default; beyond loopback only with credentials (exit 2 without)", async () => {
  const open = await runCli(["--admin", "0.0.0.0:0"]);
  assert.equal(open.code, 2);
  assert.equal(
    open.stderr,
    "http-proxy: --admin 0.0.0.0:0: an admin listener on a non-loopback address shows every " +
      "user's traffic to whoever reaches it; give admin credentials (--admin-auth-file or " +
      "HTTP_PROXY_ADMIN_AUTH) or listen on loopback\n",
  );
  const bad = await runCli(["--admin", "127.0.0.1:0"], ["--allow-env"], {
    HTTP_PROXY_ADMIN_AUTH: "nocolon",
  });
  assert.equal(bad.code, 2);
  assert.equal(
    bad.stderr,
    'http-proxy: HTTP_PROXY_ADMIN_AUTH: expected user:password, got "nocolon"\n',
  );
});

Deno.test("--admin checks Host (421), asks for credentials when set (401), and sends its security headers", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/admins`;
    await Deno.writeTextFile(file, (await hashLine("ops", "s3cret", 1000)) + "\n");
    await using cli = await startCli(
      [
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "0.0.0.0:0",
        "--admin-auth-file",
        file,
        "--admin-host",
        "proxy.example",
      ],
      { denoFlags: [`--allow-read=${dir}`, "--allow-sys"] },
    );
    const line = await cli.stderr.waitFor(
      /admin: http:\/\/(\S+)\/ \(metrics at \/metrics\), (.*)\n/,
    );
    assert.equal(line[2], "asks for admin credentials");
    const port = portOf(line[1]!);
    const ask = (host: string, auth?: string) =>
      rawExchange(
        port,
        `GET /api/summary HTTP/1.1\r\nHost: ${host}\r\n` +
          (auth ? `Authorization: Basic ${btoa(auth)}\r\n` : "") + "Connection: close\r\n\r\n",
      );
    for (const host of ["evil.example:" + port, "127.0.0.1:1", `rebind.test:${port}`, ""]) {
      const res = await ask(host, "ops:s3cret");
      assert.match(res, /^HTTP\/1\.1 421 Misdirected Request\r\n/, host);
      assert.match(res, /misdirected request: this admin listener answers to/);
      assert.doesNotMatch(res, /"hosts"/);
    }
    for (const auth of [undefined, "ops:wrong", "nobody:s3cret"]) {
      const res = await ask(`127.0.0.1:${port}`, auth);
      assert.match(res, /^HTTP\/1\.1 401 Unauthorized\r\n/, auth);
      assert.match(
        res,
        /\r\nwww-authenticate: Basic realm="http-proxy admin", charset="UTF-8"\r\n/i,
      );
    }
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `proxy.example:${port}`]) {
      const res = await ask(host, "ops:s3cret");
      assert.match(res, /^HTTP\/1\.1 200 OK\r\n/, host);
      assert.match(res, /"hosts": \[/);
      assert.match(res, /\r\ncache-control: no-store\r\n/i);
      assert.match(res, /\r\nx-content-type-options: nosniff\r\n/i);
      assert.match(res, /\r\nreferrer-policy: no-referrer\r\n/i);
      const csp = /\r\ncontent-security-policy: ([^\r]*)\r\n/i.exec(res)?.[1] ?? "";
      assert.match(csp, /script-src 'self';/);
      assert.doesNotMatch(csp, /unsafe-inline/);
      assert.match(csp, /frame-ancestors 'none'/);
    }
    // Every path asks, the page and its assets too.
    for (const path of ["/", "/dashboard.js", "/metrics", "/api/events", "/nope"]) {
      const res = await rawExchange(
        port,
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
      );
      assert.match(res, /^HTTP\/1\.1 401 /, path);
    }
    assert.equal(await cli.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("passwords come from the environment: HTTP_PROXY_AUTH for proxy users, HTTP_PROXY_ADMIN_AUTH for the admin", async () => {
  await using origin = startHttpOrigin(() => new Response("authorised"));
  await using cli = await startCli(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], {
    denoFlags: ["--allow-env=HTTP_PROXY_AUTH,HTTP_PROXY_ADMIN_AUTH"],
    env: { HTTP_PROXY_AUTH: "alice:pw1\nbob:pw2\n", HTTP_PROXY_ADMIN_AUTH: "ops:pw3" },
  });
  await cli.stderr.waitFor(
    /policy: clients anyone with credentials, Basic proxy authentication \(2 user\(s\)\);/,
  );
  const admin =
    (await cli.stderr.waitFor(/admin: http:\/\/(\S+)\/ .*asks for admin credentials\n/))[1]!;
  const url = `http://127.0.0.1:${origin.port}/`;
  assert.equal((await curl(["-x", cli.addrs[0]!, "-U", "bob:pw2", url])).stdout, "authorised");
  assert.match(
    (await curl(["-x", cli.addrs[0]!, "-U", "bob:pw1", "-i", url])).stdout,
    /^HTTP\/1\.1 407 /,
  );
  assert.equal(
    (await curl(["-o", "/dev/null", "-w", "%{http_code}", `http://${admin}/metrics`])).stdout,
    "401",
  );
  assert.equal(
    (await curl([
      "-u",
      "ops:pw3",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      `http://${admin}/metrics`,
    ])).stdout,
    "200",
  );
  assert.equal(await cli.stop(), 0);
  assert.doesNotMatch(cli.stderr.text + cli.stdout.text, /pw[123]/);
});
