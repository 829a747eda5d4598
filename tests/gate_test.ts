import assert from "node:assert/strict";
import { HostGate, MAX_WAITING } from "../lib/upstream/gate.ts";

Deno.test("HostGate lets `limit` in at once, hands each freed slot to the first waiter, and forgets idle keys", async () => {
  const gate = new HostGate();
  const a = await gate.enter("h:80", 2, 1000);
  const b = await gate.enter("h:80", 2, 1000);
  assert.ok(typeof a === "object" && typeof b === "object");
  // Another destination has slots of its own.
  const other = await gate.enter("o:80", 2, 1000);
  assert.ok(typeof other === "object");
  const order: string[] = [];
  const c = gate.enter("h:80", 2, 1000).then((r) => (order.push("c"), r));
  const d = gate.enter("h:80", 2, 1000).then((r) => (order.push("d"), r));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, [], "both wait");
  a.release();
  a.release(); // a second release gives nothing back
  const cr = await c;
  assert.deepEqual(order, ["c"]);
  b.release();
  const dr = await d;
  assert.deepEqual(order, ["c", "d"]);
  assert.ok(typeof cr === "object" && typeof dr === "object");
  cr.release();
  dr.release();
  other.release();
  assert.equal(gate.size, 0);
});

Deno.test("HostGate: a wait that times out leaves the queue, and its slot is not lost", async () => {
  const gate = new HostGate();
  const a = await gate.enter("h:80", 1, 1000);
  assert.ok(typeof a === "object");
  assert.equal(await gate.enter("h:80", 1, 60), "timeout");
  a.release();
  assert.equal(gate.size, 0, "the slot came back");
  const again = await gate.enter("h:80", 1, 1000);
  assert.ok(typeof again === "object");
  again.release();
});

Deno.test("HostGate: past MAX_WAITING waiters the next is refused at once; limit 0 is no limit", async () => {
  const gate = new HostGate();
  const a = await gate.enter("h:80", 1, 1000);
  assert.ok(typeof a === "object");
  const waiting = Array.from({ length: MAX_WAITING }, () => gate.enter("h:80", 1, 200));
  assert.equal(await gate.enter("h:80", 1, 200), "full");
  for (const r of await Promise.all(waiting)) assert.equal(r, "timeout");
  a.release();
  assert.equal(gate.size, 0);
  const free = await Promise.all(Array.from({ length: 5 }, () => gate.enter("h:80", 0, 10)));
  for (const f of free) assert.ok(typeof f === "object");
  assert.equal(gate.size, 0);
});

Deno.test("HostGate: a waiter that times out in the middle of the queue leaves it; the ones around it keep their turns", async () => {
  const gate = new HostGate();
  const a = await gate.enter("h:80", 1, 1000);
  assert.ok(typeof a === "object");
  const order: string[] = [];
  const b = gate.enter("h:80", 1, 1000).then((r) => (order.push("b"), r));
  const c = gate.enter("h:80", 1, 60).then((r) => (order.push("c"), r));
  const d = gate.enter("h:80", 1, 1000).then((r) => (order.push("d"), r));
  assert.equal(await c, "timeout");
  assert.deepEqual(order, ["c"], "the others still wait");
  a.release();
  const br = await b;
  assert.ok(typeof br === "object");
  assert.deepEqual(order, ["c", "b"]);
  br.release();
  const dr = await d;
  assert.ok(typeof dr === "object");
  assert.deepEqual(order, ["c", "b", "d"]);
  dr.release();
  assert.equal(gate.size, 0, "every slot came back");
  // The queue is empty again: a new request takes a slot at once.
  const e = gate.tryEnter("h:80", 1);
  assert.ok(e);
  e();
  assert.equal(gate.size, 0);
});
