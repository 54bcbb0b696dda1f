/**
 * Credential guessing: distinct wrong passwords are limited per user name
 * (every pull reaches berth from 127.0.0.1, so an address says nothing), a
 * stale secret retried again and again is one failure, not a lock-out, and a
 * pair already verified in this process is never held up by the lock-out.
 */
import t from 'tap';
import { CredentialCache } from '../../src/harbor/credentials.js';
import { SignInLimit, SIGN_IN_FAILURES, SIGN_IN_WINDOW_MS } from '../../src/harbor/sign-in-limit.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { OciError } from '../../src/oci/errors.js';

t.test('a user name is locked after N failures within the window, until the window ends', async (t) => {
  t.ok(SIGN_IN_FAILURES >= 5 && SIGN_IN_FAILURES <= 20, `N = ${SIGN_IN_FAILURES}`);
  t.ok(SIGN_IN_WINDOW_MS >= 60_000, `window = ${SIGN_IN_WINDOW_MS} ms`);
  const limit = new SignInLimit({ failures: 3, windowMs: 10_000 });
  limit.fail('alice', 'g1', 1000);
  limit.fail('alice', 'g2', 2000);
  t.equal(limit.retryAfterMs('alice', 2000), 0, 'two failures: not yet');
  limit.fail('alice', 'g3', 3000);
  t.equal(limit.retryAfterMs('alice', 3000), 8000, 'the third locks the name until 10 s after the first');
  t.equal(limit.retryAfterMs('alice', 10_999), 1);
  t.equal(limit.retryAfterMs('bob', 3000), 0, 'other names are not affected');
  t.equal(limit.retryAfterMs('alice', 11_000), 0, 'the window is over');
  limit.fail('alice', 'g4', 11_000);
  t.equal(limit.retryAfterMs('alice', 11_000), 0, 'and its failures are forgotten: a new window starts');
});

t.test('one wrong password retried is one failure: a stale secret does not lock the name', async (t) => {
  const limit = new SignInLimit({ failures: 3, windowMs: 10_000 });
  for (let i = 0; i < 50; i++) limit.fail('robot$ci', 'old-secret', i);
  t.equal(limit.retryAfterMs('robot$ci', 50), 0, '50 retries of one old secret');
  limit.fail('robot$ci', 'guess-a', 60);
  t.equal(limit.retryAfterMs('robot$ci', 60), 0);
  limit.fail('robot$ci', 'guess-b', 70);
  t.equal(limit.retryAfterMs('robot$ci', 70), 9_930, 'three different passwords lock it');
});

t.test('failures spread wider than the window never lock', async (t) => {
  const limit = new SignInLimit({ failures: 3, windowMs: 10_000 });
  for (let at = 0; at < 100_000; at += 6000) limit.fail('slow', `guess-${at}`, at);
  t.equal(limit.retryAfterMs('slow', 100_000), 0);
});

t.test('memory is bounded: the least recently seen names go first', async (t) => {
  const limit = new SignInLimit({ failures: 1, windowMs: 10_000, names: 2 });
  limit.fail('a', 'x', 0);
  limit.fail('b', 'x', 0);
  t.ok(limit.retryAfterMs('a', 1) > 0, 'a locked (and seen again)');
  limit.fail('c', 'x', 1);
  t.equal(limit.size, 2);
  t.equal(limit.retryAfterMs('b', 2), 0, 'b dropped');
  t.ok(limit.retryAfterMs('a', 2) > 0, 'a kept: a locked name that keeps being tried stays recent');
  const long = new SignInLimit({ failures: 1, windowMs: 10_000 });
  long.fail('x'.repeat(4000), 'y'.repeat(4000), 0);
  t.ok(long.retryAfterMs('x'.repeat(4000), 1) > 0, 'a 4 KB user name is tracked (by its hash)');
  t.equal(long.retryAfterMs('x'.repeat(3999), 1), 0);
});

function lockedError(fn: () => unknown): OciError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof OciError) return e;
    throw e;
  }
  return undefined;
}

t.test('a locked name answers 429 TOOMANYREQUESTS with Retry-After, except for a pair already verified in this process', async (t) => {
  const metrics = new Metrics({ defaultMetrics: false });
  const cache = new CredentialCache({ ttlMs: 3_600_000, metrics });
  await cache.remember('secure', 'alice', 'alice-pw', 0);
  for (let i = 0; i < SIGN_IN_FAILURES; i++) {
    t.equal(lockedError(() => cache.admit('secure', 'alice', `guess-${i}`, 1000)), undefined, `attempt ${i + 1} is admitted`);
    cache.failed('alice', `guess-${i}`, 1000);
  }
  const err = lockedError(() => cache.admit('secure', 'alice', 'guess-next', 61_000));
  t.equal(err?.code, 'TOOMANYREQUESTS');
  t.equal(err?.status, 429);
  t.equal(err?.headers['Retry-After'], String(Math.ceil((1000 + SIGN_IN_WINDOW_MS - 61_000) / 1000)), 'Retry-After: seconds until the window ends');
  t.notMatch(err?.message ?? '', /alice-pw|guess/, 'no password in the message');
  t.equal(lockedError(() => cache.admit('secure', 'alice', 'alice-pw', 61_000)), undefined, "alice's own verified pair passes during the lock-out");
  t.equal(lockedError(() => cache.admit('other', 'alice', 'alice-pw', 61_000))?.code, 'TOOMANYREQUESTS', 'verified for another project only: locked');
  t.equal(lockedError(() => cache.admit('secure', 'bob', 'anything', 61_000)), undefined, 'another user name is not locked');
  t.equal(lockedError(() => cache.admit('secure', 'alice', 'guess-later', 1000 + SIGN_IN_WINDOW_MS)), undefined, 'after the window, guesses are admitted again');

  const text = (await metrics.render()).body;
  t.match(text, new RegExp(`berth_credential_failures_total ${SIGN_IN_FAILURES}\\b`));
  t.match(text, /berth_credential_lockouts_total 2\b/, 'each 429 counted');
});
