/**
 * Starts the proxy (`main.ts`) as a subprocess for the measurement scripts, and waits until it
 * prints where it listens (and, with `--admin`, where its admin listener is).
 *
 * @module
 */

const root = new URL("../", import.meta.url).pathname;

/**
 * The `--v8-flags=…` of `deno task run` (the compiled executable has the same baked in): the
 * measurement scripts run the proxy with the V8 settings it is deployed with.
 */
export const RUN_V8_FLAGS: string[] =
  JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks.run.match(/--v8-flags=\S+/g) ?? [];

/** A proxy subprocess. */
export interface ProxyProcess {
  /** The process. */
  child: Deno.ChildProcess;
  /** `host:port` it listens on. */
  addr: string;
  /** `host:port` of its admin listener, with `--admin`. */
  admin: string | undefined;
  /** Everything it printed on stderr so far. */
  stderr(): string;
  /** Resolves when its stderr has ended. */
  drained: Promise<void>;
}

/**
 * Starts `main.ts --listen 127.0.0.1:0 …args` with `--allow-net` and the given Deno flags.
 *
 * @param args Flags for the proxy.
 * @param denoFlags More flags for `deno run` (permissions).
 * @returns The running proxy.
 */
export async function startProxyProcess(
  args: string[],
  denoFlags: string[] = [],
): Promise<ProxyProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...RUN_V8_FLAGS,
      "--allow-net",
      ...denoFlags,
      `${root}main.ts`,
      "--listen",
      "127.0.0.1:0",
      ...args,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let err = "";
  let ended = false;
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const drained = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      err += value;
    }
    ended = true;
  })();
  const ready = () =>
    /listening on \S+/.test(err) &&
    (!args.includes("--admin") || /admin: http:\/\/\S+\//.test(err));
  while (!ready()) {
    if (ended) throw new Error(`the proxy did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    addr: /listening on (\S+)/.exec(err)![1]!,
    admin: /admin: http:\/\/(\S+)\//.exec(err)?.[1],
    stderr: () => err,
    drained,
  };
}
