/**
 * Measures `--deny-dest-file` lists at the size people use (Pi-hole and StevenBlack lists run to
 * a few hundred thousand names; this makes a million): the time to read and index a hosts file,
 * the memory the index holds, and the cost of a lookup for names that are listed (themselves or
 * as a parent) and names that are not, and what the proxy's resident memory and start time are
 * with the list and without it. Writes the list to a temporary folder and removes it.
 *
 * Run: `deno task lists [--names N] [--lookups N]` (defaults 1000000 and 2000000).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { NameList } from "../lib/policy/name_list.ts";
import { printLine } from "../lib/observe/log.ts";
import { startProxyProcess } from "./_proxy.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    names: { type: "string", default: "1000000" },
    lookups: { type: "string", default: "2000000" },
  },
});
const count = Number(values.names);
const lookups = Number(values.lookups);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

/** A made-up but list-like name: a few labels, a handful of top-level domains. */
const name = (i: number) =>
  `${i % 7 === 0 ? "cdn." : ""}ads${i.toString(36)}.tracker${i % 997}.${
    ["com", "net", "org", "io", "info"][i % 5]
  }`;

const dir = await Deno.makeTempDir();
try {
  const file = `${dir}/hosts`;
  const lines = ["# a generated list", "127.0.0.1 localhost", "0.0.0.0 0.0.0.0"];
  for (let i = 0; i < count; i++) lines.push(`0.0.0.0 ${name(i)}`);
  await Deno.writeTextFile(file, lines.join("\n") + "\n");
  const bytes = (await Deno.stat(file)).size;
  lines.length = 0;

  gc();
  const before = Deno.memoryUsage();
  const t0 = performance.now();
  const list = new NameList();
  list.addBytes(await Deno.readFile(file), file);
  const loadMs = performance.now() - t0;
  gc();
  const after = Deno.memoryUsage();
  const held = after.heapUsed + after.external - before.heapUsed - before.external;
  printLine(
    `loaded ${list.size.toLocaleString("en-US")} names (${(bytes / 2 ** 20).toFixed(1)} MiB ` +
      `hosts file) in ${(loadMs / 1000).toFixed(2)} s in this process; the index holds ` +
      `${(held / 2 ** 20).toFixed(0)} MiB (JS heap and buffers)`,
  );

  // Lookups: a third listed names, a third subdomains of listed names, a third not listed
  // (the common case for a deny list), all made before the clock starts.
  const probes: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const j = (i * 7919) % count;
    probes.push(
      i % 3 === 0 ? name(j) : i % 3 === 1 ? `img.static.${name(j)}` : `www.site${i}.example.com`,
    );
  }
  // Hosts reach the policy as flat strings (sliced from a request line), not as the rope a
  // template literal makes: flatten them the same way.
  const flat = probes.map((p) => new TextDecoder().decode(new TextEncoder().encode(p)));
  for (
    const [what, pick] of [["listed", 0], ["under a listed name", 1], ["not listed", 2]] as const
  ) {
    const these = flat.filter((_, i) => i % 3 === pick);
    let hits = 0;
    const t1 = performance.now();
    for (let i = 0; i < lookups; i++) if (list.match(these[i % these.length]!)) hits++;
    const ns = ((performance.now() - t1) * 1e6) / lookups;
    printLine(
      `${lookups.toLocaleString("en-US")} lookups of names ${what}: ${ns.toFixed(0)} ns each, ` +
        `${hits.toLocaleString("en-US")} matched`,
    );
  }

  // The proxy itself: resident memory and time to start, with the list and without it.
  const started = async (args: string[]) => {
    const t = performance.now();
    const proxy = await startProxyProcess(["--quiet", ...args], ["--allow-read"]);
    const ms = performance.now() - t;
    await new Promise((r) => setTimeout(r, 1000));
    const status = await Deno.readTextFile(`/proc/${proxy.child.pid}/status`);
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
    proxy.child.kill("SIGTERM");
    await proxy.child.status;
    await proxy.drained;
    return { ms, rss, policy: /policy: .*/.exec(proxy.stderr())![0] };
  };
  const bare = await started([]);
  const listed = await started(["--deny-dest-file", file]);
  printLine(
    `the proxy started in ${(bare.ms / 1000).toFixed(2)} s at ${bare.rss.toFixed(0)} MiB RSS; ` +
      `with the list, in ${(listed.ms / 1000).toFixed(2)} s at ${listed.rss.toFixed(0)} MiB ` +
      `(${(listed.rss - bare.rss).toFixed(0)} MiB for the list)`,
  );
  printLine(`  ${listed.policy}`);
} finally {
  await Deno.remove(dir, { recursive: true });
}
