/**
 * Measures what idle, slow and half-finished client connections cost the proxy, and whether it
 * gives the memory back: RSS of a proxy subprocess (`main.ts`) before, while and after holding
 *
 * - idle keep-alive clients (one request each, answered, then silent),
 * - slowloris clients (each has sent a partial request head of `--head-kib`, never ends it),
 * - abandoned tunnels (CONNECT answered, a few bytes relayed, then the client leaves while the
 *   upstream stays silent and open: the proxy holds them for --half-closed-timeout).
 *
 * Each kind runs against a fresh proxy. Per connection it reports the RSS added (minus the head
 * bytes a slowloris client really sent), first as held, then after the proxy has collected its
 * garbage (the requests' leftovers; a crowd of 300 more connections comes and goes to make it
 * collect, as any crowd does); and, after the clients are gone, the proxy's timeouts have closed
 * what they held and it has collected again, how far RSS is from where it started. For scale it
 * first measures the same connections held by a bare Deno program. Everything runs on 127.0.0.1.
 *
 * Run: `deno task connections [--count N] [--tunnels N] [--head-kib K] [--half-closed DUR]
 * [--skip-live]` (defaults 2000, 4000, 60, 20s; --skip-live skips the figure after a collection,
 * about 12 s per kind). Linux only: it reads /proc, hence -A. It needs about three file
 * descriptors per tunnel.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BufferedReader } from "../lib/http1/head.ts";
import { printLine } from "../lib/observe/log.ts";
import { startProxyProcess } from "./_proxy.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    count: { type: "string", default: "2000" },
    tunnels: { type: "string", default: "4000" },
    "head-kib": { type: "string", default: "60" },
    "half-closed": { type: "string", default: "20s" },
    "skip-live": { type: "boolean", default: false },
  },
});
const count = Number(values.count);
const tunnels = Number(values.tunnels);
const headBytes = Number(values["head-kib"]) * 1024;
const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Origin: answers GETs on keep-alive. */
const held = new Set<Deno.Conn>();
const { promise: ended, resolve: end } = Promise.withResolvers<void>();
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const origin = (async () => {
  for await (const conn of listener) {
    held.add(conn);
    (async () => {
      const reader = new BufferedReader(conn);
      for (;;) {
        const head = await reader.readHead({ maxBytes: 65536, timeoutMs: 600_000 });
        if (head === null) break;
        // GET /close: the upstream connection is not kept, so only the client's stays open.
        const close = new TextDecoder().decode(head.subarray(0, 10)) === "GET /close";
        await writeAll(
          conn,
          enc.encode(
            `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${close ? "Connection: close\r\n" : ""}\r\nok`,
          ),
        );
        if (close) break;
      }
    })().catch(() => {}).finally(() => {
      held.delete(conn);
      close([conn]);
    });
  }
})();

/** A tunnel's far end: reads what comes, never answers, and never closes (a half-close is not a close). */
const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const sink = (async () => {
  for await (const conn of silent) {
    (async () => {
      const buf = new Uint8Array(1024);
      while ((await conn.read(buf)) !== null) {
        // drop it
      }
      await ended;
    })().catch(() => {}).finally(() => close([conn]));
  }
})();

const proxyArgs = [
  "--quiet",
  "--admin",
  "127.0.0.1:0",
  "--connect-ports",
  "any",
  "--max-connections",
  "0",
  "--header-timeout",
  "60s",
  "--half-closed-timeout",
  values["half-closed"],
  "--idle-timeout",
  "20s",
  "--upstream-idle-timeout",
  "20s",
];
const target = `127.0.0.1:${listener.addr.port}`;
const far = `127.0.0.1:${silent.addr.port}`;

/** The proxy of the phase running now (each phase has a fresh one: see `phase`). */
let proxy: Deno.ChildProcess;
let host = "";
let port = "";
let admin: string | undefined;

/** The proxy's resident memory, KiB. */
function rss(): number {
  const text = Deno.readTextFileSync(`/proc/${proxy.pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(text)![1]);
}

/** File descriptors the proxy holds open. */
function fds(): number {
  return [...Deno.readDirSync(`/proc/${proxy.pid}/fd`)].length;
}

/** RSS once it stops moving (the proxy's GC runs when it likes). */
async function settledRss(): Promise<number> {
  let last = rss();
  for (let i = 0; i < 20; i++) {
    await sleep(250);
    const now = rss();
    if (Math.abs(now - last) < 256) return now;
    last = now;
  }
  return last;
}

/**
 * Runs one measurement against a proxy of its own, so that memory one phase leaves behind (the
 * allocator keeps much of it) is neither charged to nor reused by the next.
 */
/** No keep-alive to the admin listener: its socket would count among the proxy's. */
const noPool = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });

/** Collections the proxy's server has run (lib/reclaim.ts), from its /metrics. */
async function reclaims(): Promise<number> {
  const text = await (await fetch(`http://${admin}/metrics`, { client: noPool })).text();
  return Number(/^http_proxy_memory_reclaims_total (\d+)$/m.exec(text)![1]);
}

/**
 * RSS once the proxy has given back what it can: its server collects garbage about two seconds
 * after the open count falls far below its peak (at most every 10 s), then RSS settles.
 */
async function reclaimed(before: number): Promise<number> {
  for (let i = 0; i < 60 && (await reclaims()) === before; i++) await sleep(250);
  return await settledRss();
}

/**
 * RSS of what the connections held now really keep: a crowd of 300 more connects and leaves,
 * which makes the proxy collect its garbage (the requests' leftovers, until V8 would collect
 * them on its own), as it would after any crowd.
 */
async function liveRss(): Promise<number> {
  if (values["skip-live"]) return NaN;
  const before = await reclaims();
  const crowd = await many(300, () => open());
  await sleep(500);
  close(crowd);
  return await reclaimed(before);
}

async function phase(
  run: (start: number, startFds: number) => Promise<void>,
  start: () => Promise<{ child: Deno.ChildProcess; addr: string; drained: Promise<void> }> = () =>
    startProxyProcess(proxyArgs),
): Promise<void> {
  const started = await start();
  proxy = started.child;
  admin = "admin" in started ? started.admin as string | undefined : undefined;
  [host, port] = /^(\S+):(\d+)$/.exec(started.addr)!.slice(1) as [string, string];
  await sleep(500);
  const before = await settledRss();
  await run(before, fds());
  proxy.kill("SIGTERM");
  await proxy.status;
  await started.drained;
  close([...held]);
}

/**
 * The runtime's own floor: a bare Deno program (no HTTP, no proxy) that accepts connections and
 * keeps one 4 KiB read pending on each, as the proxy does for an idle client.
 */
async function startBareDeno() {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { setFlagsFromString } from "node:v8";
      import { runInNewContext } from "node:vm";
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc");
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      console.log("127.0.0.1:" + l.addr.port);
      let open = 0;
      for await (const c of l) {
        open++;
        (async () => {
          const buf = new Uint8Array(4096);
          while ((await c.read(buf)) !== null);
        })().catch(() => {}).finally(() => {
          c.close();
          // Once all have gone, one collection (as the proxy's server does after a crowd).
          if (--open === 0) setTimeout(gc, 500);
        });
      }`,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  const drained = (async () => {
    while (!(await reader.read()).done);
  })();
  return { child, addr: String(first.value).trim(), drained };
}

async function open(): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: host, port: Number(port) });
}

/** Reads until `text` has arrived. */
async function until(conn: Deno.Conn, text: string): Promise<void> {
  const buf = new Uint8Array(4096);
  let got = "";
  while (!got.includes(text)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`closed before "${text}": ${got}`);
    got += new TextDecoder().decode(buf.subarray(0, n));
  }
}

/** Runs `make` for `n` connections, 100 at a time. */
async function many<T>(n: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < n; i += 100) {
    out.push(
      ...await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => make(i + j))),
    );
  }
  return out;
}

function kib(n: number): string {
  return `${n.toFixed(1)} KiB`;
}

function close(conns: { close(): void }[]): void {
  for (const c of conns) {
    try {
      c.close();
    } catch {
      // already closed
    }
  }
}

await phase(async (start) => {
  const conns = await many(count, async () => {
    const c = await open();
    await writeAll(c, enc.encode("GET / HTTP/1.1\r\n"));
    return c;
  });
  await sleep(1000);
  printLine(
    `${count} connections to a bare Deno program with a 4 KiB read pending on each ` +
      `(the runtime's floor): ${kib(((await settledRss()) - start) / count)} per connection`,
  );
  close(conns);
  await sleep(1500);
  const after = (await settledRss()) - start;
  printLine(`  after they left: ${kib(after)} above idle, ${kib(after / count)} per connection`);
}, startBareDeno);

// Idle keep-alive clients: one request each, then silent; first with the upstream connection
// held for them (the origin keeps it), then alone (the origin closed its side).
for (const [path, what] of [["/", "each with its upstream held"], ["/close", "upstream closed"]]) {
  await phase(async (start, startFds) => {
    printLine(`proxy idle RSS ${kib(start)} (${(start / 1024).toFixed(1)} MiB)`);
    const idle = await many(count, async () => {
      const c = await open();
      await writeAll(c, enc.encode(`GET http://${target}${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
      await until(c, "\r\n\r\nok");
      return c;
    });
    const withIdle = await settledRss();
    const live = await liveRss();
    printLine(
      `${count} idle keep-alive clients (${what}): ${kib((withIdle - start) / count)} ` +
        `per connection, ${kib((live - start) / count)} after a collection`,
    );
    const r = await reclaims();
    close(idle);
    close([...held]);
    for (let i = 0; i < 40 && fds() > startFds; i++) await sleep(250);
    printLine(`  after they left: ${kib((await reclaimed(r)) - start)} above idle`);
  });
}

// Slowloris: a partial head of headBytes each, never finished.
const partial = enc.encode(
  `GET http://${target}/ HTTP/1.1\r\nHost: x\r\nX-Pad: ${"p".repeat(headBytes - 60)}`,
);
await phase(async (start) => {
  const slow = await many(count, async () => {
    const c = await open();
    await writeAll(c, partial);
    return c;
  });
  await sleep(1000);
  const withSlow = await settledRss();
  const live = await liveRss();
  const beyond = (rss: number) => kib((rss - start) / count - partial.length / 1024);
  printLine(
    `${count} slowloris clients with ${partial.length} head bytes sent each: ` +
      `${kib((withSlow - start) / count)} per connection, ${beyond(withSlow)} beyond the head ` +
      `bytes, ${beyond(live)} after a collection`,
  );
  const r = await reclaims();
  close(slow);
  printLine(`  after they left: ${kib((await reclaimed(r)) - start)} above idle`);
});

// Abandoned tunnels: CONNECT, 5 bytes each way... then the client leaves.
await phase(async (start, startFds) => {
  const clients = await many(tunnels, async () => {
    const c = await open();
    await writeAll(c, enc.encode(`CONNECT ${far} HTTP/1.1\r\n\r\nhello`));
    await until(c, "\r\n\r\n");
    return c;
  });
  close(clients);
  await sleep(1000);
  const withTunnels = await settledRss();
  const live = await liveRss();
  printLine(
    `${tunnels} abandoned tunnels (client gone, upstream silent and open): ` +
      `${kib((withTunnels - start) / tunnels)} per tunnel, ` +
      `${kib((live - start) / tunnels)} after a collection`,
  );
  const r = await reclaims();
  // The proxy closes them at --half-closed-timeout.
  for (let i = 0; i < 80 && fds() > startFds; i++) await sleep(500);
  printLine(
    `  after --half-closed-timeout closed them (${fds() - startFds} sockets left): ` +
      `${kib((await reclaimed(r)) - start)} above idle`,
  );
});

end();
noPool.close();
listener.close();
silent.close();
close([...held]);
await Promise.all([origin.catch(() => {}), sink.catch(() => {})]);
