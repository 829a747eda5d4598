import assert from "node:assert/strict";
import { type Framing, type Head, headBytes } from "../../lib/http1/headers.ts";
import { latin1, type RequestHead, type ResponseHead } from "../../lib/http1/parse.ts";
import { type ForwardedMode, planRequest, planResponse } from "../../lib/http1/plan.ts";

const req = (
  method: string,
  fields: [string, string][] = [],
  minor: 0 | 1 = 1,
): RequestHead => ({ method, target: "http://a.test:8080/p?q", minor, fields });
const settings = (
  framing: Framing = { kind: "none" },
  pooled = true,
  forwarded: ForwardedMode = "off",
  clientIp = "192.0.2.7",
) => ({
  authority: "a.test:8080",
  path: "/p?q",
  framing,
  viaName: "http-proxy",
  allowTrace: false,
  pooled,
  forwarded,
  clientIp,
});
const text = (head: Head) => latin1(headBytes(head));

Deno.test("planRequest() builds the origin-form head and refuses what it must, without I/O", async (t) => {
  await t.step("hop-by-hop and Host dropped, Host from the target, Via added, CL folded", () => {
    const plan = planRequest(
      req("POST", [
        ["Host", "elsewhere"],
        ["Connection", "X-Hop"],
        ["X-Hop", "1"],
        ["Content-Length", "3, 3"],
        ["Proxy-Authorization", "Basic eDp5"],
      ]),
      settings({ kind: "length", length: 3 }),
    );
    assert.equal(plan.kind, "forward");
    if (plan.kind !== "forward") return;
    assert.equal(
      text(plan.head),
      "POST /p?q HTTP/1.1\r\nHost: a.test:8080\r\nContent-Length: 3\r\nVia: 1.1 http-proxy\r\n\r\n",
    );
    assert.equal(plan.retryable, false);
    assert.equal(plan.sendContinue, false);
  });
  await t.step("chunked stays chunked; without a pool the upstream is told to close", () => {
    const plan = planRequest(
      req("PUT", [["Transfer-Encoding", "chunked"], ["Expect", "100-continue"]]),
      settings({ kind: "chunked" }, false),
    );
    assert.ok(plan.kind === "forward");
    assert.match(text(plan.head), /\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n$/);
    assert.doesNotMatch(text(plan.head), /Expect/);
    assert.equal(plan.sendContinue, true);
  });
  await t.step("Max-Forwards counts down, and at 0 the proxy answers", () => {
    const plan = planRequest(req("OPTIONS", [["Max-Forwards", "3"]]), settings());
    assert.ok(plan.kind === "forward");
    assert.match(text(plan.head), /\r\nMax-Forwards: 2\r\n/);
    assert.equal(plan.retryable, true);
    assert.deepEqual(planRequest(req("OPTIONS", [["Max-Forwards", "0"]]), settings()), {
      kind: "answer",
    });
  });
  await t.step("TRACE 405, a strange expectation 417, a bad Max-Forwards 400", () => {
    const status = (head: RequestHead) => {
      try {
        planRequest(head, settings());
        return 0;
      } catch (err) {
        return (err as { status: number }).status;
      }
    };
    assert.equal(status(req("TRACE")), 405);
    assert.equal(status(req("GET", [["Expect", "magic"]])), 417);
    assert.equal(status(req("OPTIONS", [["Max-Forwards", "-1"]])), 400);
    for (const bad of ["+1", "1234567890", "2, 3", "1.0", "x"]) {
      assert.equal(status(req("OPTIONS", [["Max-Forwards", bad]])), 400, bad);
    }
    assert.equal(status(req("OPTIONS", [["Max-Forwards", "123456789"]])), 0);
  });
});

Deno.test("planResponse() decides the client head, keep-alive and reuse, without I/O", async (t) => {
  const res = (fields: [string, string][], minor: 0 | 1 = 1): ResponseHead => ({
    status: 200,
    reason: "OK",
    minor,
    fields,
  });
  const state = {
    consumed: true,
    upstreamBroke: false,
    stopping: false,
    pooled: true,
    viaName: "p",
  };
  await t.step("a length-framed 1.1 response is kept both ways", () => {
    const plan = planResponse(
      res([["Content-Length", "2"], ["Keep-Alive", "timeout=5"]]),
      req("GET"),
      state,
    );
    assert.equal(text(plan.head), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 p\r\n\r\n");
    assert.deepEqual([plan.keep, plan.reusable, plan.out], [true, true, "raw"]);
  });
  await t.step("a body until close is re-chunked for 1.1, sent raw then closed for 1.0", () => {
    const one = planResponse(res([], 0), req("GET"), state);
    assert.deepEqual([one.out, one.keep, one.reusable], ["chunked", true, false]);
    assert.match(text(one.head), /\r\nTransfer-Encoding: chunked\r\n\r\n$/);
    const old = planResponse(res([["Transfer-Encoding", "chunked"]]), req("GET", [], 0), state);
    assert.deepEqual([old.out, old.keep], ["raw", false]);
    assert.match(text(old.head), /\r\nConnection: close\r\n\r\n$/);
  });
  await t.step("no reuse after Connection: close, an unsent body, or without a pool", () => {
    assert.equal(
      planResponse(res([["Content-Length", "0"], ["Connection", "close"]]), req("GET"), state)
        .reusable,
      false,
    );
    assert.equal(
      planResponse(res([["Content-Length", "0"]]), req("GET"), { ...state, upstreamBroke: true })
        .reusable,
      false,
    );
    assert.equal(
      planResponse(res([["Content-Length", "0"]]), req("GET"), { ...state, pooled: false })
        .reusable,
      false,
    );
    assert.equal(
      planResponse(res([["Content-Length", "0"]]), req("GET"), { ...state, stopping: true }).keep,
      false,
    );
  });
  await t.step("ambiguous framing is a 502", () => {
    assert.throws(
      () =>
        planResponse(
          res([["Content-Length", "1"], ["Transfer-Encoding", "chunked"]]),
          req("GET"),
          state,
        ),
      (e) => (e as { status: number }).status === 502,
    );
  });
});

Deno.test("planRequest() tells the origin the client's address only when --forwarded asks", async (t) => {
  const head = (fields: [string, string][], mode: ForwardedMode, ip = "192.0.2.7") => {
    const plan = planRequest(req("GET", fields), settings(undefined, true, mode, ip));
    assert.ok(plan.kind === "forward");
    return text(plan.head);
  };
  await t.step("off: nothing added, a client's own field passes as it came", () => {
    assert.doesNotMatch(head([], "off"), /Forwarded/i);
    assert.match(
      head([["X-Forwarded-For", "10.9.9.9"]], "off"),
      /\r\nX-Forwarded-For: 10.9.9.9\r\n/,
    );
  });
  await t.step("xff: added, or appended to the client's list (several fields folded)", () => {
    assert.match(head([], "xff"), /\r\nX-Forwarded-For: 192.0.2.7\r\n/);
    const h = head([["x-forwarded-for", "10.0.0.1"], ["Accept", "*/*"], [
      "X-Forwarded-For",
      "10.0.0.2",
    ]], "xff");
    assert.match(h, /\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nAccept: \*\/\*\r\n/);
    assert.equal(h.match(/forwarded-for/gi)!.length, 1);
  });
  await t.step("forwarded: RFC 7239 elements, IPv6 quoted and bracketed", () => {
    assert.match(head([], "forwarded"), /\r\nForwarded: for=192.0.2.7;proto=http\r\n/);
    assert.match(
      head([["Forwarded", "for=10.0.0.1"]], "forwarded", "2001:db8::1"),
      /\r\nForwarded: for=10.0.0.1, for="\[2001:db8::1\]";proto=http\r\n/,
    );
    assert.doesNotMatch(head([], "forwarded"), /X-Forwarded-For/);
  });
});
