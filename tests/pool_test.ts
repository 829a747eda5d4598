import assert from "node:assert/strict";
import { BufferedReader } from "../lib/http1/head.ts";
import { MAX_IDLE_TOTAL, type Upstream, UpstreamPool } from "../lib/upstream/pool.ts";

/** A fake upstream whose read stays pending until `end()`; records close(). */
function fake(key: string) {
  let finish: (n: number | null) => void = () => {};
  const conn = {
    closed: false,
    read: () => new Promise<number | null>((r) => (finish = r)),
    close() {
      conn.closed = true;
      finish(null);
    },
  };
  const up = {
    conn: conn as unknown as Deno.TcpConn,
    reader: new BufferedReader(conn),
    key,
    reused: false,
    peer: { ip: "127.0.0.1", port: 80 },
  } satisfies Upstream;
  return { up, conn, end: () => finish(null) };
}

Deno.test("UpstreamPool gives back the most recently released connection, marked reused", () => {
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  const a = fake("h:80");
  const b = fake("h:80");
  pool.release(a.up);
  pool.release(b.up);
  assert.equal(pool.idle, 2);
  const got = pool.take("h:80");
  assert.equal(got, b.up);
  assert.equal(got?.reused, true);
  assert.equal(pool.take("other:80"), undefined);
  pool.closeAll();
  assert.equal(a.conn.closed, true);
  assert.equal(pool.idle, 0);
  b.conn.close();
});

Deno.test("UpstreamPool drops the least recently used past maxIdlePerHost", () => {
  const pool = new UpstreamPool({ maxIdlePerHost: 2, idleTimeoutMs: 60_000 });
  const [a, b, c] = [fake("h:80"), fake("h:80"), fake("h:80")];
  pool.release(a.up);
  pool.release(b.up);
  pool.release(c.up);
  assert.equal(pool.idle, 2);
  assert.equal(a.conn.closed, true);
  assert.equal(b.conn.closed, false);
  pool.closeAll();
});

Deno.test("UpstreamPool with maxIdlePerHost 1 keeps the last released connection and closes each one before it", () => {
  const pool = new UpstreamPool({ maxIdlePerHost: 1, idleTimeoutMs: 60_000 });
  const [a, b, c] = [fake("h:80"), fake("h:80"), fake("h:80")];
  pool.release(a.up);
  pool.release(b.up);
  pool.release(c.up);
  assert.deepEqual([a, b, c].map((f) => f.conn.closed), [true, true, false]);
  assert.equal(pool.idle, 1);
  assert.equal(pool.take("h:80"), c.up);
  assert.equal(pool.take("h:80"), undefined);
  assert.equal(pool.idle, 0);
  c.conn.close();
});

Deno.test("UpstreamPool at MAX_IDLE_TOTAL: when the oldest was its destination's only idle connection, the new one to it is still kept", () => {
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  const first = fake("h:80");
  pool.release(first.up);
  const others = Array.from({ length: MAX_IDLE_TOTAL - 1 }, (_, i) => fake(`o${i}:80`));
  for (const f of others) pool.release(f.up);
  const next = fake("h:80");
  pool.release(next.up);
  assert.equal(first.conn.closed, true);
  assert.equal(pool.idle, MAX_IDLE_TOTAL);
  assert.equal(pool.take("h:80"), next.up);
  next.conn.close();
  pool.closeAll();
  assert.ok(others.every((f) => f.conn.closed));
  assert.equal(pool.idle, 0);
});

Deno.test("UpstreamPool drops a connection whose peer closes while idle", async () => {
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  const a = fake("h:80");
  pool.release(a.up);
  a.end();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(pool.idle, 0);
  assert.equal(a.conn.closed, true);
  assert.equal(pool.take("h:80"), undefined);
});

Deno.test("UpstreamPool drops a connection after the idle timeout", async () => {
  const pool = new UpstreamPool({ idleTimeoutMs: 20 });
  const a = fake("h:80");
  pool.release(a.up);
  // The shared ticker checks every 50 ms (lib/deadline.ts): up to that much late.
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(pool.idle, 0);
  assert.equal(a.conn.closed, true);
});

Deno.test("UpstreamPool holds at most MAX_IDLE_TOTAL idle connections in all: past it the oldest goes", () => {
  const pool = new UpstreamPool({ idleTimeoutMs: 60_000 });
  // One destination each, as a client naming thousands of hosts would make.
  const all = Array.from({ length: MAX_IDLE_TOTAL + 2 }, (_, i) => fake(`h${i}:80`));
  for (const f of all) pool.release(f.up);
  assert.equal(pool.idle, MAX_IDLE_TOTAL);
  assert.deepEqual(all.map((f) => f.conn.closed).slice(0, 3), [true, true, false]);
  assert.equal(pool.take("h0:80"), undefined);
  assert.equal(pool.take(`h${MAX_IDLE_TOTAL + 1}:80`), all.at(-1)!.up);
  all.at(-1)!.conn.close();
  pool.closeAll();
  assert.ok(all.every((f) => f.conn.closed));
  assert.equal(pool.idle, 0);
});
