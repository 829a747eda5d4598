import assert from "node:assert/strict";
import { Authenticator, fileCredentials, hashLine } from "../../lib/policy/auth.ts";
import { parseDestRule } from "../../lib/policy/policy.ts";
import {
  goesDirect,
  type ParentProxy,
  parseNoParent,
  parseParent,
} from "../../lib/upstream/parent.ts";
import { curl, startHttpOrigin, startProxy } from "../_fixtures/servers.ts";
import { hasTool } from "../_fixtures/tools.ts";

const parentAt = (port: number): ParentProxy =>
  parseParent(`http://127.0.0.1:${port}`) as ParentProxy;

Deno.test("--parent and --no-parent parse as curl and squid users write them", () => {
  assert.deepEqual(parseParent("http://Proxy.Corp:3128"), {
    host: "proxy.corp",
    port: 3128,
    text: "proxy.corp:3128",
  });
  assert.deepEqual(parseParent("http://[fd00::1]:8080/"), {
    host: "fd00::1",
    port: 8080,
    text: "[fd00::1]:8080",
  });
  assert.match(parseParent("proxy.corp:3128") as string, /is not http:\/\/host:port/);
  assert.match(parseParent("https://p:443") as string, /over TLS is not supported/);
  assert.match(parseParent("http://u:p@p:3128") as string, /credentials do not go in the URL/);
  const rules = parseNoParent([
    "localhost,.internal.example",
    "10.0.0.0/8, 192.0.2.7:8080",
    "[::1]",
  ]);
  assert.ok(Array.isArray(rules));
  const direct = (host: string, port = 80) => goesDirect(rules, host, port);
  assert.ok(direct("localhost"));
  assert.ok(direct("internal.example") && direct("a.b.internal.example"));
  assert.ok(!direct("notinternal.example"));
  assert.ok(direct("10.9.8.7"));
  assert.ok(direct("192.0.2.7", 8080) && !direct("192.0.2.7", 80));
  assert.ok(direct("::1"));
  assert.ok(!direct("example.com"));
  assert.ok(goesDirect(parseNoParent(["*"]) as [], "anything.test", 1));
  assert.match(parseNoParent(["ok.example,bad name"]) as string, /"bad name" is not a name/);
});

Deno.test("through a parent: plain requests in absolute-form, CONNECT through it, one pooled connection, the hop logged", async () => {
  const seen: string[] = [];
  await using origin = startHttpOrigin((req) => {
    seen.push(req.headers.get("via") ?? "");
    return new Response(`at ${new URL(req.url).pathname}`);
  });
  await using parent = startProxy({ viaName: "parent-proxy" }, { format: "json" });
  await using child = startProxy({ viaName: "child", parent: parentAt(parent.port) }, {
    format: "json",
  });
  const url = `http://127.0.0.1:${origin.port}`;
  const res = await curl(["-x", child.addr, `${url}/a`, `${url}/b`]);
  assert.equal(res.stdout, "at /aat /b");
  assert.deepEqual(seen, ["1.1 child, 1.1 parent-proxy", "1.1 child, 1.1 parent-proxy"]);
  // The parent got absolute-form requests; the child logged the hop and reused its connection.
  const parentLines = parent.lines.map((l) => JSON.parse(l));
  assert.deepEqual(parentLines.map((l) => [l.method, l.url, l.parent]), [
    ["GET", `${url}/a`, null],
    ["GET", `${url}/b`, null],
  ]);
  const childLines = child.lines.map((l) => JSON.parse(l));
  assert.deepEqual(childLines.map((l) => [l.parent, l.upstream, l.upstream_conn]), [
    [`127.0.0.1:${parent.port}`, `127.0.0.1:${parent.port}`, "new"],
    [`127.0.0.1:${parent.port}`, `127.0.0.1:${parent.port}`, "reused"],
  ]);
  // CONNECT goes through the parent too (curl -p tunnels plain HTTP through the proxy).
  const tunneled = await curl(["-p", "-x", child.addr, `${url}/t`]);
  assert.equal(tunneled.stdout, "at /t");
  await parent.waitForLine(/"method":"CONNECT","url":"127\.0\.0\.1:\d+"/);
  await child.waitForLine(/"method":"CONNECT".*"parent":"127\.0\.0\.1:\d+","status":200/);
});

Deno.test("the parent's credentials go to it and nowhere else; a parent that wants them is a 502 naming the flag", async () => {
  const heard: (string | null)[] = [];
  await using origin = startHttpOrigin((req) => {
    heard.push(req.headers.get("proxy-authorization"));
    return new Response("ok");
  });
  const creds = fileCredentials(await hashLine("up", "stream", 1000));
  assert.ok(Array.isArray(creds));
  await using parent = startProxy({ viaName: "parent-proxy" }, {
    auth: new Authenticator(creds),
  });
  const url = `http://127.0.0.1:${origin.port}/`;
  await using good = startProxy({ parent: parentAt(parent.port), parentAuth: "up:stream" });
  assert.equal((await curl(["-x", good.addr, url])).stdout, "ok");
  assert.equal((await curl(["-p", "-x", good.addr, url])).stdout, "ok");
  assert.deepEqual(heard, [null, null]);
  await parent.waitForLine(/up@127\.0\.0\.1/);
  await using none = startProxy({ parent: parentAt(parent.port) });
  const plain = await curl(["-x", none.addr, "-s", "-w", " %{http_code}", url]);
  assert.match(
    plain.stdout,
    /parent proxy "127\.0\.0\.1:\d+" wants credentials \(407\): see --parent-auth-file\n 502$/,
  );
  const tunnel = await curl(["-p", "-x", none.addr, "-s", "-v", url]);
  assert.match(tunnel.stderr, /CONNECT tunnel failed, response 502/);
  await none.waitForLine(
    /refused CONNECT 127\.0\.0\.1:\d+: 407 Proxy Authentication Required \(it wants credentials: see --parent-auth-file\)/,
  );
});

Deno.test("--no-parent goes direct; the policy still applies before the parent; a parent that is down is a 502", async () => {
  await using origin = startHttpOrigin(() => new Response("direct"));
  await using parent = startProxy({ viaName: "parent-proxy" });
  await using child = startProxy({
    parent: parentAt(parent.port),
    noParent: parseNoParent(["127.0.0.0/8"]) as [],
    denyDest: [parseDestRule("*.blocked.test")!],
  }, { format: "json" });
  assert.equal(
    (await curl(["-x", child.addr, `http://127.0.0.1:${origin.port}/`])).stdout,
    "direct",
  );
  assert.equal(JSON.parse(child.lines[0]!).parent, null);
  // Denied names and metadata addresses never reach the parent.
  for (
    const [url, why] of [
      ["http://x.blocked.test/", /denied by --deny-dest \*\.blocked\.test/],
      ["http://169.254.169.254/latest/", /link-local and cloud metadata/],
    ] as const
  ) {
    const res = await curl(["-x", child.addr, "-s", "-w", " %{http_code}", url]);
    assert.match(res.stdout, why);
    assert.match(res.stdout, / 403$/);
  }
  assert.deepEqual(parent.lines, []);
  // A closed port as the parent.
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  await using orphan = startProxy({ parent: parentAt(port) });
  const res = await curl(["-x", orphan.addr, "-s", "-w", " %{http_code}", "http://example.test/"]);
  assert.equal(
    res.stdout,
    `502 Bad Gateway: Cannot connect to parent proxy "127.0.0.1:${port}": connection refused\n 502`,
  );
});

const hasSquid = await hasTool("squid", ["-v"]);

Deno.test({
  name: "Debian's squid as the parent: plain and CONNECT requests pass through it (needs squid)",
  ignore: !hasSquid, // .ci/run installs Debian's squid
  async fn() {
    await using origin = startHttpOrigin((req) =>
      new Response(`squid said via ${req.headers.get("via")}`)
    );
    const dir = await Deno.makeTempDir();
    await Deno.chmod(dir, 0o777); // squid writes its logs as the user proxy
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = probe.addr.port;
    probe.close();
    await Deno.writeTextFile(
      `${dir}/squid.conf`,
      `http_port 127.0.0.1:${port}
http_access allow localhost
http_access deny all
cache deny all
access_log stdio:${dir}/access.log
cache_log ${dir}/cache.log
pid_filename ${dir}/squid.pid
coredump_dir ${dir}
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
`,
    );
    const squid = new Deno.Command("squid", {
      args: ["-N", "-f", `${dir}/squid.conf`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0;; i++) {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          break;
        } catch (err) {
          if (i > 200) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await using child = startProxy({ viaName: "child", parent: parentAt(port) }, {
        format: "json",
      });
      const url = `http://127.0.0.1:${origin.port}/`;
      const plain = await curl(["-x", child.addr, url]);
      assert.match(plain.stdout, /^squid said via 1\.1 child, 1\.1 [^ ]+ \(squid\/[\d.]+\)$/);
      const tunneled = await curl(["-p", "-x", child.addr, url]);
      assert.equal(tunneled.stdout, "squid said via null");
      // Squid writes its access log line when an exchange ends (a tunnel's when it closes),
      // through a buffer: wait for both lines.
      let log = "";
      for (let i = 0; i < 100 && !/TCP_TUNNEL\/200/.test(log); i++) {
        await new Promise((r) => setTimeout(r, 50));
        log = await Deno.readTextFile(`${dir}/access.log`).catch(() => "");
      }
      assert.match(log, /TCP_MISS\/200 .* GET http:\/\/127\.0\.0\.1:\d+\/ /);
      assert.match(log, /TCP_TUNNEL\/200 .* CONNECT 127\.0\.0\.1:\d+ /);
    } finally {
      try {
        squid.kill("SIGKILL");
      } catch {
        // it had already stopped (its cache.log says why)
      }
      await squid.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("--max-active-per-host does not bound requests through a parent together: they are for many origins", async () => {
  let now = 0;
  let most = 0;
  await using origin = startHttpOrigin(async () => {
    most = Math.max(most, ++now);
    await new Promise((r) => setTimeout(r, 200));
    now--;
    return new Response("ok");
  });
  await using parent = startProxy({ viaName: "parent-proxy" });
  await using child = startProxy({ parent: parentAt(parent.port), maxActivePerHost: 1 });
  const url = `http://127.0.0.1:${origin.port}/`;
  const answers = await Promise.all([1, 2, 3].map(() => curl(["-sS", "-x", child.addr, url])));
  for (const a of answers) assert.equal(a.stdout, "ok");
  assert.equal(most, 3, "the three requests were at the origin at once");
});
