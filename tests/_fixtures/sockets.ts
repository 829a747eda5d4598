/**
 * What a process listens on, read from procfs (Linux): its socket inodes from /proc/PID/fd,
 * matched against the LISTEN rows of its network namespace's /proc/PID/net/tcp and tcp6.
 * Tells a test whether a process opened a port it was not asked to (Deno's debugger). Deno
 * grants /proc only with --allow-all, so a shell reads it (the tests may run programs).
 *
 * @module
 */

/**
 * Lists the TCP ports a process listens on.
 *
 * @param pid The process.
 * @returns Its listening ports, sorted.
 */
export async function listeningPorts(pid: number): Promise<number[]> {
  const out = await new Deno.Command("sh", {
    args: [
      "-c",
      `ls -l /proc/${pid}/fd; echo ===; cat /proc/${pid}/net/tcp /proc/${pid}/net/tcp6`,
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  const [fds = "", tables = ""] = new TextDecoder().decode(out.stdout).split("===\n");
  const inodes = new Set([...fds.matchAll(/socket:\[(\d+)\]/g)].map((m) => m[1]!));
  const ports = new Set<number>();
  for (const line of tables.split("\n")) {
    const cols = line.trim().split(/\s+/);
    // local_address is HEXADDR:HEXPORT, st 0A is LISTEN, inode is the tenth column.
    if (cols[3] !== "0A" || !inodes.has(cols[9] ?? "")) continue;
    ports.add(parseInt(cols[1]!.split(":")[1]!, 16));
  }
  return [...ports].sort((a, b) => a - b);
}
