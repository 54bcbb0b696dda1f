/**
 * Bounded retries for answers that a second try can fix: 429 with a short
 * Retry-After, 5xx from an overloaded registry, a reset on a stale keep-alive
 * socket. Every request berth sends upstream is a GET or HEAD without a body,
 * so all of them are idempotent and safe to repeat; a body we already handed
 * to a caller is never retried here (only status-level answers are).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { isTransientReset } from './errors.js';
import { header, parseRetryAfter } from './headers.js';
import type { Answer, Send } from './transport.js';

export interface RetryOptions {
  maxRetries: number;
  maxRetryAfterMs: number;
  log: Logger;
}

const RETRYABLE_STATUS = new Set([500, 502, 503, 504]);

/** 100 ms, 300 ms, 900 ms…: short, because a client is waiting on the other side. */
export function backoffMs(attempt: number): number {
  return Math.min(100 * 3 ** attempt, 2_000);
}

function retryDelay(answer: Answer, attempt: number, opts: RetryOptions): number | undefined {
  if (attempt >= opts.maxRetries) return undefined;
  if (answer.status === 429) {
    const after = parseRetryAfter(header(answer.headers, 'retry-after'));
    if (after === undefined) return backoffMs(attempt);
    // Longer than we may hold a client: give up now and let the caller report retryAfterMs.
    if (after > opts.maxRetryAfterMs) return undefined;
    return Math.max(after, backoffMs(attempt));
  }
  if (RETRYABLE_STATUS.has(answer.status)) return backoffMs(attempt);
  return undefined;
}

export function withRetry(send: Send, opts: RetryOptions): Send {
  return async function retrying(ex) {
    for (let attempt = 0; ; attempt++) {
      let answer: Answer;
      try {
        answer = await send(ex);
      } catch (err) {
        if (attempt < opts.maxRetries && isTransientReset(err) && !ex.signal?.aborted) {
          await sleep(backoffMs(attempt), undefined, { signal: ex.signal });
          continue;
        }
        throw err;
      }
      const delay = retryDelay(answer, attempt, opts);
      if (delay === undefined) return answer;
      answer.discard();
      opts.log.debug({ kind: ex.kind, path: ex.url.pathname, status: answer.status, delay, attempt: attempt + 1, reqId: ex.reqId }, 'retrying upstream request');
      await sleep(delay, undefined, { signal: ex.signal });
    }
  };
}
