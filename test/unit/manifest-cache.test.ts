/**
 * Tag semantics of the manifest cache, with an upstream that counts its
 * calls (after Distribution's proxy tests): within tag_ttl no upstream call;
 * after it one HEAD and no body when unchanged; stale answers when down.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ManifestCache } from '../../src/cache/manifests.js';
import { Index } from '../../src/store/index-db.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { OciError } from '../../src/oci/errors.js';
import { UpstreamError, type ManifestAnswer, type RegistryClient } from '../../src/upstream/types.js';

class CountingUpstream implements RegistryClient {
  readonly registry = 'docker.io';
  calls: string[] = [];
  down = false;
  tags = new Map<string, Buffer>();
  corruptNext = false;

  set(tag: string, body: object): string {
    const b = Buffer.from(JSON.stringify(body));
    this.tags.set(tag, b);
    return sha256(b);
  }
  private find(reference: string): Buffer | undefined {
    if (reference.startsWith('sha256:')) return [...this.tags.values()].find((b) => sha256(b) === reference);
    return this.tags.get(reference);
  }
  async getManifest(repository: string, reference: string): Promise<ManifestAnswer | null> {
    this.calls.push(`GET ${reference}`);
    if (this.down) throw new UpstreamError('UPSTREAM_UNREACHABLE', this.registry, 'connect ECONNREFUSED');
    const b = this.find(reference);
    if (!b) return null;
    const body = this.corruptNext ? Buffer.concat([b, Buffer.from(' ')]) : b;
    this.corruptNext = false;
    return { digest: sha256(b), mediaType: MEDIA_TYPES.ociManifest, size: body.length, body };
  }
  async headManifest(repository: string, reference: string) {
    this.calls.push(`HEAD ${reference}`);
    if (this.down) throw new UpstreamError('UPSTREAM_UNREACHABLE', this.registry, 'connect ECONNREFUSED');
    const b = this.find(reference);
    return b ? { digest: sha256(b), mediaType: MEDIA_TYPES.ociManifest, size: b.length } : null;
  }
  async headBlob() {
    return null;
  }
  async getBlob() {
    return null;
  }
  async getTags() {
    return null;
  }
  async ping() {
    return true;
  }
  health() {
    return { up: !this.down, consecutiveFailures: 0 };
  }
  async close() {}
}

function setup(t: { teardown(fn: () => unknown): void }, opts: { serveStale?: boolean } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-mc-'));
  const index = new Index(path.join(dir, 'index.db'));
  t.teardown(() => {
    index.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  let now = 1_000_000;
  const clock = { advance: (ms: number) => (now += ms) };
  const cache = new ManifestCache(index, new Metrics({ defaultMetrics: false }), pino({ level: 'silent' }), {
    tagTtlMs: 60_000,
    serveStale: opts.serveStale ?? true,
    now: () => now,
  });
  const up = new CountingUpstream();
  const req = (reference: string, o: { head?: boolean; accept?: string } = {}) =>
    cache.get({ client: up, repository: 'library/app', reference, byDigest: reference.startsWith('sha256:'), head: o.head ?? false, accept: o.accept });
  return { cache, up, req, clock, index };
}

t.test('within tag_ttl a tag costs no upstream call; after it one HEAD and no body', async (t) => {
  const { up, req, clock } = setup(t);
  const d1 = up.set('v1', { schemaVersion: 2, n: 1 });
  const first = await req('v1');
  t.equal(first.digest, d1);
  t.equal(first.source, 'upstream');
  t.same(up.calls, ['GET v1']);
  up.calls = [];
  const second = await req('v1');
  t.equal(second.source, 'cache');
  t.same(up.calls, [], 'no upstream call within tag_ttl');
  clock.advance(61_000);
  const third = await req('v1');
  t.equal(third.source, 'cache');
  t.same(up.calls, ['HEAD v1'], 'revalidated with one HEAD, no body transferred');
  t.same(third.body, first.body, 'bytes verbatim');
});

t.test('a moved tag is fetched by its new digest', async (t) => {
  const { up, req, clock } = setup(t);
  up.set('v1', { n: 1 });
  await req('v1');
  const d2 = up.set('v1', { n: 2 });
  clock.advance(61_000);
  up.calls = [];
  const r = await req('v1');
  t.equal(r.digest, d2);
  t.same(up.calls, ['HEAD v1', `GET ${d2}`]);
});

t.test('upstream down: stale tag with a Warning, digests from cache, unknown 503', async (t) => {
  const { up, req, clock } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  await req('v1');
  up.down = true;
  clock.advance(61_000);
  const stale = await req('v1');
  t.equal(stale.source, 'stale');
  t.equal(stale.digest, d1);
  t.match(stale.warning, /^299 - ".*unreachable/);
  const head = await req('v1', { head: true });
  t.equal(head.source, 'stale');
  t.equal(head.body, undefined, 'HEAD has no body');
  const byDigest = await req(d1);
  t.equal(byDigest.source, 'cache');
  await t.rejects(req('v2'), { code: 'UNAVAILABLE', status: 503 });
});

t.test('serve_stale = false: an unreachable upstream is a 503 even for known tags', async (t) => {
  const { up, req, clock } = setup(t, { serveStale: false });
  up.set('v1', { n: 1 });
  await req('v1');
  up.down = true;
  clock.advance(61_000);
  await t.rejects(req('v1'), { code: 'UNAVAILABLE' });
});

t.test('a tag deleted upstream is 404 and forgotten', async (t) => {
  const { up, req, clock, index } = setup(t);
  up.set('v1', { n: 1 });
  await req('v1');
  up.tags.delete('v1');
  clock.advance(61_000);
  await t.rejects(req('v1'), { code: 'MANIFEST_UNKNOWN', status: 404 });
  t.equal(index.getTag('docker.io', 'library/app', 'v1'), undefined);
});

t.test('a manifest that does not match its digest is never cached', async (t) => {
  const { up, req, index } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  up.corruptNext = true;
  const err = await req(d1).catch((e: unknown) => e);
  t.ok(err instanceof OciError && err.code === 'BAD_GATEWAY', 'bad gateway');
  t.notOk(index.hasManifest(d1));
  const ok = await req(d1);
  t.equal(ok.digest, d1, 'a later good answer is cached');
});

t.test('concurrent requests for one unknown tag share one upstream exchange', async (t) => {
  const { up, req } = setup(t);
  up.set('v1', { n: 1 });
  const all = await Promise.all(Array.from({ length: 10 }, () => req('v1')));
  t.equal(new Set(all.map((r) => r.digest)).size, 1);
  t.same(up.calls, ['GET v1']);
});

t.test('a narrow Accept never moves the tag for everyone else', async (t) => {
  const { up, req, index } = setup(t);
  up.set('v1', { n: 1 });
  await req('v1', { accept: MEDIA_TYPES.ociManifest });
  t.equal(index.getTag('docker.io', 'library/app', 'v1'), undefined, 'not recorded from a narrow request');
  await req('v1');
  t.ok(index.getTag('docker.io', 'library/app', 'v1'), 'recorded from a broad one');
});
