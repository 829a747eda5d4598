import assert from "node:assert/strict";
import {
  parseConnectTarget,
  parseHttpTarget,
  parseRequestHead,
  parseResponseHead,
} from "../../lib/http1/parse.ts";
import {
  addVia,
  encodeHead,
  endToEnd,
  requestFraming,
  responseFraming,
} from "../../lib/http1/headers.ts";

const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

Deno.test("parseRequestHead() reads the request line and fields in order", () => {
  const head = parseRequestHead(
    bytes("GET http://h/p HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\nx-a: 2\r\nEmpty:\r\n\r\n"),
  );
  assert.deepEqual(head, {
    method: "GET",
    target: "http://h/p",
    minor: 1,
    fields: [["Host", "h"], ["X-A", "1"], ["x-a", "2"], ["Empty", ""]],
  });
});

Deno.test("parseRequestHead() accepts bare LF line ends and keeps obs-text bytes", () => {
  const head = parseRequestHead(bytes("GET http://h/ HTTP/1.0\nX: caf\xe9\n\n"));
  assert.equal(head.minor, 0);
  assert.deepEqual(head.fields, [["X", "caf\xe9"]]);
  // and they go out as the same bytes
  assert.deepEqual(
    new Uint8Array(encodeHead("GET / HTTP/1.1", head.fields)),
    bytes("GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n"),
  );
});

Deno.test("parseRequestHead() rejects each malformed head", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["empty line", "\r\n\r\n", /malformed request line/],
    ["missing version", "GET http://h/\r\n\r\n", /malformed request line/],
    ["tab separator", "GET\thttp://h/ HTTP/1.1\r\n\r\n", /malformed request line/],
    ["two spaces", "GET  http://h/ HTTP/1.1\r\n\r\n", /malformed request line/],
    ["space at the end", "GET http://h/ HTTP/1.1 \r\n\r\n", /malformed request line/],
    ["four parts", "GET http://h/ x HTTP/1.1\r\n\r\n", /malformed request line/],
    ["lower-case version", "GET http://h/ http/1.1\r\n\r\n", /unsupported HTTP version/],
    ["HTTP/0.9 style", "GET http://h/ HTTP/0.9\r\n\r\n", /unsupported HTTP version/],
    ["method with slash", "G/T http://h/ HTTP/1.1\r\n\r\n", /malformed method/],
    ["control in target", "GET http://h/\x01 HTTP/1.1\r\n\r\n", /malformed request target/],
    ["tab in target", "GET http://h/\tx HTTP/1.1\r\nA: b\r\n\r\n", /malformed request target/],
    ["DEL in target", "GET http://h/\x7f HTTP/1.1\r\n\r\n", /malformed request target/],
    ["method not a token", "G(T http://h/ HTTP/1.1\r\n\r\n", /malformed method/],
    ["obs-fold", "GET http://h/ HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n", /obsolete line folding/],
    ["space before colon", "GET http://h/ HTTP/1.1\r\nA : b\r\n\r\n", /whitespace before colon/],
    ["tab before colon", "GET http://h/ HTTP/1.1\r\nA\t: b\r\n\r\n", /whitespace before colon/],
    ["empty name", "GET http://h/ HTTP/1.1\r\n: b\r\n\r\n", /invalid header name/],
    ["bare CR", "GET http://h/ HTTP/1.1\r\nA: b\rc\r\n\r\n", /bare CR/],
    ["NUL", "GET http://h/ HTTP/1.1\r\nA: b\0\r\n\r\n", /control character in header A/],
    ["DEL", "GET http://h/ HTTP/1.1\r\nA: \x7f\r\n\r\n", /control character/],
  ];
  for (const [name, text, re] of cases) {
    await t.step(name, () => assert.throws(() => parseRequestHead(bytes(text)), re));
  }
});

Deno.test("parse keeps each name as sent, however many names of one length it has seen", () => {
  // The parser keeps the first few names of each length to hand out again; the rest, and
  // long names, are read from the head each time. Every one must come out as sent.
  const names = Array.from({ length: 40 }, (_, i) => `Q${String(i).padStart(3, "0")}z`);
  for (let round = 0; round < 2; round++) {
    for (const name of names) {
      const variants = [name, name.toLowerCase(), name.toUpperCase()];
      const text = "GET http://h/ HTTP/1.1\r\n" + variants.map((n) => `${n}: v\r\n`).join("") +
        "\r\n";
      assert.deepEqual(parseRequestHead(bytes(text)).fields, variants.map((n) => [n, "v"]));
    }
  }
  const long = "X-" + "Long".repeat(20);
  assert.deepEqual(parseResponseHead(bytes(`HTTP/1.1 200 OK\r\n${long}: 1\r\n\r\n`)).fields, [
    [long, "1"],
  ]);
  // A name of a length whose kept names are full is still checked byte by byte.
  for (const bad of ["Q00@z", "Q00[z", "Q00{z", 'Q00"z', "Q00\x80z"]) {
    assert.throws(
      () => parseRequestHead(bytes(`GET http://h/ HTTP/1.1\r\n${bad}: v\r\n\r\n`)),
      /invalid header name/,
      bad,
    );
  }
});

Deno.test("parseRequestHead() limits the number of fields when asked", () => {
  const text = "GET http://h/ HTTP/1.1\r\n" + "A: 1\r\n".repeat(5) + "\r\n";
  assert.throws(() => parseRequestHead(bytes(text), 4), /more than 4 header fields/);
  assert.equal(parseRequestHead(bytes(text), 5).fields.length, 5);
});

Deno.test("parseResponseHead() reads status, reason (maybe empty) and fields", () => {
  assert.deepEqual(parseResponseHead(bytes("HTTP/1.0 404 Not Found\r\nA: b\r\n\r\n")), {
    minor: 0,
    status: 404,
    reason: "Not Found",
    fields: [["A", "b"]],
  });
  assert.equal(parseResponseHead(bytes("HTTP/1.1 204\r\n\r\n")).reason, "");
  assert.throws(() => parseResponseHead(bytes("HTTP/1.1 20 OK\r\n\r\n")), /malformed status line/);
  assert.throws(
    () => parseResponseHead(bytes("HTTP/2.0 200 OK\r\n\r\n")),
    /unsupported HTTP version/,
  );
  assert.throws(() => parseResponseHead(bytes("HTTP/1.1 099 X\r\n\r\n")), /invalid status code/);
});

Deno.test("parseResponseHead() reads every status line alike, with or without the fast path", () => {
  // A clean head's usual status line is read without the regular expression; the rest by it.
  const cases: [string, string | RegExp][] = [
    ["HTTP/1.1 200", "1 200 "],
    ["HTTP/1.1 200 ", "1 200 "],
    ["HTTP/1.0 404 Not Found", "0 404 Not Found"],
    ["HTTP/1.1 200 caf\xe9 \tx", "1 200 caf\xe9 \tx"],
    ["HTTP/1.1 999 Odd", "1 999 Odd"],
    ["HTTP/1.2 200 OK", /unsupported HTTP version/],
    ["HTTP/1.1 20x OK", /malformed status line/],
    ["HTTP/1.1 2000 OK", /malformed status line/],
    ["HTTP/1.1  200 OK", /malformed status line/],
    ["HTTP/1.1 200\tOK", /malformed status line/],
    ["HTTP/1.1 000 OK", /invalid status code/],
    ["http/1.1 200 OK", /malformed status line/],
  ];
  for (const [line, want] of cases) {
    for (const rest of ["A: b\r\n", "A: b\x01\r\n"]) { // clean, and not (the slow path)
      const text = `${line}\r\n${rest}\r\n`;
      if (want instanceof RegExp) {
        assert.throws(() => parseResponseHead(bytes(text)), want, line);
      } else if (rest.includes("\x01")) {
        assert.throws(() => parseResponseHead(bytes(text)), /control character in header A/, line);
      } else {
        const h = parseResponseHead(bytes(text));
        assert.equal(`${h.minor} ${h.status} ${h.reason}`, want, line);
      }
    }
  }
});

Deno.test("parseHttpTarget() splits without normalising the path", async (t) => {
  const ok: [string, object][] = [
    ["http://h/a/./b/../%2F;x?q=%20#", {}],
    ["http://Example.COM:81/p?x", {
      hostname: "Example.COM",
      port: 81,
      authority: "Example.COM:81",
      path: "/p?x",
    }],
    ["HTTP://h", { hostname: "h", port: 80, authority: "h", path: "/" }],
    ["http://h:?q", { hostname: "h", port: 80, authority: "h:", path: "/?q" }],
    ["http://[::1]:81/x", { hostname: "::1", port: 81, authority: "[::1]:81", path: "/x" }],
    ["http://127.0.0.1/a//b", { hostname: "127.0.0.1", port: 80, path: "/a//b" }],
  ];
  for (const [target, want] of ok.slice(1)) {
    await t.step(target, () => {
      const got = parseHttpTarget(target);
      for (const [k, v] of Object.entries(want)) assert.equal(got[k as keyof typeof got], v);
    });
  }
  assert.throws(() => parseHttpTarget(ok[0]![0]), /fragment/);
  const bad: [string, RegExp][] = [
    ["/relative", /this is a proxy/],
    ["*", /this is a proxy/],
    ["https://h/", /CONNECT/],
    ["ws://h/", /unsupported URL scheme "ws"/],
    ["http://u:p@h/", /userinfo/],
    ["http://h:0/", /invalid port/],
    ["http://h:65536/", /invalid port/],
    ["http://h:8x/", /invalid port/],
    ["http://h:+80/", /invalid port/],
    ["http://h:-1/", /invalid port/],
    ["http://h:000080/", /invalid port/],
    ["http://[::1/", /malformed IPv6/],
    ["http://[nothex]/", /malformed IPv6/],
    ["http://h h/", /malformed host/],
    ["http:///", /malformed host/],
    ["h:80", /malformed request target/],
  ];
  for (const [target, re] of bad) {
    await t.step(`rejects ${target}`, () => assert.throws(() => parseHttpTarget(target), re));
  }
});

Deno.test("parseConnectTarget() wants host:port", () => {
  assert.deepEqual(parseConnectTarget("example.com:443"), { hostname: "example.com", port: 443 });
  assert.deepEqual(parseConnectTarget("[::1]:563"), { hostname: "::1", port: 563 });
  assert.throws(() => parseConnectTarget("example.com"), /without a port/);
  assert.throws(() => parseConnectTarget("example.com:"), /without a port/);
  assert.throws(() => parseConnectTarget("/"), /authority-form/);
  assert.throws(() => parseConnectTarget("u@h:443"), /authority-form/);
  assert.throws(() => parseConnectTarget("h:99999"), /invalid port/);
});

Deno.test("endToEnd() drops hop-by-hop fields and those Connection names", () => {
  const fields = endToEnd(
    [
      ["Connection", "close, X-A"],
      ["x-a", "1"],
      ["X-B", "2"],
      ["Keep-Alive", "t=1"],
      ["TE", "trailers"],
      ["Transfer-Encoding", "chunked"],
      ["Upgrade", "h2c"],
      ["Proxy-Authorization", "x"],
      ["Proxy-Authenticate", "x"],
      ["Proxy-Connection", "keep-alive"],
      ["Trailer", "X"],
      ["Expect", "100-continue"],
    ],
    ["expect"],
  );
  assert.deepEqual(fields, [["X-B", "2"]]);
});

Deno.test("addVia() extends the last Via or appends one, with the received version", () => {
  const a: [string, string][] = [["Via", "1.0 a"], ["X", "y"], ["via", "1.1 b"]];
  addVia(a, 1);
  assert.deepEqual(a, [["Via", "1.0 a"], ["X", "y"], ["via", "1.1 b, 1.1 http-proxy"]]);
  const b: [string, string][] = [];
  addVia(b, 0);
  assert.deepEqual(b, [["Via", "1.0 http-proxy"]]);
});

Deno.test("requestFraming() and responseFraming() follow RFC 9112 §6.3", async (t) => {
  const req = (fields: [string, string][], minor: 0 | 1 = 1) => ({
    method: "POST",
    target: "http://h/",
    minor,
    fields,
  });
  const res = (status: number, fields: [string, string][], minor: 0 | 1 = 1) => ({
    minor,
    status,
    reason: "",
    fields,
  });
  await t.step("request", () => {
    assert.deepEqual(requestFraming(req([])), { kind: "none" });
    assert.deepEqual(requestFraming(req([["Content-Length", "0"]])), { kind: "none" });
    assert.deepEqual(requestFraming(req([["Content-Length", "5"], ["content-length", "5"]])), {
      kind: "length",
      length: 5,
    });
    assert.deepEqual(requestFraming(req([["Content-Length", "5, 5"]])), {
      kind: "length",
      length: 5,
    });
    assert.deepEqual(requestFraming(req([["Transfer-Encoding", "Chunked"]])), { kind: "chunked" });
    assert.throws(
      () => requestFraming(req([["Content-Length", "5"], ["Transfer-Encoding", "chunked"]])),
      /both/,
    );
    assert.throws(
      () => requestFraming(req([["Content-Length", "-1"]])),
      /malformed Content-Length/,
    );
    assert.throws(
      () => requestFraming(req([["Content-Length", "1e3"]])),
      /malformed Content-Length/,
    );
    assert.throws(() => requestFraming(req([["Content-Length", "9999999999999999"]])), /malformed/);
    assert.throws(() => requestFraming(req([["Content-Length", ""]])), /malformed Content-Length/);
    assert.throws(
      () => requestFraming(req([["Transfer-Encoding", "gzip, chunked"]])),
      /unsupported Transfer-Encoding/,
    );
    assert.throws(
      () =>
        requestFraming(req([["Transfer-Encoding", "chunked"], ["Transfer-Encoding", "chunked"]])),
      /unsupported/,
    );
    assert.throws(() => requestFraming(req([["Transfer-Encoding", ""]])), /unsupported/);
    assert.throws(() => requestFraming(req([["Transfer-Encoding", "chunked"]], 0)), /HTTP\/1\.0/);
  });
  await t.step("response", () => {
    assert.deepEqual(responseFraming(res(200, [["Content-Length", "3"]]), "HEAD"), {
      kind: "none",
    });
    assert.deepEqual(responseFraming(res(204, []), "GET"), { kind: "none" });
    assert.deepEqual(responseFraming(res(304, [["Content-Length", "9"]]), "GET"), { kind: "none" });
    assert.deepEqual(responseFraming(res(200, []), "GET"), { kind: "close" });
    assert.deepEqual(responseFraming(res(200, [["Content-Length", "0"]]), "GET"), { kind: "none" });
    assert.deepEqual(responseFraming(res(200, [["Transfer-Encoding", "chunked"]]), "GET"), {
      kind: "chunked",
    });
    assert.throws(
      () => responseFraming(res(200, [["Content-Length", "1"], ["Content-Length", "2"]]), "GET"),
      /conflicting/,
    );
    assert.throws(
      () =>
        responseFraming(
          res(200, [["Content-Length", "1"], ["Transfer-Encoding", "chunked"]]),
          "GET",
        ),
      /both/,
    );
  });
});

Deno.test("parse reads a clean head's values trimmed and whole: OWS, empty values, obs-text, a colon in a value, maxFields exactly", () => {
  const head = parseRequestHead(
    bytes(
      "GET http://h/ HTTP/1.1\r\nA:\t x y \t\r\nB:\r\nC: caf\xe9\r\nD: a:b:c\r\nE-F:v\r\n\r\n",
    ),
    5,
  );
  assert.deepEqual(head.fields, [["A", "x y"], ["B", ""], ["C", "caf\xe9"], ["D", "a:b:c"], [
    "E-F",
    "v",
  ]]);
  assert.throws(
    () => parseRequestHead(bytes("GET http://h/ HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), 1),
    RangeError,
  );
  const res = parseResponseHead(bytes("HTTP/1.1 204 No Content\nX-Y: z\n\n"));
  assert.deepEqual([res.status, res.reason, res.fields], [204, "No Content", [["X-Y", "z"]]]);
  // A space before the colon, a control byte in a value: still the errors that name them.
  assert.throws(
    () => parseRequestHead(bytes("GET http://h/ HTTP/1.1\r\nA : 1\r\n\r\n")),
    /whitespace before colon in header "A"/,
  );
  assert.throws(
    () => parseRequestHead(bytes("GET http://h/ HTTP/1.1\r\nA: 1\x01\r\n\r\n")),
    /control character in header A/,
  );
});
