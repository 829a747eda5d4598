/**
 * Proxy authentication (RFC 9110 §11.7.1, Basic scheme RFC 7617): the credential store built
 * from `--auth user:password` and `--auth-file`, the PBKDF2-SHA256 password hashes of that
 * file (WebCrypto), and the check of a request's Proxy-Authorization. Comparisons take the same
 * time whatever matches; a credential that verified once is remembered (by a SHA-256 of the
 * header, not the header), so the slow hash runs once per user, not once per request.
 *
 * A wrong password costs a PBKDF2 run (about 66 ms of one core at 600,000 iterations), so that
 * work is bounded: {@linkcode MAX_HASHING} runs at once and {@linkcode MAX_WAITING} waiting
 * (more get 503), failures are rate-limited per client address ({@linkcode FAILURE_BURST}
 * at once, one more every {@linkcode FAILURE_REFILL_MS}; then 429 without hashing), an
 * `--auth-file` line may not ask for more than {@linkcode MAX_ITERATIONS}, and an unknown user
 * costs the default {@linkcode ITERATIONS}. A credential that already verified skips all of it.
 *
 * @module
 */

import { ProxyError, StartupError } from "../errors.ts";
import { listValues } from "../http1/headers.ts";
import type { Field } from "../http1/parse.ts";
import { parseIp } from "./ip.ts";

/** PBKDF2 iterations for new hashes (OWASP's 2023 figure for PBKDF2-HMAC-SHA256). */
export const ITERATIONS = 600_000;
/** Most iterations an `--auth-file` line may ask for: about 0.2 s of a core per check. */
export const MAX_ITERATIONS = 2_000_000;
/** Password hashes computed at once. */
export const MAX_HASHING = 2;
/** Checks waiting for a hashing slot; one more is answered 503. */
export const MAX_WAITING = 16;
/** Failed checks a client address may make at once before it is rate-limited. */
export const FAILURE_BURST = 10;
/** A rate-limited address earns one more try this often, in ms. */
export const FAILURE_REFILL_MS = 2000;

/** How a password is hashed (injectable so tests can count and pace the work). */
export type HashFn = (password: string, salt: Bytes, iterations: number) => Promise<Bytes>;

/** One user: a plain password (`--auth`), or a PBKDF2 or bcrypt hash (`--auth-file`). */
export type Credential =
  | { user: string; kind: "plain"; digest: Bytes }
  | { user: string; kind: "pbkdf2"; iterations: number; salt: Bytes; hash: Bytes }
  | { user: string; kind: "bcrypt"; hash: string };

/** The most costly bcrypt line accepted (`htpasswd -B` makes cost 5; each step doubles). */
export const MAX_BCRYPT_COST = 12;

/** Password schemes of htpasswd files that are refused, by how their hash starts. */
const WEAK_SCHEMES: [RegExp, string][] = [
  [/^\$apr1\$/, "MD5-crypt ($apr1$, htpasswd -m)"],
  [/^\$1\$/, "MD5-crypt ($1$)"],
  [/^\{SHA\}/, "unsalted SHA-1 ({SHA}, htpasswd -s)"],
  [/^\$[56]\$/, "SHA-crypt ($5$/$6$)"],
  [/^[.\/0-9A-Za-z]{13}$/, "DES crypt (htpasswd -d)"],
];

const encoder = new TextEncoder();

/** Bytes backed by a plain ArrayBuffer, as WebCrypto wants them. */
type Bytes = Uint8Array<ArrayBuffer>;

async function sha256(bytes: Bytes): Promise<Bytes> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** PBKDF2-HMAC-SHA256, 32 bytes. */
export async function pbkdf2(password: string, salt: Bytes, iterations: number): Promise<Bytes> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    key,
    256,
  );
  return new Uint8Array(bits);
}

/** Compares two byte strings in time that depends only on their lengths. */
function same(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function unb64(text: string): Bytes | undefined {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

/**
 * Makes an `--auth-file` line: `user:pbkdf2-sha256$iterations$salt$hash` (base64 salt and hash).
 *
 * @param user The user name (no colon).
 * @param password The password.
 * @param iterations PBKDF2 iterations. @default ITERATIONS
 * @returns The line.
 */
export async function hashLine(user: string, password: string, iterations = ITERATIONS) {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const hash = await pbkdf2(password, salt, iterations);
  return `${user}:pbkdf2-sha256$${iterations}$${b64(salt)}$${b64(hash)}`;
}

/**
 * Parses `--auth user:password`.
 *
 * @param text The flag value.
 * @returns The credential, or a one-line reason it is bad.
 */
export async function plainCredential(text: string): Promise<Credential | string> {
  const colon = text.indexOf(":");
  if (colon <= 0) return `expected user:password, got "${text.slice(0, 40)}"`;
  const user = text.slice(0, colon);
  const password = text.slice(colon + 1);
  if (password === "") return `empty password for user "${user}"`;
  return { user, kind: "plain", digest: await sha256(encoder.encode(text)) };
}

/**
 * Parses the lines of an `--auth-file` (blank lines and `#` comments skipped).
 *
 * @param text The file's text.
 * @returns The credentials, or a one-line reason naming the bad line.
 */
export function fileCredentials(text: string): Credential[] | string {
  const out: Credential[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    const bcrypt = /^([^:\s]+):(\$2[aby]\$(\d\d)\$[./0-9A-Za-z]{53})$/.exec(line);
    if (bcrypt) {
      const cost = Number(bcrypt[3]);
      if (cost < 4 || cost > MAX_BCRYPT_COST) {
        return `line ${i + 1} is bcrypt with cost ${cost}; accepted: 4 to ${MAX_BCRYPT_COST} ` +
          `(every wrong password would cost that much CPU; htpasswd -B -C 10 makes one)`;
      }
      out.push({ user: bcrypt[1]!, kind: "bcrypt", hash: bcrypt[2]! });
      continue;
    }
    const hashed = /^([^:\s]+):(.+)$/.exec(line)?.[2] ?? "";
    const weak = WEAK_SCHEMES.find(([re]) => re.test(hashed));
    if (weak) {
      return `line ${i + 1} uses ${weak[1]}, a weak scheme that is not accepted; make the ` +
        `line with htpasswd -B (bcrypt) or hash-password`;
    }
    const m = /^([^:\s]+):pbkdf2-sha256\$(\d{1,9})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(
      line,
    );
    const salt = m && unb64(m[3]!);
    const hash = m && unb64(m[4]!);
    if (!m || !salt || !hash || hash.length !== 32 || Number(m[2]) < 1000) {
      return `line ${i + 1} is not "user:pbkdf2-sha256$iterations$salt$hash" nor an ` +
        `htpasswd -B bcrypt line (make one with hash-password)`;
    }
    if (Number(m[2]) > MAX_ITERATIONS) {
      return `line ${i + 1} asks for ${m[2]} iterations, more than ${MAX_ITERATIONS} (every ` +
        `wrong password would cost that much CPU; make the line again with hash-password)`;
    }
    out.push({ user: m[1]!, kind: "pbkdf2", iterations: Number(m[2]), salt, hash });
  }
  return out;
}

/**
 * The failure-limit key of a client address: the IPv4 address, or the /64 of an IPv6 one (one
 * host holds a whole /64), read from the parsed bytes so every spelling of it (`::`, mapped
 * IPv4) is one key.
 */
function failureKey(client: string): string {
  const ip = parseIp(client);
  if (!ip) return client;
  return ip.version === 4 ? ip.bytes.join(".") : `${b64(ip.bytes.subarray(0, 8))}/64`;
}

/** Answers a request without valid proxy credentials: 407 with the challenge. */
function challenge(message: string): ProxyError {
  return new ProxyError(407, message, {
    kind: "http_request_denied",
    headers: [["Proxy-Authenticate", 'Basic realm="http-proxy", charset="UTF-8"']],
  });
}

/** Options of {@linkcode Authenticator}. */
export interface AuthenticatorOptions {
  /** The password hash. @default PBKDF2-HMAC-SHA256 (WebCrypto) */
  hash?: HashFn;
  /** Clock for the failure limit, in ms. @default performance.now */
  now?: () => number;
  /** The bcrypt check. @default bcryptjs' compare */
  bcrypt?: (password: string, hash: string) => Promise<boolean>;
}

/**
 * bcryptjs' compare, the package loaded at the first bcrypt line checked: it imports
 * `node:crypto`, which costs every proxy 6 MiB of memory from start, bcrypt users or not.
 */
async function bcryptCompare(password: string, hash: string): Promise<boolean> {
  const { default: bcryptjs } = await import("bcryptjs");
  return bcryptjs.compare(password, hash);
}

/** The users, and the credentials that already verified. */
export class Authenticator {
  #users: Map<string, Credential>;
  #verified = new Map<string, string>();
  /** What an unknown user's password is hashed with: the default cost, a salt of its own. */
  #decoy = { salt: crypto.getRandomValues(new Uint8Array(16)), iterations: ITERATIONS };
  #hash: HashFn;
  #bcrypt: (password: string, hash: string) => Promise<boolean>;
  #now: () => number;
  #hashing = 0;
  #waiting: (() => void)[] = [];
  #failures = new Map<string, { tokens: number; at: number }>();

  /**
   * @param credentials The users.
   * @param options Hash function and clock (tests).
   */
  constructor(credentials: readonly Credential[], options: AuthenticatorOptions = {}) {
    this.#users = new Map(credentials.map((c) => [c.user, c]));
    this.#hash = options.hash ?? pbkdf2;
    this.#bcrypt = options.bcrypt ?? bcryptCompare;
    this.#now = options.now ?? (() => performance.now());
  }

  /** How many users are configured. */
  get users(): number {
    return this.#users.size;
  }

  /**
   * Checks a Basic `Authorization` value (the admin listener's).
   *
   * @param value The header value, or null when absent.
   * @returns The user name, or undefined when missing or wrong.
   */
  async verify(value: string | null, client = "-"): Promise<string | undefined> {
    if (value === null) return undefined;
    try {
      return await this.check([["Proxy-Authorization", value]], client);
    } catch (err) {
      if (err instanceof ProxyError) return undefined;
      throw err;
    }
  }

  /**
   * Checks a request's Proxy-Authorization.
   *
   * @param fields The request fields.
   * @returns The user name.
   * @throws {ProxyError} 407 with a Basic challenge when missing or wrong.
   */
  async check(fields: readonly Field[], client = "-"): Promise<string> {
    const values = fields.filter(([n]) => n.toLowerCase() === "proxy-authorization");
    if (values.length === 0) throw challenge("proxy authentication required");
    if (values.length > 1 || listValues(values, "proxy-authorization").length !== 1) {
      throw challenge("more than one Proxy-Authorization");
    }
    const m = /^basic[ \t]+([A-Za-z0-9+/]+=*)[ \t]*$/i.exec(values[0]![1]);
    if (!m) throw challenge("Proxy-Authorization is not Basic credentials");
    const raw = unb64(m[1]!);
    const text = raw ? new TextDecoder("utf-8", { fatal: false }).decode(raw) : undefined;
    const colon = text?.indexOf(":") ?? -1;
    if (text === undefined || colon <= 0) throw challenge("malformed Basic credentials");
    const user = text.slice(0, colon);
    const password = text.slice(colon + 1);
    const digest = await sha256(encoder.encode(text));
    const key = b64(digest);
    const known = this.#verified.get(key);
    if (known !== undefined) return known;
    const cred = this.#users.get(user);
    // Every check from here may fail: it takes one of the client's failure tokens first, so
    // many parallel tries cannot all start before the first one fails.
    const bucket = this.#charge(client);
    let ok: boolean;
    if (cred?.kind === "plain") {
      ok = password !== "" && same(digest, cred.digest);
    } else if (cred?.kind === "bcrypt") {
      const hash = cred.hash;
      ok = password !== "" && await this.#slot(() => this.#bcrypt(password, hash));
    } else {
      // An unknown user costs what a default one does, so timing does not tell which names
      // exist (and a costly line in the file is no lever for names that are not in it).
      const params = cred ?? this.#decoy;
      const hash = await this.#slot(() => this.#hash(password, params.salt, params.iterations));
      ok = cred !== undefined && password !== "" && same(hash, cred.hash);
    }
    if (ok) bucket.tokens += 1; // a success costs nothing
    // The rejected name is not echoed: it is the client's text, bound for the operator's log.
    if (!ok) throw challenge("wrong user name or password");
    if (this.#verified.size >= 1024) this.#verified.clear();
    this.#verified.set(key, user);
    return user;
  }

  /**
   * Takes a failure token for the client's address (an IPv6 client's /64: one host holds a
   * whole /64), or refuses with 429 when none is left.
   */
  #charge(client: string): { tokens: number; at: number } {
    const key = failureKey(client);
    const now = this.#now();
    let bucket = this.#failures.get(key);
    if (!bucket) {
      if (this.#failures.size >= 10_000) {
        // Forget full buckets, so the table holds only recent failures.
        for (const [k, b] of this.#failures) {
          if (b.tokens + (now - b.at) / FAILURE_REFILL_MS >= FAILURE_BURST) {
            this.#failures.delete(k);
          }
        }
        if (this.#failures.size >= 10_000) this.#failures.clear();
      }
      bucket = { tokens: FAILURE_BURST, at: now };
      this.#failures.set(key, bucket);
    }
    bucket.tokens = Math.min(FAILURE_BURST, bucket.tokens + (now - bucket.at) / FAILURE_REFILL_MS);
    bucket.at = now;
    if (bucket.tokens < 1) {
      const wait = Math.ceil(((1 - bucket.tokens) * FAILURE_REFILL_MS) / 1000);
      throw new ProxyError(429, `too many failed logins from ${client}; retry in ${wait} s`, {
        kind: "http_request_denied",
        headers: [["Retry-After", String(wait)]],
      });
    }
    bucket.tokens -= 1;
    return bucket;
  }

  /** Runs a hash in one of the {@linkcode MAX_HASHING} slots, waiting in a bounded line. */
  async #slot<T>(work: () => Promise<T>): Promise<T> {
    if (this.#hashing >= MAX_HASHING) {
      if (this.#waiting.length >= MAX_WAITING) {
        throw new ProxyError(
          503,
          `too many logins being checked at once (${MAX_HASHING} + ${MAX_WAITING} waiting); retry`,
          { kind: "connection_limit_reached", headers: [["Retry-After", "1"]] },
        );
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    } else {
      this.#hashing++;
    }
    try {
      return await work();
    } finally {
      // The slot passes straight to the next in line, or is given back.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#hashing--;
    }
  }
}

/**
 * Builds the authenticator a config asks for (`--auth`, `--auth-file`), or none.
 *
 * @param config The auth settings.
 * @param flags The flag names for messages. @default { plain: "--auth", file: "--auth-file" }
 * @returns The authenticator, or undefined when no auth is configured.
 * @throws {StartupError} naming the flag, for a bad credential or an unreadable file.
 */
export async function loadAuth(
  config: { auth: readonly string[]; authFile?: string | undefined },
  flags = { plain: "--auth", file: "--auth-file" },
): Promise<Authenticator | undefined> {
  const credentials: Credential[] = [];
  for (const text of config.auth) {
    const cred = await plainCredential(text);
    if (typeof cred === "string") throw new StartupError(`${flags.plain}: ${cred}`);
    credentials.push(cred);
  }
  if (config.authFile !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(config.authFile);
    } catch (err) {
      throw new StartupError(
        `${flags.file}: cannot read "${config.authFile}": ${(err as Error).message}`,
      );
    }
    const found = fileCredentials(text);
    if (typeof found === "string") {
      throw new StartupError(`${flags.file}: "${config.authFile}" ${found}`);
    }
    if (found.length === 0) {
      throw new StartupError(`${flags.file}: "${config.authFile}" holds no user`);
    }
    credentials.push(...found);
  }
  return credentials.length > 0 ? new Authenticator(credentials) : undefined;
}

/**
 * Reads `user:password` lines from an environment variable, where secrets stay off the
 * command line (which `ps` and `deno task` show). Blank lines are skipped.
 *
 * @param name The variable.
 * @returns The lines; none when unset or when this process may not read it.
 */
export function envCredentials(name: string): string[] {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return [];
  const text = Deno.env.get(name) ?? "";
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
}
