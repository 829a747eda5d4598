import assert from "node:assert/strict";
import validate from "har-validator";
import { HarFile } from "../../lib/observe/har.ts";
import { startCli } from "../_fixtures/cli.ts";
import { curl, startHttpOrigin, startOrigin } from "../_fixtures/servers.ts";

Deno.test("--har writes a HAR 1.2 file that validates, without bodies or credentials", async () => {
  await using origin = startHttpOrigin(() =>
    new Response("har body", {
      headers: { "content-type": "text/plain", "set-cookie": "s=secret" },
    })
  );
  await using echo = startOrigin(async (c) => {
    const buf = new Uint8Array(1024);
    const n = await c.conn.read(buf);
    await c.write(buf.subarray(0, n ?? 0));
  });
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/traffic.har`;
    await using cli = await startCli(
      ["--listen", "127.0.0.1:0", "--har", file, "--connect-ports", "any", "--quiet"],
      { denoFlags: [`--allow-write=${dir}`] },
    );
    await curl([
      "-x",
      cli.addrs[0]!,
      "-H",
      "Authorization: Bearer t0ken",
      "-H",
      "Cookie: c=1",
      `http://127.0.0.1:${origin.port}/a?x=1&y=2`,
    ]);
    await curl(["-x", cli.addrs[0]!, "-d", "posted", `http://127.0.0.1:${origin.port}/b`]);
    await curl(["-p", "-x", cli.addrs[0]!, "--max-time", "2", `http://127.0.0.1:${echo.port}/`]);
    await curl(["-x", cli.addrs[0]!, "http://127.0.0.1:9/"]);
    assert.equal(await cli.stop(), 0);
    const text = await Deno.readTextFile(file);
    const har = JSON.parse(text);
    await validate.har(har); // throws with the schema errors if invalid
    const entries = har.log.entries;
    assert.equal(entries.length, 4);
    const [get, post, tunnel, failed] = entries;
    assert.equal(get.request.url, `http://127.0.0.1:${origin.port}/a?x=1&y=2`);
    assert.deepEqual(get.request.queryString, [{ name: "x", value: "1" }, {
      name: "y",
      value: "2",
    }]);
    assert.equal(get.response.status, 200);
    assert.equal(get.response.content.size, 8);
    assert.equal(get.response.content.mimeType, "text/plain");
    assert.equal(get.serverIPAddress, "127.0.0.1");
    const reqHeaders = Object.fromEntries(
      get.request.headers.map((h: { name: string; value: string }) => [h.name, h.value]),
    );
    assert.equal(reqHeaders["Authorization"], "(removed)");
    assert.equal(reqHeaders["Cookie"], "(removed)");
    const resHeaders = Object.fromEntries(
      get.response.headers.map((h: { name: string; value: string }) => [h.name, h.value]),
    );
    assert.equal(resHeaders["set-cookie"], "(removed)");
    assert.equal(post.request.method, "POST");
    assert.equal(post.request.bodySize, 6);
    assert.equal(tunnel.request.method, "CONNECT");
    assert.equal(tunnel.request.url, `https://127.0.0.1:${echo.port}/`);
    assert.equal(failed.response.status, 502);
    assert.match(failed.comment, /connection refused/);
    assert.doesNotMatch(text, /t0ken|secret|har body|posted/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("HarFile writes client and origin text as \\u escapes: printable ASCII on disk, the same strings parsed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/t.har`;
    const har = new HarFile(file, () => {});
    const target = "http://a.test/\x1b[2J\x9b\u00e9\u{1f600}";
    har.closed({
      id: 1,
      start: 0,
      clientIp: "127.0.0.1",
      clientPort: 1,
      method: "GET",
      target,
      bytesUp: 0,
      bytesDown: 0,
      tunnel: false,
      opened: true,
      status: 200,
      reason: "OK\t\x85",
      requestFields: [["User-Agent", "a\x9b[31m"]],
    });
    har.close();
    const text = await Deno.readTextFile(file);
    assert.match(text, /^[\x20-\x7e\n]*$/);
    const entry = JSON.parse(text).log.entries[0];
    assert.equal(entry.request.url, target);
    assert.equal(entry.response.statusText, "OK\t\x85");
    assert.equal(entry.request.headers[0].value, "a\x9b[31m");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
