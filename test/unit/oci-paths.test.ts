import t from 'tap';
import { parseV2Path, canonicalRepository, parseImageReference, formatImageReference, isValidRegistryHost, isValidName } from '../../src/oci/paths.js';
import { OciError } from '../../src/oci/errors.js';

const D = 'sha256:' + 'a'.repeat(64);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof OciError ? e.code : 'NOT_OCI';
  }
  return undefined;
}

t.test('routes parse into typed values', async (t) => {
  t.same(parseV2Path('/v2/'), { kind: 'base' });
  t.same(parseV2Path('/v2'), { kind: 'base' });
  t.same(parseV2Path('/v2/library/nginx/manifests/1.27'), { kind: 'manifest', name: 'library/nginx', reference: '1.27', byDigest: false });
  t.same(parseV2Path(`/v2/a/b/c/manifests/${D}`), { kind: 'manifest', name: 'a/b/c', reference: D, byDigest: true });
  t.same(parseV2Path(`/v2/nginx/blobs/${D}`), { kind: 'blob', name: 'nginx', digest: D });
  t.same(parseV2Path('/v2/my-org/app_x/tags/list'), { kind: 'tags', name: 'my-org/app_x' });
  t.same(parseV2Path('/v2/app/blobs/uploads/'), { kind: 'upload', name: 'app' });
  t.same(parseV2Path('/v2/app/blobs/uploads/abc-123'), { kind: 'upload', name: 'app' });
  // a repository may itself be called "manifests" or "blobs"
  t.same(parseV2Path('/v2/manifests/manifests/v1'), { kind: 'manifest', name: 'manifests', reference: 'v1', byDigest: false });
});

t.test('bad names, tags and digests are 4xx OCI errors', async (t) => {
  t.equal(codeOf(() => parseV2Path('/v2/UPPER/manifests/x')), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/../etc/passwd/manifests/x')), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/%2e%2e/b/manifests/x')), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a//b/manifests/x')), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a\\b/manifests/x')), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path(`/v2/${'a'.repeat(256)}/manifests/x`)), 'NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/manifests/sha256:abc')), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/manifests/sha256:..%2f..%2fx')), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/blobs/sha512:' + 'a'.repeat(127))), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/blobs/sha512:' + 'A'.repeat(128))), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/blobs/' + 'a'.repeat(64))), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/blobs/sha256:' + 'A'.repeat(64))), 'DIGEST_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/unknown/x')), 'NOT_FOUND');
  t.equal(codeOf(() => parseV2Path('/etc/passwd')), 'NOT_FOUND');
});

t.test('a well-formed sha512 or sha384 digest is content berth cannot hold: unknown (404, as Distribution answers), so containerd asks its next host', async (t) => {
  for (const digest of ['sha512:' + 'a'.repeat(128), 'sha384:' + 'b'.repeat(96)]) {
    t.equal(codeOf(() => parseV2Path(`/v2/a/blobs/${digest}`)), 'BLOB_UNKNOWN', digest);
    t.equal(codeOf(() => parseV2Path(`/v2/a/manifests/${digest}`)), 'MANIFEST_UNKNOWN', digest);
  }
});

t.test('a reference that is neither a tag nor a digest is an unknown manifest (404, as Distribution and the conformance suite expect)', async (t) => {
  for (const ref of ['.INVALID_MANIFEST_NAME', '.hidden', 't'.repeat(129), 'bad%20tag', '..', '%2e%2e', '-x']) {
    const path = `/v2/library/x/manifests/${ref}`;
    let err: unknown;
    try {
      parseV2Path(path);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof OciError && err.code === 'MANIFEST_UNKNOWN' && err.status === 404, `${path.slice(0, 60)} -> 404 MANIFEST_UNKNOWN`);
  }
  t.equal(codeOf(() => parseV2Path('/v2/UPPER/manifests/.INVALID_MANIFEST_NAME')), 'NAME_INVALID', 'a bad name is still NAME_INVALID');
  t.equal(codeOf(() => parseV2Path('/v2/a/../../x/manifests/.bad')), 'NAME_INVALID');
});

t.test('docker hub short names are library/ names', async (t) => {
  t.equal(canonicalRepository('docker.io', 'nginx'), 'library/nginx');
  t.equal(canonicalRepository('docker.io', 'library/nginx'), 'library/nginx');
  t.equal(canonicalRepository('docker.io', 'bitnami/redis'), 'bitnami/redis');
  t.equal(canonicalRepository('ghcr.io', 'nginx'), 'nginx');
});

t.test('image references', async (t) => {
  t.same(parseImageReference('nginx'), { registry: 'docker.io', repository: 'library/nginx', tag: 'latest' });
  t.same(parseImageReference('nginx:1.27'), { registry: 'docker.io', repository: 'library/nginx', tag: '1.27' });
  t.same(parseImageReference(`docker.io/library/nginx@${D}`), { registry: 'docker.io', repository: 'library/nginx', digest: D });
  t.same(parseImageReference(`harbor.example.com:8443/proj/app:v1@${D}`), { registry: 'harbor.example.com:8443', repository: 'proj/app', tag: 'v1', digest: D });
  t.same(parseImageReference('localhost/app'), { registry: 'localhost', repository: 'app', tag: 'latest' });
  t.same(parseImageReference('index.docker.io/x/y:z'), { registry: 'docker.io', repository: 'x/y', tag: 'z' });
  t.equal(formatImageReference(parseImageReference('nginx:1.27')), 'docker.io/library/nginx:1.27');
  t.throws(() => parseImageReference('Nginx'), /invalid repository/);
  t.throws(() => parseImageReference('nginx@sha256:short'), /invalid digest/);
  t.throws(() => parseImageReference('nginx:bad tag'), /invalid/);
});

t.test('registry hosts and names', async (t) => {
  t.ok(isValidRegistryHost('docker.io'));
  t.ok(isValidRegistryHost('127.0.0.1:5000'));
  t.ok(isValidRegistryHost('harbor.example.com:8443'));
  t.notOk(isValidRegistryHost('evil.com/../x'));
  t.notOk(isValidRegistryHost('a b'));
  t.notOk(isValidRegistryHost('http://x'));
  t.notOk(isValidRegistryHost(''));
  t.notOk(isValidRegistryHost('x:123456'));
  t.ok(isValidName('a/b-c/d__e/f.g'));
  t.notOk(isValidName('a/-b'));
  t.notOk(isValidName(''));
});
