/**
 * The dashboard page served by the admin listener: HTML, a style sheet and a script, as three
 * resources so the page runs under a Content-Security-Policy with no inline script or style.
 * Charts are drawn on canvas; every asset comes from the admin listener itself (no CDN).
 *
 * @module
 */

/** The page. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>http-proxy</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard.css">
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
</head><body>
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
<script src="/dashboard.js"></script></body></html>
`;

/** Its icon: two arrows passing each other (a relay), in the page's colours. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="6" fill="#1b2129"/>
<path d="M6 11h16l-4-4M26 21H10l4 4" fill="none" stroke="#a3d977" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>
</svg>
`;

/** Its style sheet. */
export const DASHBOARD_CSS =
  `body{font:14px system-ui,sans-serif;margin:0;background:#0f1419;color:#d8dee9}
header{padding:12px 20px;background:#1b2129;display:flex;gap:28px;align-items:baseline}
h1{font-size:18px;margin:0}.kpi b{font-size:20px;color:#fff}.kpi{color:#9aa5b1}
main{display:grid;grid-template-columns:1fr 1fr;gap:16px;padding:16px 20px}
section{background:#1b2129;border-radius:6px;padding:12px}h2{font-size:14px;margin:0 0 8px;color:#9aa5b1}
canvas{width:100%;height:140px}table{width:100%;border-collapse:collapse;font-size:12px}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #2a323c;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:420px}
.s2{color:#a3d977}.s3{color:#7fb6ff}.s4{color:#f5c46b}.s5,.err{color:#ff7b72}.wide{grid-column:1/3}
`;

/** Its script: recent exchanges, then the event stream, and the summary every 2 s. */
export const DASHBOARD_JS = `const $ = (id) => document.getElementById(id);
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
`;
