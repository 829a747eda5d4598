/**
 * `deno task bench`: http-proxy against squid (cache off), Apache Traffic Server (cache off, two
 * net threads), tinyproxy and proxy-chain (Node) in one run, all on 127.0.0.1, as ratios to a
 * direct connection to the origin, with a raw Deno byte relay (no HTTP parsing) as the runtime's
 * ceiling and a "Deno floor" (each request on a pooled upstream connection, no HTTP handling: the
 * least a pooling proxy in Deno does a request; `ours/floor` and `floor/ATS` columns). Every proxy
 * writes its access log, as deployed (http-proxy with the V8 flags of `deno task run`). It
 * installs wrk, nginx, squid, trafficserver, tinyproxy and curl from Debian if missing (and
 * proxy-chain from npm into the run's folder), starts nginx serving 1 KiB, 100 KiB and 100 MiB
 * files plus the proxies, then runs interleaved rounds of: wrk keep-alive requests/s with
 * p50/p99 (50 connections), wrk with `Connection: close`, wrk with 1000 connections, a 100 MiB
 * download through `curl -x`, the same through a CONNECT tunnel (`curl -p`), the latency added at
 * one connection, and each proxy's memory. Within a round each figure is measured for every target
 * back to back (this machine's speed drifts within minutes). For the two wrk rates it also reads
 * each proxy's CPU time (its process tree, from /proc) and prints requests/s per proxy core. It
 * prints a table of medians, with ratios as the median of each round's ratio, and writes JSON under
 * bench/results/. Every load is bounded in time; every process it starts is stopped. A peer that
 * cannot be installed or started is left out and named.
 *
 * With `--cache` rows (`--only cache`): http-proxy with `--cache` and squid with its memory cache,
 * a 1 KiB hit against a 1 KiB miss, and a 100 MiB hit from disk against a 100 MiB miss.
 *
 * Flags: --rounds N (3), --duration S (5), --workers N (1), --only ka,close,c1000,dl,tunnel,lat,cache
 *
 * @module
 */

import { parseArgs } from "node:util";
import { printLine } from "../lib/observe/log.ts";
import { makeCertificates } from "../lib/cli/make_cert.ts";
import { RUN_V8_FLAGS } from "./_proxy.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "5" },
    workers: { type: "string", default: "1" },
    only: { type: "string" },
  },
});
const ROUNDS = Number(flags.rounds);
const DURATION = Number(flags.duration);
const ONLY = flags.only?.split(",");
const root = new URL("../", import.meta.url).pathname;
const dec = new TextDecoder();

function say(text: string) {
  printLine(text, "stderr");
}

async function sh(cmd: string, args: string[], options: { env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function which(cmd: string): Promise<boolean> {
  return (await sh("bash", ["-c", `command -v ${cmd}`])).code === 0;
}

async function ensurePackages() {
  const wanted: [string, string][] = [
    ["wrk", "wrk"],
    ["nginx", "nginx"],
    ["squid", "squid"],
    ["tinyproxy", "tinyproxy"],
    ["traffic_server", "trafficserver"],
    ["curl", "curl"],
  ];
  const missing: string[] = [];
  for (const [cmd, pkg] of wanted) if (!(await which(cmd))) missing.push(pkg);
  if (missing.length === 0) return;
  say(`installing ${missing.join(" ")} from Debian…`);
  const res = await sh("bash", [
    "-c",
    `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${
      missing.join(" ")
    }`,
  ]);
  if (res.code !== 0) throw new Error(`apt-get failed: ${res.stderr.slice(-500)}`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

async function waitForPort(port: number, name: string) {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${name} did not start listening on 127.0.0.1:${port}`);
}

const children: Deno.ChildProcess[] = [];
/** The run's scratch folder (config files, served files, wrk scripts); removed at the end. */
let benchDir = "";

function spawn(cmd: string, args: string[]): Deno.ChildProcess {
  const child = new Deno.Command(cmd, {
    args,
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
  children.push(child);
  return child;
}

function rssMiB(pid: number, field = "VmRSS"): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN) / 1024;
  } catch {
    return NaN;
  }
}

/** The processes of a target: the pid and its children (squid forks workers, nginx too). */
function treeRss(pid: number, field = "VmRSS"): number {
  let total = rssMiB(pid, field);
  try {
    for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
      const kids = Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/children`).trim();
      for (const kid of kids ? kids.split(" ") : []) {
        // A child that is gone, or holds no memory (a zombie has no VmRSS line), adds nothing
        // rather than making the whole figure unknown: some runs read "-" for every memory
        // figure of ATS, whose children come and go at start.
        const rss = treeRss(Number(kid), field);
        if (Number.isFinite(rss)) total += rss;
      }
    }
  } catch {
    // the process is gone
  }
  return total;
}

/** CPU seconds (user + system) a process and its children have used so far. */
function treeCpu(pid: number): number {
  let total = 0;
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) in parentheses: utime is the 14th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total = (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks (USER_HZ 100)
    for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
      const kids = Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/children`).trim();
      for (const kid of kids ? kids.split(" ") : []) total += treeCpu(Number(kid));
    }
  } catch {
    // the process is gone
  }
  return total;
}

interface Target {
  name: string;
  /** wrk URL and path, curl proxy args. */
  wrkUrl: string;
  path: (file: string) => string;
  curl: string[];
  tunnel: string[];
  pid?: number;
  /** A byte relay: only the wrk rates mean anything through it. */
  rawOnly?: boolean;
}

async function setup(dir: string) {
  await ensurePackages();
  await Deno.mkdir(`${dir}/www`, { recursive: true });
  await Deno.mkdir(`${dir}/tmp`, { recursive: true });
  await Deno.writeFile(`${dir}/www/1k.bin`, new Uint8Array(1024).fill(97));
  await Deno.writeFile(`${dir}/www/100k.bin`, new Uint8Array(100 * 1024).fill(98));
  await Deno.writeFile(`${dir}/www/100m.bin`, new Uint8Array(100 * 1024 * 1024).fill(99));
  await Deno.chmod(dir, 0o777);
  await Deno.chmod(`${dir}/tmp`, 0o777);

  const originPort = freePort();
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `daemon off; master_process off; worker_processes 1; user root;
pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000000; keepalive_timeout 120s;
  client_body_temp_path ${dir}/tmp/b; proxy_temp_path ${dir}/tmp/p; fastcgi_temp_path ${dir}/tmp/f;
  uwsgi_temp_path ${dir}/tmp/u; scgi_temp_path ${dir}/tmp/s;
  server {
    listen 127.0.0.1:${originPort} backlog=4096; root ${dir}/www;
    # For the cache rows: the same files, cacheable for an hour, or never stored.
    location /c/ { alias ${dir}/www/; expires 1h; }
    location /n/ { alias ${dir}/www/; add_header Cache-Control "no-store"; }
  }
}
`,
  );
  const nginx = spawn("nginx", ["-c", `${dir}/nginx.conf`, "-p", dir]);
  await waitForPort(originPort, "nginx");

  const squidPort = freePort();
  await Deno.writeTextFile(
    `${dir}/squid.conf`,
    `http_port 127.0.0.1:${squidPort}
http_access allow all
cache deny all
cache_mem 8 MB
access_log daemon:${dir}/squid-access.log squid
cache_store_log none
cache_log ${dir}/squid-cache.log
pid_filename ${dir}/squid.pid
coredump_dir ${dir}
shutdown_lifetime 1 seconds
max_filedescriptors 16384
client_persistent_connections on
server_persistent_connections on
`,
  );
  const squid = spawn("squid", ["-N", "-f", `${dir}/squid.conf`]);
  await waitForPort(squidPort, "squid");

  // For the cache rows: squid with its memory cache on (the fastest it serves a hit from).
  const squidCachePort = freePort();
  await Deno.mkdir(`${dir}/squid-cache`, { recursive: true });
  await Deno.chmod(`${dir}/squid-cache`, 0o777);
  await Deno.writeTextFile(
    `${dir}/squid-cache/squid.conf`,
    `http_port 127.0.0.1:${squidCachePort}
http_access allow all
cache_mem 256 MB
maximum_object_size_in_memory 1 MB
memory_cache_mode always
access_log daemon:${dir}/squid-cache/access.log squid
cache_store_log none
cache_log ${dir}/squid-cache/cache.log
pid_filename ${dir}/squid-cache/squid.pid
coredump_dir ${dir}/squid-cache
shutdown_lifetime 1 seconds
max_filedescriptors 16384
`,
  );
  const squidCache = spawn("squid", ["-N", "-f", `${dir}/squid-cache/squid.conf`]);
  await waitForPort(squidCachePort, "squid (memory cache)");

  const tinyPort = freePort();
  await Deno.writeTextFile(
    `${dir}/tinyproxy.conf`,
    `User nobody
Group nogroup
Port ${tinyPort}
Listen 127.0.0.1
Timeout 600
MaxClients 4000
LogLevel Connect
LogFile "${dir}/tinyproxy.log"
PidFile "${dir}/tinyproxy.pid"
`,
  );
  await Deno.writeTextFile(`${dir}/tinyproxy.log`, "");
  await Deno.chmod(`${dir}/tinyproxy.log`, 0o666);
  const tiny = spawn("tinyproxy", ["-d", "-c", `${dir}/tinyproxy.conf`]);
  await waitForPort(tinyPort, "tinyproxy");
  const ats = await startTrafficServer(dir);
  const chain = await startProxyChain(dir);
  const relay = await startRawRelay(originPort);
  const floor = await startDenoFloor(originPort);

  // The same proxy also listens with TLS, with a certificate from make-cert's code: the bench
  // shows what TLS to the proxy costs next to its plain listener, in the same process.
  const made = await makeCertificates(["127.0.0.1"]);
  await Deno.writeTextFile(`${dir}/proxy.pem`, made.cert);
  await Deno.writeTextFile(`${dir}/proxy-key.pem`, made.key);
  const oursTlsPort = freePort();
  const oursPort = freePort();
  const ours = spawn(Deno.execPath(), [
    "run",
    ...RUN_V8_FLAGS,
    "--allow-net",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    ...(flags.workers !== "1" ? ["--unstable-net", `--allow-read=${root}`] : []),
    `${root}main.ts`,
    "--listen",
    `127.0.0.1:${oursPort}`,
    "--listen-tls",
    `127.0.0.1:${oursTlsPort}`,
    "--tls-cert",
    `${dir}/proxy.pem`,
    "--tls-key",
    `${dir}/proxy-key.pem`,
    "--log-file",
    `${dir}/http-proxy.log`,
    "--connect-ports",
    "any",
    ...(flags.workers !== "1" ? ["--workers", flags.workers] : []),
  ]);
  await waitForPort(oursPort, "http-proxy");
  // The same build with --cache, for the cache rows.
  const oursCachePort = freePort();
  const oursCache = spawn(Deno.execPath(), [
    "run",
    ...RUN_V8_FLAGS,
    "--allow-net",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    `${root}main.ts`,
    "--listen",
    `127.0.0.1:${oursCachePort}`,
    "--cache",
    "--cache-dir",
    `${dir}/http-proxy-cache`,
    "--log-file",
    `${dir}/http-proxy-cache.log`,
  ]);
  await waitForPort(oursCachePort, "http-proxy --cache");

  const origin = `127.0.0.1:${originPort}`;
  const viaProxy = (port: number, pid: number, name: string): Target => ({
    name,
    wrkUrl: `http://127.0.0.1:${port}`,
    path: (file) => `http://${origin}/${file}`,
    curl: ["-x", `127.0.0.1:${port}`],
    tunnel: ["-p", "-x", `127.0.0.1:${port}`],
    pid,
  });
  const targets: Target[] = [
    {
      name: "direct",
      wrkUrl: `http://${origin}`,
      path: (file) => `/${file}`,
      curl: [],
      tunnel: [],
      pid: nginx.pid,
    },
    viaProxy(squidPort, squid.pid, "squid"),
    ...(ats ? [viaProxy(ats.port, ats.pid, "ATS")] : []),
    viaProxy(tinyPort, tiny.pid, "tinyproxy"),
    ...(chain ? [viaProxy(chain.port, chain.pid, "proxy-chain")] : []),
    viaProxy(oursPort, ours.pid, "http-proxy"),
    {
      // wrk speaks TLS to the proxy's TLS port and sends it absolute-form requests; curl uses an
      // https:// proxy URL (the certificate is the bench's own: not verified).
      name: "http-proxy TLS",
      wrkUrl: `https://127.0.0.1:${oursTlsPort}`,
      path: (file) => `http://${origin}/${file}`,
      curl: ["--proxy", `https://127.0.0.1:${oursTlsPort}`, "--proxy-insecure"],
      tunnel: ["-p", "--proxy", `https://127.0.0.1:${oursTlsPort}`, "--proxy-insecure"],
      pid: ours.pid,
    },
    {
      // Bytes both ways, no HTTP: nginx reads the absolute-form request itself. Keep-alive and
      // close only (it cannot CONNECT or pick a host).
      name: "raw relay",
      wrkUrl: `http://127.0.0.1:${relay.port}`,
      path: (file) => `http://${origin}/${file}`,
      curl: [],
      tunnel: [],
      pid: relay.pid,
      rawOnly: true,
    },
    {
      // One fixed request upstream, whatever the client asked: the keep-alive, close and
      // 1000-connection rates only.
      name: "Deno floor",
      wrkUrl: `http://127.0.0.1:${floor.port}`,
      path: (file) => `http://${origin}/${file}`,
      curl: [],
      tunnel: [],
      pid: floor.pid,
      rawOnly: true,
    },
  ];
  const caching = {
    ours: viaProxy(oursCachePort, oursCache.pid, "http-proxy"),
    squid: viaProxy(squidCachePort, squidCache.pid, "squid"),
  };
  return { targets, origin, caching };
}

/**
 * Apache Traffic Server as a forward proxy with its cache off and two net threads, its config,
 * logs and runtime files under `dir/ats` (Debian's build ignores TS_ROOT; a runroot file moves
 * them), its default binary squid-format access log on.
 */
async function startTrafficServer(dir: string): Promise<{ port: number; pid: number } | undefined> {
  if (!(await which("traffic_server"))) {
    say("ATS left out: traffic_server is not installed");
    return undefined;
  }
  const at = `${dir}/ats`;
  for (const d of ["etc", "log", "run", "cache", "var"]) {
    await Deno.mkdir(`${at}/${d}`, { recursive: true });
  }
  await sh("bash", ["-c", `cp -r /etc/trafficserver/. ${at}/etc/`]);
  await Deno.writeTextFile(
    `${at}/runroot.yaml`,
    [
      "prefix: /usr",
      "exec_prefix: /usr",
      "bindir: /usr/bin",
      "sbindir: /usr/sbin",
      `sysconfdir: ${at}/etc`,
      `datadir: ${at}/cache`,
      "includedir: /usr/include",
      "libdir: /usr/lib/trafficserver",
      "libexecdir: /usr/lib/trafficserver/modules",
      `localstatedir: ${at}/var`,
      `runtimedir: ${at}/run`,
      `logdir: ${at}/log`,
      `cachedir: ${at}/cache`,
      "",
    ].join("\n"),
  );
  const port = freePort();
  // Later lines win over Debian's defaults above them.
  await Deno.writeTextFile(
    `${at}/etc/records.config`,
    [
      `CONFIG proxy.config.http.server_ports STRING ${port}`,
      "CONFIG proxy.config.http.cache.http INT 0",
      "CONFIG proxy.config.reverse_proxy.enabled INT 0",
      "CONFIG proxy.config.url_remap.remap_required INT 0",
      "CONFIG proxy.config.exec_thread.autoconfig INT 0",
      "CONFIG proxy.config.exec_thread.limit INT 2",
      "CONFIG proxy.config.admin.user_id STRING #-1",
      "CONFIG proxy.config.http.insert_client_ip INT 0",
      "CONFIG proxy.config.http.insert_squid_x_forwarded_for INT 0",
      "CONFIG proxy.config.http.connect_ports STRING 1-65535",
      "",
    ].join("\n"),
    { append: true },
  );
  await Deno.writeTextFile(`${at}/etc/storage.config`, `${at}/cache 64M\n`);
  const child = spawn("traffic_server", [`--run-root=${at}/runroot.yaml`]);
  try {
    await waitForPort(port, "ATS");
  } catch (err) {
    say(`ATS left out: ${(err as Error).message}`);
    return undefined;
  }
  return { port, pid: child.pid };
}

/** proxy-chain (Node, npm) with its defaults, installed into `dir`. */
async function startProxyChain(dir: string): Promise<{ port: number; pid: number } | undefined> {
  const at = `${dir}/proxy-chain`;
  await Deno.mkdir(at, { recursive: true });
  const install = await sh("bash", [
    "-c",
    `cd ${at} && npm install --silent --no-audit --no-fund proxy-chain@3.0.1 >/dev/null`,
  ]);
  if (install.code !== 0) {
    say(`proxy-chain left out: npm install failed: ${install.stderr.slice(-300)}`);
    return undefined;
  }
  const port = freePort();
  // Its access log: one line per request, as the others write theirs.
  await Deno.writeTextFile(
    `${at}/run.cjs`,
    `const fs = require("fs"), ProxyChain = require("proxy-chain");
const log = fs.createWriteStream(${JSON.stringify(`${at}/access.log`)}, { flags: "a" });
const server = new ProxyChain.Server({ port: ${port}, host: "127.0.0.1",
  prepareRequestFunction: ({ request, hostname, port }) => {
    log.write(new Date().toISOString() + " " + request.socket.remoteAddress + " " + request.method + " " + request.url + "\\n");
    return {};
  } });
server.listen();
`,
  );
  const child = spawn("node", [`${at}/run.cjs`]);
  try {
    await waitForPort(port, "proxy-chain");
  } catch (err) {
    say(`proxy-chain left out: ${(err as Error).message}`);
    return undefined;
  }
  return { port, pid: child.pid };
}

/**
 * The runtime's ceiling: a bare Deno program that connects each client connection to the origin
 * and copies bytes both ways with read and write, no parsing at all.
 */
async function startRawRelay(originPort: number): Promise<{ port: number; pid: number }> {
  const port = freePort();
  const child = spawn(Deno.execPath(), [
    "eval",
    `const l = Deno.listen({ hostname: "127.0.0.1", port: ${port} });
    async function copy(from, to) {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await from.read(buf);
          if (n === null) break;
          let off = 0;
          while (off < n) off += await to.write(buf.subarray(off, n));
        }
      } catch {}
      try { from.close(); } catch {}
      try { to.close(); } catch {}
    }
    for await (const c of l) {
      Deno.connect({ hostname: "127.0.0.1", port: ${originPort} }).then((u) => {
        copy(c, u); copy(u, c);
      }, () => c.close());
    }`,
  ]);
  await waitForPort(port, "raw relay");
  return { port, pid: child.pid };
}

/**
 * The floor of a pooling proxy in Deno: a bare program that, for each client request, finds the
 * end of its head, sends a fixed request for the 1 KiB file on a pooled upstream connection, reads
 * the response to its Content-Length and writes it back (adding `Connection: close` when the
 * client asked to close, then closing; a pooled connection found closed is replaced, as a proxy
 * must). The same system calls and Deno operations a request costs http-proxy, and no HTTP
 * handling at all: what no proxy written for Deno can go below (unlike the raw relay, it does not
 * dial the origin for each client connection, so its `Connection: close` figure is the runtime's
 * too).
 */
async function startDenoFloor(originPort: number): Promise<{ port: number; pid: number }> {
  const port = freePort();
  const child = spawn(Deno.execPath(), [
    "eval",
    `const l = Deno.listen({ hostname: "127.0.0.1", port: ${port} });
    const enc = new TextEncoder();
    const REQ = enc.encode("GET /1k.bin HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n");
    const CLOSE = enc.encode("Connection: close\\r\\n");
    const idle = [];
    function headEnd(b, n) {
      for (let i = 3; i < n; i++) {
        if (b[i] === 10 && b[i - 1] === 13 && b[i - 2] === 10 && b[i - 3] === 13) return i + 1;
      }
      return -1;
    }
    function contentLength(b, end) {
      for (let i = 0; i < end - 16; i++) {
        if ((b[i] | 32) === 99 && (b[i + 8] | 32) === 108 && b[i + 14] === 58) {
          let v = 0, j = i + 15;
          while (b[j] === 32) j++;
          while (b[j] >= 48 && b[j] <= 57) v = v * 10 + b[j++] - 48;
          return v;
        }
      }
      return 0;
    }
    async function dial() {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: ${originPort} });
      conn.setNoDelay(true);
      return { conn, buf: new Uint8Array(4096) };
    }
    // The response's length on u, or -1 when u turned out closed before any byte of it.
    async function fetchOn(u) {
      await u.conn.write(REQ);
      let m = 0, total = -1;
      while (total < 0 || m < total) {
        const k = await u.conn.read(u.buf.subarray(m));
        if (k === null) {
          if (m === 0) return -1;
          throw new Error("upstream closed");
        }
        m += k;
        if (total < 0) {
          const h = headEnd(u.buf, m);
          if (h >= 0) total = h + contentLength(u.buf, h);
        }
      }
      return m;
    }
    async function serve(c) {
      c.setNoDelay(true);
      const buf = new Uint8Array(2048);
      try {
        for (;;) {
          let n = 0, end = -1;
          while (end < 0) {
            const k = await c.read(buf.subarray(n));
            if (k === null) return;
            n += k;
            end = headEnd(buf, n);
          }
          let close = false;
          for (let i = 0; i + 4 < end; i++) {
            if ((buf[i] | 32) === 99 && (buf[i + 1] | 32) === 108 && (buf[i + 2] | 32) === 111 &&
              (buf[i + 3] | 32) === 115 && (buf[i + 4] | 32) === 101) close = true;
          }
          // A pooled connection the origin closed while it sat idle is replaced, once.
          let u = idle.pop() ?? await dial();
          let m = await fetchOn(u).catch(() => -1);
          if (m < 0) {
            try { u.conn.close(); } catch {}
            u = await dial();
            m = await fetchOn(u);
            if (m < 0) throw new Error("upstream closed");
          }
          if (close) {
            const h = headEnd(u.buf, m);
            const out = new Uint8Array(m + CLOSE.length);
            out.set(u.buf.subarray(0, h - 2));
            out.set(CLOSE, h - 2);
            out.set(u.buf.subarray(h - 2, m), h - 2 + CLOSE.length);
            await c.write(out);
          } else await c.write(u.buf.subarray(0, m));
          idle.push(u);
          if (close) return;
        }
      } catch {} finally {
        try { c.close(); } catch {}
      }
    }
    for await (const c of l) serve(c);`,
  ]);
  await waitForPort(port, "Deno floor");
  return { port, pid: child.pid };
}

interface WrkResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  timeouts: number;
  requests: number;
}

function ms(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "s" ? 1000 : 1);
}

async function wrk(
  target: Target,
  file: string,
  conns: number,
  seconds: number,
  close = false,
  threads = 2,
): Promise<WrkResult> {
  const script = `${benchDir}/bench.lua`;
  await Deno.writeTextFile(
    script,
    `wrk.path = ${JSON.stringify(target.path(file))}\n` +
      (close ? `wrk.headers["Connection"] = "close"\n` : ""),
  );
  const res = await sh("bash", [
    "-c",
    `ulimit -n 20000; exec timeout ${seconds + 30} wrk -t${threads} -c${conns} -d${seconds}s ` +
    `--timeout 5s --latency -s ${script} ${target.wrkUrl}`,
  ]);
  const out = res.stdout;
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50: ms(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ""),
    p99: ms(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ""),
    errors: non2xx + (socket ? Number(socket[1]) + Number(socket[2]) + Number(socket[3]) : 0),
    timeouts: socket ? Number(socket[4]) : 0,
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0),
  };
}

async function download(args: string[], url: string): Promise<number> {
  const res = await sh("curl", [
    "-sS",
    "--noproxy",
    "",
    "--max-time",
    "60",
    "-o",
    "/dev/null",
    "-w",
    "%{speed_download} %{size_download}",
    ...args,
    url,
  ]);
  const [speed, size] = res.stdout.split(" ").map(Number);
  if (res.code !== 0 || size !== 100 * 1024 * 1024) return NaN;
  return speed! / 1e6; // MB/s
}

function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Runs one figure's measurement against one target and adds its samples. */
async function measure(
  t: Target,
  figure: string,
  origin: string,
  add: (figure: string, target: string, value: number) => void,
): Promise<void> {
  // CPU seconds the target's processes used during a run, as cores: requests/s per core.
  const perCore = async (run: () => Promise<WrkResult>) => {
    const cpu0 = t.pid ? treeCpu(t.pid) : NaN;
    const t0 = performance.now();
    const r = await run();
    const cores = ((t.pid ? treeCpu(t.pid) : NaN) - cpu0) / ((performance.now() - t0) / 1000);
    return { r, cores, rate: r.rps / cores };
  };
  // Each transfer is measured after one unmeasured warm-up transfer of the same kind: the
  // first big transfer after other work runs before the JIT and GC settle (measured: 423
  // then 1206 MB/s through a CONNECT tunnel), and a long-running proxy is in steady state.
  const big = `http://${origin}/100m.bin`;
  switch (figure) {
    case "ka": {
      const { r, cores, rate } = await perCore(() => wrk(t, "1k.bin", 50, DURATION));
      add("keep-alive 1 KiB req/s", t.name, r.rps);
      add("keep-alive req/s per proxy core", t.name, rate);
      add("keep-alive proxy cores used", t.name, cores);
      add("keep-alive p50 ms", t.name, r.p50);
      add("keep-alive p99 ms", t.name, r.p99);
      add("keep-alive errors", t.name, r.errors + r.timeouts);
      return;
    }
    case "close": {
      const { r, rate } = await perCore(() => wrk(t, "1k.bin", 50, DURATION, true));
      add("Connection: close req/s", t.name, r.rps);
      add("close req/s per proxy core", t.name, rate);
      return;
    }
    case "c1000": {
      let peak = 0;
      const poll = setInterval(() => {
        if (t.pid) peak = Math.max(peak, treeRss(t.pid));
      }, 200);
      const r = await wrk(t, "1k.bin", 1000, DURATION);
      clearInterval(poll);
      add("1000 conns req/s", t.name, r.rps);
      add("1000 conns p50 ms", t.name, r.p50);
      add("1000 conns p99 ms", t.name, r.p99);
      add("1000 conns timeouts", t.name, r.timeouts);
      add("1000 conns errors", t.name, r.errors);
      add("RSS at 1000 conns MiB", t.name, peak);
      return;
    }
    case "dl":
      if (t.rawOnly) return;
      await download(t.curl, big);
      add("100 MiB download MB/s", t.name, await download(t.curl, big));
      return;
    case "tunnel":
      if (t.rawOnly) return;
      await download(t.tunnel, big);
      add("100 MiB CONNECT MB/s", t.name, await download(t.tunnel, big));
      return;
    case "lat": {
      const r = await wrk(t, "1k.bin", 1, Math.max(2, Math.min(DURATION, 3)), false, 1);
      add("1-conn p50 ms", t.name, r.p50);
      return;
    }
  }
}

async function main() {
  const dir = await Deno.makeTempDir({ prefix: "http-proxy-bench-" });
  benchDir = dir;
  const started = new Date();
  const samples: Record<string, Record<string, number[]>> = {};
  const add = (figure: string, target: string, value: number) => {
    ((samples[figure] ??= {})[target] ??= []).push(value);
  };
  const want = (name: string) => !ONLY || ONLY.includes(name);
  try {
    const { targets, origin, caching } = await setup(dir);
    for (const t of targets) if (t.pid) add("idle RSS MiB", t.name, treeRss(t.pid));
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate the order each round so no target always runs first or last.
      const order = targets.map((_, i) => targets[(i + round) % targets.length]!);
      say(`round ${round}/${ROUNDS}`);
      // Figure by figure, every target back to back: this machine's speed drifts by a quarter
      // within minutes (the same build, fresh each time, did 11k and 19k keep-alive requests/s
      // a few minutes apart), so a target is compared with the others measured within about a
      // minute of it, not with runs made several minutes later.
      for (const figure of ["ka", "close", "c1000", "dl", "tunnel", "lat"]) {
        if (!want(figure)) continue;
        for (const t of order) await measure(t, figure, origin, add);
      }
      for (const t of order) if (t.pid) add("peak RSS MiB", t.name, treeRss(t.pid, "VmHWM"));
      if (want("cache")) await cacheRound(caching, origin, add);
    }
    report(samples, targets.map((t) => t.name), started);
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    await Promise.all(children.map((c) => c.status));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The cache rows, one round: a 1 KiB hit (`/c/`, cacheable for an hour) against a 1 KiB miss
 * (`/n/`, no-store: every request goes to nginx through the cache's code) for http-proxy --cache
 * and for squid with its memory cache, and a 100 MiB hit (from http-proxy's disk store) against a
 * 100 MiB miss. Each hit is warmed by one request first.
 */
async function cacheRound(
  caching: { ours: Target; squid: Target },
  origin: string,
  add: (figure: string, target: string, value: number) => void,
) {
  for (const t of [caching.squid, caching.ours]) {
    await sh("curl", ["-s", "-o", "/dev/null", ...t.curl, `http://${origin}/c/1k.bin`]);
    const cpu0 = treeCpu(t.pid!);
    const t0 = performance.now();
    const hit = await wrk(t, "c/1k.bin", 50, DURATION);
    const cores = (treeCpu(t.pid!) - cpu0) / ((performance.now() - t0) / 1000);
    add("cache 1 KiB hit req/s", t.name, hit.rps);
    add("cache hit req/s per proxy core", t.name, hit.rps / cores);
    add("cache 1 KiB hit p99 ms", t.name, hit.p99);
    const miss = await wrk(t, "n/1k.bin", 50, DURATION);
    add("cache 1 KiB miss req/s", t.name, miss.rps);
    add("cache errors", t.name, hit.errors + hit.timeouts + miss.errors + miss.timeouts);
  }
  const ours = caching.ours;
  await download(ours.curl, `http://${origin}/c/100m.bin`); // stored (and the JIT warm)
  add(
    "cache 100 MiB hit (disk) MB/s",
    ours.name,
    await download(ours.curl, `http://${origin}/c/100m.bin`),
  );
  await download(ours.curl, `http://${origin}/n/100m.bin`);
  add(
    "cache 100 MiB miss MB/s",
    ours.name,
    await download(ours.curl, `http://${origin}/n/100m.bin`),
  );
}

function report(samples: Record<string, Record<string, number[]>>, names: string[], started: Date) {
  const med: Record<string, Record<string, number>> = {};
  for (const [figure, byTarget] of Object.entries(samples)) {
    med[figure] = {};
    for (const [t, xs] of Object.entries(byTarget)) med[figure]![t] = median(xs);
  }
  const hit = med["cache 1 KiB hit req/s"];
  const miss = med["cache 1 KiB miss req/s"];
  if (hit && miss) {
    med["cache hit/miss"] = {};
    for (const n of Object.keys(hit)) med["cache hit/miss"]![n] = hit[n]! / miss[n]!;
  }
  const lat = med["1-conn p50 ms"];
  if (lat) {
    med["latency added p50 ms"] = {};
    for (const n of names) med["latency added p50 ms"]![n] = lat[n]! - lat["direct"]!;
  }
  const fmt = (x: number | undefined) =>
    x === undefined || !Number.isFinite(x) ? "-" : Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2);
  const header = [
    "figure (median)",
    ...names,
    "ours/direct",
    "ours/squid",
    "ours/ATS",
    "ours/tinyproxy",
    "TLS/plain",
    "ours/floor",
    "floor/ATS",
  ];
  // A ratio is the median of each round's ratio (the two measured within a minute of each
  // other, see main), where both have a sample every round; else the ratio of the medians.
  const ratio = (figure: string, a: string, b: string) => {
    const xs = samples[figure]?.[a];
    const ys = samples[figure]?.[b];
    if (xs && ys && xs.length === ys.length && xs.length > 0) {
      return median(xs.map((x, i) => x / ys[i]!));
    }
    return med[figure]![a]! / med[figure]![b]!;
  };
  const rows = Object.entries(med).map(([figure, v]) => [
    figure,
    ...names.map((n) => fmt(v[n])),
    fmt(ratio(figure, "http-proxy", "direct")),
    fmt(ratio(figure, "http-proxy", "squid")),
    fmt(ratio(figure, "http-proxy", "ATS")),
    fmt(ratio(figure, "http-proxy", "tinyproxy")),
    fmt(ratio(figure, "http-proxy TLS", "http-proxy")),
    fmt(ratio(figure, "http-proxy", "Deno floor")),
    fmt(ratio(figure, "Deno floor", "ATS")),
  ]);
  const lines = [header, header.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`);
  printLine(
    `http-proxy bench, ${started.toISOString()}, ${ROUNDS} rounds × ${DURATION}s, workers ${flags.workers}`,
  );
  printLine(lines.join("\n"));
  Deno.mkdirSync(`${root}bench/results`, { recursive: true });
  const file = `${root}bench/results/${started.toISOString().replace(/[:.]/g, "-")}.json`;
  Deno.writeTextFileSync(
    file,
    JSON.stringify(
      {
        started,
        rounds: ROUNDS,
        duration: DURATION,
        workers: flags.workers,
        samples,
        medians: med,
      },
      null,
      2,
    ),
  );
  say(`wrote ${file}`);
}

await main();
