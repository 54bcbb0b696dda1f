/**
 * berth_digest_mismatches_total tells where bad bytes came from: `source`
 * is "upstream" or "peer" (a site peer), beside the `upstream` the content
 * belongs to. Real content store, in-memory upstream and peer.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { BlobCache } from '../../src/cache/blobs.js';
import type { Site } from '../../src/cache/site.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { UpstreamError, type BlobAnswer, type ManifestAnswer, type RegistryClient } from '../../src/upstream/types.js';
import { FakeUpstream, counterValue, logger, readAll, tempStore, testMirror } from '../harness/cache-fakes.js';

/** Serves `bytes` with one byte flipped, under whatever digest it is asked for. */
class Flipper extends FakeUpstream {
  constructor(name: string, private readonly bytes: Buffer) {
    super(name);
  }

  override async getBlob(repository: string, digest: string): Promise<BlobAnswer | null> {
    this.log.push(`getBlob ${repository} ${digest}`);
    if (this.down) throw new UpstreamError('UPSTREAM_UNREACHABLE', this.registry, 'connect ECONNREFUSED 127.0.0.1:1');
    const wrong = Buffer.from(this.bytes);
    wrong[1000] = wrong[1000]! ^ 0xff;
    return { status: 200, offset: 0, size: wrong.length, body: Readable.from([wrong]) };
  }

  override async getManifest(repository: string, reference: string): Promise<ManifestAnswer | null> {
    this.log.push(`getManifest ${repository} ${reference}`);
    if (this.down) throw new UpstreamError('UPSTREAM_UNREACHABLE', this.registry, 'connect ECONNREFUSED 127.0.0.1:1');
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: {}, layers: [], flipped: true }));
    return { digest: sha256(body), mediaType: MEDIA_TYPES.ociManifest, size: body.length, body };
  }
}

const siteOf = (peer: RegistryClient): Site => ({ blobPeers: () => ({ before: [peer], after: [] }), manifestPeers: () => [peer], received: () => undefined });

/** Reads a blob to its end; resolves with the error the body ended with, if any. */
async function pull(cache: BlobCache, client: RegistryClient, digest: string): Promise<unknown> {
  try {
    const h = await cache.get({ client, repository: 'library/a', digest, head: false });
    await readAll(h.open!(0, h.size - 1));
    return null;
  } catch (err) {
    return err;
  }
}

t.test("a site peer's bad bytes count under source=\"peer\"", async (t) => {
  const { store, metrics } = await tempStore(t);
  const data = randomBytes(200_000);
  const up = new FakeUpstream('docker.io');
  const d = up.putBlob('library/a', data);
  const peer = new Flipper('127.0.0.2:5050', data);
  const cache = new BlobCache(store, metrics, logger, { maxResumes: 0, site: siteOf(peer) });
  t.teardown(() => cache.drain(0));

  t.ok(await pull(cache, up, d), 'the client never gets the wrong bytes whole');
  await cache.drain(60_000);
  t.same(peer.log, [`getBlob library/a ${d}`], 'the peer was asked first');
  t.equal(await counterValue(metrics.verifyFailures, { upstream: 'docker.io', source: 'peer' }), 1, 'counted as the peer\'s');
  t.equal(await counterValue(metrics.verifyFailures, { source: 'upstream' }), 0, 'not as the upstream\'s');

  t.equal(await pull(cache, up, d), null, 'the next pull leaves that peer out and gets the exact bytes');
  t.equal(await counterValue(metrics.verifyFailures, { source: 'peer' }), 1);
});

t.test('an upstream\'s bad bytes count under source="upstream"', async (t) => {
  const { store, metrics } = await tempStore(t);
  const data = randomBytes(200_000);
  const up = new Flipper('docker.io', data);
  const cache = new BlobCache(store, metrics, logger, { maxResumes: 0 });
  t.teardown(() => cache.drain(0));
  t.ok(await pull(cache, up, sha256(data)));
  await cache.drain(60_000);
  t.equal(await counterValue(metrics.verifyFailures, { upstream: 'docker.io', source: 'upstream' }), 1);
  t.equal(await counterValue(metrics.verifyFailures, { source: 'peer' }), 0);
});

t.test('manifests: an upstream\'s wrong bytes under "upstream", a peer\'s under "peer"', async (t) => {
  const fx = await tempStore(t);
  const up = new Flipper('docker.io', Buffer.alloc(0));
  const peer = new Flipper('127.0.0.2:5050', Buffer.alloc(0));
  const mirror = testMirror(t, fx, [up], { site: siteOf(peer) });
  const want = sha256(Buffer.from('a manifest nobody serves'));
  const target = { ns: null, name: 'library/a' };
  // The upstream's answer does not match: berth asks the site's peers (as when the upstream is away), whose does not either.
  await t.rejects(mirror.manifest(target, want, { byDigest: true, head: false, accept: undefined }), { code: 'BAD_GATEWAY', status: 502 }, 'neither sent the bytes asked for: 502');
  t.same(up.log, [`getManifest library/a ${want}`], 'the upstream was asked');
  t.same(peer.log, [`getManifest library/a ${want}`], 'then the peer');
  t.equal(await counterValue(fx.metrics.verifyFailures, { upstream: 'docker.io', source: 'upstream' }), 1, "one counted as the upstream's");
  t.equal(await counterValue(fx.metrics.verifyFailures, { upstream: 'docker.io', source: 'peer' }), 1, "one as the peer's");
});
