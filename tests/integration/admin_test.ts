import assert from "node:assert/strict";
import parsePrometheus from "parse-prometheus-text-format";
import { adminOf, ROOT, startCli, startCliWithAdmin } from "../_fixtures/cli.ts";
import { curl, curlThrough, startHttpOrigin, trickle } from "../_fixtures/servers.ts";
import { startAdmin } from "../../lib/observe/admin.ts";
import { HostAddresses } from "../../lib/policy/host_addresses.ts";
import { Metrics } from "../../lib/observe/metrics.ts";
import { Summary } from "../../lib/observe/summary.ts";

type Family = {
  name: string;
  type: string;
  metrics: {
    value?: string;
    labels?: Record<string, string>;
    buckets?: Record<string, string>;
    count?: string;
  }[];
};

Deno.test("--admin serves Prometheus metrics, the recent exchanges, the summary and live events", async () => {
  await using origin = startHttpOrigin(() => new Response("0123456789"));
  await using cli = await startCliWithAdmin();
  const { admin } = cli;
  const events = await fetch(`http://${admin}/api/events`);
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  for (let i = 0; i < 3; i++) {
    assert.equal(
      (await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/${i}`])).stdout,
      "0123456789",
    );
  }
  await curl(["-x", cli.addrs[0]!, "http://127.0.0.1:9/"]);

  // Live: each exchange arrives as an event.
  let text = "";
  while ((text.match(/^data: /gm)?.length ?? 0) < 4) text += (await reader.read()).value ?? "";
  const first = JSON.parse(/^data: (.*)$/m.exec(text)![1]!);
  assert.equal(first.url, `http://127.0.0.1:${origin.port}/0`);
  await reader.cancel();

  const families = parsePrometheus(
    await (await fetch(`http://${admin}/metrics`)).text(),
  ) as Family[];
  const get = (name: string) => families.find((f) => f.name === name)!;
  const requests = get("http_proxy_requests_total");
  assert.equal(requests.type, "COUNTER");
  assert.deepEqual(
    requests.metrics.map((m) => [m.labels!.method, m.labels!.status_class, m.value]),
    [["GET", "2xx", "3"], ["GET", "5xx", "1"]],
  );
  assert.equal(
    get("http_proxy_body_bytes_total").metrics.find((m) => m.labels!.direction === "down")!.value,
    "30",
  );
  assert.equal(get("http_proxy_errors_total").metrics[0]!.labels!.kind, "connection_refused");
  assert.equal(get("http_proxy_request_duration_seconds").type, "HISTOGRAM");
  assert.equal(get("http_proxy_request_duration_seconds").metrics[0]!.count, "4");
  assert.equal(get("http_proxy_tunnels_open").metrics[0]!.value, "0");
  assert.equal(
    get("http_proxy_upstream_connections").metrics.find((m) => m.labels!.state === "idle")!.value,
    "1",
  );
  // Memory: a Deno process's RSS is tens of MiB, more than its JavaScript heap holds.
  const rss = Number(get("process_resident_memory_bytes").metrics[0]!.value);
  assert.ok(rss > 20 * 2 ** 20 && rss < 2 ** 30, `${rss} bytes resident`);
  const heap = get("http_proxy_heap_bytes").metrics;
  const used = Number(heap.find((m) => m.labels!.state === "used")!.value);
  const total = Number(heap.find((m) => m.labels!.state === "total")!.value);
  assert.ok(used > 1e6 && used <= total && total < rss, `heap ${used}/${total}, rss ${rss}`);
  assert.equal(get("http_proxy_memory_reclaims_total").type, "COUNTER");

  const recent = await (await fetch(`http://${admin}/api/recent`)).json();
  assert.equal(recent.length, 4);
  assert.equal(recent[3].error, 'Cannot connect to upstream "127.0.0.1:9": connection refused');
  const summary = await (await fetch(`http://${admin}/api/summary`)).json();
  assert.equal(summary.hosts[0].host, `127.0.0.1:${origin.port}`);
  assert.equal(summary.hosts[0].requests, 3);
  const page = await fetch(`http://${admin}/`);
  assert.match(await page.text(), /<title>http-proxy<\/title>[\s\S]*src="\/dashboard\.js"/);
  const script = await fetch(`http://${admin}/dashboard.js`);
  assert.equal(script.headers.get("content-type"), "text/javascript; charset=utf-8");
  assert.match(await script.text(), /new EventSource\("\/api\/events"\)/);
  // The page's icon, and the one browsers ask for by default: no 404 in the browser's console.
  for (const path of ["/favicon.svg", "/favicon.ico"]) {
    const icon = await fetch(`http://${admin}${path}`);
    assert.equal(icon.status, 200, path);
    assert.equal(icon.headers.get("content-type"), "image/svg+xml");
    assert.match(await icon.text(), /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  }
  const missing = await fetch(`http://${admin}/nope`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  assert.equal(await cli.stop(), 0);
  assert.doesNotMatch(cli.stderr.text, /legacy behavior|Uncaught|internal error/);
});

Deno.test("with --workers 2, the admin listener shows every worker's traffic", async () => {
  await using origin = startHttpOrigin(() => new Response("w"));
  await using cli = await startCli(
    ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "2", "--quiet"],
    { denoFlags: ["--unstable-net", `--allow-read=${ROOT}`] },
  );
  const admin = await adminOf(cli);
  for (let i = 0; i < 24; i++) {
    await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}/${i}`]);
  }
  // Workers report as their exchanges end; give the messages a moment.
  let recent: { id: number }[] = [];
  for (let i = 0; i < 40 && recent.length < 24; i++) {
    recent = await (await fetch(`http://${admin}/api/recent`)).json();
    if (recent.length < 24) await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(recent.length, 24);
  assert.ok(
    recent.some((e) => e.id % 2 === 0) && recent.some((e) => e.id % 2 === 1),
    "both workers",
  );
  const families = parsePrometheus(
    await (await fetch(`http://${admin}/metrics`)).text(),
  ) as Family[];
  const total = families.find((f) => f.name === "http_proxy_requests_total")!.metrics
    .reduce((n, m) => n + Number(m.value), 0);
  assert.equal(total, 24);
  const summary = await (await fetch(`http://${admin}/api/summary`)).json();
  assert.equal(summary.hosts[0].requests, 24);
  assert.equal(await cli.stop(), 0);
});

Deno.test("/api/events drops a reader that does not keep up, and counts it; a reading one stays", async () => {
  const metrics = new Metrics();
  const admin = startAdmin({ hostname: "127.0.0.1", port: 0 }, {
    metrics,
    summary: new Summary(),
    gauges: { connections: () => 0, idleUpstreams: () => 0 },
    hostAddresses: new HostAddresses(),
  });
  try {
    const host = `127.0.0.1:${admin.bound.port}`;
    // A client that asks for the stream and then never reads a byte.
    using stalled = await Deno.connect({ hostname: "127.0.0.1", port: admin.bound.port });
    await stalled.write(
      new TextEncoder().encode(`GET /api/events HTTP/1.1\r\nHost: ${host}\r\n\r\n`),
    );
    const live = await fetch(`http://${host}/api/events`);
    const reader = live.body!.getReader();
    await reader.read(); // the comment line
    const record = {
      id: 1,
      start: 0,
      clientIp: "127.0.0.1",
      clientPort: 1,
      method: "GET",
      target: `http://a.test/${"x".repeat(8000)}`,
      bytesUp: 0,
      bytesDown: 0,
      tunnel: false,
      opened: false,
    };
    let received = 0;
    // 8 KB events, 8 MB in all, while the live reader keeps reading: far more than socket
    // buffers and the 1 MiB allowance hold.
    for (
      let i = 0;
      i < 1000 && metrics.render(gauges).includes("subscribers_dropped_total 0");
      i++
    ) {
      metrics.closed({ ...record, id: i });
      while (received < i * 8000) received += (await reader.read()).value?.length ?? 0;
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    const text = metrics.render(gauges);
    assert.match(text, /^http_proxy_event_subscribers_dropped_total 1$/m);
    assert.match(text, /^http_proxy_event_subscribers 1$/m);
    await reader.cancel();
  } finally {
    await admin.shutdown();
  }
});

const gauges = { connections: () => 0, idleUpstreams: () => 0 };

Deno.test("bytes count as they flow: /metrics and /api/inflight move during a slow download and a tunnel, before they end", async () => {
  // An origin that sends 40 KiB in 8 pieces, one every 400 ms.
  await using origin = startHttpOrigin(() => new Response(trickle(8, 5 * 1024, 400)));
  await using cli = await startCliWithAdmin(["--connect-ports", "any"]);
  const { admin } = cli;
  const down = async () => {
    const text = await (await fetch(`http://${admin}/metrics`)).text();
    return Number(/http_proxy_body_bytes_total\{direction="down"\} (\d+)/.exec(text)![1]);
  };
  for (const through of [[], ["-p"]]) { // plain, then a CONNECT tunnel
    const before = await down();
    const transfer = curlThrough(cli.addrs[0]!, `http://127.0.0.1:${origin.port}/slow`, through);
    await new Promise((r) => setTimeout(r, 1600));
    const inflight = await (await fetch(`http://${admin}/api/inflight`)).json();
    const mine = inflight.inflight.find((f: { url: string }) => f.url.includes(`${origin.port}`));
    assert.ok(mine, JSON.stringify(inflight));
    assert.equal(mine.method, through.length ? "CONNECT" : "GET");
    assert.ok(mine.bytes_down > 0 && mine.bytes_down < 40 * 1024, JSON.stringify(mine));
    const during = await down();
    assert.ok(during > before, `counted while flowing: ${before} -> ${during}`);
    assert.ok(during - before < 40 * 1024, "not all of it yet");
    await transfer;
    await new Promise((r) => setTimeout(r, 1200)); // the next tick
    const after = await down();
    // Once in all: what the ticks counted is not counted again at the end. (Through a tunnel
    // the bytes are the whole response: its head and chunk framing too.)
    if (through.length === 0) assert.equal(after - before, 40 * 1024);
    else assert.ok(after - before > 40 * 1024 && after - before < 41 * 1024, `${after - before}`);
  }
  assert.equal(await cli.stop(), 0);
});

Deno.test("with --workers 2, the workers' transfers count as they flow too, not only when they end", async () => {
  await using origin = startHttpOrigin(() => new Response(trickle(8, 5 * 1024, 400)));
  await using cli = await startCli(
    ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "2", "--quiet"],
    { denoFlags: ["--unstable-net", `--allow-read=${ROOT}`] },
  );
  const admin = await adminOf(cli);
  type Flowing = { id: number; url: string; bytes_down: number };
  // Sixteen slow downloads at once: the kernel spreads them over both threads (ids of a thread
  // are all odd or all even). With six, all landed on one thread in about 1 run in 32 (seen once).
  const transfers = Array.from(
    { length: 16 },
    (_, i) => curlThrough(cli.addrs[0]!, `http://127.0.0.1:${origin.port}/slow${i}`),
  );
  await new Promise((r) => setTimeout(r, 2000));
  const { inflight } = await (await fetch(`http://${admin}/api/inflight`)).json() as {
    inflight: Flowing[];
  };
  const mine = inflight.filter((f) => f.url.includes("/slow"));
  assert.equal(mine.length, 16, JSON.stringify(inflight));
  for (const f of mine) {
    assert.ok(f.bytes_down > 0 && f.bytes_down < 40 * 1024, `moving: ${JSON.stringify(f)}`);
  }
  assert.ok(
    mine.some((f) => f.id % 2 === 0) && mine.some((f) => f.id % 2 === 1),
    `both threads: ${mine.map((f) => f.id)}`,
  );
  await Promise.all(transfers);
  assert.equal(await cli.stop(), 0);
});
