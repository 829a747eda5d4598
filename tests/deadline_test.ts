import assert from "node:assert/strict";
import { Deadline } from "../lib/deadline.ts";

Deno.test("Deadline.bound() settles as its work does, or rejects with the deadline's error when it passes first", async () => {
  const d = new Deadline(60, () => new Error("too slow"));
  try {
    assert.equal(await d.bound(Promise.resolve(7)), 7);
    await assert.rejects(d.bound(Promise.reject(new Error("broke"))), /broke/);
    // A second wait takes the deadline over from the first, which had settled.
    const never = new Promise<number>(() => {});
    await assert.rejects(d.bound(never), /too slow/);
    assert.ok(d.expired);
    // Once passed, a new wait fails at once.
    await assert.rejects(d.bound(never), /too slow/);
  } finally {
    d.cancel();
  }
});

Deno.test("Deadline.bound() on a parked deadline waits for its work", async () => {
  const d = new Deadline(20, () => new Error("too slow"));
  d.park();
  try {
    const work = new Promise<string>((r) => setTimeout(() => r("done"), 150));
    assert.equal(await d.bound(work), "done");
  } finally {
    d.cancel();
  }
});
