import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { Fill, BlobState, type BlobSource } from '../../src/cache/fill.js';
import { BlobFiles } from '../../src/store/blobs.js';
import { Layout } from '../../src/store/layout.js';
import { sha256 } from '../../src/oci/digest.js';
import { UpstreamError, type BlobAnswer } from '../../src/upstream/types.js';

const logger = pino({ level: 'silent' });

async function setup(t: { teardown(fn: () => unknown): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-fill-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = new BlobFiles(new Layout(dir));
  await files.init();
  return files;
}

/** A source whose bodies the test feeds by hand. */
class ManualSource implements BlobSource {
  readonly name = 'test';
  calls: number[] = [];
  bodies: PassThrough[] = [];
  constructor(private readonly size: number, private readonly status: (offset: number) => 200 | 206 = (o) => (o > 0 ? 206 : 200)) {}
  async fetch(_digest: string, offset: number): Promise<BlobAnswer | null> {
    this.calls.push(offset);
    const body = new PassThrough();
    this.bodies.push(body);
    const status = this.status(offset);
    return { status, offset: status === 206 ? offset : 0, size: this.size, body };
  }
}

function collect(r: Readable): Promise<{ data: Buffer; error?: Error }> {
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('end', () => resolve({ data: Buffer.concat(chunks) }));
    r.on('error', (error) => resolve({ data: Buffer.concat(chunks), error }));
  });
}

/** Resolves once the fill holds `n` bytes (a PassThrough may hand them over within write()). */
function held(fill: Fill, n: number): Promise<void> {
  return new Promise((resolve) => {
    if (fill.accepted >= n) return resolve();
    const off = fill.onProgress(() => {
      if (fill.accepted >= n) {
        off();
        resolve();
      }
    });
  });
}

function waitBytes(r: Readable, n: number): Promise<number> {
  let got = 0;
  return new Promise((resolve) => {
    const on = (c: Buffer) => {
      got += c.length;
      if (got >= n) {
        r.off('data', on);
        r.pause();
        resolve(got);
      }
    };
    r.on('data', on);
  });
}

/** Resolves once `ok()` holds, checked at each of the fill's progress events. */
function until(fill: Fill, ok: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (ok()) return resolve();
    const off = fill.onProgress(() => {
      if (ok()) {
        off();
        resolve();
      }
    });
  });
}

t.test('followers stream bytes as they arrive; the last byte waits for verification', async (t) => {
  const files = await setup(t);
  const data = randomBytes(300_000);
  const digest = sha256(data);
  const src = new ManualSource(data.length);
  let committed = 0;
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 2 });
  fill.done.then(() => committed++, () => undefined);
  t.equal(await fill.ready, data.length);
  const r1 = fill.reader(0, data.length - 1);
  const r2 = fill.reader(100, 199);
  const all1 = collect(r1);
  const part2 = collect(r2);
  src.bodies[0]!.write(data.subarray(0, 150_000));
  // r2 wants bytes 100..199: all written, but byte 199 is its last and must wait for verification.
  const early = await waitBytes(fill.reader(0, data.length - 1), 100_000);
  t.ok(early >= 100_000, 'a follower got bytes before the upstream finished');
  t.equal(fill.state, BlobState.Writing, 'still writing');
  src.bodies[0]!.end(data.subarray(150_000));
  await fill.done;
  t.equal(committed, 1);
  t.same((await all1).data, data, 'complete and exact');
  t.same((await part2).data, data.subarray(100, 200), 'range from a fill in progress is exact');
  t.same(fs.readFileSync(files.path(digest)), data);
  t.same(src.calls, [0], 'one upstream transfer');
});

t.test('a corrupted transfer is never completed to a follower nor cached', async (t) => {
  const files = await setup(t);
  const data = randomBytes(50_000);
  const digest = sha256(data);
  const src = new ManualSource(data.length);
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 2 });
  fill.done.then(() => t.fail('must not commit'), () => undefined);
  await fill.ready;
  const got = collect(fill.reader(0, data.length - 1));
  const flipped = Buffer.from(data);
  flipped.writeUInt8(flipped.readUInt8(49_999) ^ 0xff, 49_999);
  src.bodies[0]!.end(flipped);
  await t.rejects(fill.done, { code: 'DIGEST_MISMATCH' });
  const r = await got;
  t.ok(r.error, 'the follower saw an error');
  t.ok(r.data.length < data.length, `the follower got a truncated body (${r.data.length} bytes)`);
  t.equal(files.sizeOnDisk(digest), null, 'nothing cached');
  t.same(fs.readdirSync(files.layout.tmpDir), [], 'temp file removed');
});

t.test('an interrupted transfer resumes with Range from the bytes held', async (t) => {
  const files = await setup(t);
  const data = randomBytes(80_000);
  const digest = sha256(data);
  const src = new ManualSource(data.length);
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 2 });
  await fill.ready;
  const got = collect(fill.reader(0, data.length - 1));
  src.bodies[0]!.write(data.subarray(0, 30_000));
  await held(fill, 30_000);
  src.bodies[0]!.destroy(new UpstreamError('UPSTREAM_UNREACHABLE', 'test', 'connection reset'));
  while (src.bodies.length < 2) await new Promise((r) => setImmediate(r));
  src.bodies[1]!.end(data.subarray(30_000));
  await fill.done;
  t.same(src.calls, [0, 30_000], 'second request asked for the rest');
  t.same((await got).data, data);
});

t.test('a transfer cut while the write queue is full resumes at the right offset, and followers get the right bytes', async (t) => {
  const files = await setup(t);
  const data = randomBytes(12 * 1024 * 1024);
  const digest = sha256(data);
  const src = new ManualSource(data.length);
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 2 });
  await fill.ready;
  const got = collect(fill.reader(0, data.length - 1));
  // Above the writer's 8 MiB queue in one go: the fill waits for the disk with a chunk in hand.
  const cut = 9 * 1024 * 1024;
  for (let at = 0; at < cut; at += 64 * 1024) src.bodies[0]!.write(data.subarray(at, at + 64 * 1024));
  src.bodies[0]!.destroy(new UpstreamError('UPSTREAM_UNREACHABLE', 'test', 'connection reset'));
  while (src.bodies.length < 2) await new Promise((r) => setImmediate(r));
  const from = src.calls[1]!;
  t.equal(from, fill.accepted, 'asked for the bytes after those the fill holds');
  const next = from + 1024 * 1024;
  for (let at = from; at < next; at += 64 * 1024) src.bodies[1]!.write(data.subarray(at, at + 64 * 1024));
  await until(fill, () => fill.accepted >= from + 512 * 1024);
  const pos = from + 256 * 1024 + 100;
  t.same(fill.fromMemory(pos, 1000), data.subarray(pos, pos + 1000), 'what followers take from memory is the blob at that offset');
  src.bodies[1]!.end(data.subarray(next));
  await fill.done;
  t.equal(fill.state, BlobState.Committed);
  const r = await got;
  t.equal(r.error, undefined);
  t.ok(r.data.equals(data), 'the follower got the blob, every byte in its place');
});

t.test('a 200 to a resume repeats bytes we hold: they are skipped', async (t) => {
  const files = await setup(t);
  const data = randomBytes(40_000);
  const digest = sha256(data);
  const src = new ManualSource(data.length, () => 200);
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 2 });
  await fill.ready;
  src.bodies[0]!.write(data.subarray(0, 10_000));
  await held(fill, 10_000);
  src.bodies[0]!.end(); // ends early: the fill sees a short body and resumes
  while (src.bodies.length < 2) await new Promise((r) => setImmediate(r));
  src.bodies[1]!.end(data);
  await fill.done;
  t.same(fs.readFileSync(files.path(digest)), data);
});

t.test('a follower that leaves does not stop the fill', async (t) => {
  const files = await setup(t);
  const data = randomBytes(60_000);
  const digest = sha256(data);
  const src = new ManualSource(data.length);
  let committed = false;
  const fill = new Fill({ digest, source: src, store: files, logger, maxResumes: 0 });
  fill.done.then(() => (committed = true), () => undefined);
  await fill.ready;
  const r = fill.reader(0, data.length - 1);
  src.bodies[0]!.write(data.subarray(0, 20_000));
  await waitBytes(r, 1);
  r.destroy();
  src.bodies[0]!.end(data.subarray(20_000));
  await fill.done;
  t.ok(committed, 'fill completed and was cached');
  t.same(fs.readFileSync(files.path(digest)), data);
});

t.test('a source with nothing gives a not-found fill', async (t) => {
  const files = await setup(t);
  const fill = new Fill({
    digest: sha256('x'),
    source: { name: 'test', fetch: async () => null },
    store: files,
    logger,
    maxResumes: 1,
  });
  await t.rejects(fill.ready, { code: 'BLOB_NOT_FOUND' });
  await t.rejects(fill.done);
  t.same(fs.readdirSync(files.layout.tmpDir), []);
});

t.test('an empty cached blob is served warm, again and again, without leaking its fd', async (t) => {
  const files = await setup(t);
  const { BlobCache } = await import('../../src/cache/blobs.js');
  const { ContentStore } = await import('../../src/cache/content-store.js');
  const { Index } = await import('../../src/store/index-db.js');
  const { Metrics } = await import('../../src/metrics/metrics.js');
  const index = new Index(path.join(files.layout.root, 'index.db'));
  t.teardown(() => index.close());
  const empty = sha256(Buffer.alloc(0));
  const w = await files.createWriter(empty);
  await w.commit({ expectedSize: 0 });
  index.content.putBlob(empty, 0);
  const store = new ContentStore({ files, index: index.content, logger, maxBytes: 1 << 30 });
  const cache = new BlobCache(store, new Metrics({ defaultMetrics: false }), logger, { maxResumes: 0 });
  const fdsBefore = fs.readdirSync('/proc/self/fd').length;
  for (let i = 0; i < 50; i++) {
    const h = await cache.get({ client: {} as never, repository: 'x', digest: empty, head: false });
    t.equal(h.size, 0);
    const got = await collect(h.open!(0, -1));
    if (got.error || got.data.length !== 0) t.fail(`round ${i}: ${got.error?.message ?? got.data.length}`);
  }
  await new Promise((r) => setTimeout(r, 50));
  t.ok(fs.readdirSync('/proc/self/fd').length - fdsBefore < 5, 'no descriptor left open per request');
});
