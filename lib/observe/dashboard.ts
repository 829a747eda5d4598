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
<span class="kpi">errors <b id="errors">0</b></span>
<span class="kpi" id="cachekpi" hidden>cache hits <b id="chits">-</b> from cache <b id="csaved">0</b></span></header>
<main>
<section><h2>requests per second (last 5 minutes)</h2><canvas id="rchart"></canvas></section>
<section><h2>bytes per second (last 5 minutes)</h2><canvas id="bchart"></canvas></section>
<section class="wide"><h2>in progress</h2><table id="inflight"><colgroup><col class="id"><col class="addr opt"><col class="m"><col><col class="m"><col class="m"><col class="m"></colgroup><thead><tr><th>#</th><th class="opt">client</th><th>method</th><th>url</th><th>age</th><th>bytes</th><th>bytes/s</th></tr></thead><tbody></tbody></table></section>
<section><h2>top hosts</h2><table id="hosts"><colgroup><col class="url"><col><col><col><col></colgroup><thead><tr><th>host</th><th>requests</th><th>bytes</th><th>p50 ms</th><th>errors</th></tr></thead><tbody></tbody></table></section>
<section><h2>top clients</h2><table id="clients"><colgroup><col class="url"><col><col><col class="url"></colgroup><thead><tr><th>client</th><th>requests</th><th>bytes</th><th>top destinations</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>recent errors</h2><table id="errs"><colgroup><col class="n"><col class="n"><col class="url"><col></colgroup><tbody></tbody></table></section>
<section class="wide"><h2>recent exchanges</h2>
<form id="filters" class="filters"><input id="fhost" placeholder="host" aria-label="filter by host">
<input id="fclient" placeholder="client" aria-label="filter by client">
<select id="fstatus" aria-label="filter by status"><option value="">any status</option><option>2xx</option><option>3xx</option><option>4xx</option><option>5xx</option><option value="none">no answer</option></select></form>
<table id="recent"><colgroup><col class="t"><col class="id"><col class="addr opt"><col class="m"><col><col class="m"><col class="m"><col class="m"><col class="w opt"><col class="addr opt"></colgroup><thead><tr><th>time</th><th>#</th><th class="opt">client</th><th>method</th><th>url</th><th>status</th><th>bytes</th><th>ms</th><th class="opt">timing</th><th class="opt">upstream</th></tr></thead><tbody></tbody></table></section>
<section class="wide"><h2>history</h2>
<form id="hform" class="filters"><input id="hsince" type="datetime-local" aria-label="from">
<input id="huntil" type="datetime-local" aria-label="until">
<select id="htop" aria-label="show"><option value="">exchanges</option><option value="hosts">top hosts</option><option value="clients">top clients</option><option value="users">top users</option></select>
<button id="hgo" type="submit">search</button><span id="hnote" class="note">the last 24 hours unless a time is given, with the filters above (host: a name, or name:port; client: an address)</span></form>
<table id="history"><thead></thead><tbody></tbody></table></section>
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
header{padding:12px 20px;background:#1b2129;display:flex;flex-wrap:wrap;gap:8px 28px;align-items:baseline}
h1{font-size:18px;margin:0}.kpi b{font-size:20px;color:#fff}.kpi{color:#9aa5b1}
main{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;padding:16px 20px}
section{background:#1b2129;border-radius:6px;padding:12px;min-width:0;overflow:hidden}
h2{font-size:14px;margin:0 0 8px;color:#9aa5b1}
canvas{width:100%;height:140px;display:block}
table{width:100%;border-collapse:collapse;font-size:12px;table-layout:fixed}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #2a323c;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#errs col.url,#hosts col.url,#clients col.url{width:40%}#errs col.n{width:12%}
#recent col.t{width:9%}#recent col.id,#inflight col.id{width:6%}#recent col.addr,#inflight col.addr{width:15%}
#recent col.m,#inflight col.m{width:8%}#recent col.w{width:10%}
.wf{display:block}.wf .dns{fill:#c792ea}.wf .tcp{fill:#f5c46b}.wf .wait{fill:#7fb6ff}.wf .xfer{fill:#a3d977}
.filters{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 8px}.filters input,.filters select{background:#0f1419;color:#d8dee9;border:1px solid #2a323c;border-radius:4px;padding:3px 6px;font-size:12px}
.filters button{background:#2a323c;color:#d8dee9;border:1px solid #3a4450;border-radius:4px;padding:3px 10px;font-size:12px;cursor:pointer}
.note{color:#9aa5b1;font-size:12px;align-self:center}
.s2{color:#a3d977}.s3{color:#7fb6ff}.s4{color:#f5c46b}.s5,.err{color:#ff7b72}.wide{grid-column:1/3}
@media (max-width:760px){main{grid-template-columns:minmax(0,1fr);padding:8px}.wide{grid-column:1}
header{padding:8px}#recent .opt{display:none}}
`;

/** Its script: recent exchanges, then the event stream, and the summary every 2 s. */
export const DASHBOARD_JS = `const $ = (id) => document.getElementById(id);
const N = 300, reqs = new Array(N).fill(0), bytes = new Array(N).fill(0);
let total = 0, errors = 0;
function esc(s) { return String(s ?? "").replace(/[&<>"]/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\\"":"&quot;"})[c]); }
function human(n) { return n >= 1e9 ? (n/1e9).toFixed(1)+"G" : n >= 1e6 ? (n/1e6).toFixed(1)+"M" : n >= 1e3 ? (n/1e3).toFixed(1)+"k" : String(Math.round(n)); }
function draw(canvas, data, color, unit) {
  const d = devicePixelRatio, w = canvas.width = canvas.clientWidth * d, h = canvas.height = canvas.clientHeight * d;
  const g = canvas.getContext("2d"); g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...data), top = 18 * d, bottom = h - 16 * d;
  // Axes: a value scale at the top left, the time along the bottom (one point a second).
  g.fillStyle = "#9aa5b1"; g.font = 11 * d + "px sans-serif"; g.strokeStyle = "#2a323c"; g.lineWidth = d;
  g.beginPath(); g.moveTo(0, bottom); g.lineTo(w, bottom); g.stroke();
  g.fillText(human(max) + " " + unit, 6 * d, 12 * d);
  g.fillText("5 min ago", 2 * d, h - 3 * d);
  g.textAlign = "center"; g.fillText("2.5 min", w / 2, h - 3 * d);
  g.textAlign = "right"; g.fillText("now", w - 2 * d, h - 3 * d); g.textAlign = "left";
  g.strokeStyle = color; g.lineWidth = 2 * d; g.beginPath();
  data.forEach((v, i) => { const x = i * w / (N - 1), y = bottom - v / max * (bottom - top); i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
}
// An exchange's timing as a small waterfall: DNS, connect, waiting for the first byte, transfer,
// each as a share of the total (an SVG: the page's CSP allows no inline style).
function waterfall(ex) {
  const total = ex.total_ms || 0;
  if (!total) return "<td class=opt>-</td>";
  const at = (v) => Math.max(0, Math.min(100, (v ?? 0) / total * 100));
  const dns = at(ex.dns_ms), tcp = at(ex.connect_ms), first = ex.first_byte_ms == null ? tcp : at(ex.first_byte_ms);
  const bar = (cls, x0, x1) => x1 > x0 ? "<rect class=" + cls + " x=" + x0.toFixed(1) + " width=" + (x1 - x0).toFixed(1) + " height=8></rect>" : "";
  const title = "dns " + (ex.dns_ms ?? "-") + " ms, connected " + (ex.connect_ms ?? "-") + " ms, first byte " + (ex.first_byte_ms ?? "-") + " ms, total " + total + " ms";
  return "<td class=opt title=\\"" + esc(title) + "\\"><svg class=wf viewBox=\\"0 0 100 8\\" preserveAspectRatio=none width=100% height=8>" +
    bar("dns", 0, dns) + bar("tcp", dns, tcp) + bar("wait", tcp, first) + bar("xfer", first, 100) + "</svg></td>";
}
function hostOf(url) { try { return new URL(url.includes("://") ? url : "http://" + url).host; } catch { return url; } }
function row(ex) {
  const cls = ex.status ? "s" + String(ex.status)[0] : "err";
  const st = ex.status ? String(ex.status)[0] + "xx" : "none";
  return "<tr data-host=\\"" + esc(hostOf(ex.url)) + "\\" data-client=\\"" + esc(ex.client) + "\\" data-status=\\"" + st + "\\"><td>" + esc(ex.time.slice(11, 19)) + "</td><td>" + ex.id + "</td><td class=opt title=\\"" + esc(ex.client) + "\\">" + esc(ex.client) + "</td><td>" + esc(ex.method) +
    "</td><td title=\\"" + esc(ex.url) + "\\">" + esc(ex.url) + "</td><td class=\\"" + cls + "\\">" + esc(ex.status ?? "-") + "</td><td>" +
    human(ex.bytes_down) + "</td><td>" + esc(ex.total_ms) + "</td>" + waterfall(ex) + "<td class=opt title=\\"" + esc(ex.upstream ?? (ex.cache ? "cache " + ex.cache : "-")) + "\\">" +
    esc(ex.upstream ?? (ex.cache ? "cache " + ex.cache : "-")) + "</td></tr>";
}
function add(ex) {
  total++; reqs[N - 1]++; // bytes come with each tick, as they flow
  const body = $("recent").tBodies[0]; body.insertAdjacentHTML("afterbegin", row(ex));
  while (body.rows.length > 200) body.deleteRow(-1);
  filter();
  if (ex.error) {
    errors++; const e = $("errs").tBodies[0];
    e.insertAdjacentHTML("afterbegin", "<tr><td>" + esc(ex.time.slice(11, 19)) + "</td><td class=err>" + esc(ex.status ?? "-") + "</td><td title=\\"" + esc(ex.url) + "\\">" + esc(ex.url) + "</td><td title=\\"" + esc(ex.error) + "\\">" + esc(ex.error) + "</td></tr>");
    while (e.rows.length > 20) e.deleteRow(-1);
  }
  $("total").textContent = total; $("errors").textContent = errors;
}
// Filters on the recent exchanges: host and client by substring, status by class; the 50 newest
// that match are shown.
function filter() {
  const h = $("fhost").value.trim().toLowerCase(), c = $("fclient").value.trim(), s = $("fstatus").value;
  let shown = 0;
  for (const r of $("recent").tBodies[0].rows) {
    const ok = (!h || r.dataset.host.toLowerCase().includes(h)) && (!c || r.dataset.client.includes(c)) && (!s || r.dataset.status === s);
    r.hidden = !ok || ++shown > 50;
  }
}
for (const id of ["fhost", "fclient", "fstatus"]) $(id).addEventListener("input", filter);
$("filters").addEventListener("submit", (e) => e.preventDefault());
async function summary() {
  const s = await (await fetch("/api/summary")).json();
  $("conns").textContent = s.connections;
  if (!$("cachekpi").hidden) {
    const c = await (await fetch("/api/cache")).json();
    $("chits").textContent = c.hitRatio === null ? "-" : (100 * c.hitRatio).toFixed(1) + "%";
    $("csaved").textContent = human(c.servedBytes);
  }
  $("hosts").tBodies[0].innerHTML = s.hosts.slice(0, 10).map((h) => "<tr><td title=\\"" + esc(h.host) + "\\">" + esc(h.host) + "</td><td>" + h.requests + "</td><td>" +
    human(h.bytesUp + h.bytesDown) + "</td><td>" + h.p50Ms + "</td><td>" + esc(Object.entries(h.errors).map(([k, n]) => k + "=" + n).join(" ") || "-") + "</td></tr>").join("");
  $("clients").tBodies[0].innerHTML = s.clients.slice(0, 10).map((c) => {
    const top = c.top.map((t) => t.host + " " + t.requests).join(", ");
    return "<tr><td title=\\"" + esc(c.key) + "\\">" + esc(c.key) + "</td><td>" + c.requests + "</td><td>" + human(c.bytesUp + c.bytesDown) +
      "</td><td title=\\"" + esc(top) + "\\">" + esc(top || "-") + "</td></tr>";
  }).join("");
}
// The history (--history): a time range and the filters above, answered by /api/history.
const HCOLS = { time: "time", client: "client", user: "user", method: "method", url: "url", status: "status", host: "host", requests: "requests",
  bytes_up: "bytes up", bytes_down: "bytes down", total_ms: "ms", errors: "errors", error: "error" };
async function searchHistory() {
  $("hnote").textContent = "searching…";
  const p = new URLSearchParams();
  const at = (id) => $(id).value ? new Date($(id).value).toISOString() : "";
  const fields = { since: at("hsince"), until: at("huntil"), host: $("fhost").value.trim(), client: $("fclient").value.trim(),
    status: $("fstatus").value, top: $("htop").value, limit: "200" };
  for (const [k, v] of Object.entries(fields)) if (v) p.set(k, v);
  const res = await fetch("/api/history?" + p);
  const body = await res.json();
  const table = $("history");
  if (!res.ok) { table.tHead.innerHTML = ""; table.tBodies[0].innerHTML = ""; $("hnote").textContent = body.error; return false; }
  const rows = body.rows, cols = rows.length ? Object.keys(rows[0]) : [];
  table.tHead.innerHTML = "<tr>" + cols.map((c) => "<th>" + esc(HCOLS[c] ?? c) + "</th>").join("") + "</tr>";
  table.tBodies[0].innerHTML = rows.map((r) => "<tr>" + cols.map((c) => {
    const v = c === "time" ? String(r.time).slice(5, 19).replace("T", " ") : c.startsWith("bytes") ? human(r[c]) : r[c] ?? "-";
    const cls = c === "status" && r.status ? " class=s" + String(r.status)[0] : c === "error" && r.error ? " class=err" : "";
    return "<td" + cls + " title=\\"" + esc(r[c]) + "\\">" + esc(v) + "</td>";
  }).join("") + "</tr>").join("");
  $("hnote").textContent = rows.length + (rows.length === 1 ? " row" : " rows") + (rows.length === 200 ? " (the newest 200)" : "");
  return true;
}
$("hform").addEventListener("submit", (e) => { e.preventDefault(); searchHistory(); });
setInterval(() => {
  $("rps").textContent = reqs[N - 1]; $("bps").textContent = human(bytes[N - 1]);
  reqs.push(0); reqs.shift(); bytes.push(0); bytes.shift();
  draw($("rchart"), reqs, "#7fb6ff", "req/s"); draw($("bchart"), bytes, "#a3d977", "B/s");
}, 1000);
setInterval(summary, 2000);
(async () => {
  // Without --history the panel says so and its button is off.
  const h = await fetch("/api/history?limit=1");
  if (!h.ok) { $("hnote").textContent = (await h.json()).error; $("hgo").disabled = true; }
  // With --cache, its hit ratio and the bytes it served.
  const c = await fetch("/api/cache");
  $("cachekpi").hidden = !c.ok;
  await c.text();
  for (const ex of await (await fetch("/api/recent")).json()) add(ex);
  reqs.fill(0); bytes.fill(0); summary();
  const es = new EventSource("/api/events");
  es.onmessage = (m) => add(JSON.parse(m.data));
  es.addEventListener("tick", (m) => {
    const t = JSON.parse(m.data);
    bytes[N - 1] += t.bytes;
    $("inflight").tBodies[0].innerHTML = t.inflight.slice(0, 20).map((f) => "<tr><td>" + f.id + "</td><td class=opt>" + esc(f.client) +
      "</td><td>" + esc(f.method) + "</td><td title=\\"" + esc(f.url) + "\\">" + esc(f.url) + "</td><td>" + Math.round(f.age_ms / 1000) + " s</td><td>" +
      human(f.bytes_up + f.bytes_down) + "</td><td>" + human(f.bytes_per_s) + "</td></tr>").join("");
  });
})();
`;
