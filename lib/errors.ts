/**
 * The error model: a {@linkcode ProxyError} ends an exchange with its HTTP status (RFC 9110
 * reason phrases) and a Proxy-Status error type (RFC 9209). It is caught in exactly one place,
 * `handle_conn.ts`; this module owns the status table and nothing that touches sockets.
 *
 * @module
 */

/** RFC 9110 §15 reason phrases for every status the proxy itself sends. */
export const REASONS: Readonly<Record<number, string>> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  417: "Expectation Failed",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  508: "Loop Detected",
};

/**
 * Returns the reason phrase for `status`.
 *
 * @param status An HTTP status code.
 * @returns The RFC 9110 phrase, or "Unknown" for a code the proxy never sends itself.
 */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Unknown";
}

/** What an error kind means and how the proxy answers it. */
export interface ErrorKindInfo {
  /** The statuses answered with this kind (none: the connection just closes, nothing sent). */
  statuses: readonly number[];
  /** What happened. */
  what: string;
}

/**
 * Every kind of failure the proxy logs, answers (in `Proxy-Status`, RFC 9209 §2.3) and counts
 * (`http_proxy_errors_total{kind}`): the RFC's error types it uses, and three of its own for a
 * client's or a tunnel's failure, where nothing can be answered. A kind not in this table does
 * not type-check.
 */
export const ERROR_KINDS = {
  http_request_error: {
    statuses: [400, 408, 414, 417, 431],
    what: "the request is malformed, too large, too slow or asks for what the proxy cannot do",
  },
  http_request_denied: {
    statuses: [403, 405, 407, 429, 508],
    what: "policy, credentials, the rate limit or loop detection refused the request",
  },
  connection_limit_reached: {
    statuses: [503],
    what: "too many connections (in all or from one address), too many logins at once, or too " +
      "many requests waiting to connect to one destination",
  },
  dns_error: { statuses: [502], what: "the target name did not resolve" },
  connection_refused: { statuses: [502], what: "the upstream refused the connection" },
  connection_timeout: { statuses: [504], what: "the upstream connection did not open in time" },
  destination_unavailable: { statuses: [502], what: "the upstream could not be reached" },
  http_response_timeout: {
    statuses: [504],
    what: "no response head in time (504), or the response body stalled (after it began)",
  },
  http_response_incomplete: {
    statuses: [502],
    what: "the upstream closed before (502) or while (just close) sending its response",
  },
  http_response_header_section_size: {
    statuses: [502],
    what: "the upstream's response head was too large",
  },
  http_protocol_error: {
    statuses: [502],
    what: "the upstream's response was malformed, or it switched protocols unasked",
  },
  proxy_internal_error: { statuses: [500, 502], what: "a failure inside the proxy" },
  http_upgrade_failed: {
    statuses: [502],
    what: "the upstream answered an Upgrade request with a 101 that names no protocol",
  },
  proxy_configuration_error: {
    statuses: [502],
    what: "the parent proxy wants credentials this proxy does not have (--parent-auth-file)",
  },
  only_if_cached: {
    statuses: [504],
    what: "the request said only-if-cached and the cache (--cache) holds no response for it",
  },
  client_closed: { statuses: [], what: "the client left (closed or reset) mid-exchange" },
  client_timeout: { statuses: [], what: "the client took no byte for --write-timeout" },
  tunnel_error: { statuses: [], what: "a CONNECT tunnel failed (reset, stalled or idle)" },
} as const satisfies Record<string, ErrorKindInfo>;

/** One of {@linkcode ERROR_KINDS}. */
export type ErrorKind = keyof typeof ERROR_KINDS;

/** Options of a {@linkcode ProxyError}. */
export interface ProxyErrorOptions extends ErrorOptions {
  /** RFC 9209 Proxy-Status error type, e.g. `dns_error`. @default "proxy_internal_error" */
  kind?: ErrorKind;
  /** Close the client connection after answering, even if it could be kept alive. @default false */
  close?: boolean;
  /** Extra response fields (e.g. Proxy-Authenticate). @default [] */
  headers?: [string, string][];
}

/** A failure that ends the exchange with `status`, if nothing was sent yet. */
export class ProxyError extends Error {
  /** The HTTP status the client receives. */
  readonly status: number;
  /** RFC 9209 Proxy-Status error type. */
  readonly kind: ErrorKind;
  /** Whether the client connection must be closed after the answer. */
  readonly close: boolean;
  /** Extra response fields. */
  readonly headers: readonly [string, string][];

  /**
   * Makes an error that answers `status` with `message` as the one-line body.
   *
   * @param status The HTTP status.
   * @param message A one-line cause, shown to the client and in the log.
   * @param options Kind, close and cause.
   */
  constructor(status: number, message: string, options: ProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.status = status;
    this.kind = options.kind ?? "proxy_internal_error";
    this.close = options.close ?? false;
    this.headers = options.headers ?? [];
  }
}

/** 400: the request cannot be parsed or is not allowed to be framed that way; always closes. */
export class BadRequest extends ProxyError {
  /**
   * @param message The cause, e.g. `malformed request line`.
   * @param options Kind and cause; the connection is always closed.
   */
  constructor(message: string, options: ProxyErrorOptions = {}) {
    super(400, message, { kind: "http_request_error", ...options, close: true });
  }
}

/** 403: policy refused the request. */
export class Forbidden extends ProxyError {
  /**
   * @param message The rule that refused it.
   * @param options Kind and cause.
   */
  constructor(message: string, options: ProxyErrorOptions = {}) {
    super(403, message, { kind: "http_request_denied", ...options });
  }
}

/** 408: the request head did not arrive in time; always closes. */
export class RequestTimeout extends ProxyError {
  /**
   * @param message What timed out.
   */
  constructor(message: string) {
    super(408, message, { kind: "http_request_error", close: true });
  }
}

/** 431: the request head is larger than allowed; always closes. */
export class HeadTooLarge extends ProxyError {
  /**
   * @param message The limit that was passed.
   */
  constructor(message: string) {
    super(431, message, { kind: "http_request_error", close: true });
  }
}

/** 502: the upstream could not be reached or answered badly. */
export class BadGateway extends ProxyError {
  /**
   * @param message The cause, e.g. `DNS lookup failed: nosuchhost.invalid`.
   * @param options Kind (`dns_error`, `connection_refused`, `http_protocol_error`, …) and cause.
   */
  constructor(message: string, options: ProxyErrorOptions = {}) {
    super(502, message, { kind: "destination_unavailable", ...options });
  }
}

/** 504: the upstream did not connect or answer in time. */
export class GatewayTimeout extends ProxyError {
  /**
   * @param message What timed out and after how long.
   * @param options Kind (`connection_timeout`, `http_response_timeout`) and cause.
   */
  constructor(message: string, options: ProxyErrorOptions = {}) {
    super(504, message, { kind: "connection_timeout", ...options });
  }
}

/**
 * The peer (client or upstream) went away or broke the protocol after the response started:
 * nothing can be answered any more, the connection is just closed.
 */
export class Aborted extends Error {
  /** RFC 9209-style kind for the log, e.g. `http_response_incomplete`. */
  readonly kind: ErrorKind;

  /**
   * @param message What happened, e.g. `upstream closed mid-body`.
   * @param kind The kind of failure for the log.
   * @param options The cause.
   */
  constructor(message: string, kind: ErrorKind, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.kind = kind;
  }
}

/**
 * A reason the proxy cannot start: one line for stderr, and the exit code (2 for a command
 * line or a setting that is wrong, 1 for what the machine refused: a port in use, a file that
 * cannot be opened). Thrown by every startup step; `main()` prints it and exits with it.
 */
export class StartupError extends Error {
  /** The exit code. */
  readonly code: 1 | 2;

  /**
   * @param message The one-line cause, naming the flag.
   * @param code The exit code. @default 2
   * @param options The underlying error.
   */
  constructor(message: string, code: 1 | 2 = 2, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
