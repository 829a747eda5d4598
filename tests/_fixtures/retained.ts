/**
 * Heap that a long body copy or a long tunnel keeps while it runs, measured after full
 * collections: `deno run --v8-flags=--expose-gc tests/_fixtures/retained.ts body|tunnel`. It
 * prints `retained N bytes after M writes`. (A copy or a tunnel must not keep anything per
 * piece it moved: each guarded read and write used to leave a reaction on the stall timer's
 * promise, which lives as long as the copy.) Sockets are on 127.0.0.1 only.
 *
 * @module
 */

import { copyChunked } from "../../lib/http1/body.ts";
import { BufferedReader } from "../../lib/http1/head.ts";
import { tunnel } from "../../lib/relay/tunnel.ts";
import { printLine } from "../../lib/observe/log.ts";

const gc = (globalThis as unknown as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");

function heap(): number {
  gc!();
  gc!();
  return Deno.memoryUsage().heapUsed;
}

/** A chunked body of `count` chunks of 16 KiB copied with both stall timeouts on. */
async function body(count: number): Promise<void> {
  const size = 16 * 1024;
  const line = new TextEncoder().encode(size.toString(16) + "\r\n");
  let sent = 0;
  let stage = 0;
  let before = 0;
  let during = 0;
  const src = new BufferedReader({
    read(buf: Uint8Array) {
      if (sent === 0 && stage === 0) before = heap();
      if (sent === count) {
        if (stage === 3) return Promise.resolve(null);
        during = heap(); // every chunk went through; the copy is still running
        stage = 3;
        buf.set([0x30, 13, 10, 13, 10]); // 0 CRLF CRLF
        return Promise.resolve(5);
      }
      if (stage === 0) {
        buf.set(line);
        stage = 1;
        return Promise.resolve(line.length);
      }
      if (stage === 1) {
        buf.fill(0x61, 0, size);
        stage = 2;
        return Promise.resolve(size);
      }
      buf.set([13, 10]);
      stage = 0;
      sent++;
      return Promise.resolve(2);
    },
  }, 64 * 1024);
  let writes = 0;
  const sink = {
    write: (p: Uint8Array) => (writes++, Promise.resolve(p.length)),
  };
  await copyChunked(src, sink, { out: "chunked", readTimeoutMs: 60_000, writeTimeoutMs: 60_000 });
  printLine(`retained ${during - before} bytes after ${writes} writes`);
}

async function pair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  return [a, b];
}

/** `count` messages through a tunnel, each read at the far end before the next is sent. */
async function throughTunnel(count: number): Promise<void> {
  const [client, clientSide] = await pair();
  const [upstreamSide, upstream] = await pair();
  const relay = tunnel(clientSide, upstreamSide, new Uint8Array(0), { writeTimeoutMs: 60_000 });
  const message = new Uint8Array(100).fill(0x61);
  const buf = new Uint8Array(4096);
  const exchange = async () => {
    await client.write(message);
    for (let got = 0; got < message.length;) {
      const n = await upstream.read(buf);
      if (n === null) throw new Error("the tunnel closed");
      got += n;
    }
  };
  for (let i = 0; i < 100; i++) await exchange(); // warm up
  const before = heap();
  for (let i = 0; i < count; i++) await exchange();
  const during = heap();
  printLine(`retained ${during - before} bytes after ${count} writes`);
  client.close();
  upstream.close();
  await relay;
  clientSide.close();
  upstreamSide.close();
}

if (Deno.args[0] === "body") await body(4096);
else await throughTunnel(10_000);
