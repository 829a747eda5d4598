/**
 * A private network namespace for tests whose client is not on loopback: `unshare -n` gives a
 * namespace with only its own `lo`, where the test puts addresses from 198.18.0.0/15 (RFC 2544
 * benchmarking space); it has no route out, so nothing sent inside can leave the machine. Its
 * own mount namespace carries an /etc/hosts of the test's, so a name resolves without DNS.
 * Programs run inside through `nsenter`. Needs root (CI runs as root); {@linkcode canUseNetns}
 * tells a test whether to run.
 *
 * @module
 */

import { hasTool } from "./tools.ts";

/**
 * Tells whether this machine lets the tests make network namespaces (root, util-linux, ip).
 *
 * @returns True when `unshare -n` works and `ip` and `nsenter` are there.
 */
export async function canUseNetns(): Promise<boolean> {
  return await hasTool("unshare", ["-n", "-m", "true"]) && await hasTool("nsenter", ["-V"]) &&
    await hasTool("ip", ["-V"]);
}

/** A running namespace, held open by a process that waits on its stdin. */
export interface Netns extends AsyncDisposable {
  /** The command prefix that runs a program inside: `nsenter -t PID -n -m --`. */
  prefix: string[];
  /** Runs a program inside to completion. */
  run(program: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

/**
 * Makes a namespace with `lo` up, the given addresses on it, and an /etc/hosts of its own.
 *
 * @param addrs IPv4 addresses for `lo` (from 198.18.0.0/15).
 * @param hosts The namespace's /etc/hosts text. @default loopback names only
 * @returns The namespace; disposing of it ends the holder, and the namespace with it.
 */
export async function makeNetns(
  addrs: string[],
  hosts = "127.0.0.1 localhost\n::1 localhost\n",
): Promise<Netns> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/hosts`, hosts);
  const setup = [
    "ip link set lo up",
    ...addrs.map((a) => `ip addr add ${a}/32 dev lo`),
    `mount --bind ${dir}/hosts /etc/hosts`,
    "echo ready",
    "exec cat",
  ].join(" && ");
  const holder = new Deno.Command("unshare", {
    args: ["-n", "-m", "--propagation", "private", "sh", "-c", setup],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  if (!first.value?.startsWith("ready")) {
    await holder.stdin.close();
    const err = await new Response(holder.stderr).text();
    await holder.status;
    reader.releaseLock();
    await Deno.remove(dir, { recursive: true });
    throw new Error(`cannot make a network namespace: ${err}`);
  }
  const prefix = ["nsenter", "-t", String(holder.pid), "-n", "-m", "--"];
  const dec = new TextDecoder();
  return {
    prefix,
    async run(program, args) {
      const out = await new Deno.Command(prefix[0]!, {
        args: [...prefix.slice(1), program, ...args],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
      }).output();
      return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    },
    async [Symbol.asyncDispose]() {
      await holder.stdin.close();
      await reader.cancel();
      await holder.stderr.cancel();
      await holder.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}
