/**
 * `http-proxy make-cert`: a certificate authority of one's own and a server certificate signed
 * by it, for `--listen-tls` on a network without a public CA (an office, a home). Keys are ECDSA
 * P-256 made and used by WebCrypto; WebCrypto has no X.509 writer, so the certificates (RFC
 * 5280) are encoded here in DER: a few dozen lines for the handful of structures they need, no
 * dependency. An existing CA in the folder is reused, so a new server certificate needs no new
 * trust; an existing key is never overwritten.
 *
 * @module
 */

import { parseIp } from "../policy/ip.ts";
import { StartupError } from "../errors.ts";

const EC_KEY = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN = { name: "ECDSA", hash: "SHA-256" } as const;
/** What browsers accept for a server certificate's life (CA/Browser Forum: 398 days). */
const SERVER_DAYS = 397;
const CA_DAYS = 3650;
const DAY = 86_400_000;

// --- DER (X.690), just what certificates use ---------------------------------------------

type Der = Uint8Array<ArrayBuffer>;

function tlv(tag: number, ...parts: Der[]): Der {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const head = length < 0x80
    ? [tag, length]
    : length < 0x100
    ? [tag, 0x81, length]
    : length < 0x10000
    ? [tag, 0x82, length >> 8, length & 0xff]
    : [tag, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff];
  const out = new Uint8Array(head.length + length);
  out.set(head);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const seq = (...parts: Der[]) => tlv(0x30, ...parts);
const set = (...parts: Der[]) => tlv(0x31, ...parts);
const explicit = (n: number, part: Der) => tlv(0xa0 + n, part);
const octets = (bytes: Der) => tlv(0x04, bytes);
const bits = (bytes: Der) => tlv(0x03, new Uint8Array([0]), bytes);
const bool = (b: boolean) => tlv(0x01, new Uint8Array([b ? 0xff : 0]));
const utf8 = (text: string) => tlv(0x0c, new TextEncoder().encode(text));

/** A non-negative INTEGER from big-endian bytes (a leading zero when the top bit is set). */
function unsigned(bytes: Der): Der {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0 && bytes[i + 1]! < 0x80) i++;
  const body = bytes.subarray(i);
  return tlv(0x02, ...(body[0]! >= 0x80 ? [new Uint8Array([0]), body] : [body]));
}

const int = (n: number) => unsigned(new Uint8Array([n]));

/** An OBJECT IDENTIFIER from its dotted form. */
function oid(dotted: string): Der {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (const n of rest) {
    const groups = [n & 0x7f];
    for (let v = n >>> 7; v > 0; v >>>= 7) groups.unshift((v & 0x7f) | 0x80);
    out.push(...groups);
  }
  return tlv(0x06, new Uint8Array(out));
}

/** UTCTime until 2049, GeneralizedTime after (RFC 5280 §4.1.2.5). */
function time(date: Date): Der {
  const iso = date.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z"; // YYYYMMDDhhmmssZ
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, new TextEncoder().encode(iso.slice(2)))
    : tlv(0x18, new TextEncoder().encode(iso));
}

const ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"));

/** A Name of one common name. */
const commonName = (cn: string) => seq(set(seq(oid("2.5.4.3"), utf8(cn))));

function extension(id: string, critical: boolean, value: Der): Der {
  return seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
}

/** Reads one DER element at `at`: its tag, where its content starts and ends. */
function read(der: Der, at: number): { tag: number; start: number; end: number } {
  const tag = der[at]!;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i]!;
    start += count;
  }
  return { tag, start, end: start + length };
}

/** The elements inside a constructed element. */
function children(der: Der, outer: { start: number; end: number }) {
  const out: { tag: number; start: number; end: number; at: number }[] = [];
  for (let at = outer.start; at < outer.end;) {
    const e = read(der, at);
    out.push({ ...e, at });
    at = e.end;
  }
  return out;
}

// --- certificates --------------------------------------------------------------------------

/** PEM texts of a CA and a server certificate. */
export interface Certificates {
  /** The CA certificate: what clients trust. */
  caCert: string;
  /** The CA's private key (keep it; it signs the next server certificate). */
  caKey: string;
  /** The server certificate followed by the CA certificate (`--tls-cert`). */
  cert: string;
  /** The server's private key (`--tls-key`). */
  key: string;
}

function pem(label: string, der: Der): string {
  const b64 = btoa(String.fromCharCode(...der));
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`;
}

function unpem(text: string, label: string): Der {
  const m = new RegExp(`-----BEGIN ${label}-----([^-]+)-----END ${label}-----`).exec(text);
  if (!m) throw new StartupError(`make-cert: no ${label} in the existing CA files`, 2);
  return Uint8Array.from(atob(m[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
}

/** WebCrypto's ECDSA signature (r‖s) as the DER SEQUENCE of two INTEGERs X.509 wants. */
async function sign(key: CryptoKey, tbs: Der): Promise<Der> {
  const raw = new Uint8Array(await crypto.subtle.sign(SIGN, key, tbs));
  return seq(unsigned(raw.subarray(0, 32)), unsigned(raw.subarray(32)));
}

/** The SHA-1 of a public key's bits: its key identifier (RFC 5280 §4.2.1.2, method 1). */
async function keyId(spki: Der): Promise<Der> {
  const info = read(spki, 0);
  const key = children(spki, info)[1]!; // the BIT STRING
  return new Uint8Array(
    await crypto.subtle.digest("SHA-1", spki.subarray(key.start + 1, key.end)),
  );
}

/** One subject alternative name: a dNSName [2] or an iPAddress [7]. */
function altName(name: string): Der {
  const bare = name.replace(/^\[(.*)\]$/, "$1");
  const ip = parseIp(bare);
  if (ip) return tlv(0x87, new Uint8Array(ip.bytes));
  if (
    !/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/
      .test(name)
  ) {
    throw new StartupError(`make-cert: "${name}" is not a host name or an IP address`, 2);
  }
  return tlv(0x82, new TextEncoder().encode(name.toLowerCase()));
}

function serial(): Der {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f;
  bytes[0]! |= 0x01; // positive, and no leading zero byte to trim
  return unsigned(bytes);
}

/** Signs a certificate: TBSCertificate, the algorithm, the signature (RFC 5280 §4.1). */
async function certificate(fields: {
  issuer: Der;
  subject: Der;
  notBefore: Date;
  notAfter: Date;
  spki: Der;
  extensions: Der[];
  signer: CryptoKey;
}): Promise<Der> {
  const tbs = seq(
    explicit(0, int(2)), // v3
    serial(),
    ECDSA_SHA256,
    fields.issuer,
    seq(time(fields.notBefore), time(fields.notAfter)),
    fields.subject,
    fields.spki,
    explicit(3, seq(...fields.extensions)),
  );
  return seq(tbs, ECDSA_SHA256, bits(await sign(fields.signer, tbs)));
}

/** An existing CA: its subject Name and key identifier, read from its certificate. */
function caDetails(der: Der): { subject: Der; spki: Der } {
  const cert = read(der, 0);
  const tbs = children(der, cert)[0]!;
  const parts = children(der, tbs);
  // version [0], serial, signature, issuer, validity, subject, subjectPublicKeyInfo
  const subject = parts[5]!;
  const spki = parts[6]!;
  return { subject: der.slice(subject.at, subject.end), spki: der.slice(spki.at, spki.end) };
}

/**
 * Checks that each name is a host name or an IP address (what a certificate can name).
 *
 * @param names The names.
 * @throws {StartupError} naming the first that is neither.
 */
export function checkNames(names: readonly string[]): void {
  for (const name of names) altName(name);
}

/**
 * Makes a server certificate for `names` (host names and IP addresses), signed by the given CA
 * or by a new one.
 *
 * @param names What clients will call the proxy: each becomes a subject alternative name.
 * @param ca An existing CA (PEM certificate and PKCS#8 key) to sign with; else a new one.
 * @param now The current time (tests).
 * @returns The PEM texts.
 */
export async function makeCertificates(
  names: readonly string[],
  ca?: { cert: string; key: string },
  now = new Date(),
): Promise<Certificates> {
  if (names.length === 0) {
    throw new StartupError("make-cert: name the proxy's host names or IP addresses", 2);
  }
  const alt = names.map(altName);
  const notBefore = new Date(now.getTime() - 60_000); // a minute of clock skew
  let caDer: Der;
  let caKey: CryptoKey;
  let caKeyPem: string;
  if (ca) {
    caDer = unpem(ca.cert, "CERTIFICATE");
    caKey = await crypto.subtle.importKey(
      "pkcs8",
      unpem(ca.key, "PRIVATE KEY"),
      EC_KEY,
      true,
      ["sign"],
    );
    caKeyPem = ca.key;
  } else {
    const keys = await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
    const name = commonName(`http-proxy local CA ${now.toISOString().slice(0, 10)}`);
    caDer = await certificate({
      issuer: name,
      subject: name,
      notBefore,
      notAfter: new Date(now.getTime() + CA_DAYS * DAY),
      spki,
      signer: keys.privateKey,
      extensions: [
        extension("2.5.29.19", true, seq(bool(true), int(0))), // basicConstraints: CA, pathlen 0
        extension("2.5.29.15", true, tlv(0x03, new Uint8Array([1, 0x06]))), // keyCertSign, cRLSign
        extension("2.5.29.14", false, octets(await keyId(spki))), // subjectKeyIdentifier
      ],
    });
    caKey = keys.privateKey;
    caKeyPem = pem("PRIVATE KEY", new Uint8Array(await crypto.subtle.exportKey("pkcs8", caKey)));
  }
  const issuer = caDetails(caDer);
  const keys = await crypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const first = names[0]!.replace(/^\[(.*)\]$/, "$1");
  const der = await certificate({
    issuer: issuer.subject,
    subject: commonName(first),
    notBefore,
    notAfter: new Date(now.getTime() + SERVER_DAYS * DAY),
    spki,
    signer: caKey,
    extensions: [
      extension("2.5.29.19", true, seq()), // basicConstraints: not a CA
      extension("2.5.29.15", true, tlv(0x03, new Uint8Array([7, 0x80]))), // digitalSignature
      extension("2.5.29.37", false, seq(oid("1.3.6.1.5.5.7.3.1"))), // extKeyUsage: serverAuth
      extension("2.5.29.17", false, seq(...alt)), // subjectAltName
      extension("2.5.29.14", false, octets(await keyId(spki))),
      extension("2.5.29.35", false, seq(tlv(0x80, await keyId(issuer.spki)))), // authorityKeyId
    ],
  });
  const caPem = pem("CERTIFICATE", caDer);
  return {
    caCert: caPem,
    caKey: caKeyPem,
    cert: pem("CERTIFICATE", der) + caPem,
    key: pem(
      "PRIVATE KEY",
      new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
    ),
  };
}
