/**
 * Who may talk to the peer listener: the berths of this site, and nobody else. A pod that reaches
 * the peer port must get nothing, private or not, so every peer request carries an HMAC-SHA256
 * made with the site key (a shared secret in `[peers] key_file`) over what identifies the
 * request: its method, its request target exactly as sent (path and query), a timestamp and a
 * random nonce. The listener checks it within a short clock window, and remembers the nonces it
 * accepted for twice that window, so a captured request cannot be replayed: not later (the time
 * is outside the window) and not now (the nonce was seen).
 *
 * The signed string is one line per field, so no field can borrow from its neighbour: none may
 * hold a newline (methods are HTTP tokens, request targets have no control characters, the time
 * is digits and the nonce base64url, all checked here).
 *
 *   berth-peer-v1\n<METHOD>\n<path?query>\n<unix ms>\n<nonce>
 *
 * Peer requests are reads (GET/HEAD) with no body, so no body hash is needed. The key never
 * appears in an error or a log line; neither does the expected signature.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { LRUCache } from 'lru-cache';
import { growingLru } from '../cache/lru.js';

/** Header names as Node's http parser presents them (lower case). */
export const PEER_TIME_HEADER = 'x-berth-peer-time';
export const PEER_NONCE_HEADER = 'x-berth-peer-nonce';
export const PEER_SIGNATURE_HEADER = 'x-berth-peer-signature';

/** The smallest site key accepted, in bytes after surrounding whitespace is removed. */
export const MIN_SITE_KEY_BYTES = 32;

/** How far a peer's clock may be from ours; NTP keeps a site's nodes well inside this. */
export const DEFAULT_WINDOW_MS = 30_000;

/** Versions the signed string, so a future scheme cannot be confused with this one. */
const SCHEME = 'berth-peer-v1';

/** base64url of a 32-byte HMAC-SHA256, without padding. */
const SIGNATURE_RE = /^[A-Za-z0-9_-]{43}$/;
/** 16 random bytes make 22 characters; allow some room for other signers, never unbounded. */
const NONCE_RE = /^[A-Za-z0-9_-]{16,128}$/;
/** Unix milliseconds: 16 digits last until the year 318857. */
const TIME_RE = /^[0-9]{1,16}$/;
/** An HTTP method is a token (RFC 9110 §9.1). */
const METHOD_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A request target as sent: starts with '/', no whitespace or control characters. */
const TARGET_RE = /^\/[\x21-\x7e]*$/;

/** Why a site key file cannot be used. The message names the file, never its contents. */
export class SiteKeyError extends Error {
  /** Stable code to match on; the message is for people. */
  readonly code = 'ESITEKEY';
  readonly file: string;

  constructor(file: string, problem: string, cause?: unknown) {
    super(`site key file ${file}: ${problem}`, cause === undefined ? undefined : { cause });
    this.name = 'SiteKeyError';
    this.file = file;
  }
}

/** ASCII whitespace as `String.prototype.trim` sees it in a text file: space, \t \n \v \f \r. */
function isSpace(byte: number): boolean {
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

/**
 * Reads the site key: the file's bytes with surrounding whitespace removed (so the trailing
 * newline of `head -c 32 /dev/urandom | base64 > key` and an editor's newline do not matter).
 * The bytes are the key material as they are, not decoded: every node reads the same file the
 * same way, and a file of raw random bytes works as well as a base64 one. Trimming works on
 * bytes, not text, so raw bytes that are not UTF-8 are kept intact.
 */
export function loadSiteKey(file: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'does not exist'
      : code === 'EACCES' || code === 'EPERM' ? 'is not readable by this user'
      : code === 'EISDIR' ? 'is a directory'
      : `cannot be read (${code ?? 'unknown error'})`;
    throw new SiteKeyError(file, why, err);
  }
  let start = 0;
  let end = raw.length;
  while (start < end && isSpace(raw[start]!)) start++;
  while (end > start && isSpace(raw[end - 1]!)) end--;
  const length = end - start;
  if (length === 0) throw new SiteKeyError(file, 'is empty; write at least 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`');
  if (length < MIN_SITE_KEY_BYTES) {
    throw new SiteKeyError(
      file,
      `holds ${length} bytes (surrounding whitespace removed); at least ${MIN_SITE_KEY_BYTES} are needed, e.g. \`head -c 32 /dev/urandom | base64\``,
    );
  }
  // A copy, so the (larger) read buffer can go.
  return Buffer.from(raw.subarray(start, end));
}

export interface SignInput {
  method: string;
  /** The request target exactly as it goes on the wire: path and query ("/v2/x/blobs/sha256:…?ns=docker.io"). */
  path: string;
  /** Unix milliseconds. */
  now: number;
  /** Tests pin it; otherwise 16 fresh random bytes. */
  nonce?: string;
}

/** The headers that authenticate one peer request. Sign each request anew: a nonce is good once. */
export function signPeerRequest(key: Buffer, input: SignInput): Record<string, string> {
  if (!METHOD_RE.test(input.method)) throw new TypeError(`cannot sign method ${JSON.stringify(input.method)}`);
  if (!TARGET_RE.test(input.path)) throw new TypeError(`cannot sign request target ${JSON.stringify(input.path)}`);
  if (!Number.isSafeInteger(input.now) || input.now < 0) throw new TypeError(`cannot sign time ${input.now}`);
  const nonce = input.nonce ?? randomBytes(16).toString('base64url');
  if (!NONCE_RE.test(nonce)) throw new TypeError('a nonce is 16 to 128 base64url characters');
  const time = String(input.now);
  return {
    [PEER_TIME_HEADER]: time,
    [PEER_NONCE_HEADER]: nonce,
    [PEER_SIGNATURE_HEADER]: mac(key, input.method, input.path, time, nonce).toString('base64url'),
  };
}

function mac(key: Buffer, method: string, target: string, time: string, nonce: string): Buffer {
  return createHmac('sha256', key).update(`${SCHEME}\n${method}\n${target}\n${time}\n${nonce}`).digest();
}

/**
 * The nonces accepted lately. A nonce stays for twice the clock window: a request signed at t is
 * accepted while our clock reads at most t + window, and we may first see it as early as
 * t − window. Bounded in count as well: only correctly signed requests are recorded, so only a
 * key holder could fill it, and then the oldest nonces go first.
 */
export class ReplayGuard {
  readonly windowMs: number;
  readonly #seen: LRUCache<string, true>;

  constructor(opts: { windowMs?: number; max?: number } = {}) {
    this.windowMs = opts.windowMs ?? DEFAULT_WINDOW_MS;
    if (!(this.windowMs > 0)) throw new RangeError('windowMs must be positive');
    this.#seen = growingLru<string, true>(opts.max ?? 100_000, { ttl: 2 * this.windowMs });
  }

  /** Records `nonce`; false if it was already recorded (a replay). */
  admit(nonce: string): boolean {
    if (this.#seen.has(nonce)) return false;
    this.#seen.set(nonce, true);
    return true;
  }

  /** How many nonces are remembered now. */
  get size(): number {
    return this.#seen.size;
  }
}

/** Headers as Node's http module gives them (lower-case names) or a fetch `Headers`. */
export type PeerHeaders = Headers | Record<string, string | string[] | undefined>;

export interface VerifyInput {
  method: string;
  /** The request target as received (Node's raw `req.url`), not a re-serialised URL. */
  path: string;
  headers: PeerHeaders;
  /** Unix milliseconds. */
  now: number;
}

export type PeerAuthFailure =
  | 'missing' // a header is absent: an unsigned request
  | 'malformed' // a header is present but not in its format (or repeated)
  | 'stale' // the time is outside the clock window
  | 'bad-signature' // signed with another key, or something signed was changed
  | 'replayed'; // the nonce was accepted before

export type VerifyResult = { ok: true } | { ok: false; reason: PeerAuthFailure; detail: string };

function header(headers: PeerHeaders, name: string): string | string[] | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  return headers[name];
}

function fail(reason: PeerAuthFailure, detail: string): VerifyResult {
  return { ok: false, reason, detail };
}

/**
 * Checks a peer request's signature. Order matters: the cheap format and clock checks first,
 * then the HMAC, and the nonce is recorded only for a request whose signature is right, so
 * unsigned traffic cannot push genuine nonces out of the guard.
 */
export function verifyPeerRequest(key: Buffer, req: VerifyInput, replay: ReplayGuard): VerifyResult {
  const time = header(req.headers, PEER_TIME_HEADER);
  const nonce = header(req.headers, PEER_NONCE_HEADER);
  const signature = header(req.headers, PEER_SIGNATURE_HEADER);
  if (time === undefined || nonce === undefined || signature === undefined) return fail('missing', 'the request is not signed');
  if (typeof time !== 'string' || !TIME_RE.test(time)) return fail('malformed', `${PEER_TIME_HEADER} is not unix milliseconds`);
  if (typeof nonce !== 'string' || !NONCE_RE.test(nonce)) return fail('malformed', `${PEER_NONCE_HEADER} is not 16 to 128 base64url characters`);
  if (typeof signature !== 'string' || !SIGNATURE_RE.test(signature)) return fail('malformed', `${PEER_SIGNATURE_HEADER} is not a base64url HMAC-SHA256`);
  // Neither would come out of a request Node parsed; refuse rather than sign over them.
  if (!METHOD_RE.test(req.method) || !TARGET_RE.test(req.path)) return fail('malformed', 'unusual method or request target');

  const skew = req.now - Number(time);
  if (Math.abs(skew) > replay.windowMs) {
    return fail('stale', `the signing time is ${Math.round(skew / 1000)} s from ours (window ±${replay.windowMs / 1000} s)`);
  }

  // Compared as text, not decoded: the last of 43 base64url characters carries 2 spare bits that
  // a decoder ignores, and only the one canonical spelling of the signature is accepted.
  const given = Buffer.from(signature, 'latin1');
  const expected = Buffer.from(mac(key, req.method, req.path, time, nonce).toString('base64url'), 'latin1');
  // timingSafeEqual throws on different lengths; the regex already fixed it at 43, checked again here.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return fail('bad-signature', 'the signature does not match');

  if (!replay.admit(nonce)) return fail('replayed', 'the nonce was used before');
  return { ok: true };
}
