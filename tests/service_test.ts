import assert from "node:assert/strict";
import { configFileArgs, parseCommand } from "../lib/cli/config.ts";
import { ROOT } from "./_fixtures/cli.ts";
import { hasTool } from "./_fixtures/tools.ts";

const SERVICE = `${ROOT}scripts/service/`;

async function run(program: string, args: string[]) {
  const out = await new Deno.Command(program, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("the example service config is one the proxy accepts, key for key", async () => {
  const text = await Deno.readTextFile(`${SERVICE}config.jsonc`);
  const command = parseCommand(configFileArgs(text, "config.jsonc", []));
  assert.equal(command.kind, "run");
  if (command.kind !== "run") return;
  assert.equal(command.config.authFile, "/etc/http-proxy/users");
  assert.equal(command.config.logFile, "/var/log/http-proxy/access.log");
  assert.deepEqual(command.config.denyDestFile, ["/etc/http-proxy/blocklist.txt"]);
  // The office network only inside TLS.
  assert.deepEqual(command.config.listen, [{ hostname: "127.0.0.1", port: 3128 }]);
  assert.deepEqual(command.config.listenTls, [{ hostname: "192.168.1.10", port: 3129 }]);
  assert.equal(command.config.tlsKey, "/etc/http-proxy/proxy-key.pem");
  // The unit starts the binary with this file, and logrotate rotates where it logs.
  const unit = await Deno.readTextFile(`${SERVICE}http-proxy.service`);
  assert.match(
    unit,
    /^ExecStart=\/usr\/local\/bin\/http-proxy --config \/etc\/http-proxy\/config\.jsonc$/m,
  );
  assert.match(
    await Deno.readTextFile(`${SERVICE}http-proxy.logrotate`),
    /^\/var\/log\/http-proxy\/\*\.log \{$/m,
  );
});

const hasAnalyze = await hasTool("systemd-analyze");

Deno.test({
  name: "systemd-analyze verify finds nothing to say about the unit (needs systemd-analyze)",
  ignore: !hasAnalyze, // .ci/run installs Debian's systemd
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      // verify also wants ExecStart's program to exist: point it at one that does.
      const unit = (await Deno.readTextFile(`${SERVICE}http-proxy.service`))
        .replace("ExecStart=/usr/local/bin/http-proxy", `ExecStart=${Deno.execPath()} run`);
      await Deno.writeTextFile(`${dir}/http-proxy.service`, unit);
      const out = await run("systemd-analyze", ["verify", "--man=no", `${dir}/http-proxy.service`]);
      assert.equal(out.code, 0, out.stderr);
      // It reports an unknown key or a bad value on stderr and still exits 0.
      assert.equal(out.stderr, "");
      // And it does report them: the same check on a broken copy says so.
      await Deno.writeTextFile(
        `${dir}/broken.service`,
        unit.replace("ProtectSystem=strict", "ProtectSystem=sometimes"),
      );
      const broken = await run("systemd-analyze", ["verify", "--man=no", `${dir}/broken.service`]);
      assert.match(broken.stderr, /Failed to parse protect system value/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const hasLogrotate = await hasTool("logrotate", ["--version"]);

Deno.test({
  name: "logrotate -d accepts the snippet and would rotate the access log (needs logrotate)",
  ignore: !hasLogrotate, // .ci/run installs Debian's logrotate
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      // The snippet as shipped, with the log folder and its owner made to exist here.
      const conf = (await Deno.readTextFile(`${SERVICE}http-proxy.logrotate`))
        .replace("/var/log/http-proxy", `${dir}/log`)
        .replace("create 0640 http-proxy http-proxy", "create 0640 root root");
      await Deno.mkdir(`${dir}/log`);
      await Deno.writeTextFile(`${dir}/log/access.log`, "a line\n");
      await Deno.writeTextFile(`${dir}/logrotate.conf`, conf);
      // A state saying it was last rotated two days ago, so today it is due.
      const old = new Date(Date.now() - 2 * 86_400_000);
      const stamp = `${old.getFullYear()}-${old.getMonth() + 1}-${old.getDate()}-0:0:0`;
      await Deno.writeTextFile(
        `${dir}/state`,
        `logrotate state -- version 2\n"${dir}/log/access.log" ${stamp}\n`,
      );
      const out = await run("logrotate", ["-d", "-s", `${dir}/state`, `${dir}/logrotate.conf`]);
      const text = out.stdout + out.stderr;
      assert.equal(out.code, 0, text);
      assert.doesNotMatch(text, /error/i);
      assert.match(text, /rotating pattern: .*\/log\/\*\.log\s+after 1 days \(14 rotations\)/);
      assert.match(text, /log needs rotating/);
      assert.match(text, /running postrotate script/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
