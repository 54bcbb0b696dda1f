/**
 * Hostile Range headers and name lengths (RFC 9110 §14.1.2, §14.2): the
 * numbers a client may send, however long their digit strings.
 */
import t from 'tap';
import { parseRange } from '../../src/oci/range.js';
import { canonicalRepository, MAX_NAME_LENGTH } from '../../src/oci/paths.js';
import { OciError } from '../../src/oci/errors.js';

const SIZE = 1000;

t.test('a last-pos past 2^53 is the rest of the blob (206), not unsatisfiable', async (t) => {
  t.same(parseRange('bytes=0-99999999999999999999', SIZE), { kind: 'range', start: 0, end: SIZE - 1 });
  t.same(parseRange('bytes=10-99999999999999999999', SIZE), { kind: 'range', start: 10, end: SIZE - 1 });
  t.same(parseRange('bytes=5000-99999999999999999999', SIZE), { kind: 'unsatisfiable' }, 'first-pos past the end stays 416');
});

t.test('leading zeros are the same number', async (t) => {
  t.same(parseRange('bytes=00000000000000000001-2', SIZE), { kind: 'range', start: 1, end: 2 });
  t.same(parseRange('bytes=0-00000000000000000002', SIZE), { kind: 'range', start: 0, end: 2 });
  t.same(parseRange('bytes=-00000000000000000002', SIZE), { kind: 'range', start: SIZE - 2, end: SIZE - 1 });
});

t.test('huge first-pos or suffix keep their answers', async (t) => {
  t.same(parseRange('bytes=99999999999999999999-', SIZE), { kind: 'unsatisfiable' });
  t.same(parseRange('bytes=-99999999999999999999', SIZE), { kind: 'range', start: 0, end: SIZE - 1 });
  t.same(parseRange('bytes=9007199254740993-9007199254740999', SIZE), { kind: 'unsatisfiable' });
});

t.test("a Docker Hub short name whose library/ form passes 255 characters is the client's NAME_INVALID, not the upstream's fault", async (t) => {
  const name = 'a'.repeat(MAX_NAME_LENGTH);
  let caught: unknown;
  try {
    canonicalRepository('docker.io', name);
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof OciError, 'an OciError');
  t.match(caught, { code: 'NAME_INVALID', status: 400 });
  t.equal(canonicalRepository('docker.io', 'a'.repeat(MAX_NAME_LENGTH - 'library/'.length)), `library/${'a'.repeat(MAX_NAME_LENGTH - 8)}`, 'exactly 255 passes');
  t.equal(canonicalRepository('quay.io', name), name, 'other registries add nothing');
});
