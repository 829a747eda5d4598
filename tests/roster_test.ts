import assert from "node:assert/strict";
import { type Listed, Roster } from "../lib/roster.ts";

function member(name: string): Listed & { name: string } {
  return { name, slot: -1 };
}

Deno.test("Roster adds and removes members in any order; a removed one is out and can be removed again harmlessly", () => {
  const roster = new Roster<ReturnType<typeof member>>();
  const [a, b, c, d] = ["a", "b", "c", "d"].map(member) as [
    ReturnType<typeof member>,
    ReturnType<typeof member>,
    ReturnType<typeof member>,
    ReturnType<typeof member>,
  ];
  for (const m of [a, b, c, d]) roster.add(m);
  assert.equal(roster.size, 4);
  roster.delete(b); // the last one takes its slot
  assert.equal(b.slot, -1);
  assert.equal(d.slot, 1);
  roster.delete(b);
  roster.delete(d);
  roster.delete(a);
  assert.deepEqual(roster.values().map((m) => m.name), ["c"]);
  assert.equal(c.slot, 0);
  roster.delete(c);
  assert.equal(roster.size, 0);
});

Deno.test("Roster.forEach visits each member once while the callback removes it, others, and adds more", () => {
  const roster = new Roster<ReturnType<typeof member>>();
  const all = Array.from({ length: 10 }, (_, i) => member(`m${i}`));
  for (const m of all) roster.add(m);
  const seen: string[] = [];
  let skipped = "";
  roster.forEach((m) => {
    seen.push(m.name);
    roster.delete(m);
    if (seen.length === 1) {
      // One not visited yet is removed before its turn: it is not visited.
      const other = all.find((x) => x !== m)!;
      skipped = other.name;
      roster.delete(other);
      roster.add(member("late")); // added during the pass: not visited
    }
  });
  assert.equal(seen.length, 9, seen.join(" "));
  assert.equal(new Set(seen).size, 9);
  assert.ok(!seen.includes(skipped) && !seen.includes("late"), seen.join(" "));
  assert.deepEqual(roster.values().map((m) => m.name), ["late"]);
});
