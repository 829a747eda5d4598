import assert from "node:assert/strict";
import { ROOT } from "./_fixtures/cli.ts";

Deno.test("deno task demo prints the golden transcript", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "demo"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const want = await Deno.readTextFile(`${ROOT}tests/golden/demo.txt`);
  assert.equal(new TextDecoder().decode(out.stdout), want);
});
