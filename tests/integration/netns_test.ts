import assert from "node:assert/strict";
import { adminOf, ROOT, startCli } from "../_fixtures/cli.ts";
import { canUseNetns, makeNetns, type Netns } from "../_fixtures/netns.ts";
import { curl } from "../_fixtures/servers.ts";

/** The origin (tests/_fixtures/origin_main.ts) inside the namespace, on all its addresses. */
async function startNsOrigin(ns: Netns) {
  const origin = new Deno.Command(ns.prefix[0]!, {
    args: [
      ...ns.prefix.slice(1),
      Deno.execPath(),
      "run",
      "--allow-net",
      `${ROOT}tests/_fixtures/origin_main.ts`,
      "0.0.0.0",
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const lines = origin.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const port = Number((await lines.read()).value?.trim());
  assert.ok(port > 0);
  return {
    port,
    async [Symbol.asyncDispose]() {
      await lines.cancel();
      try {
        origin.kill("SIGKILL");
      } catch {
        // already gone
      }
      await origin.status;
    },
  };
}

// Inside a private network namespace (no route out): the proxy on 198.18.0.1, a client on
// 198.18.0.2, every address of the namespace on its lo. Needs root; CI runs as root.
const usable = await canUseNetns();

Deno.test({
  name:
    "a client beyond loopback cannot reach the proxy host's own addresses; one on it can (needs root: network namespace)",
  ignore: !usable,
  async fn() {
    await using ns = await makeNetns(
      ["198.18.0.1", "198.18.0.2", "198.18.0.3"],
      "127.0.0.1 localhost\n127.0.0.1 rebind.test\n198.18.0.3 other.test\n",
    );
    // The origin listens on every address of the namespace.
    await using origin = await startNsOrigin(ns);
    const port = origin.port;
    await using cli = await startCli(
      [
        "--listen",
        "198.18.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--allow",
        "198.18.0.0/15",
        "--allow",
        "127.0.0.0/8",
        "--admin",
        "127.0.0.1:0",
        "--connect-ports",
        "any",
      ],
      { prefix: ns.prefix, denoFlags: ["--allow-sys"] },
    );
    // The startup lines say who may connect, and warn about private networks.
    await cli.stderr.waitFor(
      /policy: clients 198\.18\.0\.0\/15, 127\.0\.0\.0\/8, no authentication; destinations: this host: clients on it only; link-local and metadata: denied; private networks: reachable\n/,
    );
    await cli.stderr.waitFor(
      /warning: clients beyond loopback can reach every private network this host reaches/,
    );
    const admin = await adminOf(cli);
    const [outer, inner] = cli.addrs as [string, string];
    const from = (client: string, proxy: string, url: string, extra: string[] = []) =>
      curl(["--interface", client, "-x", proxy, "-i", ...extra, url], ns.prefix);

    // Beyond loopback: every address of this host, by literal, name or CONNECT, is refused.
    for (
      const url of [
        `http://127.0.0.1:${port}/`,
        `http://127.0.0.2:${port}/`,
        `http://localhost:${port}/`,
        `http://[::1]:${port}/`,
        `http://0.0.0.0:${port}/`,
        `http://198.18.0.1:${port}/`,
        `http://198.18.0.3:${port}/`,
        `http://other.test:${port}/`,
      ]
    ) {
      const res = await from("198.18.0.2", outer, url);
      assert.match(res.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/, url);
      assert.match(
        res.stdout,
        /is denied \(the proxy host's own addresses are reachable only by clients on it; see --allow-dest\)\n$/,
        url,
      );
    }
    const tunnel = await from("198.18.0.2", outer, `http://127.0.0.1:${port}/`, ["-p"]);
    assert.match(tunnel.stderr, /CONNECT tunnel failed, response 403/);
    const viaAdmin = await from("198.18.0.2", outer, `http://${admin}/api/recent`);
    assert.match(viaAdmin.stdout, /is denied \(it is this proxy's admin listener\)\n$/);

    // On loopback: literals and localhost reach local servers; a name resolving here does not.
    for (const url of [`http://127.0.0.1:${port}/a`, `http://localhost:${port}/a`]) {
      const res = await from("127.0.0.1", inner, url);
      assert.match(res.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\norigin \/a$/, url);
    }
    // A connection pooled for the loopback client is not lent to a client beyond loopback.
    const pooled = await from("198.18.0.2", outer, `http://localhost:${port}/a`);
    assert.match(pooled.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/);
    const rebind = await from("127.0.0.1", inner, `http://rebind.test:${port}/`);
    assert.match(rebind.stdout, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*could be DNS rebinding/);
    const selfAdmin = await from("127.0.0.1", inner, `http://${admin}/api/recent`);
    assert.match(selfAdmin.stdout, /is denied \(it is this proxy's admin listener\)\n$/);
    assert.equal(await cli.stop(), 0);
    // The access log says which client was refused what.
    assert.match(cli.stdout.text, /GET http:\/\/127\.0\.0\.1:\d+\/ from 198\.18\.0\.2 #1\n/);
    assert.equal(cli.stdout.text.match(/ -> /g)?.length, 2, "only the two allowed were dialed");

    // --allow-dest opens one address of this host on purpose. (Without --allow-sys the proxy
    // cannot read the interfaces, and says so; loopback is refused all the same.)
    await using opened = await startCli(
      ["--listen", "198.18.0.1:0", "--allow", "198.18.0.0/15", "--allow-dest", "198.18.0.3/32"],
      { prefix: ns.prefix },
    );
    await opened.stderr.waitFor(
      /warning: without --allow-sys the proxy cannot read this host's interface addresses/,
    );
    const res = await from("198.18.0.2", opened.addrs[0]!, `http://198.18.0.3:${port}/b`);
    assert.match(res.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*origin \/b$/);
    const still = await from("198.18.0.2", opened.addrs[0]!, `http://127.0.0.1:${port}/`);
    assert.match(still.stdout, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.equal(await opened.stop(), 0);
  },
});

Deno.test({
  name:
    "--outgoing-address: the origin sees the chosen address, or with same the one the client came in on (needs root: network namespace)",
  ignore: !usable,
  async fn() {
    await using ns = await makeNetns(
      ["198.18.0.1", "198.18.0.2", "198.18.0.3"],
      "127.0.0.1 localhost\n",
    );
    await using origin = await startNsOrigin(ns);
    const port = origin.port;
    const whoami = `http://127.0.0.1:${port}/whoami`;
    // The client is on loopback, so this host's addresses are its to reach.
    const via = (proxy: string, extra: string[] = []) =>
      curl(["--interface", "127.0.0.1", "-x", proxy, ...extra, whoami], ns.prefix);
    await using same = await startCli(
      [
        "--listen",
        "198.18.0.1:0",
        "--listen",
        "198.18.0.2:0",
        "--allow",
        "127.0.0.0/8",
        "--outgoing-address",
        "same",
        "--connect-ports",
        "any",
      ],
      { prefix: ns.prefix },
    );
    const [first, second] = same.addrs as [string, string];
    assert.equal((await via(first)).stdout, "from 198.18.0.1");
    assert.equal((await via(second)).stdout, "from 198.18.0.2");
    assert.equal((await via(second, ["-p"])).stdout, "from 198.18.0.2"); // a tunnel too
    assert.equal(await same.stop(), 0);
    await using fixed = await startCli(
      ["--listen", "198.18.0.1:0", "--allow", "127.0.0.0/8", "--outgoing-address", "198.18.0.3"],
      { prefix: ns.prefix },
    );
    assert.equal((await via(fixed.addrs[0]!)).stdout, "from 198.18.0.3");
    assert.equal(await fixed.stop(), 0);
  },
});
