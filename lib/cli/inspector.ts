/**
 * No debugger, ever. Since Deno 2.9.2 a SIGUSR1 makes Deno open its V8 inspector on
 * 127.0.0.1:9229 with no authentication (denoland/deno#35738), and `Deno.addSignalListener`
 * does not stop that: whoever reaches the port runs code inside the proxy. This module watches
 * for the signal and closes what Deno opened within milliseconds (`node:inspector` `url()` and
 * `close()`), logging one warning line. Closing needs `--allow-sys` (Deno 2.9.6 has no narrower
 * grant for it); without it, the only safe answer is to stop the proxy, and the caller does.
 * It does not own the summary signal (SIGUSR2) or any other.
 *
 * @module
 */

import inspector from "node:inspector";

/** How the guard reports, and what it asks of the caller when it cannot close the debugger. */
export interface InspectorGuardOptions {
  /** Told one line when the debugger was closed (or could not be). */
  warn(line: string): void;
  /** Called when Deno opened the debugger and this process may not close it. */
  cannotClose(): void;
}

/** After the signal, when to look again (ms): Deno opens the server on its own thread. */
const LOOKS = [0, 2, 10, 50, 200, 1000];

/**
 * Whether this process may close Deno's inspector: `node:inspector` needs the "inspector" sys
 * permission, which only a plain `--allow-sys` grants.
 *
 * @returns True when granted.
 */
export function canCloseInspector(): boolean {
  try {
    const desc = { name: "sys", kind: "inspector" } as unknown as Deno.PermissionDescriptor;
    return Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false; // an older Deno without that descriptor
  }
}

/**
 * Closes Deno's inspector if it is open.
 *
 * @returns The URL it listened on, or undefined when none was open.
 */
export function closeInspector(): string | undefined {
  const url = inspector.url();
  if (url === undefined) return undefined;
  inspector.close();
  return url;
}

/**
 * Watches SIGUSR1 and closes the inspector Deno opens for it.
 *
 * @param options Where the warning goes, and what to do when closing is not allowed.
 * @returns A function that stops watching.
 */
export function guardInspector(options: InspectorGuardOptions): () => void {
  const allowed = canCloseInspector();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const look = () => {
    let url: string | undefined;
    try {
      url = closeInspector();
    } catch (err) {
      options.warn(`SIGUSR1: cannot close Deno's debugger: ${(err as Error).message}`);
      options.cannotClose();
      return;
    }
    if (url === undefined) return;
    const where = url.replace(/^ws:\/\/([^/]+)\/.*$/, "$1");
    options.warn(
      `warning: SIGUSR1 made Deno open a debugger on ${where}; closed it. Do not send SIGUSR1 ` +
        `to http-proxy (the summary is on SIGUSR2)`,
    );
  };
  const onSignal = () => {
    if (!allowed) {
      options.warn(
        `SIGUSR1 made Deno open an unauthenticated debugger on 127.0.0.1:9229 and this process ` +
          `may not close it (run with --allow-sys): stopping now. The summary is on SIGUSR2`,
      );
      options.cannotClose();
      return;
    }
    for (const ms of LOOKS) {
      const timer = setTimeout(() => {
        timers.delete(timer);
        look();
      }, ms);
      timers.add(timer);
    }
  };
  Deno.addSignalListener("SIGUSR1", onSignal);
  return () => {
    Deno.removeSignalListener("SIGUSR1", onSignal);
    for (const t of timers) clearTimeout(t);
    timers.clear();
  };
}
