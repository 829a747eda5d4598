import assert from "node:assert/strict";
import { collectGarbage, collections, Reclaimer } from "../lib/reclaim.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("collectGarbage runs a full collection: an object only a WeakRef holds is gone", async () => {
  let target: object | undefined = { big: new Uint8Array(1024) };
  const ref = new WeakRef(target);
  target = undefined;
  // A WeakRef keeps its target for the rest of the job that made or read it.
  await sleep(0);
  const before = collections();
  assert.equal(await collectGarbage(), true);
  assert.equal(collections(), before + 1);
  assert.equal(ref.deref(), undefined);
});

/** A reclaimer with small thresholds whose collections are counted, not run. */
function counting(options: { drop: number; delayMs: number; minIntervalMs: number }) {
  const runs: number[] = [];
  const reclaimer = new Reclaimer({ ...options, collect: () => runs.push(performance.now()) });
  return { runs, reclaimer };
}

/** Opens `n` connections one by one from `from`, as the server reports them. */
function open(r: Reclaimer, from: number, n: number): number {
  for (let i = 1; i <= n; i++) r.opened(from + i);
  return from + n;
}

/** Closes `n` connections one by one from `from`. */
function close(r: Reclaimer, from: number, n: number): number {
  for (let i = 1; i <= n; i++) r.closed(from - i);
  return from - n;
}

Deno.test("a large fall in open connections collects once, after the delay", async () => {
  const { runs, reclaimer } = counting({ drop: 10, delayMs: 50, minIntervalMs: 0 });
  try {
    let n = open(reclaimer, 0, 30);
    n = close(reclaimer, n, 9);
    await sleep(120);
    assert.equal(runs.length, 0, "a fall smaller than `drop` collects nothing");
    const closedAt = performance.now();
    close(reclaimer, n, 21);
    assert.equal(runs.length, 0, "nothing runs at once");
    await sleep(150);
    assert.equal(runs.length, 1);
    assert.ok(runs[0]! - closedAt >= 45, `ran ${runs[0]! - closedAt} ms after the fall`);
    await sleep(100);
    assert.equal(runs.length, 1, "one fall, one collection");
  } finally {
    reclaimer.close();
  }
});

Deno.test("steady churn near the peak, or a crowd that comes back, collects nothing", async () => {
  const { runs, reclaimer } = counting({ drop: 10, delayMs: 50, minIntervalMs: 0 });
  try {
    // Connection: close traffic: connections come and go, the count stays near its peak.
    let n = open(reclaimer, 0, 20);
    for (let i = 0; i < 200; i++) n = open(reclaimer, close(reclaimer, n, 1), 1);
    // A crowd leaves and comes back before the delay is over.
    n = open(reclaimer, close(reclaimer, n, 15), 15);
    await sleep(150);
    assert.equal(runs.length, 0);
  } finally {
    reclaimer.close();
  }
});

Deno.test("collections are at least minIntervalMs apart, and none is left pending after close", async () => {
  const { runs, reclaimer } = counting({ drop: 5, delayMs: 10, minIntervalMs: 300 });
  let n = open(reclaimer, 0, 10);
  n = close(reclaimer, n, 10);
  await sleep(60);
  assert.equal(runs.length, 1);
  n = close(reclaimer, open(reclaimer, n, 10), 10);
  await sleep(60);
  assert.equal(runs.length, 1, "the second fall waits for the interval");
  await sleep(350);
  assert.equal(runs.length, 2);
  assert.ok(runs[1]! - runs[0]! >= 290, `${runs[1]! - runs[0]!} ms apart`);
  // After close, a fall arms nothing (the test's op sanitizer would see a timer left behind).
  reclaimer.close();
  close(reclaimer, open(reclaimer, n, 10), 10);
  await sleep(40);
  assert.equal(runs.length, 2);
});
