import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { adminOf, ROOT, startCli, startCliWithAdmin } from "../_fixtures/cli.ts";
import { makeCertificates } from "../../lib/cli/make_cert.ts";
import { DASHBOARD_JS } from "../../lib/observe/dashboard.ts";
import {
  curl,
  curlThrough,
  startHttpOrigin,
  startOkOrMissingOrigin,
  trickle,
} from "../_fixtures/servers.ts";

const CHROMIUM = "/usr/bin/chromium";
const hasChromium = await Deno.stat(CHROMIUM).then(() => true, () => false);

Deno.test("the dashboard's script compiles (a syntax error would only show in a browser)", () => {
  // Compiled, not run: new Function parses the whole text and throws a SyntaxError on a slip in
  // its escaping (it is a template literal inside TypeScript).
  assert.equal(typeof new Function(DASHBOARD_JS), "function");
});

/** Headless, and nothing but 127.0.0.1 reachable: no background traffic leaves. */
const QUIET_CHROMIUM = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-pings",
  "--disable-domain-reliability",
  "--disable-client-side-phishing-detection",
  "--disable-default-apps",
  // Nothing but 127.0.0.1 may be reached from here: every name resolves to nothing, so
  // the browser's own background lookups (update and account hosts) never leave.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
  "--disable-features=OptimizationHints,MediaRouter,DialMediaRouteProvider,Translate," +
  "NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater,AutofillServerCommunication",
];

Deno.test({
  name:
    "the dashboard loads in headless Chromium and shows a new exchange within 2 s (needs chromium)",
  // .ci/run installs Debian's chromium; without it (a bare dev machine) this test is skipped.
  ignore: !hasChromium,
  // Playwright's pipes to the browser close a moment after browser.close() resolves.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() => new Response("seen on the dashboard"));
    await using cli = await startCliWithAdmin();
    const admin = cli.admin;
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        ...QUIET_CHROMIUM,
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      const failed: string[] = [];
      page.on("requestfailed", (r) => failed.push(r.url()));
      page.on("request", (r) => {
        if (!r.url().startsWith(`http://${admin}/`)) failed.push(`off-site: ${r.url()}`);
      });
      await page.goto(`http://${admin}/`);
      await page.waitForSelector("#total");
      const res = await curl([
        "-x",
        cli.addrs[0]!,
        `http://127.0.0.1:${origin.port}/dashboard-check`,
      ]);
      assert.equal(res.stdout, "seen on the dashboard");
      await page.waitForSelector("#recent tbody tr >> text=/dashboard-check", { timeout: 2000 });
      assert.equal(await page.textContent("#total"), "1");
      await page.waitForSelector(`#hosts tbody tr >> text=127.0.0.1:${origin.port}`, {
        timeout: 3000,
      });
      // Who asked: the client, with its top destination.
      await page.waitForSelector(`#clients tbody tr >> text=127.0.0.1:${origin.port} 1`, {
        timeout: 3000,
      });
      await Deno.mkdir(`${ROOT}dist`, { recursive: true });
      await page.screenshot({ path: `${ROOT}dist/dashboard.png` });
      assert.ok((await Deno.stat(`${ROOT}dist/dashboard.png`)).size > 10_000);
      assert.deepEqual(
        failed.filter((u) => !u.endsWith("/api/events")),
        [],
        "every asset from the proxy",
      );
    } finally {
      await browser.close(); // Playwright made (and removes) a fresh profile
    }
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "Chromium browses through the proxy as the README says, local sites too with <-loopback> (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() =>
      new Response("<title>through the proxy</title>", { headers: { "content-type": "text/html" } })
    );
    await using cli = await startCli(["--listen", "127.0.0.1:0"]);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        ...QUIET_CHROMIUM,
        `--proxy-server=http://${cli.addrs[0]}`,
        "--proxy-bypass-list=<-loopback>",
      ],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${origin.port}/page`);
      assert.equal(await page.title(), "through the proxy");
    } finally {
      await browser.close();
    }
    await cli.stdout.waitFor(
      new RegExp(`GET http://127\\.0\\.0\\.1:${origin.port}/page from 127\\.0\\.0\\.1 -> `),
    );
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "Chromium uses the proxy over TLS (--proxy-server=https://…) to load a page (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() =>
      new Response("<title>inside TLS</title>", { headers: { "content-type": "text/html" } })
    );
    const dir = await Deno.makeTempDir();
    try {
      const made = await makeCertificates(["127.0.0.1"]);
      await Deno.writeTextFile(`${dir}/proxy.pem`, made.cert);
      await Deno.writeTextFile(`${dir}/proxy-key.pem`, made.key);
      await using cli = await startCli(
        [
          "--listen",
          "127.0.0.1:0",
          "--listen-tls",
          "127.0.0.1:0",
          "--tls-cert",
          `${dir}/proxy.pem`,
          "--tls-key",
          `${dir}/proxy-key.pem`,
          "--log-format",
          "json",
        ],
        { denoFlags: [`--allow-read=${dir}`] },
      );
      const tls = cli.addrs.find((a) => a.startsWith("https://"))!;
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          ...QUIET_CHROMIUM,
          `--proxy-server=${tls}`,
          "--proxy-bypass-list=<-loopback>",
          // The test CA is not in this throwaway profile's trust store.
          "--ignore-certificate-errors",
        ],
      });
      try {
        const page = await browser.newPage();
        await page.goto(`http://127.0.0.1:${origin.port}/tls-page`);
        assert.equal(await page.title(), "inside TLS");
      } finally {
        await browser.close();
      }
      const line = await cli.stdout.waitFor(
        /\{[^\n]*"url":"http:\/\/127\.0\.0\.1:\d+\/tls-page"[^\n]*\}/,
      );
      const entry = JSON.parse(line[0]);
      assert.equal(entry.tls, true);
      assert.equal(entry.status, 200);
      assert.equal(await cli.stop(), 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the dashboard fits a laptop and a phone: no sideways scroll at 1280, 1366 and 1920 px, one column at 420 px, long URLs cut with the whole on hover (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() => new Response("x"));
    await using cli = await startCliWithAdmin();
    const admin = cli.admin;
    // Real, long URLs and an error with a long cause.
    const long = `/${"a-very-long-path-segment/".repeat(12)}?q=${"v".repeat(120)}`;
    for (let i = 0; i < 3; i++) {
      await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:${origin.port}${long}${i}`]);
    }
    await curl(["-x", cli.addrs[0]!, `http://127.0.0.1:1/${"unreachable/".repeat(10)}`]);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
    try {
      for (const [width, height] of [[1280, 800], [1366, 768], [1920, 1080], [420, 860]]) {
        const page = await browser.newPage({ viewport: { width: width!, height: height! } });
        await page.goto(`http://${admin}/`);
        await page.waitForSelector("#recent tbody tr");
        await page.waitForTimeout(1200); // the charts and the host table fill in
        // Evaluated in the page (a string: this file is not type-checked against the DOM).
        const fit = await page.evaluate(`(() => {
          const td = document.querySelector("#recent tbody td[title*='a-very-long-path-segment']");
          return {
            scroll: document.documentElement.scrollWidth,
            inner: innerWidth,
            columns: getComputedStyle(document.querySelector("main")).gridTemplateColumns
              .split(" ").length,
            title: td ? td.getAttribute("title") : "",
            cut: td ? td.scrollWidth > td.clientWidth : false,
          };
        })()`) as { scroll: number; inner: number; columns: number; title: string; cut: boolean };
        assert.ok(fit.scroll <= fit.inner, `${width} px: page is ${fit.scroll} px wide`);
        assert.equal(fit.columns, width! <= 760 ? 1 : 2, `${width} px`);
        assert.ok(fit.title.includes("a-very-long-path-segment/"), "the whole URL on hover");
        assert.ok(fit.cut, `${width} px: the long URL is cut, not wrapped or overflowing`);
        await page.close();
      }
    } finally {
      await browser.close();
    }
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "the dashboard shows a transfer in progress with its bytes growing before it ends, and the bytes/s chart moves (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() => new Response(trickle(10, 20 * 1024, 400)));
    await using cli = await startCliWithAdmin();
    const admin = cli.admin;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`http://${admin}/`);
      await page.waitForSelector("#total");
      const transfer = curlThrough(cli.addrs[0]!, `http://127.0.0.1:${origin.port}/stream`);
      const row = `#inflight tbody tr >> text=http://127.0.0.1:${origin.port}/stream`;
      await page.waitForSelector(row, { timeout: 4000 });
      // The row's "bytes" cell (k for thousands, as the page writes it).
      const bytesNow = async () =>
        Number(
          String(
            await page.evaluate(`[...document.querySelectorAll("#inflight tbody tr")]
              .find((r) => r.textContent.includes("/stream"))?.cells[5].textContent ?? ""`),
          ).replace("k", "e3"),
        );
      // The row can be drawn between the request's start and its first bytes (a CI run read 0
      // there): wait up to a second for some, then for more.
      let first = await bytesNow();
      for (let i = 0; i < 10 && !(first > 0); i++) {
        await page.waitForTimeout(100);
        first = await bytesNow();
      }
      await page.waitForTimeout(1500);
      const second = await bytesNow();
      assert.ok(second > first && first > 0, `bytes so far: ${first} then ${second}`);
      assert.notEqual(await page.textContent("#bps"), "0", "bytes/s moves during the transfer");
      // The README's picture of the dashboard (docs/dashboard.png is a copy of one such run).
      await Deno.mkdir(`${ROOT}dist`, { recursive: true });
      await page.screenshot({ path: `${ROOT}dist/dashboard-inflight.png` });
      await transfer;
      await page.waitForSelector(row, { state: "detached", timeout: 4000 }); // gone once it ended
    } finally {
      await browser.close();
    }
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "the dashboard filters the recent exchanges by host, client and status class (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startOkOrMissingOrigin();
    await using cli = await startCliWithAdmin();
    const admin = cli.admin;
    const get = (url: string) => curlThrough(cli.addrs[0]!, url);
    for (const path of ["/ok", "/ok", "/ok", "/missing", "/missing"]) {
      await get(`http://127.0.0.1:${origin.port}${path}`);
    }
    await get(`http://localhost:${origin.port}/ok`);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`http://${admin}/`);
      // A selector, not waitForFunction: that evaluates its text with eval, which the page's CSP
      // refuses (it failed in CI when the rows were not all there at the first try).
      await page.waitForSelector("#recent tbody tr:nth-child(6)", { state: "attached" });
      const visible = () =>
        page.evaluate(
          `[...document.querySelectorAll("#recent tbody tr")].filter((r) => !r.hidden).length`,
        );
      assert.equal(await visible(), 6);
      await page.fill("#fhost", "localhost");
      assert.equal(await visible(), 1);
      await page.fill("#fhost", "");
      await page.selectOption("#fstatus", "4xx");
      assert.equal(await visible(), 2);
      await page.fill("#fclient", "127.0.0.1");
      assert.equal(await visible(), 2);
      await page.fill("#fclient", "10.9.9.9");
      assert.equal(await visible(), 0);
    } finally {
      await browser.close();
    }
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "each recent exchange has a timing waterfall (DNS, connect, first byte, transfer) with the figures on hover (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // An origin that waits 300 ms before its head, then sends its body over 300 ms more.
    await using origin = startHttpOrigin(async () => {
      await new Promise((r) => setTimeout(r, 300));
      return new Response(trickle(2, 10, 300));
    });
    await using cli = await startCliWithAdmin();
    const admin = cli.admin;
    await curlThrough(cli.addrs[0]!, `http://127.0.0.1:${origin.port}/slow`);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await page.goto(`http://${admin}/`);
      await page.waitForSelector("#recent tbody tr svg.wf");
      const wf = await page.evaluate(`(() => {
        const svg = document.querySelector("#recent tbody tr svg.wf");
        const w = (c) => Number(svg.querySelector("rect." + c)?.getAttribute("width") ?? 0);
        return { wait: w("wait"), xfer: w("xfer"), title: svg.parentElement.getAttribute("title") };
      })()`) as { wait: number; xfer: number; title: string };
      // About half waiting for the head, half receiving the body.
      assert.ok(wf.wait > 30 && wf.wait < 70, JSON.stringify(wf));
      assert.ok(wf.xfer > 30 && wf.xfer < 70, JSON.stringify(wf));
      assert.match(
        wf.title,
        /^dns 0 ms, connected [\d.]+ ms, first byte [\d.]+ ms, total [\d.]+ ms$/,
      );
    } finally {
      await browser.close();
    }
    assert.equal(await cli.stop(), 0);
  },
});

Deno.test({
  name:
    "the dashboard searches the --history database by time range, host, status and top hosts (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startOkOrMissingOrigin();
    const dir = await Deno.makeTempDir();
    try {
      await using cli = await startCli(
        [
          "--listen",
          "127.0.0.1:0",
          "--admin",
          "127.0.0.1:0",
          "--history",
          `${dir}/history.db`,
          "--quiet",
        ],
        { denoFlags: [`--allow-read=${dir}`, `--allow-write=${dir}`] },
      );
      const admin = await adminOf(cli);
      const get = (url: string) => curlThrough(cli.addrs[0]!, url);
      for (const path of ["/ok", "/missing", "/missing"]) {
        await get(`http://127.0.0.1:${origin.port}${path}`);
      }
      await get(`http://localhost:${origin.port}/ok`);
      // Rows reach the database in batches, once a second.
      for (let i = 0; i < 40; i++) {
        const res = await fetch(`http://${admin}/api/history`);
        if ((await res.json()).rows.length === 4) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
        await page.goto(`http://${admin}/`);
        const rows = () =>
          page.evaluate(`[...document.querySelectorAll("#history tbody tr")]
            .map((r) => [...r.cells].map((c) => c.textContent))`) as Promise<string[][]>;
        const search = async (note: RegExp) => {
          await page.click("#hgo");
          await page.waitForSelector(`#hnote:text-matches("${note.source}")`, { timeout: 5000 });
        };
        await search(/^4 rows$/);
        assert.equal((await rows()).length, 4);
        await page.fill("#fhost", "localhost");
        await search(/^1 row$/);
        assert.match((await rows())[0]!.join(" "), new RegExp(`localhost:${origin.port}/ok`));
        await page.fill("#fhost", "");
        await page.selectOption("#fstatus", "4xx");
        await search(/^2 rows$/);
        assert.deepEqual((await rows()).map((r) => r[5]), ["404", "404"]);
        await page.selectOption("#fstatus", "");
        await page.selectOption("#htop", "hosts");
        await search(/^2 rows$/);
        assert.deepEqual((await rows()).map((r) => r.slice(0, 2)), [
          [`127.0.0.1:${origin.port}`, "3"],
          [`localhost:${origin.port}`, "1"],
        ]);
        // A range that ends before any of them: nothing.
        await page.fill("#huntil", "2020-01-01T00:00");
        await search(/^0 rows$/);
      } finally {
        await browser.close();
      }
      assert.equal(await cli.stop(), 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "with --cache the dashboard shows the hit ratio and the bytes served from the cache (needs chromium)",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using origin = startHttpOrigin(() =>
      new Response("x".repeat(2000), { headers: { "cache-control": "max-age=60" } })
    );
    const dir = await Deno.makeTempDir({ prefix: "http-proxy-dash-cache-" });
    try {
      await using cli = await startCliWithAdmin(["--cache", "--cache-dir", dir], {
        denoFlags: ["--allow-read", "--allow-write"],
      });
      for (let i = 0; i < 4; i++) {
        const res = await curlThrough(cli.addrs[0]!, `http://127.0.0.1:${origin.port}/c`);
        assert.equal(res.code, 0, res.stderr);
        await new Promise((r) => setTimeout(r, 50));
      }
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: QUIET_CHROMIUM });
      try {
        const page = await browser.newPage();
        await page.goto(`http://${cli.admin}/`);
        await page.waitForSelector("#chits >> text=75.0%", { timeout: 3000 });
        assert.equal(await page.textContent("#csaved"), "6.0k");
        await page.waitForSelector("#recent tbody tr >> text=cache HIT", { timeout: 3000 });
      } finally {
        await browser.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
