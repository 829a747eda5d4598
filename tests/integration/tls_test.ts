import assert from "node:assert/strict";
import { makeCertificates } from "../../lib/cli/make_cert.ts";
import { hashLine } from "../../lib/policy/auth.ts";
import { describePolicy } from "../../lib/policy/policy.ts";
import { DEFAULTS } from "../../lib/cli/config.ts";
import { runCli, startCli } from "../_fixtures/cli.ts";
import { hasTool } from "../_fixtures/tools.ts";
import { curl, readAll, startHttpOrigin } from "../_fixtures/servers.ts";

/** Starts the CLI with a plain and a TLS listener on the folder's pair; `tls` is the https:// URL. */
async function startTls(
  certs: { dir: string; flags: string[] },
  extra: string[] = [],
  denoFlags = [`--allow-read=${certs.dir}`],
) {
  const cli = await startCli(
    ["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0", ...certs.flags, ...extra],
    { denoFlags },
  );
  return Object.assign(cli, { tls: cli.addrs.find((a) => a.startsWith("https://"))! });
}

/** curl through the TLS listener `tls` (an https:// proxy URL), trusting the folder's CA. */
function curlOverTls(tls: string, certs: { dir: string }, args: string[]) {
  return curl(["--proxy", tls, "--proxy-cacert", `${certs.dir}/ca.pem`, ...args]);
}

/** A folder with a fresh CA and a certificate for 127.0.0.1 and localhost, made as make-cert does. */
async function certDir() {
  const dir = await Deno.makeTempDir();
  const made = await makeCertificates(["127.0.0.1", "localhost"]);
  await Deno.writeTextFile(`${dir}/ca.pem`, made.caCert);
  await Deno.writeTextFile(`${dir}/proxy.pem`, made.cert);
  await Deno.writeTextFile(`${dir}/proxy-key.pem`, made.key);
  return {
    dir,
    flags: ["--tls-cert", `${dir}/proxy.pem`, "--tls-key", `${dir}/proxy-key.pem`],
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("--listen-tls: curl --proxy https:// relays plain and CONNECT requests, with auth, logged as TLS", async () => {
  await using origin = startHttpOrigin((req) => new Response(`via ${new URL(req.url).pathname}`));
  await using certs = await certDir();
  await Deno.writeTextFile(`${certs.dir}/users`, `${await hashLine("ann", "pw", 1000)}\n`);
  await using cli = await startTls(certs, [
    "--auth-file",
    `${certs.dir}/users`,
    "--connect-ports",
    "any",
    "--log-format",
    "json",
  ]);
  const tls = cli.tls;
  assert.match(tls, /^https:\/\/127\.0\.0\.1:\d+$/);
  const url = `http://127.0.0.1:${origin.port}`;
  const via = (extra: string[], path: string) =>
    curlOverTls(tls, certs, ["-s", "-w", " %{http_code}", ...extra, `${url}${path}`]);
  assert.equal((await via(["--proxy-user", "ann:pw"], "/plain")).stdout, "via /plain 200");
  assert.equal((await via(["--proxy-user", "ann:pw", "-p"], "/tunnel")).stdout, "via /tunnel 200");
  assert.match((await via([], "/nobody")).stdout, / 407$/);
  // Keep-alive inside TLS: two requests, one TLS connection.
  const two = await curlOverTls(tls, certs, [
    "--proxy-user",
    "ann:pw",
    "-v",
    `${url}/a`,
    `${url}/b`,
  ]);
  assert.equal(two.stdout, "via /avia /b");
  assert.match(two.stderr, /Re-using existing connection/);
  // Without the CA, curl refuses the proxy's certificate: nothing was sent in the clear.
  const untrusted = await curl(["--proxy", tls, "-s", "-w", "%{http_code}", `${url}/x`]);
  assert.equal(untrusted.stdout, "000");
  assert.equal(await cli.stop(), 0);
  const lines = cli.stdout.text.trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.length >= 5);
  for (const l of lines) {
    assert.equal(l.tls, true);
    assert.equal(l.listener, tls.slice("https://".length));
  }
  assert.deepEqual(lines.slice(0, 3).map((l) => [l.method, l.status, l.user]), [
    ["GET", 200, "ann"],
    ["CONNECT", 200, "ann"],
    ["GET", 407, null],
  ]);
});

Deno.test("a TLS handshake is bounded: a silent client is given up on at --header-timeout and holds one --max-connections slot until it leaves; plain HTTP to the TLS port is closed", async () => {
  await using origin = startHttpOrigin(() => new Response("ok"));
  await using certs = await certDir();
  await using cli = await startTls(certs, ["--header-timeout", "500ms", "--max-connections", "2"]);
  const tls = cli.tls;
  const [host, port] = tls.slice(8).split(":") as [string, string];
  const url = `http://127.0.0.1:${origin.port}/`;
  const get = () => curlOverTls(tls, certs, ["-s", "-w", " %{http_code}", url]);
  const silent = () => Deno.connect({ hostname: host, port: Number(port) });
  const first = await silent();
  await new Promise((r) => setTimeout(r, 900)); // past --header-timeout: given up on
  assert.equal((await get()).stdout, "ok 200");
  await new Promise((r) => setTimeout(r, 300)); // that connection's slot given back
  const second = await silent();
  await new Promise((r) => setTimeout(r, 900));
  // Deno cannot close a socket mid-handshake, so the two silent ones still count: the limit holds.
  assert.match((await get()).stdout, /too many connections \(2, see --max-connections\)\n 503$/);
  first.close(); // a client that leaves gives its slot back
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await get()).stdout, "ok 200");
  second.close();
  // Plain HTTP to the TLS port: a TLS alert, then the close; never a hang.
  using plain = await silent();
  await plain.write(new TextEncoder().encode("GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n"));
  const answer = await readAll(plain, 5000);
  assert.ok(!answer.startsWith("HTTP/"), JSON.stringify(answer));
  assert.equal(await cli.stop(), 0);
});

Deno.test("SIGHUP serves a new certificate on the TLS listener; a bad pair keeps the old one", async () => {
  await using origin = startHttpOrigin(() => new Response("ok"));
  await using certs = await certDir();
  await using cli = await startTls(certs, []);
  const tls = cli.tls;
  const url = `http://127.0.0.1:${origin.port}/`;
  const trusting = (ca: string) =>
    curl(["--proxy", tls, "--proxy-cacert", ca, "-s", "-w", " %{http_code}", url]);
  assert.equal((await trusting(`${certs.dir}/ca.pem`)).stdout, "ok 200");
  // A renewal from another CA: after SIGHUP, clients of the new CA get through, the old fail.
  const renewed = await makeCertificates(["127.0.0.1"]);
  await Deno.writeTextFile(`${certs.dir}/ca2.pem`, renewed.caCert);
  await Deno.writeTextFile(`${certs.dir}/proxy.pem`, renewed.cert);
  await Deno.writeTextFile(`${certs.dir}/proxy-key.pem`, renewed.key);
  cli.child.kill("SIGHUP");
  await cli.stderr.waitFor(/reload: SIGHUP: config, password file and lists read again\n/);
  assert.equal((await trusting(`${certs.dir}/ca2.pem`)).stdout, "ok 200");
  assert.equal((await trusting(`${certs.dir}/ca.pem`)).stdout, " 000");
  // A key that does not go with the certificate: refused, the renewed pair stays.
  await Deno.writeTextFile(
    `${certs.dir}/proxy-key.pem`,
    (await makeCertificates(["127.0.0.1"])).key,
  );
  cli.child.kill("SIGHUP");
  await cli.stderr.waitFor(
    /reload: SIGHUP: kept the running config: --tls-cert\/--tls-key: .* do not make a TLS server/,
  );
  assert.equal((await trusting(`${certs.dir}/ca2.pem`)).stdout, "ok 200");
  assert.equal(await cli.stop(), 0);
});

Deno.test("make-cert makes a CA once and reuses it, never overwrites a key, and refuses what is not a name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await runCli(["make-cert", "--dir", dir, "proxy.lan", "192.0.2.10"], [
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
    ]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^made a CA in .*ca\.pem/);
    assert.match(first.stdout, /curl --proxy https:\/\/proxy\.lan:3129 --proxy-cacert ca\.pem/);
    assert.equal((await Deno.stat(`${dir}/proxy-key.pem`)).mode! & 0o777, 0o600);
    const ca = await Deno.readTextFile(`${dir}/ca.pem`);
    const again = await runCli(["make-cert", "--dir", dir, "proxy.lan"], [
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
    ]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /proxy\.pem" exists and is never overwritten/);
    await Deno.remove(`${dir}/proxy.pem`);
    await Deno.remove(`${dir}/proxy-key.pem`);
    const renewed = await runCli(["make-cert", "--dir", dir, "proxy.lan"], [
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
    ]);
    assert.equal(renewed.code, 0, renewed.stderr);
    assert.match(renewed.stdout, /^reused the CA/);
    assert.equal(await Deno.readTextFile(`${dir}/ca.pem`), ca);
    assert.ok((await Deno.readTextFile(`${dir}/proxy.pem`)).endsWith(ca)); // the chain
    const bad = await runCli(["make-cert", "--dir", dir, "not a name"], [
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"not a name" is not a host name or an IP address/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a plain listener beyond loopback with passwords warns that they cross the network in the clear", () => {
  const base = { ...DEFAULTS, allow: [], open: false };
  const plain = describePolicy({ ...base, listen: [{ hostname: "0.0.0.0", port: 3128 }] }, 2);
  assert.match(
    plain.join("\n"),
    /warning: on 0\.0\.0\.0:3128 proxy passwords cross the network in the clear/,
  );
  const tlsOnly = describePolicy({
    ...base,
    listen: [{ hostname: "127.0.0.1", port: 3128 }],
    listenTls: [{ hostname: "0.0.0.0", port: 3129 }],
  }, 2);
  assert.doesNotMatch(tlsOnly.join("\n"), /in the clear/);
  assert.doesNotMatch(
    describePolicy({ ...base, listen: [{ hostname: "0.0.0.0", port: 3128 }] }, 0).join("\n"),
    /in the clear/,
  );
});

const hasRequests = await hasTool("python3", ["-c", "import requests"]);

Deno.test({
  name: "Python requests through the TLS proxy, the CA given as verify (needs python3 requests)",
  ignore: !hasRequests, // .ci/run installs Debian's python3-requests
  async fn() {
    await using origin = startHttpOrigin((req) => new Response(`py ${new URL(req.url).pathname}`));
    await using certs = await certDir();
    await using cli = await startTls(certs, ["--log-format", "json"]);
    const tls = cli.tls;
    const script = `
import requests, sys
proxies = {"http": sys.argv[1]}
r = requests.get(sys.argv[2], proxies=proxies, verify=sys.argv[3], timeout=10)
print(r.status_code, r.text)
`;
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        script,
        tls,
        `http://127.0.0.1:${origin.port}/from-python`,
        `${certs.dir}/ca.pem`,
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_PROXY: "", no_proxy: "" },
    }).output();
    assert.equal(
      new TextDecoder().decode(out.stdout).trim(),
      "200 py /from-python",
      new TextDecoder().decode(out.stderr),
    );
    const line = await cli.stdout.waitFor(
      /\{[^\n]*"url":"http:\/\/127\.0\.0\.1:\d+\/from-python"[^\n]*\}/,
    );
    assert.equal(JSON.parse(line[0]).tls, true);
    assert.equal(await cli.stop(), 0);
  },
});

const hasNode = await hasTool("node") && await hasTool("npm");

Deno.test({
  name:
    "Node's undici (ProxyAgent) through the TLS proxy, the CA given as proxyTls (needs node and npm)",
  ignore: !hasNode,
  async fn() {
    await using origin = startHttpOrigin((req) =>
      new Response(`node ${new URL(req.url).pathname}`)
    );
    await using certs = await certDir();
    // undici from the npm registry, into this test's own folder.
    const npm = await new Deno.Command("npm", {
      args: [
        "install",
        "--silent",
        "--no-audit",
        "--no-fund",
        "--prefix",
        certs.dir,
        "undici@6.21.3",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(npm.code, 0, new TextDecoder().decode(npm.stderr));
    await using cli = await startTls(certs, [
      "--connect-ports",
      "any", // undici's ProxyAgent tunnels every request, http:// too
      "--log-format",
      "json",
    ]);
    const tls = cli.tls;
    const script = `
const { ProxyAgent, request } = require(process.argv[1] + "/node_modules/undici");
const fs = require("fs");
const agent = new ProxyAgent({ uri: process.argv[2], proxyTls: { ca: fs.readFileSync(process.argv[1] + "/ca.pem") } });
request(process.argv[3], { dispatcher: agent })
  .then(async (r) => { console.log(r.statusCode, await r.body.text()); await agent.close(); })
  .catch((e) => { console.log("error", e.message); process.exitCode = 1; });
`;
    const out = await new Deno.Command("node", {
      args: [
        "--no-deprecation",
        "-e",
        script,
        certs.dir,
        tls,
        `http://127.0.0.1:${origin.port}/from-node`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(out.stdout).trim(),
      "200 node /from-node",
      new TextDecoder().decode(out.stderr),
    );
    const line = await cli.stdout.waitFor(/\{[^\n]*"method":"CONNECT"[^\n]*\}/);
    assert.equal(JSON.parse(line[0]).tls, true);
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test("--workers 2 share the TLS listener too", async () => {
  await using origin = startHttpOrigin(() => new Response("w"));
  await using certs = await certDir();
  await using cli = await startTls(certs, ["--workers", "2"], ["--unstable-net", "--allow-read"]);
  await cli.stderr.waitFor(/\(2 workers\)/);
  const tls = cli.tls;
  for (let i = 0; i < 4; i++) {
    const res = await curlOverTls(tls, certs, [`http://127.0.0.1:${origin.port}/`]);
    assert.equal(res.stdout, "w");
  }
  assert.equal(await cli.stop(), 0);
  assert.equal(cli.stdout.text.match(/ 200 OK 1 bytes /g)?.length, 4);
});
