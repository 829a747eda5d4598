import assert from "node:assert/strict";
import { inRange, isLoopback, parseCidr, parseIp } from "../lib/policy/ip.ts";

Deno.test("parseIp() reads IPv4 and IPv6, and maps ::ffff:a.b.c.d to IPv4", () => {
  assert.deepEqual(parseIp("192.0.2.3"), { version: 4, bytes: new Uint8Array([192, 0, 2, 3]) });
  assert.deepEqual(parseIp("::ffff:127.0.0.1"), {
    version: 4,
    bytes: new Uint8Array([127, 0, 0, 1]),
  });
  assert.deepEqual(parseIp("::ffff:7f00:1"), { version: 4, bytes: new Uint8Array([127, 0, 0, 1]) });
  assert.deepEqual(parseIp("::1")?.bytes, new Uint8Array([...Array(15).fill(0), 1]));
  assert.deepEqual(parseIp("fe80::1:2")?.bytes.slice(0, 2), new Uint8Array([0xfe, 0x80]));
  assert.equal(parseIp("2001:db8::")?.version, 6);
  assert.deepEqual(parseIp("0.0.0.0")?.bytes, new Uint8Array([0, 0, 0, 0]));
  assert.deepEqual(parseIp("255.255.255.255")?.bytes, new Uint8Array([255, 255, 255, 255]));
  assert.deepEqual(parseIp("10.200.0.99")?.bytes, new Uint8Array([10, 200, 0, 99])); // parsed only
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.2.3.4",
      "1.2.3.-1",
      "::1::",
      "1:2:3:4:5:6:7:8:9",
      "g::1",
      "localhost",
      "0x7f.1",
      "1.2.3.4.",
      ".1.2.3",
      "1..3.4",
      "00.1.2.3",
      "1.2.3.1000",
      "1.2.3.4 ",
      "1.2.3.25a",
    ]
  ) {
    assert.equal(parseIp(bad), undefined, bad);
  }
});

Deno.test("parseCidr() and inRange() match by prefix, mapped forms included", () => {
  const testNet = parseCidr("198.51.100.0/24")!;
  assert.ok(inRange(testNet, parseIp("198.51.100.200")!));
  assert.ok(!inRange(testNet, parseIp("198.51.101.1")!));
  assert.ok(inRange(testNet, parseIp("::ffff:198.51.100.1")!));
  const mappedLoop = parseCidr("::ffff:127.0.0.0/104")!;
  assert.equal(mappedLoop.version, 4);
  assert.equal(mappedLoop.prefix, 8);
  assert.ok(inRange(parseCidr("fc00::/7")!, parseIp("fd12::1")!));
  assert.ok(!inRange(parseCidr("fc00::/7")!, parseIp("fe80::1")!));
  assert.ok(inRange(parseCidr("198.18.0.0/15")!, parseIp("198.19.255.255")!));
  assert.ok(!inRange(parseCidr("198.18.0.0/15")!, parseIp("198.20.0.0")!));
  assert.ok(inRange(parseCidr("0.0.0.0/0")!, parseIp("203.0.113.4")!));
  assert.ok(inRange(parseCidr("192.0.2.7")!, parseIp("192.0.2.7")!));
  assert.ok(!inRange(parseCidr("192.0.2.7")!, parseIp("192.0.2.8")!));
  for (const bad of ["198.51.100.0/33", "::/129", "198.51.100.0/x", "198/8", "1.2.3.4/8/9"]) {
    assert.equal(parseCidr(bad), undefined, bad);
  }
});

Deno.test("isLoopback() knows 127/8, ::1 and their mapped forms", () => {
  for (const ip of ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopback(ip), ip);
  }
  for (const ip of ["198.51.100.1", "::2", "0.0.0.0", "::", "nonsense"]) {
    assert.ok(!isLoopback(ip), ip);
  }
});
