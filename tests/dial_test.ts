import assert from "node:assert/strict";
import { type ConnectFn, dial } from "../lib/dial.ts";
import { BadGateway, GatewayTimeout } from "../lib/errors.ts";

Deno.test("dial() connects and reports the peer address", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using conn = await dial("127.0.0.1", listener.addr.port);
  assert.equal(conn.remoteAddr.hostname, "127.0.0.1");
  assert.equal(conn.remoteAddr.port, listener.addr.port);
  (await listener.accept()).close();
});

Deno.test("dial() turns a refused port into 502 connection_refused", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  await assert.rejects(
    dial("127.0.0.1", port),
    (e) =>
      e instanceof BadGateway && e.status === 502 && e.kind === "connection_refused" &&
      e.message === `Cannot connect to upstream "127.0.0.1:${port}": connection refused`,
  );
});

Deno.test("dial() turns a hanging connect into 504 after the timeout", async () => {
  const hanging: ConnectFn = ({ signal }) =>
    new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
  await assert.rejects(
    dial("127.0.0.1", 9, { timeoutMs: 30, connect: hanging }),
    (e) =>
      e instanceof GatewayTimeout && e.status === 504 && e.kind === "connection_timeout" &&
      /timed out after 30 ms/.test(e.message),
  );
});

Deno.test("dial() classifies a lookup failure as a DNS error, other errors as unavailable", async () => {
  const dns: ConnectFn = () =>
    Promise.reject(new Error("failed to lookup address information: Name or service not known"));
  await assert.rejects(
    dial("nosuchhost.invalid", 80, { connect: dns }),
    (e) =>
      e instanceof BadGateway && e.kind === "dns_error" &&
      e.message === "DNS lookup failed: nosuchhost.invalid",
  );
  const other: ConnectFn = () => Promise.reject(new Deno.errors.ConnectionReset("reset by peer"));
  await assert.rejects(
    dial("h", 80, { connect: other }),
    (e) =>
      e instanceof BadGateway && e.kind === "destination_unavailable" &&
      /reset by peer/.test(e.message),
  );
});

Deno.test("dial() reports an outside abort as such, not as a timeout", async () => {
  const hanging: ConnectFn = ({ signal }) =>
    new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
  const controller = new AbortController();
  const p = dial("127.0.0.1", 9, {
    timeoutMs: 10_000,
    connect: hanging,
    signal: controller.signal,
  });
  controller.abort();
  await assert.rejects(p, (e) => e instanceof BadGateway && /aborted/.test(e.message));
});
