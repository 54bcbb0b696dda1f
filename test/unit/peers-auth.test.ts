/**
 * Peer request signing: a correct signature passes once; anything signed that changes, a stale or
 * future time, a replayed nonce, another key or a missing header is refused with its reason; and
 * the site key file is read as trimmed bytes with errors that name the file, never the key.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  DEFAULT_WINDOW_MS,
  PEER_NONCE_HEADER,
  PEER_SIGNATURE_HEADER,
  PEER_TIME_HEADER,
  ReplayGuard,
  SiteKeyError,
  loadSiteKey,
  signPeerRequest,
  verifyPeerRequest,
  type VerifyInput,
} from '../../src/peers/auth.js';

const KEY = Buffer.from('k'.repeat(16) + 'e'.repeat(16) + 'y'.repeat(12));
const OTHER_KEY = Buffer.from('o'.repeat(44));
const NOW = Date.UTC(2026, 7, 21, 12, 0, 0);
const TARGET = '/v2/library/nginx/blobs/sha256:' + 'a'.repeat(64) + '?ns=docker.io';

function signed(over: Partial<VerifyInput> = {}, nonce?: string): VerifyInput {
  const headers = signPeerRequest(KEY, { method: 'GET', path: TARGET, now: NOW, ...(nonce === undefined ? {} : { nonce }) });
  return { method: 'GET', path: TARGET, headers, now: NOW, ...over };
}

t.test('a correctly signed request passes', async (t) => {
  const h = signPeerRequest(KEY, { method: 'GET', path: TARGET, now: NOW });
  t.equal(h[PEER_TIME_HEADER], String(NOW));
  t.match(h[PEER_NONCE_HEADER], /^[A-Za-z0-9_-]{22}$/, '16 random bytes');
  t.match(h[PEER_SIGNATURE_HEADER], /^[A-Za-z0-9_-]{43}$/);
  t.same(verifyPeerRequest(KEY, { method: 'GET', path: TARGET, headers: h, now: NOW }, new ReplayGuard()), { ok: true });

  const again = signPeerRequest(KEY, { method: 'GET', path: TARGET, now: NOW });
  t.not(again[PEER_NONCE_HEADER], h[PEER_NONCE_HEADER], 'a fresh nonce per request');

  const fetchHeaders = new Headers(signPeerRequest(KEY, { method: 'HEAD', path: '/v2/', now: NOW }));
  t.same(verifyPeerRequest(KEY, { method: 'HEAD', path: '/v2/', headers: fetchHeaders, now: NOW }, new ReplayGuard()), { ok: true }, 'fetch Headers work too');
});

t.test('the signature is fixed by key, method, target, time and nonce', async (t) => {
  const a = signPeerRequest(KEY, { method: 'GET', path: TARGET, now: NOW, nonce: 'n'.repeat(22) });
  const b = signPeerRequest(KEY, { method: 'GET', path: TARGET, now: NOW, nonce: 'n'.repeat(22) });
  t.same(a, b, 'deterministic for a pinned nonce');
  // A known answer, so signer and verifier cannot drift together unnoticed.
  const { createHmac } = await import('node:crypto');
  const expected = createHmac('sha256', KEY).update(`berth-peer-v1\nGET\n${TARGET}\n${NOW}\n${'n'.repeat(22)}`).digest('base64url');
  t.equal(a[PEER_SIGNATURE_HEADER], expected);
});

t.test('every tamper is refused as a bad signature', async (t) => {
  const cases: Array<[string, (v: VerifyInput) => VerifyInput]> = [
    ['method', (v) => ({ ...v, method: 'HEAD' })],
    ['path', (v) => ({ ...v, path: v.path.replace('nginx', 'nginy') })],
    ['query', (v) => ({ ...v, path: v.path.replace('docker.io', 'quay.io') })],
    ['query dropped', (v) => ({ ...v, path: v.path.split('?')[0]! })],
    ['time', (v) => ({ ...v, headers: { ...v.headers, [PEER_TIME_HEADER]: String(NOW + 1) } })],
    ['nonce', (v) => ({ ...v, headers: { ...v.headers, [PEER_NONCE_HEADER]: 'm'.repeat(22) } })],
    [
      'signature byte',
      (v) => {
        const h = v.headers as Record<string, string>;
        const sig = Buffer.from(h[PEER_SIGNATURE_HEADER]!, 'base64url');
        sig[7] = sig[7]! ^ 0x01;
        return { ...v, headers: { ...h, [PEER_SIGNATURE_HEADER]: sig.toString('base64url') } };
      },
    ],
  ];
  for (const [what, tamper] of cases) {
    const res = verifyPeerRequest(KEY, tamper(signed({}, 'n'.repeat(22))), new ReplayGuard());
    t.match(res, { ok: false, reason: 'bad-signature' }, what);
  }
  t.match(verifyPeerRequest(OTHER_KEY, signed(), new ReplayGuard()), { ok: false, reason: 'bad-signature' }, 'another key');
});

t.test('only the canonical spelling of a signature is accepted', async (t) => {
  const v = signed();
  const h = v.headers as Record<string, string>;
  const sig = h[PEER_SIGNATURE_HEADER]!;
  // The last of 43 characters holds 4 bits of the MAC and 2 spare bits; flip a spare bit.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = alphabet.indexOf(sig.at(-1)!);
  const variant = sig.slice(0, -1) + alphabet[last ^ 0x01]!;
  t.same(Buffer.from(variant, 'base64url'), Buffer.from(sig, 'base64url'), 'a decoder reads both the same');
  t.match(verifyPeerRequest(KEY, { ...v, headers: { ...h, [PEER_SIGNATURE_HEADER]: variant } }, new ReplayGuard()), { ok: false, reason: 'bad-signature' });
});

t.test('missing and malformed headers', async (t) => {
  const guard = new ReplayGuard();
  t.match(verifyPeerRequest(KEY, { method: 'GET', path: TARGET, headers: {}, now: NOW }, guard), { ok: false, reason: 'missing' }, 'unsigned');
  for (const name of [PEER_TIME_HEADER, PEER_NONCE_HEADER, PEER_SIGNATURE_HEADER]) {
    const v = signed();
    const headers = { ...(v.headers as Record<string, string>) };
    delete headers[name];
    t.match(verifyPeerRequest(KEY, { ...v, headers }, guard), { ok: false, reason: 'missing' }, `without ${name}`);
  }
  const bad: Array<[string, string | string[]]> = [
    [PEER_TIME_HEADER, 'yesterday'],
    [PEER_TIME_HEADER, '-5'],
    [PEER_TIME_HEADER, '1e12'],
    [PEER_TIME_HEADER, [String(NOW), String(NOW)]],
    [PEER_NONCE_HEADER, 'short'],
    [PEER_NONCE_HEADER, 'has spaces in it, see'],
    [PEER_NONCE_HEADER, 'x'.repeat(129)],
    [PEER_SIGNATURE_HEADER, 'A'.repeat(42)],
    [PEER_SIGNATURE_HEADER, 'A'.repeat(44)],
    [PEER_SIGNATURE_HEADER, '+'.repeat(43)],
    [PEER_SIGNATURE_HEADER, ''],
  ];
  for (const [name, value] of bad) {
    const v = signed();
    const res = verifyPeerRequest(KEY, { ...v, headers: { ...(v.headers as Record<string, string>), [name]: value } }, guard);
    t.match(res, { ok: false, reason: 'malformed' }, `${name}: ${JSON.stringify(value)}`);
  }
  t.match(verifyPeerRequest(KEY, signed({ path: '/v2/\nGET' }), guard), { ok: false, reason: 'malformed' }, 'a newline in the target');
  t.match(verifyPeerRequest(KEY, signed({ path: 'v2/' }), guard), { ok: false, reason: 'malformed' }, 'a target that is not a path');
  t.equal(guard.size, 0, 'nothing refused was recorded');
});

t.test('clock skew inside the window passes, outside is stale', async (t) => {
  const guard = new ReplayGuard({ windowMs: 5_000 });
  const at = (now: number): VerifyInput => signed({ now });
  t.same(verifyPeerRequest(KEY, at(NOW + 5_000), guard), { ok: true }, 'signer 5 s behind: edge of the window');
  t.same(verifyPeerRequest(KEY, at(NOW - 5_000), guard), { ok: true }, 'signer 5 s ahead: edge of the window');
  t.same(verifyPeerRequest(KEY, at(NOW + 1_234), guard), { ok: true });
  const late = verifyPeerRequest(KEY, at(NOW + 5_001), guard);
  t.match(late, { ok: false, reason: 'stale' }, 'a replay past the window');
  t.match(late, { detail: /window ±5 s/ });
  t.match(verifyPeerRequest(KEY, at(NOW - 5_001), guard), { ok: false, reason: 'stale' }, 'from the future');
  t.match(verifyPeerRequest(KEY, at(NOW + 3_600_000), new ReplayGuard()), { ok: false, reason: 'stale' }, 'an hour late, default window');
  t.equal(new ReplayGuard().windowMs, DEFAULT_WINDOW_MS);
});

t.test('a replayed nonce is refused within the window', async (t) => {
  const guard = new ReplayGuard();
  const first = signed();
  t.same(verifyPeerRequest(KEY, first, guard), { ok: true });
  t.match(verifyPeerRequest(KEY, first, guard), { ok: false, reason: 'replayed' }, 'the same request again');
  t.match(verifyPeerRequest(KEY, { ...first, now: NOW + 20_000 }, guard), { ok: false, reason: 'replayed' }, '20 s later');
  t.same(verifyPeerRequest(KEY, signed(), guard), { ok: true }, 'a new request with a new nonce');

  const other = new ReplayGuard();
  t.same(verifyPeerRequest(KEY, first, other), { ok: true }, 'the guard is per listener');

  // A forged request with a fresh nonce must not burn that nonce for the genuine one.
  const genuine = signed({}, 'g'.repeat(22));
  const forged = { ...genuine, headers: { ...(genuine.headers as Record<string, string>), [PEER_SIGNATURE_HEADER]: 'A'.repeat(43) } };
  const g2 = new ReplayGuard();
  t.match(verifyPeerRequest(KEY, forged, g2), { ok: false, reason: 'bad-signature' });
  t.same(verifyPeerRequest(KEY, genuine, g2), { ok: true }, 'the genuine request still passes');
});

t.test('the replay guard is bounded', async (t) => {
  const guard = new ReplayGuard({ max: 3 });
  for (const n of ['a', 'b', 'c', 'd']) t.ok(guard.admit(n.repeat(22)));
  t.equal(guard.size, 3);
  t.notOk(guard.admit('d'.repeat(22)));
  t.throws(() => new ReplayGuard({ windowMs: 0 }), RangeError);
});

t.test('the signer refuses what it cannot sign unambiguously', async (t) => {
  t.throws(() => signPeerRequest(KEY, { method: 'GET\n', path: '/v2/', now: NOW }), TypeError);
  t.throws(() => signPeerRequest(KEY, { method: 'GET', path: '/v2/\n', now: NOW }), TypeError);
  t.throws(() => signPeerRequest(KEY, { method: 'GET', path: 'http://x/v2/', now: NOW }), TypeError);
  t.throws(() => signPeerRequest(KEY, { method: 'GET', path: '/v2/', now: 1.5 }), TypeError);
  t.throws(() => signPeerRequest(KEY, { method: 'GET', path: '/v2/', now: NOW, nonce: 'tiny' }), TypeError);
});

t.test('loadSiteKey reads trimmed bytes and explains what is wrong', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-peers-auth-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string | Buffer): string => {
    const p = join(dir, name);
    writeFileSync(p, content);
    return p;
  };

  const b64 = randomBytes(32).toString('base64');
  t.same(loadSiteKey(file('b64', `${b64}\n`)), Buffer.from(b64), 'base64 text with its newline: the 44 characters');
  t.same(loadSiteKey(file('spaced', `  \t${b64}\r\n\n`)), Buffer.from(b64), 'surrounding whitespace ignored');
  const raw = Buffer.concat([Buffer.from([0xff, 0x00]), randomBytes(30), Buffer.from([0x80, 0xc3])]);
  t.same(loadSiteKey(file('raw', raw)), raw, 'raw bytes that are not UTF-8 are kept as they are');
  t.same(loadSiteKey(file('inner', `${'a'.repeat(16)} ${'b'.repeat(16)}`)).length, 33, 'inner whitespace is key material');

  const secret = 'S3cr3t'.repeat(5); // 30 bytes
  const short = file('short', `${secret}\n`);
  const err = t.throws(() => loadSiteKey(short)) as SiteKeyError;
  t.equal(err.code, 'ESITEKEY');
  t.equal(err.file, short);
  t.match(err.message, short, 'names the file');
  t.match(err.message, /holds 30 bytes.*at least 32/);
  t.notMatch(err.message, 'S3cr3t', 'never shows the key');

  t.throws(() => loadSiteKey(file('empty', '')), { code: 'ESITEKEY', message: /is empty/ });
  t.throws(() => loadSiteKey(file('blank', ' \n\t\n')), { code: 'ESITEKEY', message: /is empty/ }, 'only whitespace');
  t.throws(() => loadSiteKey(join(dir, 'absent')), { code: 'ESITEKEY', message: /absent: does not exist/ });
  mkdirSync(join(dir, 'dir'));
  t.throws(() => loadSiteKey(join(dir, 'dir')), { code: 'ESITEKEY', message: /is a directory/ });

  const locked = file('locked', b64);
  chmodSync(locked, 0o000);
  if (process.getuid?.() === 0) t.pass('running as root: a mode-000 file is still readable, not tested');
  else t.throws(() => loadSiteKey(locked), { code: 'ESITEKEY', message: /not readable/ });
});
