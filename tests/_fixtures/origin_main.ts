/**
 * A tiny HTTP origin as a program of its own, for tests that need one inside a network
 * namespace: `deno run --allow-net origin_main.ts HOST` listens on HOST port 0, writes the
 * port and a newline to stdout, and answers every request with `origin PATH` (`/whoami`: with
 * `from ADDRESS`, the address the request came from).
 *
 * @module
 */

const hostname = Deno.args[0] ?? "127.0.0.1";
Deno.serve({
  hostname,
  port: 0,
  onListen: ({ port }) => void Deno.stdout.write(new TextEncoder().encode(`${port}\n`)),
}, (req, info) => {
  const path = new URL(req.url).pathname;
  if (path === "/whoami") return new Response(`from ${info.remoteAddr.hostname}`);
  return new Response(`origin ${path}`);
});
