import assert from "node:assert/strict";
import { ROOT } from "../_fixtures/cli.ts";

Deno.test("a 256 MiB download and a 256 MiB chunked upload pass with flat proxy memory", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/memory.ts`, "256"], // -A: it reads /proc
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(text, /download: 256 MiB .* curl exit 0, origin said "268435456"/);
  assert.match(
    text,
    /chunked upload: 256 MiB .* curl exit 0, origin said "received 268435456 bytes"/,
  );
  const idle = Number(/idle RSS ([\d.]+) MiB/.exec(text)![1]);
  const peak = Number(/\(VmHWM\): ([\d.]+) MiB/.exec(text)![1]);
  // Holding either body would add 256 MiB; streaming adds a few buffers.
  assert.ok(peak - idle < 100, `peak ${peak} MiB vs idle ${idle} MiB`);
});
