/**
 * Pull-secret credentials Harbor accepted for a private project, remembered
 * for a bounded time so the node can still tell a right pull secret from a
 * wrong one while Harbor is unreachable. Only a salted scrypt hash is kept
 * (memory, and the index when a DB is given); the password itself is never
 * stored or logged. scrypt runs on libuv's thread pool, so a check never
 * blocks the event loop; a repeat check of a pair already verified in this
 * process is answered from an in-memory HMAC under a per-process random key
 * (microseconds, and worthless outside this process).
 *
 * Intended use (see the report to the lead): `admit` first (429 while the
 * user name is locked out); online, ask Harbor
 * (`HarborClient.checkPullCredentials`), then `remember` or `forget`; offline,
 * `check` decides: 'valid' serves, 'unknown' and 'mismatch' answer 401.
 * Each refusal that judged the password (Harbor said no; offline, a
 * mismatch) is reported with `failed`; ten different wrong passwords for one
 * user name within five minutes lock it until those five minutes end.
 *
 * While a name is locked out, only a pair already verified in this process
 * (its HMAC memo) passes: that costs an attacker nothing and keeps the real
 * user pulling. A pair known only from the index (after a restart) waits
 * like any guess: checking it would need scrypt, which is the oracle the
 * lock-out is there to close.
 */
import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { Database, Statement } from 'better-sqlite3';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import { SignInLimit } from './sign-in-limit.js';

export type CredentialCheck = 'valid' | 'unknown' | 'mismatch';

export interface CredentialCacheOptions {
  /** How long an accepted pair stays valid for offline use after Harbor last confirmed it. */
  ttlMs: number;
  /** Persist entries in this DB (table harbor_credentials of HARBOR_SCHEMA_SQL). */
  db?: Database;
  /** Bound on remembered pairs; the least recently verified go first. Default 10 000. */
  maxEntries?: number;
  /** Failed sign-ins per user name (default: 10 per 5 minutes). */
  limit?: SignInLimit;
  metrics?: Metrics;
}

interface Entry {
  salt: Buffer;
  hash: Buffer;
  verifiedAt: number;
  expiresAt: number;
  /** HMAC of the password under PROCESS_KEY, set once verified in this process; never persisted. */
  memo?: Buffer;
}

interface Row {
  project: string;
  username: string;
  salt: Buffer;
  hash: Buffer;
  verified_at: number;
  expires_at: number;
}

// N=2^14, r=8: ~16 MiB and tens of milliseconds per hash, the interactive-login
// cost RFC 7914 §2 suggests; pull secrets of human users can be weak passwords.
const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
const PROCESS_KEY = randomBytes(32);

function derive(password: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_LENGTH, SCRYPT, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function memoOf(password: string): Buffer {
  return createHmac('sha256', PROCESS_KEY).update(password, 'utf8').digest();
}

/** Project and user joined without ambiguity (a project name never holds NUL). */
function keyOf(project: string, username: string): string {
  return `${project}\u0000${username}`;
}

export class CredentialCache {
  private readonly entries = new Map<string, Entry>();
  /** scrypt runs one at a time: at most one libuv thread, whatever the request rate. */
  private chain: Promise<unknown> = Promise.resolve();

  private oneAtATime<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }
  private readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly limit: SignInLimit;
  private readonly metrics: Metrics | undefined;
  private readonly st:
    | { put: Statement<[string, string, Buffer, Buffer, number, number]>; del: Statement<[string, string]>; expire: Statement<[number]> }
    | undefined;

  constructor(opts: CredentialCacheOptions) {
    if (!(opts.ttlMs > 0)) throw new RangeError('credential ttl must be positive');
    this.ttlMs = opts.ttlMs;
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.limit = opts.limit ?? new SignInLimit();
    this.metrics = opts.metrics;
    const db = opts.db;
    if (db) {
      this.st = {
        put: db.prepare(
          'INSERT OR REPLACE INTO harbor_credentials (project, username, salt, hash, verified_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
        ),
        del: db.prepare('DELETE FROM harbor_credentials WHERE project = ? AND username = ?'),
        expire: db.prepare('DELETE FROM harbor_credentials WHERE expires_at <= ?'),
      };
      const rows = db.prepare<[], Row>('SELECT project, username, salt, hash, verified_at, expires_at FROM harbor_credentials').all();
      for (const r of rows) {
        this.entries.set(keyOf(r.project, r.username), { salt: r.salt, hash: r.hash, verifiedAt: r.verified_at, expiresAt: r.expires_at });
      }
    }
  }

  /** Records that Harbor accepted this pair for the project just now. */
  async remember(project: string, username: string, password: string, now: number): Promise<void> {
    const salt = randomBytes(SALT_LENGTH);
    const hash = await derive(password, salt);
    const entry: Entry = { salt, hash, verifiedAt: now, expiresAt: now + this.ttlMs, memo: memoOf(password) };
    const key = keyOf(project, username);
    this.entries.delete(key); // re-insert: Map order is verification order
    this.entries.set(key, entry);
    this.st?.put.run(project, username, salt, hash, entry.verifiedAt, entry.expiresAt);
    this.purge(now);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.oldestKey();
      if (oldest === undefined) break;
      this.dropKey(oldest);
    }
  }

  /**
   * 'valid': Harbor accepted exactly this pair within the ttl. 'mismatch': a
   * pair for this user is remembered but the password differs. 'unknown':
   * nothing (unexpired) is remembered for this user and project.
   */
  async check(project: string, username: string, password: string, now: number): Promise<CredentialCheck> {
    const key = keyOf(project, username);
    const entry = this.entries.get(key);
    if (!entry) return 'unknown';
    if (now >= entry.expiresAt) {
      this.dropKey(key);
      return 'unknown';
    }
    const memo = memoOf(password);
    // Verified in this process: the memo is the right password's HMAC, so it decides without scrypt
    // (a flood of wrong guesses then costs an HMAC each, not 16 MiB of scrypt on the thread pool).
    if (entry.memo) return timingSafeEqual(entry.memo, memo) ? 'valid' : 'mismatch';
    const hash = await this.oneAtATime(() => derive(password, entry.salt));
    if (hash.length === entry.hash.length && timingSafeEqual(hash, entry.hash)) {
      entry.memo = memo;
      return 'valid';
    }
    return 'mismatch';
  }

  /**
   * Throws 429 TOOMANYREQUESTS (with Retry-After) while `username` is locked
   * out, unless this exact pair was verified for the project in this process.
   * Costs an HMAC at most: no scrypt, no Harbor.
   */
  admit(project: string, username: string, password: string, now: number): void {
    const wait = this.limit.retryAfterMs(username, now);
    if (wait <= 0) return;
    const entry = this.entries.get(keyOf(project, username));
    if (entry?.memo && now < entry.expiresAt && timingSafeEqual(entry.memo, memoOf(password))) return;
    this.metrics?.credentialLockouts.inc();
    throw new OciError('TOOMANYREQUESTS', 'too many failed sign-ins for this user name: try again later', undefined, { 'Retry-After': String(Math.max(1, Math.ceil(wait / 1000))) });
  }

  /** A sign-in with this user name was refused for its password. */
  failed(username: string, password: string, now: number): void {
    this.limit.fail(username, password, now);
    this.metrics?.credentialFailures.inc();
  }

  /** Harbor refused the pair (robot disabled or expired, secret rotated): stop accepting it offline. */
  forget(project: string, username: string): void {
    this.dropKey(keyOf(project, username));
  }

  /** When Harbor last confirmed the pair for the project (epoch ms), or null. */
  verifiedAt(project: string, username: string): number | null {
    return this.entries.get(keyOf(project, username))?.verifiedAt ?? null;
  }

  /** Drops expired pairs; returns how many. */
  purge(now: number): number {
    let n = 0;
    for (const [key, entry] of this.entries) {
      if (now >= entry.expiresAt) {
        this.entries.delete(key);
        n++;
      }
    }
    this.st?.expire.run(now);
    return n;
  }

  get size(): number {
    return this.entries.size;
  }

  private oldestKey(): string | undefined {
    let oldest: string | undefined;
    let at = Infinity;
    for (const [key, entry] of this.entries) {
      if (entry.verifiedAt < at) {
        at = entry.verifiedAt;
        oldest = key;
      }
    }
    return oldest;
  }

  private dropKey(key: string): void {
    this.entries.delete(key);
    const nul = key.indexOf('\u0000');
    this.st?.del.run(key.slice(0, nul), key.slice(nul + 1));
  }
}
