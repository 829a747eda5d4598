import assert from "node:assert/strict";
import { startCli } from "../_fixtures/cli.ts";
import { readUntil } from "../_fixtures/servers.ts";

Deno.test("shutdown after 3,000 distinct destinations loses nothing: valid HAR, every log line, a bounded summary, exit 0", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using cli = await startCli([
      "--listen",
      "127.0.0.1:0",
      "--log-format",
      "json",
      "--log-file",
      `${dir}/access.log`,
      "--har",
      `${dir}/traffic.har`,
      "--summary-json",
      `${dir}/summary.json`,
    ], { denoFlags: [`--allow-write=${dir}`] });
    const [hostname, port] = [cli.addrs[0]!.split(":")[0]!, Number(cli.addrs[0]!.split(":")[1])];
    // Link-local literals: each a distinct destination, each refused (403) before any packet,
    // pipelined 500 to a connection.
    const enc = new TextEncoder();
    for (let c = 0; c < 6; c++) {
      using conn = await Deno.connect({ hostname, port });
      let batch = "";
      for (let i = 0; i < 500; i++) {
        const n = c * 500 + i;
        batch += `GET http://169.254.${n >> 8}.${n & 255}:80/${"p".repeat(200)} HTTP/1.1\r\n` +
          `Host: x\r\n${i === 499 ? "Connection: close\r\n" : ""}\r\n`;
      }
      await conn.write(enc.encode(batch));
      await readUntil(conn, (t) => (t.match(/HTTP\/1\.1 403 /g)?.length ?? 0) === 500, 20_000);
    }
    assert.equal(await cli.stop("SIGTERM"), 0);
    const har = JSON.parse(await Deno.readTextFile(`${dir}/traffic.har`));
    assert.equal(har.log.entries.length, 3000);
    const lines = (await Deno.readTextFile(`${dir}/access.log`)).trimEnd().split("\n");
    assert.equal(lines.length, 3000);
    assert.equal(JSON.parse(lines[2999]!).status, 403);
    const summary = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
    assert.equal(summary.hosts.length, 1001);
    assert.equal(
      summary.hosts.reduce((n: number, h: { requests: number }) => n + h.requests, 0),
      3000,
    );
    assert.ok(summary.hosts.some((h: { host: string }) => h.host === "(other)"));
    assert.match(cli.stderr.text, /^summary: 3000 exchange\(s\) in \d+ s/m);
    assert.match(cli.stderr.text, /^\.\.\. 951 more host\(s\) \(all of them: --summary-json\)$/m);
    assert.match(cli.stderr.text, /\nstopped\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
