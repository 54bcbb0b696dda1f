/**
 * Shared parts for the in-process cache tests (mirror, blob-cache, evict):
 * an upstream that counts its calls per kind and can be switched down
 * (after Distribution's proxy tests, which count calls on each side), and
 * a real content store (blob files + SQLite index) on a temp dir.
 * Not a test file itself (tap lists it as "no tests found").
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import { BlobFiles } from '../../src/store/blobs.js';
import { Layout } from '../../src/store/layout.js';
import { Index } from '../../src/store/index-db.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { ContentStore } from '../../src/cache/content-store.js';
import { Mirror, type MirrorOptions } from '../../src/cache/mirror.js';
import { Upstreams } from '../../src/cache/upstreams.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { UpstreamError, type BlobAnswer, type ManifestAnswer, type RegistryClient, type RequestOptions } from '../../src/upstream/types.js';

export const logger = pino({ level: 'silent' });

export type CallKind = 'getBlob' | 'headBlob' | 'getManifest' | 'headManifest' | 'getTags';

/**
 * An upstream registry in memory. Content is per repository, as in a real
 * registry: a blob put in one repository is unknown in another.
 */
export class FakeUpstream implements RegistryClient {
  readonly registry: string;
  /** Every call, in order: "<kind> <repository> <reference>". */
  log: string[] = [];
  /** While true every call throws an unreachable UpstreamError (connection refused). */
  down = false;
  /** While set, getBlob waits for it before answering (holds a fill open). */
  hold: Promise<void> | null = null;
  private readonly blobs = new Map<string, Map<string, Buffer>>();
  private readonly waiters: { kind: CallKind; resolve: () => void }[] = [];
  private readonly manifests = new Map<string, Map<string, Buffer>>();

  constructor(registry = 'docker.io') {
    this.registry = registry;
  }

  /** How many calls of that kind were made. */
  count(kind: CallKind): number {
    return this.log.filter((l) => l.startsWith(`${kind} `)).length;
  }

  /** Upstream calls of any kind. */
  get total(): number {
    return this.log.length;
  }

  reset(): void {
    this.log = [];
  }

  /** Resolves at the next call of that kind (an event to wait on, not a timer). */
  next(kind: CallKind): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ kind, resolve }));
  }

  putBlob(repository: string, data: Buffer): string {
    const digest = sha256(data);
    this.repo(this.blobs, repository).set(digest, data);
    return digest;
  }

  /** Stores a manifest under a tag (and its digest) in a repository; returns its digest. */
  putManifest(repository: string, tag: string, manifest: object): string {
    const body = Buffer.from(JSON.stringify(manifest));
    const digest = sha256(body);
    const m = this.repo(this.manifests, repository);
    m.set(tag, body);
    m.set(digest, body);
    return digest;
  }

  private repo(map: Map<string, Map<string, Buffer>>, repository: string): Map<string, Buffer> {
    let m = map.get(repository);
    if (!m) {
      m = new Map();
      map.set(repository, m);
    }
    return m;
  }

  private call(kind: CallKind, repository: string, reference: string): void {
    this.log.push(`${kind} ${repository} ${reference}`);
    for (const w of this.waiters.filter((x) => x.kind === kind)) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve();
    }
    if (this.down) throw new UpstreamError('UPSTREAM_UNREACHABLE', this.registry, 'connect ECONNREFUSED 127.0.0.1:1');
  }

  async getManifest(repository: string, reference: string): Promise<ManifestAnswer | null> {
    this.call('getManifest', repository, reference);
    const body = this.manifests.get(repository)?.get(reference);
    return body ? { digest: sha256(body), mediaType: MEDIA_TYPES.ociManifest, size: body.length, body } : null;
  }

  async headManifest(repository: string, reference: string): Promise<Omit<ManifestAnswer, 'body'> | null> {
    this.call('headManifest', repository, reference);
    const body = this.manifests.get(repository)?.get(reference);
    return body ? { digest: sha256(body), mediaType: MEDIA_TYPES.ociManifest, size: body.length } : null;
  }

  async headBlob(repository: string, digest: string): Promise<{ size: number } | null> {
    this.call('headBlob', repository, digest);
    const data = this.blobs.get(repository)?.get(digest);
    return data ? { size: data.length } : null;
  }

  async getBlob(repository: string, digest: string, opts: RequestOptions & { offset?: number } = {}): Promise<BlobAnswer | null> {
    this.call('getBlob', repository, digest);
    if (this.hold) await this.hold;
    const data = this.blobs.get(repository)?.get(digest);
    if (!data) return null;
    const offset = opts.offset ?? 0;
    // Several chunks, so that readers really follow a transfer in progress.
    const rest = data.subarray(offset);
    const chunks: Buffer[] = [];
    for (let i = 0; i < rest.length; i += 64 * 1024) chunks.push(rest.subarray(i, i + 64 * 1024));
    return { status: offset > 0 ? 206 : 200, offset, size: data.length, body: Readable.from(chunks) };
  }

  async getTags(repository: string, query: string): Promise<{ body: Buffer } | null> {
    this.call('getTags', repository, query);
    const m = this.manifests.get(repository);
    if (!m) return null;
    const tags = [...m.keys()].filter((k) => !k.startsWith('sha256:')).sort();
    return { body: Buffer.from(JSON.stringify({ name: repository, tags })) };
  }

  async ping(): Promise<boolean> {
    return !this.down;
  }

  health() {
    return { up: !this.down, consecutiveFailures: 0 };
  }

  async close(): Promise<void> {}
}

export interface StoreFixture {
  dir: string;
  files: BlobFiles;
  index: Index;
  store: ContentStore;
  metrics: Metrics;
}

/** A real content store (blob files and index) on a temp dir, removed at teardown. */
export async function tempStore(
  t: { teardown(fn: () => unknown): void },
  opts: { maxBytes?: number; diskBytes?: number } = {},
): Promise<StoreFixture> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-fakes-'));
  const layout = new Layout(dir);
  const files = new BlobFiles(layout);
  await files.init();
  // Access times are flushed by eviction (or by the test), never by the timer mid-test.
  const index = new Index(layout.indexFile, { flushIntervalMs: 3_600_000 });
  const metrics = new Metrics({ defaultMetrics: false });
  // diskBytes: a disk of that size holding only the cache (free = diskBytes - cached bytes).
  const disk = opts.diskBytes;
  const store = new ContentStore({
    files,
    index: index.content,
    logger,
    metrics,
    maxBytes: opts.maxBytes ?? 1 << 30,
    ...(disk !== undefined ? { diskFree: async () => disk - index.content.totalBytes() } : {}),
  });
  t.teardown(() => {
    store.close();
    index.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, files, index, store, metrics };
}

/** Puts a blob in the store the way a fill does (verified, renamed, indexed, linked). */
export async function commitBlob(
  store: ContentStore,
  data: Buffer,
  o: { accessedAt?: number; links?: { registry: string; repository: string }[] } = {},
): Promise<string> {
  const digest = sha256(data);
  const w = await store.createWriter(digest);
  await w.write(data);
  await w.commit({ expectedSize: data.length, ...(o.accessedAt !== undefined ? { accessedAt: o.accessedAt } : {}), ...(o.links ? { links: o.links } : {}) });
  return digest;
}

/** All bytes of a stream (rejects on a stream error). */
export async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The current value of an unlabelled counter, or of one label set of a labelled one. */
export async function counterValue(metric: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get();
  const v = values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

/**
 * A Mirror over a temp store and the given upstreams, with the settings the
 * in-process tests share (tag_ttl 60 s, stale answers on, revalidation 3 s),
 * drained at teardown. `extra` adds what a test needs besides (a site).
 */
export function testMirror(t: { teardown(fn: () => unknown): void }, fx: StoreFixture, upstreams: RegistryClient[], extra: Partial<MirrorOptions> = {}): Mirror {
  const mirror = new Mirror({
    store: fx.store,
    refusals: fx.index.refusals,
    upstreams: new Upstreams(upstreams),
    metrics: fx.metrics,
    logger,
    tagTtlMs: 60_000,
    serveStale: true,
    revalidateTimeoutMs: 3_000,
    ...extra,
  });
  t.teardown(() => mirror.drain(0));
  return mirror;
}
