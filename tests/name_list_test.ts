import assert from "node:assert/strict";
import { NameList } from "../lib/policy/name_list.ts";

Deno.test("NameList reads hosts files and one-name-a-line lists, and a name covers its subdomains", () => {
  const list = new NameList();
  list.addText(
    [
      "# StevenBlack-style header",
      "127.0.0.1 localhost",
      "127.0.0.1 localhost.localdomain",
      "255.255.255.255 broadcasthost",
      "::1 ip6-localhost ip6-loopback",
      "0.0.0.0 0.0.0.0",
      "",
      "0.0.0.0 ads.example.com   # trailing comment",
      "0.0.0.0\tTracker.Example.NET. metrics.example.org",
      ":: v6.example",
    ].join("\n"),
    "hosts",
  );
  list.addText("plain.example\r\n*.star.example\n  indented.example  \n# c\n\n", "domains.txt");
  list.addText("not a name!\n-bad-.example\n10.0.0.1\n", "junk.txt");
  assert.equal(list.size, 7);
  assert.equal(list.files, 3);
  assert.equal(list.ignored, 3);
  assert.deepEqual(list.firstIgnored, { source: "junk.txt", line: 1, text: "not a name!" });
  assert.equal(list.match("ads.example.com"), "ads.example.com");
  assert.equal(list.match("a.b.ads.example.com"), "ads.example.com");
  assert.equal(list.match("tracker.example.net"), "tracker.example.net");
  assert.equal(list.match("metrics.example.org"), "metrics.example.org");
  assert.equal(list.match("v6.example"), "v6.example");
  assert.equal(list.match("plain.example"), "plain.example");
  assert.equal(list.match("x.star.example"), "star.example");
  assert.equal(list.match("indented.example"), "indented.example");
  // Not a parent, not a sibling, not a longer label, not the hosts file's own names.
  assert.equal(list.match("example.com"), undefined);
  assert.equal(list.match("bads.example.com"), undefined);
  assert.equal(list.match("ads.example.com.evil"), undefined);
  assert.equal(list.match("localhost"), undefined);
  assert.equal(new NameList().match("ads.example.com"), undefined);
});

Deno.test("NameList reads a file in pieces cut anywhere, and tens of thousands of names", async () => {
  const lines = ["# list"];
  for (let i = 0; i < 50_000; i++) lines.push(i % 2 ? `0.0.0.0 n${i}.example` : `n${i}.example`);
  lines.splice(30_001, 0, "bad line here");
  const bytes = new TextEncoder().encode(lines.join("\n"));
  async function* pieces(size: number) {
    for (let i = 0; i < bytes.length; i += size) yield bytes.slice(i, i + size);
  }
  for (const size of [1, 7, 4096, bytes.length]) {
    const list = new NameList();
    await list.addChunks(pieces(size), "big.txt", size === 7 ? bytes.length : 0);
    assert.equal(list.size, 50_000, `pieces of ${size}`);
    assert.deepEqual(list.firstIgnored, { source: "big.txt", line: 30_002, text: "bad line here" });
    assert.equal(list.match("a.n49999.example"), "n49999.example");
    assert.equal(list.match("n0.example"), "n0.example");
    assert.equal(list.match("n50000.example"), undefined);
  }
});

Deno.test("NameList skips a line too long to be one (a file with no newlines) without holding it", async () => {
  const enc = new TextEncoder();
  async function* pieces() {
    yield enc.encode("first.example\nx");
    for (let i = 0; i < 100; i++) yield enc.encode("y".repeat(10_000));
    yield enc.encode("z\nlast.example\n");
  }
  const list = new NameList();
  await list.addChunks(pieces(), "odd.txt");
  assert.equal(list.size, 2);
  assert.equal(list.ignored, 1);
  assert.equal(list.firstIgnored?.line, 2);
  assert.match(list.firstIgnored!.text, /^xy{79}$/);
  assert.equal(list.match("last.example"), "last.example");
});
