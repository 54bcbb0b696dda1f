import t from 'tap';
import { parseChallenges, pickChallenge, realmAllowed } from '../../src/upstream/challenge.js';
import { Circuit } from '../../src/upstream/circuit.js';
import { describeErrorBody, isTransientReset, toUpstreamError } from '../../src/upstream/errors.js';
import { contentLength, parseContentRange, parseRetryAfter } from '../../src/upstream/headers.js';
import { backoffMs } from '../../src/upstream/retry.js';
import { cacheTtlMs } from '../../src/upstream/token.js';
import { UpstreamError } from '../../src/upstream/types.js';

t.test('parseChallenges reads Docker Hub and Harbor challenges', async (t) => {
  const [c] = parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"');
  t.equal(c?.scheme, 'bearer');
  t.equal(c?.params.get('realm'), 'https://auth.docker.io/token');
  t.equal(c?.params.get('service'), 'registry.docker.io');
  t.equal(c?.params.get('scope'), 'repository:library/nginx:pull');

  const many = parseChallenges(['Basic realm="harbor"', 'Bearer realm="https://h/service/token", service=harbor-registry']);
  t.same(
    many.map((x) => x.scheme),
    ['basic', 'bearer'],
  );
  t.equal(many[1]?.params.get('service'), 'harbor-registry', 'unquoted token values');
  t.equal(pickChallenge(many)?.scheme, 'bearer', 'Bearer preferred over Basic');
  t.equal(pickChallenge(parseChallenges('Basic realm="x"'))?.scheme, 'basic');
  t.equal(pickChallenge(parseChallenges('Bearer service="no-realm"')), undefined, 'Bearer without realm is unusable');
});

t.test('parseChallenges copes with escapes, case and junk', async (t) => {
  const [c] = parseChallenges('BEARER Realm="a\\"b", Scope="repository:x:pull,push"');
  t.equal(c?.scheme, 'bearer');
  t.equal(c?.params.get('realm'), 'a"b');
  t.equal(c?.params.get('scope'), 'repository:x:pull,push', 'commas inside quotes stay in the value');
  t.same(parseChallenges(undefined), []);
  t.same(parseChallenges(''), []);
  t.doesNotThrow(() => parseChallenges('=== ,, "unterminated'));
});

t.test('realmAllowed: same host or registrable domain only', async (t) => {
  const hub = new URL('https://registry-1.docker.io');
  t.ok(realmAllowed(new URL('https://auth.docker.io/token'), hub), 'sibling under docker.io');
  t.ok(realmAllowed(new URL('https://registry-1.docker.io:8443/token'), hub), 'same host, other port');
  t.notOk(realmAllowed(new URL('https://evil.example/token'), hub), 'foreign domain');
  t.notOk(realmAllowed(new URL('https://docker.io.evil.example/token'), hub), 'suffix trick');
  t.notOk(realmAllowed(new URL('http://auth.docker.io/token'), hub), 'no plain-HTTP realm for an HTTPS upstream');
  const local = new URL('http://127.0.0.1:5000');
  t.ok(realmAllowed(new URL('http://127.0.0.1:5001/token'), local));
  t.notOk(realmAllowed(new URL('http://localhost:5001/token'), local), 'IP vs name');
  t.notOk(realmAllowed(new URL('http://10.0.0.1/token'), new URL('http://10.0.0.2')), 'IP literals are not domains');
});

t.test('parseRetryAfter: seconds and HTTP dates', async (t) => {
  t.equal(parseRetryAfter('3'), 3000);
  t.equal(parseRetryAfter(' 0 '), 0);
  const now = Date.parse('2026-01-01T00:00:00Z');
  t.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now), 10_000);
  t.equal(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now), 0, 'a past date means now');
  t.equal(parseRetryAfter('soon'), undefined);
  t.equal(parseRetryAfter(undefined), undefined);
});

t.test('parseContentRange and contentLength', async (t) => {
  t.same(parseContentRange('bytes 5-9/10'), { first: 5, last: 9, total: 10 });
  t.same(parseContentRange('bytes 5-9/*'), { first: 5, last: 9, total: undefined });
  t.equal(parseContentRange('bytes 9-5/10'), undefined);
  t.equal(parseContentRange('bytes 5-10/10'), undefined);
  t.equal(parseContentRange('bytes */10'), undefined);
  t.equal(parseContentRange(undefined), undefined);
  t.equal(contentLength({ 'content-length': '42' }), 42);
  t.equal(contentLength({ 'content-length': '-1' }), undefined);
  t.equal(contentLength({}), undefined);
});

t.test('tokens are cached until shortly before they expire', async (t) => {
  t.equal(cacheTtlMs(300), 270_000, 'Docker Hub: 5 min tokens renewed 30 s early');
  t.equal(cacheTtlMs(60), 54_000, 'default lifetime');
  t.equal(cacheTtlMs(3600), 3_570_000, 'margin capped at 30 s');
  t.equal(cacheTtlMs(0.5), 450, 'short-lived tokens are not kept past their life');
});

t.test('backoff is short and bounded', async (t) => {
  t.same([0, 1, 2, 10].map(backoffMs), [100, 300, 900, 2000]);
});

t.test('toUpstreamError maps by code', async (t) => {
  const withCode = (code: string, message = code): Error => Object.assign(new Error(message), { code });
  t.equal(toUpstreamError(withCode('ECONNREFUSED'), 'r').code, 'UPSTREAM_UNREACHABLE');
  t.equal(toUpstreamError(withCode('ENOTFOUND'), 'r').code, 'UPSTREAM_UNREACHABLE');
  t.equal(toUpstreamError(withCode('UND_ERR_CONNECT_TIMEOUT'), 'r').code, 'UPSTREAM_TIMEOUT');
  t.equal(toUpstreamError(withCode('UND_ERR_HEADERS_TIMEOUT'), 'r').code, 'UPSTREAM_TIMEOUT');
  t.equal(toUpstreamError(withCode('UND_ERR_BODY_TIMEOUT'), 'r').code, 'UPSTREAM_TIMEOUT');
  t.equal(toUpstreamError(withCode('HPE_INVALID_CONSTANT'), 'r').code, 'UPSTREAM_PROTOCOL');
  for (const code of ['DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'SELF_SIGNED_CERT_IN_CHAIN', 'ERR_SSL_WRONG_VERSION_NUMBER']) {
    const e = toUpstreamError(withCode(code, 'tls said no'), 'r');
    t.equal(e.code, 'UPSTREAM_TLS', code);
    t.match(e.message, code, 'reason named in the message');
  }
  const agg = new AggregateError([withCode('ECONNREFUSED')], 'all addresses failed');
  t.equal(toUpstreamError(agg, 'r').code, 'UPSTREAM_UNREACHABLE');
  const same = new UpstreamError('UPSTREAM_AUTH', 'r', 'x');
  t.equal(toUpstreamError(same, 'r'), same, 'already mapped errors pass through');
  t.ok(isTransientReset(toUpstreamError(withCode('ECONNRESET'), 'r')));
  t.notOk(isTransientReset(toUpstreamError(withCode('ECONNREFUSED'), 'r')));
});

t.test('describeErrorBody reads the OCI envelope only, and only its code', async (t) => {
  const body = Buffer.from(JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] }));
  t.equal(describeErrorBody(body), 'DENIED', "the code only: an upstream's text may echo a token");
  t.equal(describeErrorBody(Buffer.from(JSON.stringify({ errors: [{ code: 'Bearer abc.def', message: 'x' }] }))), '', 'a code that is not a code is dropped');
  t.equal(describeErrorBody(Buffer.from('<html>gateway</html>')), '');
  t.equal(describeErrorBody(Buffer.alloc(0)), '');
});

t.test('circuit opens after maxFails, probes once after failTimeout, closes on success', async (t) => {
  let now = 1_000;
  const c = new Circuit({ registry: 'r', maxFails: 3, failTimeoutMs: 10_000, now: () => now });
  const down = new UpstreamError('UPSTREAM_TIMEOUT', 'r', 'timed out');
  for (let i = 0; i < 3; i++) {
    c.admit();
    c.failed(down);
  }
  t.equal(c.health().up, false);
  t.equal(c.health().consecutiveFailures, 3);
  t.throws(() => c.admit(), { code: 'UPSTREAM_UNREACHABLE', message: /circuit open/ });

  now += 10_000;
  t.doesNotThrow(() => c.admit(), 'one probe after failTimeout');
  t.throws(() => c.admit(), { message: /probe in flight/ }, 'others keep failing fast meanwhile');
  c.failed(down);
  t.throws(() => c.admit(), 'failed probe reopens');
  now += 10_000;
  c.admit();
  c.released();
  c.admit();
  c.succeeded();
  t.equal(c.health().up, true);
  t.equal(c.health().consecutiveFailures, 0);
  t.equal(c.health().lastOkAt, now);
  t.doesNotThrow(() => c.admit());
});

t.test('circuit ignores failures that prove the upstream answered', async (t) => {
  const c = new Circuit({ registry: 'r', maxFails: 1, failTimeoutMs: 10_000 });
  c.failed(new UpstreamError('UPSTREAM_STATUS', 'r', '500'));
  t.equal(c.health().up, true);
  c.failed(new UpstreamError('UPSTREAM_TLS', 'r', 'bad cert'));
  t.equal(c.health().up, false, 'TLS failures count: nothing usable is reachable');
});
