import assert from "node:assert/strict";
import { type ConnectFn, dial, type ResolveFn } from "../lib/upstream/dial.ts";
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
  // Injected resolvers: no test looks a name up in DNS (the only resolver is off this machine).
  const notFound: ResolveFn = () =>
    Promise.reject(Object.assign(new Error("getaddrinfo ENOTFOUND"), { code: "ENOTFOUND" }));
  await assert.rejects(
    dial("nosuchhost.invalid", 80, { resolve: notFound }),
    (e) =>
      e instanceof BadGateway && e.kind === "dns_error" &&
      e.message === "DNS lookup failed: nosuchhost.invalid",
  );
  const other: ConnectFn = () => Promise.reject(new Deno.errors.ConnectionReset("reset by peer"));
  await assert.rejects(
    dial("h", 80, { connect: other, resolve: () => Promise.resolve(["127.0.0.1"]) }),
    (e) =>
      e instanceof BadGateway && e.kind === "destination_unavailable" &&
      /reset by peer/.test(e.message),
  );
});

Deno.test("dial() resolves, lets check veto each address before connecting, then tries each", async () => {
  const seen: string[] = [];
  const connect: ConnectFn = ({ hostname }) => {
    seen.push(hostname!);
    return Promise.reject(new Deno.errors.ConnectionRefused("refused"));
  };
  const resolve: ResolveFn = () => Promise.resolve(["127.0.0.2", "127.0.0.3"]);
  await assert.rejects(
    dial("two.test", 80, { connect, resolve }),
    (e) => e instanceof BadGateway && e.kind === "connection_refused",
  );
  assert.deepEqual(seen, ["127.0.0.2", "127.0.0.3"]);
  seen.length = 0;
  await assert.rejects(
    dial("two.test", 80, {
      connect,
      resolve,
      check: (a) => {
        if (a === "127.0.0.3") throw new Error(`no ${a}`);
      },
    }),
    /no 127\.0\.0\.3/,
  );
  assert.deepEqual(seen, [], "nothing is dialed when any address is vetoed");
});

Deno.test("dial() times out a lookup that hangs", async () => {
  const hanging: ResolveFn = () => new Promise(() => {});
  await assert.rejects(
    dial("slow.test", 80, { resolve: hanging, timeoutMs: 30 }),
    (e) => e instanceof GatewayTimeout && /timed out after 30 ms/.test(e.message),
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
