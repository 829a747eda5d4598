/**
 * Measures the proxy's peak memory (VmHWM) while a 1 GiB response and a 1 GiB chunked upload
 * pass through it, to show that bodies are streamed, never held whole. Everything runs on
 * 127.0.0.1: an origin in this process, the proxy as a subprocess (`main.ts`), curl as client.
 *
 * Run: `deno task memory [MiB]` (default 1024). Linux only: it reads /proc, hence -A.
 *
 * With `--cache`: the proxy runs with `--cache` (a store in a temporary folder), the response is
 * cacheable, and the download runs twice: a miss streamed to curl while it is written to the
 * store, then a hit read from the store's file. The upload is left out.
 *
 * @module
 */

import { copyChunked } from "../lib/http1/body.ts";
import { BufferedReader } from "../lib/http1/head.ts";
import { printLine } from "../lib/observe/log.ts";
import { startProxyProcess } from "./_proxy.ts";

const cached = Deno.args.includes("--cache");
const mib = Number(Deno.args.find((a) => /^\d+$/.test(a)) ?? 1024);
const total = mib * 1024 * 1024;
const enc = new TextEncoder();

async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** An origin: GET streams `total` bytes with Content-Length; a chunked PUT is read and counted. */
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const origin = (async () => {
  for await (const conn of listener) {
    (async () => {
      const reader = new BufferedReader(conn);
      const head = new TextDecoder().decode(
        (await reader.readHead({ maxBytes: 65536, timeoutMs: 10_000 }))!,
      );
      if (head.startsWith("GET")) {
        const cc = cached ? "Cache-Control: max-age=600\r\n" : "";
        await writeAll(
          conn,
          enc.encode(`HTTP/1.1 200 OK\r\n${cc}Content-Length: ${total}\r\n\r\n`),
        );
        const piece = new Uint8Array(256 * 1024).fill(120);
        for (let sent = 0; sent < total; sent += piece.length) await writeAll(conn, piece);
      } else {
        let got = 0;
        await copyChunked(reader, { write: (p) => Promise.resolve((got += p.length, p.length)) });
        const body = `received ${got} bytes`;
        await writeAll(
          conn,
          enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
        );
      }
    })().catch(() => {}).finally(() => conn.close());
  }
})();

function status(pid: number, field: string): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN) / 1024;
}

const cacheDir = cached ? await Deno.makeTempDir({ prefix: "http-proxy-memory-cache-" }) : "";
const started = await startProxyProcess(
  cached ? ["--quiet", "--cache", "--cache-dir", cacheDir, "--cache-size", "16GiB"] : ["--quiet"],
  cached ? [`--allow-read=${cacheDir}`, `--allow-write=${cacheDir}`] : [],
);
const proxy = started.child;
const proxyAddr = started.addr;
const idle = status(proxy.pid, "VmRSS");
const url = `http://127.0.0.1:${listener.addr.port}/big`;

async function run(label: string, args: string[], stdin?: () => AsyncIterable<Uint8Array>) {
  const started = performance.now();
  const child = new Deno.Command("curl", {
    args: ["-sS", "--noproxy", "", "-x", proxyAddr, ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    for await (const piece of stdin()) await w.write(piece);
    await w.close();
  }
  const out = await child.output();
  const secs = (performance.now() - started) / 1000;
  const text = new TextDecoder().decode(out.stdout).slice(0, 80);
  printLine(
    `${label}: ${mib} MiB in ${secs.toFixed(1)} s (${
      (mib / secs).toFixed(0)
    } MiB/s), curl exit ${out.code}` +
      `${text ? `, origin said "${text}"` : ""}; proxy peak RSS so far ${
        status(proxy.pid, "VmHWM").toFixed(1)
      } MiB`,
  );
}

printLine(`proxy idle RSS ${idle.toFixed(1)} MiB`);
if (cached) {
  const show = ["-o", "/dev/null", "-w", "%{size_download} %header{cache-status}", url];
  await run("download (cache miss, stored)", show);
  // The body is committed (flushed and renamed) just after the response: wait for its row.
  for (let i = 0; i < 100 && [...Deno.readDirSync(`${cacheDir}/objects`)].length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await run("download (cache hit, from disk)", show);
} else {
  await run("download", ["-o", "/dev/null", "-w", "%{size_download}", url]);
  await run("chunked upload", ["-T", "-", url], async function* () {
    const piece = new Uint8Array(1024 * 1024).fill(121);
    for (let i = 0; i < mib; i++) yield piece;
  });
}
printLine(
  `proxy peak RSS over both transfers (VmHWM): ${status(proxy.pid, "VmHWM").toFixed(1)} MiB`,
);

proxy.kill("SIGTERM");
await proxy.status;
await started.drained;
listener.close();
await origin.catch(() => {});
if (cached) await Deno.remove(cacheDir, { recursive: true });
