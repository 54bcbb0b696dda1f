/**
 * Tag semantics of the manifest cache, with an upstream that counts its
 * calls (after Distribution's proxy tests): within tag_ttl no upstream call;
 * after it one HEAD and no body when unchanged; stale answers when down.
 */
import t from 'tap';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { Writable } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ManifestCache } from '../../src/cache/manifests.js';
import { Index } from '../../src/store/index-db.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { OciError } from '../../src/oci/errors.js';
import { UpstreamError, type ManifestAnswer, type RegistryClient, type RequestOptions } from '../../src/upstream/types.js';

class CountingUpstream implements RegistryClient {
  readonly registry = 'docker.io';
  calls: string[] = [];
  down = false;
  tags = new Map<string, Buffer>();
  corruptNext = false;
  /** While set, HEADs hang like an upstream that accepts and never answers, until release(). */
  hang = false;
  private held: Array<() => void> = [];

  release(): void {
    this.hang = false;
    for (const go of this.held.splice(0)) go();
  }

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
  async headManifest(repository: string, reference: string, opts: RequestOptions = {}) {
    this.calls.push(`HEAD ${reference}`);
    if (this.hang) {
      await new Promise<void>((go, fail) => {
        this.held.push(go);
        opts.signal?.addEventListener('abort', () => fail(new Error('aborted')), { once: true });
      });
    }
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
  // revalidate_timeout deadlines fire when the test says so, not by the wall clock.
  const deadlines = new Set<() => void>();
  const expire = (): number => {
    const due = [...deadlines];
    deadlines.clear();
    for (const fire of due) fire();
    return due.length;
  };
  // Log lines as events, to wait for a background revalidation to end.
  const logs = new EventEmitter();
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      const line = JSON.parse(chunk.toString('utf8')) as Record<string, unknown>;
      lines.push(line);
      logs.emit('line', line);
      done();
    },
  });
  const logged = (msg: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return resolve(seen);
      const on = (l: Record<string, unknown>) => {
        if (l.msg !== msg) return;
        logs.off('line', on);
        resolve(l);
      };
      logs.on('line', on);
    });
  const metrics = new Metrics({ defaultMetrics: false });
  const cache = new ManifestCache(index.content, index.refusals, metrics, pino({ level: 'debug' }, sink), {
    tagTtlMs: 60_000,
    serveStale: opts.serveStale ?? true,
    revalidateTimeoutMs: 3_000,
    now: () => now,
    timer: (fire) => {
      deadlines.add(fire);
      return () => deadlines.delete(fire);
    },
  });
  const up = new CountingUpstream();
  const req = (reference: string, o: { head?: boolean; accept?: string } = {}) =>
    cache.get({ client: up, repository: 'library/app', reference, byDigest: reference.startsWith('sha256:'), head: o.head ?? false, accept: o.accept });
  return { cache, up, req, clock, index, expire, logged, metrics };
}

/** p's outcome if it has one once every pending callback has run; otherwise it is still waiting (on the upstream). */
async function settled<T>(p: Promise<T>): Promise<T> {
  const waiting = Symbol('waiting');
  const r = await Promise.race([p, new Promise<typeof waiting>((resolve) => setImmediate(resolve, waiting))]);
  if (r === waiting) throw new Error('still waiting on the upstream');
  return r;
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
  t.equal(index.content.getTag('docker.io', 'library/app', 'v1'), undefined);
});

t.test('a manifest that does not match its digest is never cached', async (t) => {
  const { up, req, index } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  up.corruptNext = true;
  const err = await req(d1).catch((e: unknown) => e);
  t.ok(err instanceof OciError && err.code === 'BAD_GATEWAY', 'bad gateway');
  t.notOk(index.content.hasManifest(d1));
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
  t.equal(index.content.getTag('docker.io', 'library/app', 'v1'), undefined, 'not recorded from a narrow request');
  await req('v1');
  t.ok(index.content.getTag('docker.io', 'library/app', 'v1'), 'recorded from a broad one');
});

t.test('by digest from the cache, an OCI manifest an explicit Accept leaves out is unknown, as Distribution answers it', async (t) => {
  const { up, req } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  await req(d1);
  await t.rejects(req(d1, { accept: MEDIA_TYPES.dockerManifest }), { code: 'MANIFEST_UNKNOWN', status: 404 }, 'schema2 only: 404');
  await t.rejects(req(d1, { accept: MEDIA_TYPES.ociIndex, head: true }), { code: 'MANIFEST_UNKNOWN', status: 404 }, 'HEAD too');
  t.equal((await req(d1, { accept: `${MEDIA_TYPES.ociManifest};q=0.5` })).digest, d1, 'named, with a q-value: served');
  t.equal((await req(d1, { accept: '*/*' })).digest, d1, 'a wildcard: served');
  t.equal((await req(d1)).digest, d1, 'no Accept: served');
  t.same(up.calls, [`GET ${d1}`], 'all from the cache');
});

t.test('a revalidation that hangs: past revalidate_timeout the last known digest answers, and the upstream is asked once', async (t) => {
  const { up, req, clock, expire, metrics } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  const first = await req('v1');
  clock.advance(61_000);
  up.calls = [];
  up.hang = true;
  const head = req('v1', { head: true });
  await t.rejects(settled(head), /still waiting/, 'a cached tag first waits on its revalidation');
  t.equal(expire(), 1, 'for revalidate_timeout');
  const h = await settled(head);
  t.match(h, { source: 'stale', digest: d1, body: undefined });
  t.match(h.warning, /^299 - "berth: upstream docker\.io did not answer within 3s; serving the last known digest of library\/app:v1"$/);
  const get = req('v1');
  expire();
  const g = await settled(get);
  t.match(g, { source: 'stale', digest: d1 });
  t.same(g.body, first.body, 'GET: the last known bytes');
  const again = await settled(req('v1', { head: true }));
  t.equal(again.source, 'stale', 'a request joining a revalidation already past its deadline answers at once');
  t.same(up.calls, ['HEAD v1'], 'HEAD and GET requests share the one upstream revalidation, still under way');
  const text = await metrics.registry.metrics();
  t.match(text, /^berth_revalidations_deferred_total\{upstream="docker\.io"\} 3$/m, 'each answer that did not wait is counted');
  t.match(text, /^berth_stale_answers_total\{upstream="docker\.io"\} 3$/m, 'and is a stale answer like any other');
  up.release();
});

t.test('a revalidation that finishes late, in the background, updates the tag for the next request', async (t) => {
  const { up, req, clock, expire, logged } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  await req('v1');
  clock.advance(61_000);
  up.hang = true;
  const stale = req('v1', { head: true });
  expire();
  t.equal((await settled(stale)).digest, d1);
  const d2 = up.set('v1', { n: 2 });
  up.calls = [];
  up.release();
  const done = await logged('tag revalidated in the background');
  t.match(done, { upstream: 'docker.io', repository: 'library/app', tag: 'v1', digest: d2, previous: d1 });
  const next = await req('v1', { head: true });
  t.match(next, { source: 'cache', digest: d2 }, 'the moved tag, trusted for tag_ttl from the late answer');
  const body = await req('v1');
  t.equal(body.digest, d2);
  t.same(up.calls, [`GET ${d2}`], 'no second revalidation (the held HEAD came before the reset); the new body fetched by digest');
});

t.test('a background revalidation that fails is logged, and the next request revalidates again', async (t) => {
  const { up, req, clock, expire, logged } = setup(t);
  const d1 = up.set('v1', { n: 1 });
  await req('v1');
  clock.advance(61_000);
  up.hang = true;
  const stale = req('v1', { head: true });
  expire();
  t.equal((await settled(stale)).source, 'stale');
  up.down = true;
  up.release();
  t.match(await logged('background tag revalidation failed'), { upstream: 'docker.io', tag: 'v1', err: /ECONNREFUSED/ });
  up.down = false;
  up.calls = [];
  t.match(await req('v1', { head: true }), { source: 'cache', digest: d1 });
  t.same(up.calls, ['HEAD v1'], 'revalidated afresh');
});

t.test('revalidate_timeout does not apply to misses nor with serve_stale = false', async (t) => {
  await t.test('an unknown tag waits for the upstream', async (t) => {
    const { up, req, expire } = setup(t);
    up.hang = true;
    const miss = req('v2', { head: true });
    t.equal(expire(), 0, 'no deadline');
    await t.rejects(settled(miss), /still waiting/);
    const d2 = up.set('v2', { n: 2 });
    up.release();
    t.match(await miss, { source: 'upstream', digest: d2 });
  });
  await t.test('serve_stale = false: a cached tag waits for its revalidation too', async (t) => {
    const { up, req, clock, expire } = setup(t, { serveStale: false });
    const d1 = up.set('v1', { n: 1 });
    await req('v1');
    clock.advance(61_000);
    up.hang = true;
    const head = req('v1', { head: true });
    t.equal(expire(), 0, 'no deadline');
    await t.rejects(settled(head), /still waiting/);
    up.release();
    t.match(await head, { source: 'cache', digest: d1 });
  });
});

t.test('at shutdown a revalidation left in the background ends at once', async (t) => {
  const { up, req, clock, expire, logged, cache } = setup(t);
  up.set('v1', { n: 1 });
  await req('v1');
  clock.advance(61_000);
  up.hang = true;
  const stale = req('v1', { head: true });
  expire();
  t.equal((await settled(stale)).source, 'stale');
  cache.stop();
  t.match(await logged('background tag revalidation failed'), { tag: 'v1', err: /shutting down/ });
});
