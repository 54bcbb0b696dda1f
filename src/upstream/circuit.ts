/**
 * Verdaccio's `max_fails` / `fail_timeout` for an uplink: after `maxFails`
 * consecutive "cannot reach it" failures the upstream is marked down and every
 * exchange fails at once for `failTimeoutMs`; then one probe is let through and
 * its outcome decides. Without this, a WAN that silently drops packets costs
 * every client request a full connect/headers timeout before berth can answer
 * stale or 503.
 */
import { UpstreamError, isUnreachable, type UpstreamHealth } from './types.js';

export interface CircuitOptions {
  registry: string;
  maxFails: number;
  failTimeoutMs: number;
  /** Injectable clock for tests. */
  now?: () => number;
}

export class Circuit {
  readonly #opts: CircuitOptions;
  readonly #now: () => number;
  #failures = 0;
  #openUntil = 0;
  #probing = false;
  #lastError: string | undefined;
  #lastOkAt: number | undefined;
  #lastFailureAt: number | undefined;

  constructor(opts: CircuitOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  get #open(): boolean {
    return this.#failures >= this.#opts.maxFails;
  }

  /** Throws UPSTREAM_UNREACHABLE while the circuit is open; lets one probe through once it may close. */
  admit(): void {
    if (!this.#open) return;
    const now = this.#now();
    if (now >= this.#openUntil && !this.#probing) {
      this.#probing = true;
      return;
    }
    const waitS = Math.max(0, Math.ceil((this.#openUntil - now) / 1000));
    throw new UpstreamError(
      'UPSTREAM_UNREACHABLE',
      this.#opts.registry,
      `upstream ${this.#opts.registry} circuit open after ${this.#failures} consecutive failures` +
        (this.#probing ? ' (probe in flight)' : `; next probe in ${waitS}s`) +
        (this.#lastError ? ` (last: ${this.#lastError})` : ''),
    );
  }

  /** The upstream answered (any status): it is reachable. */
  succeeded(): void {
    this.#failures = 0;
    this.#openUntil = 0;
    this.#probing = false;
    this.#lastOkAt = this.#now();
  }

  /** Counts only reachability failures; other errors mean the upstream did answer. */
  failed(err: UpstreamError): void {
    if (!isUnreachable(err)) {
      this.succeeded();
      return;
    }
    const now = this.#now();
    this.#failures++;
    this.#probing = false;
    this.#lastError = err.message;
    this.#lastFailureAt = now;
    if (this.#open) this.#openUntil = now + this.#opts.failTimeoutMs;
  }

  /** The exchange ended without telling us anything (the caller aborted it). */
  released(): void {
    this.#probing = false;
  }

  health(): UpstreamHealth {
    const h: UpstreamHealth = { up: !this.#open, consecutiveFailures: this.#failures };
    if (this.#lastError !== undefined) h.lastError = this.#lastError;
    if (this.#lastOkAt !== undefined) h.lastOkAt = this.#lastOkAt;
    if (this.#lastFailureAt !== undefined) h.lastFailureAt = this.#lastFailureAt;
    return h;
  }
}
