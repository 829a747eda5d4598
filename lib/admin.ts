/**
 * The admin listener (`--admin`): `/metrics` in Prometheus text format, `/api/recent` and
 * `/api/summary` as JSON, `/api/events` as a server-sent event stream of finished exchanges,
 * and `/`, a live dashboard page whose every asset is served from here (no CDN). It is an
 * ordinary HTTP server (Deno.serve): the proxy path itself stays on raw sockets.
 *
 * @module
 */

import { hostPort } from "./dial.ts";
import { type ExchangeRecord, jsonRecord } from "./log.ts";
import type { Gauges, Metrics } from "./metrics.ts";
import type { Summary } from "./summary.ts";

/** A running admin server. */
export interface AdminServer {
  /** Its address. */
  addr: string;
  /** Stops it, ending every event stream. */
  shutdown(): Promise<void>;
}

/**
 * Starts the admin listener.
 *
 * @param addr Where to listen.
 * @param sources Metrics, summary and live gauges to serve.
 * @returns The server.
 */
export function startAdmin(
  addr: { hostname: string; port: number },
  sources: { metrics: Metrics; summary: Summary; gauges: Gauges },
): AdminServer {
  const { metrics, summary, gauges } = sources;
  const streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const enc = new TextEncoder();
  const json = (data: unknown) =>
    new Response(JSON.stringify(data, null, 1), {
      headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
    });
  const server = Deno.serve({ hostname: addr.hostname, port: addr.port, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (req.method !== "GET") return new Response("only GET\n", { status: 405 });
    switch (path) {
      case "/metrics":
        return new Response(metrics.render(gauges), {
          headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
        });
      case "/api/recent":
        return json(metrics.recent().map(jsonRecord));
      case "/api/summary":
        return json({
          ...summary.toJSON(),
          connections: gauges.connections(),
          idle_upstreams: gauges.idleUpstreams(),
        });
      case "/api/events": {
        let stop = () => {};
        let mine: ReadableStreamDefaultController<Uint8Array> | undefined;
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            mine = controller;
            streams.add(controller);
            controller.enqueue(enc.encode(": live exchanges\n\n"));
            stop = metrics.subscribe((ex: ExchangeRecord) => {
              try {
                controller.enqueue(enc.encode(`data: ${JSON.stringify(jsonRecord(ex))}\n\n`));
              } catch {
                stop(); // the stream was closed (shutdown)
              }
            });
          },
          cancel() {
            stop();
            if (mine) streams.delete(mine);
          },
        });
        return new Response(body, {
          headers: { "content-type": "text/event-stream", "cache-control": "no-store" },
        });
      }
      case "/":
        return new Response(DASHBOARD, { headers: { "content-type": "text/html; charset=utf-8" } });
      default:
        return new Response("not found: try /, /metrics, /api/recent, /api/summary\n", {
          status: 404,
        });
    }
  });
  return {
    addr: hostPort(server.addr.hostname, server.addr.port),
    async shutdown() {
      for (const c of streams) {
        try {
          c.close();
        } catch {
          // already closed by the client leaving
        }
      }
      streams.clear();
      await server.shutdown();
    },
  };
}

/** The dashboard: one page, inline script and styles, charts drawn on canvas. */
const DASHBOARD = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>http-proxy</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#d8dee9}
header{padding:12px 20px;background:#1b2129;display:flex;gap:28px;align-items:baseline}
h1{font-size:18px;margin:0}.kpi b{font-size:20px;color:#fff}.kpi{color:#9aa5b1}
main{display:grid;grid-template-columns:1fr 1fr;gap:16px;padding:16px 20px}
section{background:#1b2129;border-radius:6px;padding:12px}h2{font-size:14px;margin:0 0 8px;color:#9aa5b1}
canvas{width:100%;height:140px}table{width:100%;border-collapse:collapse;font-size:12px}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #2a323c;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:420px}
.s2{color:#a3d977}.s3{color:#7fb6ff}.s4{color:#f5c46b}.s5,.err{color:#ff7b72}.wide{grid-column:1/3}
</style></head><body>
<header><h1>http-proxy</h1>
<span class="kpi">connections <b id="conns">0</b></span>
<span class="kpi">requests/s <b id="rps">0</b></span>
<span class="kpi">bytes/s <b id="bps">0</b></span>
<span class="kpi">exchanges <b id="total">0</b></span>
<span class="kpi">errors <b id="errors">0</b></span></header>
<main>
<section><h2>requests per second (last 5 minutes)</h2><canvas id="rchart"></canvas></section>
<section><h2>bytes per second (last 5 minutes)</h2><canvas id="bchart"></canvas></section>
<section><h2>top hosts</h2><table id="hosts"><thead><tr><th>host</th><th>requests</th><th>bytes</th><th>p50 ms</th><th>errors</th></tr></thead><tbody></tbody></table></section>
<section><h2>recent errors</h2><table id="errs"><tbody></tbody></table></section>
<section class="wide"><h2>recent exchanges</h2><table id="recent"><thead><tr><th>time</th><th>#</th><th>client</th><th>method</th><th>url</th><th>status</th><th>bytes</th><th>ms</th><th>upstream</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const N = 300, reqs = new Array(N).fill(0), bytes = new Array(N).fill(0);
let total = 0, errors = 0;
function esc(s) { return String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;"})[c]); }
function human(n) { return n >= 1e9 ? (n/1e9).toFixed(1)+"G" : n >= 1e6 ? (n/1e6).toFixed(1)+"M" : n >= 1e3 ? (n/1e3).toFixed(1)+"k" : String(Math.round(n)); }
function draw(canvas, data, color) {
  const w = canvas.width = canvas.clientWidth * devicePixelRatio, h = canvas.height = canvas.clientHeight * devicePixelRatio;
  const g = canvas.getContext("2d"); g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...data);
  g.strokeStyle = color; g.lineWidth = 2 * devicePixelRatio; g.beginPath();
  data.forEach((v, i) => { const x = i * w / (N - 1), y = h - 4 - v / max * (h - 8); i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke(); g.fillStyle = "#9aa5b1"; g.font = 11 * devicePixelRatio + "px sans-serif"; g.fillText("max " + human(max), 6, 14 * devicePixelRatio);
}
function row(ex) {
  const cls = ex.status ? "s" + String(ex.status)[0] : "err";
  return "<tr><td>" + esc(ex.time.slice(11, 19)) + "</td><td>" + ex.id + "</td><td>" + esc(ex.client) + "</td><td>" + esc(ex.method) +
    "</td><td title=\\"" + esc(ex.url) + "\\">" + esc(ex.url) + "</td><td class=\\"" + cls + "\\">" + esc(ex.status ?? "-") + "</td><td>" +
    human(ex.bytes_down) + "</td><td>" + esc(ex.total_ms) + "</td><td>" + esc(ex.upstream ?? "-") + "</td></tr>";
}
function add(ex) {
  total++; reqs[N - 1]++; bytes[N - 1] += ex.bytes_up + ex.bytes_down;
  const body = $("recent").tBodies[0]; body.insertAdjacentHTML("afterbegin", row(ex));
  while (body.rows.length > 50) body.deleteRow(-1);
  if (ex.error) {
    errors++; const e = $("errs").tBodies[0];
    e.insertAdjacentHTML("afterbegin", "<tr><td>" + esc(ex.time.slice(11, 19)) + "</td><td class=err>" + esc(ex.status ?? "-") + "</td><td>" + esc(ex.url) + "</td><td>" + esc(ex.error) + "</td></tr>");
    while (e.rows.length > 20) e.deleteRow(-1);
  }
  $("total").textContent = total; $("errors").textContent = errors;
}
async function summary() {
  const s = await (await fetch("/api/summary")).json();
  $("conns").textContent = s.connections;
  $("hosts").tBodies[0].innerHTML = s.hosts.slice(0, 10).map((h) => "<tr><td>" + esc(h.host) + "</td><td>" + h.requests + "</td><td>" +
    human(h.bytesUp + h.bytesDown) + "</td><td>" + h.p50Ms + "</td><td>" + esc(Object.entries(h.errors).map(([k, n]) => k + "=" + n).join(" ") || "-") + "</td></tr>").join("");
}
setInterval(() => {
  $("rps").textContent = reqs[N - 1]; $("bps").textContent = human(bytes[N - 1]);
  reqs.push(0); reqs.shift(); bytes.push(0); bytes.shift();
  draw($("rchart"), reqs, "#7fb6ff"); draw($("bchart"), bytes, "#a3d977");
}, 1000);
setInterval(summary, 2000);
(async () => {
  for (const ex of await (await fetch("/api/recent")).json()) add(ex);
  reqs.fill(0); bytes.fill(0); summary();
  new EventSource("/api/events").onmessage = (m) => add(JSON.parse(m.data));
})();
</script></body></html>
`;
