import assert from "node:assert/strict";
import { BufferedReader } from "../lib/http1/head.ts";
import { type Upstream, UpstreamPool } from "../lib/upstream/pool.ts";

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
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(pool.idle, 0);
  assert.equal(a.conn.closed, true);
});
