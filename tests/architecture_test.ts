import assert from "node:assert/strict";
import { ERROR_KINDS } from "../lib/errors.ts";

const lib = new URL("../lib/", import.meta.url);

/** Every module under lib/, as a path relative to lib/. */
async function modules(dir = lib, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) {
      out.push(...await modules(new URL(`${e.name}/`, dir), `${prefix}${e.name}/`));
    } else if (e.name.endsWith(".ts")) out.push(prefix + e.name);
  }
  return out.sort();
}

/** The lib/-relative paths a module imports (type imports too). */
async function importsOf(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(new URL(path, lib));
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
    const resolved = new URL(m[1]!, new URL(path, lib)).pathname;
    out.push(resolved.slice(lib.pathname.length));
  }
  return out;
}

const PATH = [
  "server.ts",
  "handle_conn.ts",
  "exchange.ts",
  "relay/",
  "upstream/",
  "policy/",
  "http1/",
  "cache/",
];
const onPath = (m: string) => PATH.some((p) => (p.endsWith("/") ? m.startsWith(p) : m === p));
const PURE = [
  "http1/parse.ts",
  "http1/headers.ts",
  "http1/plan.ts",
  "policy/ip.ts",
  "policy/policy.ts",
  "policy/name_list.ts",
  "upstream/parent.ts",
  "cache/rules.ts",
  "errors.ts",
];

Deno.test("the dependency rule of docs/architecture.md holds for every import of every module", async () => {
  const all = await modules();
  assert.ok(all.includes("relay/forward.ts") && all.includes("observe/log.ts"), all.join(" "));
  const broken: string[] = [];
  for (const m of all) {
    for (const dep of await importsOf(m)) {
      if (
        m.startsWith("http1/") &&
        !(dep.startsWith("http1/") || dep === "errors.ts" || dep === "deadline.ts")
      ) {
        broken.push(`${m} → ${dep} (http1/ imports only http1/, errors.ts, deadline.ts)`);
      }
      if (
        m.startsWith("policy/") &&
        /^(relay\/|upstream\/|observe\/|cli\/|server\.ts|handle_conn\.ts)/.test(dep)
      ) {
        broken.push(`${m} → ${dep} (policy/ does not import the layers above it)`);
      }
      if (
        m.startsWith("cache/") &&
        /^(relay\/|upstream\/|observe\/|cli\/|policy\/|server\.ts|handle_conn\.ts)/.test(dep)
      ) {
        broken.push(`${m} → ${dep} (cache/ stands on http1/ alone: the relay uses it)`);
      }
      if (onPath(m) && dep.startsWith("observe/")) {
        broken.push(`${m} → ${dep} (the request path never imports observe/)`);
      }
    }
  }
  assert.deepEqual(broken, []);
});

Deno.test("the pure modules use no Deno API", async () => {
  for (const m of PURE) {
    const text = await Deno.readTextFile(new URL(m, lib));
    // Comments may name Deno; code may not.
    const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
    assert.doesNotMatch(code, /\bDeno\./, `${m} uses Deno`);
  }
});

Deno.test("every error kind of the table is in the README's Errors section", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const errors = readme.slice(readme.indexOf("## Errors"), readme.indexOf("## Performance"));
  for (const kind of Object.keys(ERROR_KINDS)) assert.ok(errors.includes(`\`${kind}\``), kind);
});
