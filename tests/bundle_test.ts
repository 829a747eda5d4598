import assert from "node:assert/strict";
import { ROOT, startCli } from "./_fixtures/cli.ts";
import { curl, startHttpOrigin } from "./_fixtures/servers.ts";
import { RUN_V8_FLAGS as flags } from "../scripts/_proxy.ts";

Deno.test("deno task compile and every bundle command of the README use deno task run's V8 flags", () => {
  assert.deepEqual(flags, ["--v8-flags=--heap-growing-percent=50"]); // see README: Performance
  const tasks = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;
  assert.deepEqual(tasks.compile.match(/--v8-flags=\S+/g), flags);
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  // Every `deno run …` of the README that starts the bundle (some wrap over two lines).
  const commands = [...readme.matchAll(/deno run ([^`]*?)http-proxy\.js/g)].map((m) => m[1]!);
  assert.ok(commands.length >= 2, `found ${commands.length}`);
  for (const c of commands) assert.deepEqual(c.match(/--v8-flags=\S+/g), flags, c);
});

Deno.test("deno task bundle writes one file that runs with --allow-net and proxies curl -x", async () => {
  const build = await new Deno.Command(Deno.execPath(), {
    args: ["task", "bundle"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
  const bundle = `${ROOT}dist/http-proxy.js`;
  const text = await Deno.readTextFile(bundle);
  assert.doesNotMatch(text, /^import .* from ["']\.\.?\//m, "the bundle imports no local file");
  await using origin = startHttpOrigin(() => new Response("from the bundle"));
  // With the README's command's flags (its V8 flag included, which a wrong one would make fail).
  await using cli = await startCli(["--listen", "127.0.0.1:0"], {
    script: bundle,
    denoFlags: [...flags, "--allow-sys"],
  });
  const res = await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/b`]);
  assert.equal(res.stdout, "from the bundle");
  await cli.stdout.waitFor(/\] 200 OK 15 bytes \d+ ms #1\n/);
  assert.equal(await cli.stop(), 0);
});

Deno.test({
  name: "deno task compile makes an executable that proxies curl -x (only where DENORT_BIN is set)",
  ignore: !Deno.env.get("DENORT_BIN"),
  async fn() {
    const build = await new Deno.Command(Deno.execPath(), {
      args: ["task", "compile"],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
    await using origin = startHttpOrigin(() => new Response("compiled"));
    const child = new Deno.Command(`${ROOT}dist/http-proxy`, {
      args: ["--listen", "127.0.0.1:0"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let err = "";
    while (!/listening on (\S+)/.test(err)) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    const addr = /listening on (\S+)/.exec(err)?.[1];
    assert.ok(addr, err);
    const res = await curl(["-x", addr, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(res.stdout, "compiled");
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await reader.cancel();
    await child.stdout.cancel();
  },
});
