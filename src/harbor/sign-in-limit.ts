/**
 * Failed sign-ins per user name, so nobody can guess a pull secret at the
 * rate berth answers. Keyed by user name, not address: every pull reaches
 * berth from 127.0.0.1 (containerd on the node), so an address tells nothing.
 *
 * A name with `failures` different wrong passwords within `windowMs` of its
 * first one is locked until that window ends; then the count starts again.
 * Only different passwords count: a guess is a new password, while a stale
 * pull secret is one password retried (containerd sends about ten requests
 * per failed pull, kubelet retries the pull), and it must not lock the name
 * for every pod that has the right secret. Ten guesses per five minutes is
 * under 3 000 a day per name; a person who mistyped a secret waits minutes
 * at most. Passwords are kept as HMACs under a per-process key, never in
 * clear; names by hash (a Basic user name can be kilobytes), in a bounded
 * LRU: a name that keeps being tried stays recent, so a flood of other names
 * cannot push a locked one out cheaply.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';

/** Failed sign-ins a user name may have within the window. */
export const SIGN_IN_FAILURES = 10;
/** The window, from the first failure it counts. */
export const SIGN_IN_WINDOW_MS = 5 * 60_000;
/** User names tracked at once. */
const NAMES = 10_000;

interface Window {
  start: number;
  /** HMACs of the wrong passwords seen in this window (at most `failures`). */
  wrong: Set<string>;
}

export class SignInLimit {
  private readonly failures: number;
  private readonly windowMs: number;
  private readonly names: LRUCache<string, Window>;
  private readonly key = randomBytes(32);

  constructor(opts: { failures?: number; windowMs?: number; names?: number } = {}) {
    this.failures = opts.failures ?? SIGN_IN_FAILURES;
    this.windowMs = opts.windowMs ?? SIGN_IN_WINDOW_MS;
    this.names = new LRUCache({ max: opts.names ?? NAMES });
  }

  /** Milliseconds until `username` may sign in again; 0 when it may now. */
  retryAfterMs(username: string, now: number): number {
    const w = this.current(keyOf(username), now);
    return w && w.wrong.size >= this.failures ? w.start + this.windowMs - now : 0;
  }

  /** `password` was refused for `username`. */
  fail(username: string, password: string, now: number): void {
    const key = keyOf(username);
    const mac = createHmac('sha256', this.key).update(password, 'utf8').digest('base64');
    const w = this.current(key, now);
    if (!w) this.names.set(key, { start: now, wrong: new Set([mac]) });
    else if (w.wrong.size < this.failures) w.wrong.add(mac);
  }

  get size(): number {
    return this.names.size;
  }

  /** The name's window if it is still open (a read counts as use, for the LRU). */
  private current(key: string, now: number): Window | undefined {
    const w = this.names.get(key);
    if (w && now - w.start >= this.windowMs) {
      this.names.delete(key);
      return undefined;
    }
    return w;
  }
}

function keyOf(username: string): string {
  return createHash('sha256').update(username, 'utf8').digest('base64');
}
