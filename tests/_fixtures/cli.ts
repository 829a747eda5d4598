/**
 * Runs the `http-proxy` CLI as a subprocess (the same `deno` that runs the tests) and collects
 * its stdout and stderr as they arrive.
 *
 * @module
 */

const root = new URL("../../", import.meta.url).pathname;

/** Text collected from a stream, with a way to wait for a line. */
export class Collector {
  text = "";
  #done: Promise<void>;

  /**
   * @param stream The stream to drain.
   */
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#done = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this.text += decoder.decode(chunk, { stream: true });
    })();
  }

  /** Resolves when the stream has ended. */
  get done(): Promise<void> {
    return this.#done;
  }

  /**
   * Waits until the collected text matches `re`.
   *
   * @param re The pattern.
   * @param timeoutMs Longest wait.
   * @returns The match.
   */
  async waitFor(re: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.text.match(re);
      if (m) return m;
      if (Date.now() > deadline) {
        throw new Error(`no ${re} within ${timeoutMs} ms in:\n${this.text}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** A running CLI process. */
export interface Cli extends AsyncDisposable {
  /** The process. */
  child: Deno.ChildProcess;
  /** Its stdout so far. */
  stdout: Collector;
  /** Its stderr so far. */
  stderr: Collector;
  /** The bound addresses from the startup line. */
  addrs: string[];
  /** Sends a signal and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Deno permissions the CLI runs with in tests, as the README says. */
export const RUN_FLAGS = ["run", "--allow-net"];

/** Options of {@linkcode startCli}. */
export interface CliOptions {
  /** Extra deno flags (permissions). */
  denoFlags?: string[];
  /** The script to run. @default main.ts */
  script?: string;
  /** A command that runs deno (e.g. nsenter into a network namespace). */
  prefix?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Run it as the README does, `deno task run …` (the task's own permissions). */
  task?: boolean;
}

/**
 * Starts the CLI and waits for its startup line.
 *
 * @param args Flags for http-proxy.
 * @param options Extra deno flags, the script, a prefix command and environment.
 */
export async function startCli(args: string[], options: CliOptions = {}): Promise<Cli> {
  const [program, ...before] = [...(options.prefix ?? []), Deno.execPath()];
  const child = new Deno.Command(program!, {
    // -A cannot be combined with --allow-net: it replaces the default permissions.
    args: options.task ? [...before, "task", "run", ...args] : [
      ...before,
      ...(options.denoFlags?.includes("-A") ? ["run"] : RUN_FLAGS),
      ...(options.denoFlags ?? []),
      options.script ?? `${root}main.ts`,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    cwd: root,
    ...(options.env ? { env: options.env } : {}),
  }).spawn();
  const stdout = new Collector(child.stdout);
  const stderr = new Collector(child.stderr);
  const cli: Cli = {
    child,
    stdout,
    stderr,
    addrs: [],
    async stop(signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      const status = await child.status;
      await Promise.all([stdout.done, stderr.done]);
      return status.code;
    },
    async [Symbol.asyncDispose]() {
      await cli.stop("SIGKILL");
    },
  };
  try {
    const m = await stderr.waitFor(/listening on (.+?)(?: \(\d+ workers\))?\n/);
    cli.addrs = m[1]!.split(", ");
  } catch (err) {
    await cli.stop("SIGKILL");
    throw err;
  }
  return cli;
}

/**
 * Runs the CLI to completion.
 *
 * @param args Flags for http-proxy.
 * @param denoFlags Extra deno flags.
 * @returns Exit code and output.
 */
export async function runCli(
  args: string[],
  denoFlags: string[] = [],
  env?: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...RUN_FLAGS, ...denoFlags, `${root}main.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    cwd: root,
    ...(env ? { env } : {}),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The project root. */
export const ROOT = root;

/**
 * The admin listener's `host:port`, from the startup lines of a CLI started with `--admin`.
 *
 * @param cli The running CLI.
 */
export async function adminOf(cli: Cli): Promise<string> {
  return (await cli.stderr.waitFor(/admin: http:\/\/(\S+)\//))[1]!;
}

/**
 * The CLI on 127.0.0.1 with its admin listener on a free port and no access log.
 *
 * @param more More flags.
 * @param options Extra deno flags and the like, as for startCli.
 * @returns The CLI, and its admin listener's `host:port` as `admin`.
 */
export async function startCliWithAdmin(
  more: string[] = [],
  options: CliOptions = {},
): Promise<Cli & { admin: string }> {
  const cli = await startCli([
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--quiet",
    ...more,
  ], options);
  return Object.assign(cli, { admin: await adminOf(cli) });
}
