import t from 'tap';
import { parseRange, contentRange } from '../../src/oci/range.js';
import { acceptAllows, baseMediaType, declaredMediaType, isIndexMediaType, MEDIA_TYPES, DEFAULT_ACCEPT, upstreamAccept } from '../../src/oci/mediatypes.js';
import { isDigest, sha256, digestHex, looksLikeDigest } from '../../src/oci/digest.js';
import { manifestChildren, parseManifest } from '../../src/oci/manifest.js';
import { OciError, renderError } from '../../src/oci/errors.js';

t.test('ranges follow RFC 9110', async (t) => {
  t.same(parseRange(undefined, 100), { kind: 'none' });
  t.same(parseRange('bytes=0-9', 100), { kind: 'range', start: 0, end: 9 });
  t.same(parseRange('bytes=90-', 100), { kind: 'range', start: 90, end: 99 });
  t.same(parseRange('bytes=90-500', 100), { kind: 'range', start: 90, end: 99 });
  t.same(parseRange('bytes=-10', 100), { kind: 'range', start: 90, end: 99 });
  t.same(parseRange('bytes=-1000', 100), { kind: 'range', start: 0, end: 99 });
  t.same(parseRange('bytes=100-', 100), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=-0', 100), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=5-2', 100), { kind: 'none' }, 'invalid range ignored');
  t.same(parseRange('items=0-1', 100), { kind: 'none' });
  t.same(parseRange('bytes=0-1,5-6', 100), { kind: 'none' }, 'multi-range answered whole');
  t.same(parseRange('bytes=-', 100), { kind: 'none' });
  t.same(parseRange('bytes=99999999999999999999-', 100), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=' + '1'.repeat(300), 100), { kind: 'none' });
  t.equal(contentRange(0, 9, 100), 'bytes 0-9/100');
});

t.test('media types and Accept', async (t) => {
  t.equal(baseMediaType('application/json; charset=utf-8'), 'application/json');
  t.ok(acceptAllows(undefined, MEDIA_TYPES.ociIndex));
  t.ok(acceptAllows('*/*', MEDIA_TYPES.ociIndex));
  t.ok(acceptAllows(`${MEDIA_TYPES.dockerManifest}, ${MEDIA_TYPES.ociIndex};q=0.5`, MEDIA_TYPES.ociIndex));
  t.notOk(acceptAllows(MEDIA_TYPES.dockerManifest, MEDIA_TYPES.ociIndex));
  t.ok(isIndexMediaType(MEDIA_TYPES.dockerManifestList));
  t.notOk(isIndexMediaType(MEDIA_TYPES.ociManifest));
  t.equal(declaredMediaType(Buffer.from(JSON.stringify({ mediaType: MEDIA_TYPES.ociIndex }))), MEDIA_TYPES.ociIndex);
  t.equal(declaredMediaType(Buffer.from('not json')), undefined);
  // Distribution 2.8 404s an OCI manifest unless OCI types are named: widen wildcards.
  t.equal(upstreamAccept(undefined), DEFAULT_ACCEPT);
  t.equal(upstreamAccept('*/*'), `${DEFAULT_ACCEPT}, */*`);
  t.equal(upstreamAccept(MEDIA_TYPES.dockerManifest), MEDIA_TYPES.dockerManifest, 'a narrow Accept passes through');
});

t.test('digests', async (t) => {
  const d = sha256('hello');
  t.equal(d, 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
  t.ok(isDigest(d));
  t.notOk(isDigest(d.toUpperCase()));
  t.ok(looksLikeDigest('sha512:abc'));
  t.throws(() => digestHex('sha256:../../etc'));
});

t.test('manifest children', async (t) => {
  const a = sha256('a');
  const b = sha256('b');
  const c = sha256('c');
  const img = Buffer.from(JSON.stringify({ config: { digest: a, size: 1 }, layers: [{ digest: b }, { digest: c }, { digest: 'bogus' }] }));
  t.same(manifestChildren(img), [a, b, c]);
  const idx = Buffer.from(JSON.stringify({ manifests: [{ digest: a, platform: { os: 'linux', architecture: 'amd64' } }] }));
  t.same(manifestChildren(idx), [a]);
  t.same(parseManifest(idx).manifests[0]?.platform, { os: 'linux', architecture: 'amd64' });
  t.same(manifestChildren(Buffer.from('[]')), []);
  t.same(manifestChildren(Buffer.from('{')), []);
});

t.test('errors render into the OCI envelope, unknown ones without their message', async (t) => {
  const r = renderError(new OciError('BLOB_UNKNOWN', 'nope', { digest: 'x' }));
  t.equal(r.status, 404);
  t.same(r.body, { errors: [{ code: 'BLOB_UNKNOWN', message: 'nope', detail: { digest: 'x' } }] });
  const u = renderError(new Error('secret internals at /root/x.ts:12'));
  t.equal(u.status, 500);
  t.same(u.body, { errors: [{ code: 'UNKNOWN', message: 'unknown error' }] });
  t.equal(renderError(new OciError('PROJECTPOLICYVIOLATION')).status, 412);
  t.equal(renderError(new OciError('UNSUPPORTED')).status, 405);
});
