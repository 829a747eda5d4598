import assert from "node:assert/strict";
import type { ConnectFn, ResolveFn } from "../../lib/upstream/dial.ts";
import { isLoopback, parseCidr } from "../../lib/policy/ip.ts";
import { describePolicy, parseDestRule } from "../../lib/policy/policy.ts";
import { NameList } from "../../lib/policy/name_list.ts";
import { DEFAULTS } from "../../lib/cli/config.ts";
import { rawExchange, startHttpOrigin, startOrigin, startProxy } from "../_fixtures/servers.ts";

Deno.test("a client outside --allow gets 403 before any of its request is read, and nothing is dialed", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
  });
  await using proxy = startProxy({ allow: [parseCidr("198.51.100.0/24")!] });
  const res = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
  );
  assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(res, /\r\nConnection: close\r\n/);
  assert.match(
    res,
    /\r\n\r\n403 Forbidden: client 127\.0\.0\.1 is not allowed \(not in --allow\)\n$/,
  );
  assert.equal(origin.accepted, 0);
  await proxy.waitForLine(/^\[\d\d:\d\d:\d\d\] - - from 127\.0\.0\.1 #\d+$/);
  await proxy.waitForLine(
    / 403 Forbidden 0 bytes \(client 127\.0\.0\.1 is not allowed \(not in --allow\)\)/,
  );
});

Deno.test("a client that sends a large body before reading still gets its 403", async () => {
  await using proxy = startProxy({ allow: [parseCidr("198.51.100.0/24")!] });
  const big = "x".repeat(100_000);
  const res = await rawExchange(
    proxy.port,
    `POST http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\n\r\n${big}`,
  );
  assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
});

Deno.test("--allow ranges, the loopback default and --open each let the right clients in", async (t) => {
  await using origin = startHttpOrigin(() => new Response("in"));
  const req =
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const cases: [string, Parameters<typeof startProxy>[0]][] = [
    ["loopback by default", {}],
    ["an --allow range that holds the client", { allow: [parseCidr("127.0.0.0/24")!] }],
    ["its IPv4-mapped IPv6 spelling", { allow: [parseCidr("::ffff:127.0.0.1/128")!] }],
    ["--open", { allow: [parseCidr("198.51.100.0/24")!], open: true }],
  ];
  for (const [name, config] of cases) {
    await t.step(name, async () => {
      await using proxy = startProxy(config);
      assert.match(await rawExchange(proxy.port, req), /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nin$/);
    });
  }
});

Deno.test("a request whose Via already names this proxy gets 508 Loop Detected, CONNECT too", async () => {
  await using origin = startOrigin(async (c) => {
    await c.readHead();
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
  });
  await using proxy = startProxy();
  for (
    const req of [
      `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nVia: 1.0 a, 1.1 HTTP-Proxy\r\n\r\n`,
      `CONNECT 127.0.0.1:${origin.port} HTTP/1.1\r\nVia: 1.1 http-proxy (x)\r\n\r\n`,
    ]
  ) {
    const res = await rawExchange(proxy.port, req);
    assert.match(
      res,
      /^HTTP\/1\.1 508 Loop Detected\r\n[\s\S]*loop detected: the request already passed through http-proxy\n$/,
    );
  }
  assert.equal(origin.accepted, 0);
  // Another proxy's entry is no loop.
  const ok = await rawExchange(
    proxy.port,
    `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nVia: 1.1 squid\r\nConnection: close\r\n\r\n`,
  );
  assert.match(ok, /^HTTP\/1\.1 200 OK\r\n/);
});

Deno.test("TRACE is refused with 405 unless --allow-trace", async () => {
  await using origin = startHttpOrigin(() => new Response("traced"));
  await using proxy = startProxy();
  const res = await rawExchange(
    proxy.port,
    `TRACE http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    { halfClose: true },
  );
  assert.match(
    res,
    /^HTTP\/1\.1 405 Method Not Allowed\r\n[\s\S]*TRACE is refused \(see --allow-trace\)\n$/,
  );
  await using open = startProxy({ allowTrace: true });
  const heads: string[] = [];
  await using echo = startOrigin(async (c) => {
    heads.push((await c.readHead())!);
    await c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  const relayed = await rawExchange(
    open.port,
    `TRACE http://127.0.0.1:${echo.port}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 5\r\nConnection: close\r\n\r\n`,
  );
  assert.match(relayed, /\r\n\r\nok$/);
  assert.match(heads[0]!, /\r\nMax-Forwards: 4\r\n/);
});

Deno.test("OPTIONS and TRACE with Max-Forwards: 0 are answered by the proxy, not forwarded", async () => {
  await using origin = startOrigin(async () => {});
  await using proxy = startProxy({ allowTrace: true });
  const options = await rawExchange(
    proxy.port,
    `OPTIONS http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\nConnection: close\r\n\r\n`,
  );
  assert.equal(
    options,
    "HTTP/1.1 200 OK\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE\r\n" +
      "Content-Length: 0\r\nConnection: close\r\n\r\n",
  );
  const trace = await rawExchange(
    proxy.port,
    `TRACE http://127.0.0.1:${origin.port}/t HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n` +
      `Proxy-Authorization: Basic c2VjcmV0\r\nCookie: s=1\r\nX-Seen: yes\r\nConnection: close\r\n\r\n`,
  );
  const echoed =
    `TRACE http://127.0.0.1:${origin.port}/t HTTP/1.1\r\nHost: x\r\nMax-Forwards: 0\r\n` +
    `X-Seen: yes\r\nConnection: close\r\n\r\n`;
  assert.equal(
    trace,
    `HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: ${echoed.length}\r\n` +
      `Connection: close\r\n\r\n${echoed}`,
  );
  assert.equal(origin.accepted, 0);
  const bad = await rawExchange(
    proxy.port,
    `OPTIONS http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nMax-Forwards: -1\r\n\r\n`,
  );
  assert.match(bad, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*malformed Max-Forwards "-1"\n$/);
});

/** A connect that only ever dials loopback: a policy bug can never send a packet elsewhere. */
const loopbackOnly: ConnectFn = (options) => {
  if (!isLoopback(options.hostname ?? "")) {
    return Promise.reject(new Error(`test refused to dial ${options.hostname}`));
  }
  return Deno.connect(options);
};

Deno.test("link-local and cloud metadata destinations are denied by default, before any packet", async () => {
  await using proxy = startProxy({}, { connect: loopbackOnly });
  // The providers' addresses outside 169.254/16, and 169.254.169.254 inside every IPv6 form a
  // translator or tunnel would deliver to it: NAT64 (both prefixes), 6to4, Teredo, ::/96.
  const hosts = [
    ["169.254.169.254", ""],
    ["[::ffff:169.254.169.254]", ""],
    ["[fe80::1]", ""],
    ["100.100.100.200", ""],
    ["192.0.0.192", ""],
    ["168.63.129.16", ""],
    ["[fd00:ec2::254]", ""],
    ["[64:ff9b::169.254.169.254]", ", carried in it"],
    ["[64:ff9b:1:a9fe:a9:fe00::]", ", carried in it"],
    ["[64:ff9b:1::a9fe:a9fe]", ", carried in it"],
    ["[2002:a9fe:a9fe::1]", ", carried in it"],
    ["[2001:0:a9fe:a9fe::1]", ", carried in it"],
    ["[2001:0:4136:e378:8000:63bf:5601:5601]", ", carried in it"],
    ["[::169.254.169.254]", ", carried in it"],
  ];
  for (const [host, carried] of hosts) {
    const res = await rawExchange(
      proxy.port,
      `GET http://${host}/latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n`,
      { halfClose: true },
    );
    assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/, host);
    assert.ok(
      res.endsWith(`(link-local and cloud metadata addresses are denied by default${carried})\n`),
      `${host}: ${res}`,
    );
  }
  const tunnel = await rawExchange(proxy.port, "CONNECT 169.254.169.254:443 HTTP/1.1\r\n\r\n", {
    halfClose: true,
  });
  assert.match(tunnel, /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*denied by default\)\n$/);
  assert.equal(proxy.lines.filter((l) => l.includes(" -> ")).length, 0);
});

Deno.test("--block-private denies loopback however it is spelled: decimal, octal, hex, mapped, trailing dot, case", async (t) => {
  await using origin = startHttpOrigin(() => new Response("reached"));
  await using proxy = startProxy({ blockPrivate: true }, { connect: loopbackOnly });
  const preset = /is denied by --block-private \((127\.0\.0\.0\/8|::1\/128)\)\n$/;
  // Not IP literals to this proxy: names the system resolver turns into 127.0.0.1, so they are
  // refused as names that resolve to this host, with or without --block-private.
  const rebinding =
    /\(127\.0\.0\.1\) is denied \(a name that resolves to this host could be DNS rebinding;/;
  const spellings = [
    ["127.0.0.1", preset],
    ["2130706433", rebinding],
    ["0177.0.0.1", rebinding],
    ["0x7f.1", rebinding],
    ["[::ffff:127.0.0.1]", preset],
    ["[::1]", preset],
    ["localhost", preset],
    ["LOCALHOST.", preset],
  ] as const;
  for (const [host, why] of spellings) {
    await t.step(host, async () => {
      const res = await rawExchange(
        proxy.port,
        `GET http://${host}:${origin.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
        { halfClose: true },
      );
      assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.match(res, why);
      assert.doesNotMatch(res, /reached/);
    });
  }
  const tunnel = await rawExchange(
    proxy.port,
    `CONNECT localhost:${origin.port} HTTP/1.1\r\n\r\n`,
    { halfClose: true },
  );
  assert.match(
    tunnel,
    /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*destination localhost \(127\.0\.0\.1\) is denied by --block-private/,
  );
});

Deno.test("--block-private denies the reserved ranges and private IPv4 carried in IPv6 transition forms", async () => {
  await using proxy = startProxy({ blockPrivate: true }, { connect: loopbackOnly });
  const cases = [
    ["198.18.0.5", "198.18.0.0/15", ""],
    ["192.0.0.8", "192.0.0.0/24", ""],
    ["224.0.0.1", "224.0.0.0/4", ""],
    ["255.255.255.255", "240.0.0.0/4", ""],
    ["[fec0::1]", "fec0::/10", ""],
    ["[ff02::1]", "ff00::/8", ""],
    ["[64:ff9b::10.0.0.1]", "10.0.0.0/8", ", carried in it"],
    ["[2002:c0a8:101::1]", "192.168.0.0/16", ", carried in it"],
    ["[2001:0:4136:e378:8000:63bf:f5ff:fffe]", "10.0.0.0/8", ", carried in it"],
    ["[::172.16.0.1]", "172.16.0.0/12", ", carried in it"],
  ];
  for (const [host, range, carried] of cases) {
    const res = await rawExchange(
      proxy.port,
      `GET http://${host}/ HTTP/1.1\r\nHost: x\r\n\r\n`,
      { halfClose: true },
    );
    assert.ok(res.startsWith("HTTP/1.1 403 Forbidden\r\n"), `${host}: ${res}`);
    assert.ok(
      res.endsWith(`is denied by --block-private (${range}${carried})\n`),
      `${host}: ${res}`,
    );
  }
  // A public IPv4 address inside NAT64 passes the preset (nothing is dialed: loopbackOnly).
  const open = await rawExchange(
    proxy.port,
    `GET http://[64:ff9b::c633:6401]/ HTTP/1.1\r\nHost: x\r\n\r\n`,
    { halfClose: true },
  );
  assert.match(open, /^HTTP\/1\.1 502 Bad Gateway\r\n[\s\S]*test refused to dial/);
});

/**
 * A resolver that answers 127.0.0.1 for every name and records the names it was asked, and a
 * one-shot GET of a name on the origin's port.
 */
function lookups(port: number) {
  const asked: string[] = [];
  const resolve: ResolveFn = (name) => {
    asked.push(name);
    return Promise.resolve(["127.0.0.1"]);
  };
  const get = (host: string) =>
    `GET http://${host}:${port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  return { asked, resolve, get };
}

Deno.test("with only name rules in --allow-dest, another name is refused before any DNS lookup", async () => {
  await using origin = startHttpOrigin(() => new Response("reached"));
  const { asked, resolve, get } = lookups(origin.port);
  await using names = startProxy({ allowDest: [parseDestRule("*.localhost")!] }, { resolve });
  const refused = await rawExchange(names.port, get("elsewhere.test"));
  assert.match(
    refused,
    /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*destination elsewhere\.test is denied \(not in --allow-dest or --allow-dest-file\)\n$/,
  );
  assert.deepEqual(asked, []);
  assert.match(
    await rawExchange(names.port, get("app.localhost")),
    /^HTTP\/1\.1 200 OK\r\n[\s\S]*reached$/,
  );
  assert.deepEqual(asked, ["app.localhost"]);
  // With a range rule a name may resolve into it, so it has to be looked up.
  await using ranges = startProxy({ allowDest: [parseDestRule("127.0.0.0/8")!] }, { resolve });
  assert.match(await rawExchange(ranges.port, get("elsewhere.test")), /^HTTP\/1\.1 200 OK\r\n/);
  assert.deepEqual(asked, ["app.localhost", "elsewhere.test"]);
});

Deno.test("--deny-dest-file and --allow-dest-file names are judged before any DNS lookup, subdomains too", async () => {
  await using origin = startHttpOrigin(() => new Response("reached"));
  const { asked, resolve, get } = lookups(origin.port);
  const denyList = new NameList();
  denyList.addText("0.0.0.0 ads.localhost\n", "deny.txt");
  await using deny = startProxy({ denyList }, { resolve });
  for (const host of ["ads.localhost", "x.y.ADS.localhost."]) {
    assert.match(
      await rawExchange(deny.port, get(host)),
      /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*is denied by --deny-dest-file \(listed: ads\.localhost\)\n$/,
    );
  }
  assert.deepEqual(asked, []);
  assert.match(await rawExchange(deny.port, get("app.localhost")), /^HTTP\/1\.1 200 OK\r\n/);
  assert.deepEqual(asked, ["app.localhost"]);
  const allowList = new NameList();
  allowList.addText("app.localhost\n", "allow.txt");
  await using allow = startProxy({ allowList }, { resolve });
  assert.match(
    await rawExchange(allow.port, get("other.localhost")),
    /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*\(not in --allow-dest or --allow-dest-file\)\n$/,
  );
  assert.deepEqual(asked, ["app.localhost"]);
  assert.match(await rawExchange(allow.port, get("v2.app.localhost")), /^HTTP\/1\.1 200 OK\r\n/);
  assert.deepEqual(asked, ["app.localhost", "v2.app.localhost"]);
  // An allow-list name opens no hole in the defaults: the metadata address stays denied.
  const meta = new NameList();
  meta.addText("169.254.169.254\nmeta.test\n", "allow.txt");
  await using metaProxy = startProxy({ allowList: meta }, {
    resolve: () => Promise.resolve(["169.254.169.254"]),
  });
  assert.match(
    await rawExchange(metaProxy.port, get("meta.test")),
    /403 Forbidden[\s\S]*link-local and cloud metadata/,
  );
});

Deno.test("--deny-dest and --allow-dest: names, suffixes, ranges and ports", async (t) => {
  await using origin = startHttpOrigin(() => new Response("reached"));
  const port = origin.port;
  const rule = (text: string) => parseDestRule(text)!;
  const get = (host: string) =>
    `GET http://${host}:${port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
  const cases: [string, Parameters<typeof startProxy>[0], string, RegExp][] = [
    [
      "deny by name, before DNS",
      { denyDest: [rule("localhost")] },
      "localhost",
      /destination localhost is denied by --deny-dest localhost/,
    ],
    [
      "deny by suffix",
      { denyDest: [rule("*.localhost")] },
      "localhost",
      /denied by --deny-dest \*\.localhost/,
    ],
    [
      "deny by range, after DNS",
      { denyDest: [rule("127.0.0.0/8")] },
      "localhost",
      /destination localhost \(127\.0\.0\.1\) is denied by --deny-dest 127\.0\.0\.0\/8/,
    ],
    [
      "deny a port",
      { denyDest: [rule(`:${port}`)] },
      "127.0.0.1",
      new RegExp(`denied by --deny-dest :${port}`),
    ],
    [
      "deny a host on a port",
      { denyDest: [rule(`127.0.0.1:${port}`)] },
      "127.0.0.1",
      /denied by --deny-dest 127\.0\.0\.1:/,
    ],
    [
      "allow-dest leaves the rest out",
      { allowDest: [rule("198.51.100.0/24")] },
      "127.0.0.1",
      /is denied \(not in --allow-dest or --allow-dest-file\)/,
    ],
    [
      "deny wins over allow",
      { allowDest: [rule("127.0.0.1")], denyDest: [rule("localhost")] },
      "localhost",
      /by --deny-dest localhost/,
    ],
    [
      "an allowed name cannot lift --block-private",
      { allowDest: [rule("localhost")], blockPrivate: true },
      "localhost",
      /by --block-private/,
    ],
  ];
  for (const [name, config, host, re] of cases) {
    await t.step(name, async () => {
      await using proxy = startProxy(config, { connect: loopbackOnly });
      const res = await rawExchange(proxy.port, get(host));
      assert.match(res, /^HTTP\/1\.1 403 Forbidden\r\n/);
      assert.match(res, re);
    });
  }
  const allowed: [string, Parameters<typeof startProxy>[0], string][] = [
    ["an allowed range lifts --block-private for itself", {
      allowDest: [rule("127.0.0.1")],
      blockPrivate: true,
    }, "localhost"],
    ["an allowed name passes the allow list", { allowDest: [rule("localhost")] }, "localhost"],
    ["a port rule for another port", { denyDest: [rule(":1")] }, "127.0.0.1"],
  ];
  for (const [name, config, host] of allowed) {
    await t.step(name, async () => {
      await using proxy = startProxy(config, { connect: loopbackOnly });
      assert.match(
        await rawExchange(proxy.port, get(host)),
        /^HTTP\/1\.1 200 OK\r\n[\s\S]*reached$/,
      );
    });
  }
});

Deno.test("--via-name lets two chained instances tell each other apart", async () => {
  await using origin = startHttpOrigin(() => new Response("through two"));
  await using edgeA = startProxy({ viaName: "edge-a" });
  await using edgeB = startProxy({ viaName: "edge-b" });
  // A request that already passed edge-b (as edge-a sees it behind edge-b) is forwarded by
  // edge-a, which adds its own entry; edge-b itself refuses it as a loop.
  const req = `GET http://127.0.0.1:${origin.port}/ HTTP/1.1\r\nHost: x\r\nVia: 1.1 edge-b\r\n` +
    `Connection: close\r\n\r\n`;
  const passed = await rawExchange(edgeA.port, req);
  assert.match(passed, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\nVia: 1\.1 edge-a\r\n[\s\S]*through two$/);
  const loop = await rawExchange(edgeB.port, req);
  assert.match(loop, /^HTTP\/1\.1 508 Loop Detected\r\n[\s\S]*already passed through edge-b\n$/);
});

Deno.test("describePolicy() says who may connect and warns only when clients beyond loopback can reach private networks", () => {
  const base = { ...DEFAULTS, listen: [{ hostname: "0.0.0.0", port: 0 }] }; // never bound: describePolicy reads it
  assert.deepEqual(describePolicy({ ...DEFAULTS }, 0), [
    "policy: clients loopback only, no authentication; destinations: this host: clients on it " +
    "only; link-local and metadata: denied; private networks: reachable",
  ]);
  // Credentials on a loopback listener: nobody beyond this machine can connect, no warning.
  assert.equal(describePolicy({ ...DEFAULTS }, 2).length, 1);
  const lan = describePolicy({ ...base, allow: [parseCidr("203.0.113.0/24")!] }, 0);
  assert.match(lan[0]!, /^policy: clients 203\.0\.113\.0\/24, no authentication;/);
  assert.match(lan[1]!, /^warning: clients beyond loopback can reach every private network/);
  const blocked = describePolicy({ ...base, open: true, blockPrivate: true }, 0);
  assert.deepEqual(blocked, [
    "policy: clients anyone (--open), no authentication; destinations: this host: clients on it " +
    "only; link-local and metadata: denied; private networks: blocked (--block-private)",
  ]);
  assert.equal(describePolicy({ ...base, allow: [parseCidr("127.0.0.0/8")!] }, 0).length, 1);
});
