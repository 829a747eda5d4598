/**
 * Optional tools: whether a program the full CI installs (goaccess, chromium, …) is on this
 * machine. A fresh machine has none of them; a test that needs one is ignored there, with the
 * tool named in the test's name.
 *
 * @module
 */

/**
 * Tells whether `program` runs. `Deno.Command#output()` throws NotFound synchronously for a
 * missing program (Deno 2.9.6), so the probe is a try around the call, never a bare `.then`.
 *
 * @param program The program name or path.
 * @param args Arguments that make it exit quickly. @default ["--version"]
 * @returns True when it ran and exited 0.
 */
export async function hasTool(program: string, args = ["--version"]): Promise<boolean> {
  try {
    const out = await new Deno.Command(program, { args, stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false; // not installed, or not allowed to run
  }
}
