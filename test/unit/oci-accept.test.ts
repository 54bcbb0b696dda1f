/**
 * Accept negotiation for manifests (src/oci/mediatypes.ts): what a client's Accept admits, what
 * berth asks an upstream for, which answers Distribution would refuse, and which media type an
 * upstream's answer is stored under. Distribution 2.8 reads no q-values, and berth answers as it does.
 */
import t from 'tap';
import { DEFAULT_ACCEPT, MEDIA_TYPES, acceptAdmitsManifest, acceptAllows, acceptsIndex, pickMediaType, upstreamAccept } from '../../src/oci/mediatypes.js';

const { ociManifest, ociIndex, dockerManifest, dockerManifestList } = MEDIA_TYPES;

t.test('acceptAllows: an absent Accept and the wildcards admit everything, else only the types named', async (t) => {
  for (const absent of [undefined, null, '', '   ']) t.ok(acceptAllows(absent, ociIndex), `absent Accept ${JSON.stringify(absent)} admits`);
  t.ok(acceptAllows('*/*', ociManifest), '*/*');
  t.ok(acceptAllows('application/*', dockerManifest), 'application/*');
  t.ok(acceptAllows(`${dockerManifest}, */*;q=0.1`, ociIndex), 'a low-q wildcard after a named type still admits');
  t.notOk(acceptAllows('text/*', ociManifest), 'text/* is no wildcard for an application type');
  t.notOk(acceptAllows('application/json', ociManifest), 'another type only');
  t.ok(acceptAllows(`${dockerManifest},${ociManifest}`, ociManifest), 'comma without a space');
  t.ok(acceptAllows(`  ${ociManifest.toUpperCase()} ; charset=utf-8 `, ociManifest), 'case, parameters and white space do not matter');
  t.ok(acceptAllows(ociManifest, `${ociManifest}; charset=utf-8`), 'nor on the media type asked about');
  t.notOk(acceptAllows(dockerManifest, ociIndex));
});

t.test('acceptAllows: q-values are not read, as Distribution reads none', async (t) => {
  t.ok(acceptAllows(`${ociIndex};q=0.5`, ociIndex), 'q=0.5');
  t.ok(acceptAllows(`${ociIndex};q=0`, ociIndex), 'even q=0 names the type for Distribution');
  t.notOk(acceptAllows(`${dockerManifest};q=1`, ociIndex), 'a high q on another type admits nothing more');
});

t.test('upstreamAccept: the default list for an absent or wildcard Accept, a narrow one passed through', async (t) => {
  t.equal(DEFAULT_ACCEPT, `${ociIndex}, ${dockerManifestList}, ${ociManifest}, ${dockerManifest}`, 'indexes first, every type named');
  for (const absent of [undefined, null, '', ' \t ']) t.equal(upstreamAccept(absent), DEFAULT_ACCEPT, `absent Accept ${JSON.stringify(absent)}`);
  t.equal(upstreamAccept('*/*'), `${DEFAULT_ACCEPT}, */*`, 'a wildcard is widened and kept');
  t.equal(upstreamAccept(`${dockerManifest}, application/*;q=0.2`), `${DEFAULT_ACCEPT}, ${dockerManifest}, application/*;q=0.2`, 'a wildcard among named types widens too');
  t.equal(upstreamAccept(`${dockerManifest};q=0.9, ${ociManifest}`), `${dockerManifest};q=0.9, ${ociManifest}`, 'a narrow Accept passes through, q-values and all');
  t.equal(upstreamAccept('text/*'), 'text/*', 'text/* is not widened');
});

t.test('acceptsIndex: either index type, or a wildcard, or no Accept', async (t) => {
  t.ok(acceptsIndex(undefined));
  t.ok(acceptsIndex('*/*'));
  t.ok(acceptsIndex(ociIndex));
  t.ok(acceptsIndex(`${dockerManifest}, ${dockerManifestList};q=0.1`));
  t.notOk(acceptsIndex(`${ociManifest}, ${dockerManifest}`), 'manifests only');
});

t.test('acceptAdmitsManifest: an OCI type only when admitted, a Docker type whatever the Accept', async (t) => {
  t.notOk(acceptAdmitsManifest(dockerManifest, ociManifest), 'OCI manifest, Accept names only Docker');
  t.notOk(acceptAdmitsManifest(ociManifest, ociIndex), 'OCI index, Accept names only the OCI manifest');
  t.notOk(acceptAdmitsManifest(dockerManifest, `${ociIndex}; charset=utf-8`), 'parameters on the stored type do not hide it');
  t.ok(acceptAdmitsManifest(`${ociManifest};q=0.5`, ociManifest), 'named with a q-value');
  t.ok(acceptAdmitsManifest('*/*', ociIndex), 'wildcard');
  t.ok(acceptAdmitsManifest(undefined, ociIndex), 'no Accept');
  t.ok(acceptAdmitsManifest(ociManifest, dockerManifest), 'a Docker manifest is served whatever the Accept');
  t.ok(acceptAdmitsManifest(ociIndex, dockerManifestList), 'a Docker list too');
});

t.test('pickMediaType: a real Content-Type wins; a generic one gives way to the manifest\'s own field', async (t) => {
  const declaring = (mediaType: string): Buffer => Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType }));
  t.equal(pickMediaType(`${dockerManifest}; charset=utf-8`, declaring(ociIndex)), dockerManifest, 'the header, without parameters, over the body');
  for (const generic of ['application/json', 'text/plain; charset=utf-8', 'application/octet-stream', '']) {
    t.equal(pickMediaType(generic, declaring(dockerManifestList)), dockerManifestList, `${JSON.stringify(generic)}: the body's field`);
  }
  t.equal(pickMediaType('application/json', Buffer.from('{"schemaVersion":2}')), 'application/json', 'no field: the generic header stays');
  t.equal(pickMediaType('', Buffer.from('{"schemaVersion":2}')), ociManifest, 'neither: an OCI manifest');
  t.equal(pickMediaType('', Buffer.from('not json')), ociManifest, 'not JSON: an OCI manifest');
});
