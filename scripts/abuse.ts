/**
 * Tries the proxy as a hostile client would (issue 9's findings) and prints what it cost: a
 * proxy subprocess (`main.ts`), with every log and report on, takes
 *
 * 1. `--requests` requests to as many distinct destinations (link-local literals, refused with
 *    403 before any packet), pipelined, plus as many with invented 4 KiB methods, while 20
 *    clients hold `/api/events` open without reading: its RSS, the size of `/metrics`, the
 *    summary, and a clean shutdown (exit code, HAR entries, log lines);
 * 2. a password-guessing flood from 127.0.0.2 (8 connections, wrong passwords, for `--seconds`)
 *    against a user hashed at the default cost: the answers it got, the CPU the proxy spent, and
 *    how long a real user on 127.0.0.1 waited for a first login meanwhile.
 *
 * Everything runs on loopback. Run: `deno task abuse [--requests N] [--seconds S]` (defaults
 * 80000, 5). Linux only: it reads /proc, hence -A.
 *
 * @module
 */

import { connect as nodeConnect } from "node:net";
import { parseArgs } from "node:util";
import { printLine } from "../lib/observe/log.ts";
import { startProxyProcess } from "./_proxy.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "80000" },
    seconds: { type: "string", default: "5" },
  },
});
const total = Number(values.requests);
const seconds = Number(values.seconds);
const root = new URL("../", import.meta.url).pathname;
const enc = new TextEncoder();
const dir = await Deno.makeTempDir();

/** A proxy subprocess that may write and read files in the scratch folder. */
function startProxy(args: string[]) {
  return startProxyProcess(args, [`--allow-write=${dir}`, `--allow-read=${dir}`]);
}

/** The process's resident memory, MiB. */
function rssMib(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]) / 1024;
}

/** The process's CPU time so far, s. */
function cpuSeconds(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, clock ticks
}

/** Sends `requests` pipelined on one connection and waits for as many answers. */
async function pipelined(addr: string, requests: string[]): Promise<number> {
  const [hostname, port] = [addr.split(":")[0]!, Number(addr.split(":")[1])];
  const conn = await Deno.connect({ hostname, port });
  const reading = (async () => {
    const buf = new Uint8Array(65536);
    let answers = 0;
    let tail = "";
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return answers;
      const text = tail + new TextDecoder().decode(buf.subarray(0, n));
      answers += text.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;
      tail = text.slice(-12); // shorter than a match: none is counted twice
      if (answers >= requests.length) return answers;
    }
  })();
  for (let i = 0; i < requests.length; i += 200) {
    const bytes = enc.encode(requests.slice(i, i + 200).join(""));
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  }
  const answers = await reading;
  conn.close();
  return answers;
}

// 1. Tables, queues and shutdown.
{
  const proxy = await startProxy([
    "--log-file",
    `${dir}/access.log`,
    "--log-format",
    "json",
    "--har",
    `${dir}/traffic.har`,
    "--summary-json",
    `${dir}/summary.json`,
    "--summary-every",
    "2s",
    "--admin",
    "127.0.0.1:0",
  ]);
  const idle = rssMib(proxy.child.pid);
  const [ah, ap] = [proxy.admin!.split(":")[0]!, Number(proxy.admin!.split(":")[1])];
  const stalled: Deno.Conn[] = [];
  for (let i = 0; i < 20; i++) {
    const c = await Deno.connect({ hostname: ah, port: ap });
    await c.write(enc.encode(`GET /api/events HTTP/1.1\r\nHost: ${proxy.admin}\r\n\r\n`));
    stalled.push(c);
  }
  // Two rounds with the same (or new) destinations: a table without a cap would grow in the
  // second as in the first.
  const started = performance.now();
  let answered = 0;
  const rounds: number[] = [];
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < total; i += 5000) {
      const batch: string[] = [];
      for (let j = i; j < Math.min(total, i + 5000); j++) {
        const k = j + round * total;
        batch.push(
          `GET http://169.254.${(k >> 8) & 255}.${k & 255}:${1 + (k >> 16)}/ HTTP/1.1\r\n` +
            `Host: x\r\n\r\n`,
        );
      }
      answered += await pipelined(proxy.addr, batch);
    }
    const methods: string[] = [];
    for (let j = 0; j < total / 8; j++) {
      const k = j + round * total;
      methods.push(`M${k}${"X".repeat(4096)} http://169.254.1.1/ HTTP/1.1\r\nHost: x\r\n\r\n`);
    }
    for (let i = 0; i < methods.length; i += 2000) {
      answered += await pipelined(proxy.addr, methods.slice(i, i + 2000));
    }
    rounds.push(rssMib(proxy.child.pid));
  }
  const secs = (performance.now() - started) / 1000;
  const metrics = await (await fetch(`http://${proxy.admin}/metrics`)).text();
  const dropped = /^http_proxy_event_subscribers_dropped_total (\d+)/m.exec(metrics)?.[1];
  printLine(
    `${answered} requests in two rounds of ${total} distinct destinations and ${total / 8} ` +
      `invented 4 KiB methods, in ${secs.toFixed(1)} s, with 20 /api/events readers that never ` +
      `read: RSS ${idle.toFixed(0)} MiB idle, ${rounds[0]!.toFixed(0)} after round 1, ` +
      `${rounds[1]!.toFixed(0)} after round 2; /metrics ${(metrics.length / 1024).toFixed(1)} ` +
      `KiB; event readers dropped: ${dropped}`,
  );
  for (const c of stalled) c.close();
  proxy.child.kill("SIGTERM");
  const { code } = await proxy.child.status;
  await proxy.drained;
  const har = JSON.parse(await Deno.readTextFile(`${dir}/traffic.har`));
  const lines = (await Deno.readTextFile(`${dir}/access.log`)).trimEnd().split("\n").length;
  const summary = JSON.parse(await Deno.readTextFile(`${dir}/summary.json`));
  const more = /^\.\.\. (\d+) more host/m.exec(proxy.stderr())?.[1];
  printLine(
    `SIGTERM: exit ${code}; HAR valid with ${har.log.entries.length} entries; ` +
      `${lines} log lines; summary JSON ${summary.hosts.length} hosts ` +
      `(the rest in "(other)"), its table ending "... ${more} more host(s)"`,
  );
}

// 2. Password guessing.
{
  const hashed = await new Deno.Command(Deno.execPath(), {
    args: ["run", `${root}main.ts`, "hash-password", "real"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = hashed.stdin.getWriter();
  await w.write(enc.encode("right password\n"));
  await w.close();
  const line = new TextDecoder().decode((await hashed.output()).stdout).trim();
  await Deno.writeTextFile(`${dir}/users`, line + "\n");
  const proxy = await startProxy(["--quiet", "--auth-file", `${dir}/users`]);
  const port = Number(proxy.addr.split(":")[1]);
  const statuses = new Map<string, number>();
  const until = performance.now() + seconds * 1000;
  const cpu0 = cpuSeconds(proxy.child.pid);
  // One guesser: a connection from 127.0.0.2 that sends a wrong password, reads the answer, and
  // sends the next, until the time is up.
  const guesser = () =>
    new Promise<void>((resolve) => {
      const socket = nodeConnect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" });
      let got = "";
      let n = 0;
      const send = () => {
        if (performance.now() > until) {
          socket.end();
          return;
        }
        socket.write(
          `GET http://169.254.1.1/ HTTP/1.1\r\nHost: x\r\n` +
            `Proxy-Authorization: Basic ${btoa(`real:guess${n++}`)}\r\n\r\n`,
        );
      };
      socket.on("connect", send);
      socket.on("data", (d: Uint8Array) => {
        got += new TextDecoder().decode(d);
        const m = /HTTP\/1\.1 (\d{3}) [\s\S]*?\r\n\r\n[^\n]*\n/.exec(got);
        if (!m) return;
        got = got.slice(m.index + m[0].length);
        statuses.set(m[1]!, (statuses.get(m[1]!) ?? 0) + 1);
        send();
      });
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
    });
  const flood = Promise.all(Array.from({ length: 8 }, guesser));
  await new Promise((r) => setTimeout(r, 1000));
  // A real user's first login, from another address, during the flood.
  const t0 = performance.now();
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--noproxy",
      "",
      "-x",
      proxy.addr,
      "-U",
      "real:right password",
      "http://127.0.0.1:9/",
    ],
    stdout: "piped",
  }).output();
  const firstLogin = performance.now() - t0;
  await flood;
  const cpu = cpuSeconds(proxy.child.pid) - cpu0;
  const counts = [...statuses].sort().map(([s, n]) => `${n} x ${s}`).join(", ");
  printLine(
    `${seconds} s of 8 connections guessing passwords from 127.0.0.2: answered ${counts}; ` +
      `proxy CPU ${(cpu / seconds).toFixed(2)} cores; a real user's first login from ` +
      `127.0.0.1 meanwhile: ${firstLogin.toFixed(0)} ms (then ${
        new TextDecoder().decode(out.stdout)
      } ` +
      `from the proxy: port 9 is closed, the login passed)`,
  );
  proxy.child.kill("SIGTERM");
  await proxy.child.status;
  await proxy.drained;
}

await Deno.remove(dir, { recursive: true });
