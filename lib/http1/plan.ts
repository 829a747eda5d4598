/**
 * The forwarding decisions, free of I/O (mitmproxy's `assemble.py`, the decision half of Go's
 * `ReverseProxy`): what goes upstream for a client's request, and what goes back to the client
 * for an upstream's response, with the keep-alive and reuse decisions that come with it. Head
 * values in, head bytes and flags out; the relay (`relay/forward.ts`) does the sending.
 *
 * @module
 */

import { BadGateway, BadRequest, ProxyError } from "../errors.ts";
import {
  addVia,
  clientWantsKeepAlive,
  connectionFields,
  endToEnd,
  foldContentLength,
  type Framing,
  hasToken,
  type Head,
  listValues,
  responseFraming,
} from "./headers.ts";
import { digits, type Field, type RequestHead, type ResponseHead } from "./parse.ts";

/** Methods whose request may be sent twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** What the proxy does with a request. */
export type RequestPlan =
  | {
    /** Answer it here (Max-Forwards reached 0, RFC 9110 §7.6.2). */
    kind: "answer";
  }
  | {
    /** Send it upstream. */
    kind: "forward";
    /** The request head to send, origin-form (written with `headBytes`). */
    head: Head;
    /** Answer the client's `Expect: 100-continue` once the upstream is reached. */
    sendContinue: boolean;
    /** Whether it may be sent again on a new connection (no body, idempotent). */
    retryable: boolean;
    /**
     * The protocols the client asked to upgrade to (`Upgrade`, with `Connection: upgrade`, on
     * an HTTP/1.1 request without a body), passed on to the upstream; a 101 then turns the
     * exchange into a tunnel. Undefined when no upgrade is asked.
     */
    upgrade: string | undefined;
  };

/** What the request plan needs besides the head. */
export interface RequestSettings {
  /** The authority as the client wrote it (sent as Host). */
  authority: string;
  /** Path and query as sent. */
  path: string;
  /** The request body's framing. */
  framing: Framing;
  /** This proxy's name in Via. */
  viaName: string;
  /** Relay TRACE (`--allow-trace`). */
  allowTrace: boolean;
  /** Whether upstream connections are kept for reuse (else `Connection: close` goes up). */
  pooled: boolean;
  /** Tell the origin who asked (`--forwarded`): nothing, X-Forwarded-For, or Forwarded. */
  forwarded: ForwardedMode;
  /** The client's IP address, for `forwarded`. */
  clientIp: string;
  /** Proxy-Authorization to send (for a parent proxy), if any. */
  proxyAuthorization?: string;
}

/** What `--forwarded` adds to a relayed request. */
export type ForwardedMode = "off" | "xff" | "forwarded";

/** The `--forwarded` modes, as the flag takes them. */
export const FORWARDED_MODES: readonly ForwardedMode[] = ["off", "xff", "forwarded"];

/**
 * Decides what goes upstream for a request: refuses TRACE (405) and expectations other than
 * 100-continue (417), counts Max-Forwards down on OPTIONS and TRACE (answering here at 0), and
 * builds the origin-form head: hop-by-hop fields, Host and Expect dropped, Content-Length
 * folded, Host from the target, Via extended, chunked framing kept.
 *
 * @param head The client's request head.
 * @param settings Target, framing and the relevant flags.
 * @returns The plan.
 * @throws {ProxyError} 400, 405 or 417.
 */
export function planRequest(head: RequestHead, settings: RequestSettings): RequestPlan {
  const { framing } = settings;
  if (head.method === "TRACE" && !settings.allowTrace) {
    // TRACE echoes the request back, cookies and all, to whatever script sent it.
    throw new ProxyError(405, "TRACE is refused (see --allow-trace)", {
      kind: "http_request_denied",
    });
  }
  // RFC 9110 §7.6.2: Max-Forwards counts down on OPTIONS and TRACE; at 0 this proxy answers.
  const hops = head.method === "OPTIONS" || head.method === "TRACE" ? maxForwards(head) : undefined;
  if (hops === 0) return { kind: "answer" };
  const expect = listValues(head.fields, "expect");
  if (expect.some((e) => e.toLowerCase() !== "100-continue")) {
    throw new ProxyError(417, `unsupported expectation "${expect.join(", ")}"`, {
      kind: "http_request_error",
    });
  }
  const fields = foldContentLength(endToEnd(head.fields, ["host", "expect"]));
  if (hops !== undefined) {
    fields.forEach((f, i) => {
      if (f[0].toLowerCase() === "max-forwards") fields[i] = [f[0], String(hops - 1)];
    });
  }
  fields.unshift(["Host", settings.authority]);
  addVia(fields, head.minor, settings.viaName);
  if (settings.forwarded !== "off") addForwarded(fields, settings.forwarded, settings.clientIp);
  if (settings.proxyAuthorization) {
    fields.push(["Proxy-Authorization", settings.proxyAuthorization]);
  }
  if (framing.kind === "chunked") fields.push(["Transfer-Encoding", "chunked"]);
  // An upgrade (WebSocket and the like) is the one hop-by-hop request the proxy passes on: both
  // fields go up, and nothing else about the client's Connection.
  const upgrade = head.minor === 1 && framing.kind === "none" &&
      hasToken(head.fields, "connection", "upgrade")
    ? listValues(head.fields, "upgrade").join(", ") || undefined
    : undefined;
  if (upgrade) fields.push(["Connection", "Upgrade"], ["Upgrade", upgrade]);
  else if (!settings.pooled) fields.push(["Connection", "close"]);
  return {
    kind: "forward",
    upgrade,
    head: { line: `${head.method} ${settings.path} HTTP/1.1`, fields },
    // The proxy answers 100-continue itself once the upstream is reached, so a client never
    // waits on an origin that ignores Expect (curl would stall a second).
    sendContinue: expect.length > 0 && head.minor === 1 && framing.kind !== "none",
    // Only a request without a body can be sent again: its bytes are all in the head.
    retryable: IDEMPOTENT.has(head.method) && framing.kind === "none",
  };
}

/**
 * Appends this hop to X-Forwarded-For (the de facto form: `client, proxy1, …`) or to Forwarded
 * (RFC 7239: `for=…;proto=http`, an IPv6 address quoted and bracketed). A field the client sent
 * is kept and extended, as each proxy on a path does; the last element is the one this proxy
 * vouches for.
 */
function addForwarded(fields: [string, string][], mode: "xff" | "forwarded", ip: string): void {
  const name = mode === "xff" ? "x-forwarded-for" : "forwarded";
  const element = mode === "xff" ? ip : `for=${ip.includes(":") ? `"[${ip}]"` : ip};proto=http`;
  const at = fields.findIndex((f) => f[0].toLowerCase() === name);
  if (at < 0) {
    fields.push([mode === "xff" ? "X-Forwarded-For" : "Forwarded", element]);
    return;
  }
  // Several fields of one name are one list (RFC 9110 §5.3): fold them, then append.
  const values = fields.filter((f) => f[0].toLowerCase() === name).map((f) => f[1].trim());
  const folded = [...values.filter((v) => v !== ""), element].join(", ");
  const kept = fields.filter((f, i) => i === at || f[0].toLowerCase() !== name);
  kept[kept.findIndex((f) => f[0].toLowerCase() === name)] = [fields[at]![0], folded];
  fields.splice(0, fields.length, ...kept);
}

/** Reads Max-Forwards (RFC 9110 §7.6.2); a malformed one is a 400. */
function maxForwards(head: RequestHead): number | undefined {
  const values = listValues(head.fields, "max-forwards");
  if (values.length === 0) return undefined;
  const value = values.length === 1 ? digits(values[0]!, 9) : -1;
  if (value < 0) throw new BadRequest(`malformed Max-Forwards "${values.join(", ")}"`);
  return value;
}

/** What goes back to the client for an upstream's response. */
export interface ResponsePlan {
  /** The response head for the client (written with `headBytes`). */
  head: Head;
  /** How the upstream's body is delimited. */
  framing: Framing;
  /** How it is written to the client: as it came, or re-chunked. */
  out: "raw" | "chunked";
  /** Whether the client connection stays open after it. */
  keep: boolean;
  /** Whether the upstream connection may be reused after it. */
  reusable: boolean;
}

/** What the response plan needs to know of the exchange so far. */
export interface ResponseState {
  /** The whole request (head and body) was read from the client. */
  consumed: boolean;
  /** The upstream stopped taking the request body. */
  upstreamBroke: boolean;
  /** The proxy is shutting down (no more keep-alive). */
  stopping: boolean;
  /** Upstream connections are kept for reuse. */
  pooled: boolean;
  /** This proxy's name in Via. */
  viaName: string;
  /** Fields this proxy adds (the cache's Cache-Status). */
  extra?: Field[];
}

/**
 * Decides what goes back for a response: its framing (a malformed one is a 502), hop-by-hop
 * fields dropped, Content-Length folded, Via extended, a body without a length re-chunked for an
 * HTTP/1.1 client (an HTTP/1.0 one gets it raw, then the close), the client's keep-alive, and
 * whether the upstream connection may be reused (a certain end, HTTP/1.1, no `close`, the whole
 * request sent).
 *
 * @param response The upstream's final response head.
 * @param request The client's request head.
 * @param state The exchange so far.
 * @returns The plan.
 * @throws {BadGateway} for ambiguous or malformed response framing.
 */
export function planResponse(
  response: ResponseHead,
  request: RequestHead,
  state: ResponseState,
): ResponsePlan {
  let framing: Framing;
  try {
    framing = responseFraming(response, request.method);
  } catch (err) {
    throw new BadGateway(`malformed response from upstream: ${(err as Error).message}`, {
      kind: "http_protocol_error",
    });
  }
  const reusable = state.pooled && framing.kind !== "close" && response.minor === 1 &&
    !hasToken(response.fields, "connection", "close") && state.consumed && !state.upstreamBroke;
  let keep = clientWantsKeepAlive(request) && state.consumed && !state.upstreamBroke &&
    !state.stopping;
  const fields = foldContentLength(endToEnd(response.fields));
  addVia(fields, response.minor, state.viaName);
  if (state.extra && state.extra.length > 0) fields.push(...state.extra);
  let out: "raw" | "chunked" = "raw";
  if (framing.kind === "chunked" || framing.kind === "close") {
    if (request.minor === 1) {
      fields.push(["Transfer-Encoding", "chunked"]);
      out = "chunked";
    } else {
      keep = false; // an HTTP/1.0 client never gets chunked: the body ends when we close
    }
  }
  fields.push(...connectionFields(keep, request.minor));
  return {
    head: { line: `HTTP/1.1 ${response.status} ${response.reason}`, fields },
    framing,
    out,
    keep,
    reusable,
  };
}
