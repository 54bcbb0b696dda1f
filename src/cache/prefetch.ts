/**
 * Prefetch: fills the cache with whole images (every manifest and blob of the
 * chosen platforms) before they are needed, and pins them so eviction keeps
 * them. It goes through the same mirror as a pull, so what it stores is
 * exactly what containerd will ask for.
 */
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { formatImageReference, parseImageReference, type ImageReference } from '../oci/paths.js';
import { isIndexMediaType } from '../oci/mediatypes.js';
import { parseManifest } from '../oci/manifest.js';
import { formatPlatform, platformMatches, type Platform } from '../oci/platform.js';
import type { Pins } from '../store/pins.js';
import type { Mirror } from './mirror.js';

export interface PrefetchOptions {
  platforms: Platform[];
  allPlatforms: boolean;
  /** Parallel blob transfers. */
  concurrency: number;
  pin: boolean;
  /**
   * Site peers: the blobs this node is to fetch (those it owns). The others
   * are the other nodes' to prefetch, so a site's prefetch crosses the WAN once.
   */
  owns?: (digest: string) => boolean;
  onProgress?: (p: PrefetchProgress) => void;
}

export interface PrefetchProgress {
  image: string;
  blobsDone: number;
  blobsTotal: number;
  bytesDone: number;
  bytesTotal: number;
  fetchedBytes: number;
}

export interface PrefetchResult {
  image: string;
  digest: string;
  manifests: number;
  blobs: number;
  bytes: number;
  /** Bytes that crossed the WAN (the rest was cached already). */
  fetchedBytes: number;
  platforms: string[];
}

/** The manifests and blobs an image consists of, for the chosen platforms. */
export interface ImageContents {
  ref: ImageReference;
  digest: string;
  mediaType: string;
  manifests: { digest: string; mediaType: string; size: number }[];
  blobs: { digest: string; size: number }[];
  platforms: string[];
}

/**
 * Resolves an image through the mirror (fetching manifests as needed) into
 * its manifests and blobs, choosing platforms from an index.
 */
export async function resolveImage(mirror: Mirror, image: string, o: { platforms: Platform[]; allPlatforms: boolean }): Promise<ImageContents> {
  const ref = parseImageReference(image);
  const target = { ns: ref.registry, name: ref.repository };
  const reference = ref.digest ?? ref.tag ?? 'latest';
  const top = await mirror.manifest(target, reference, { byDigest: reference.startsWith('sha256:'), head: false, accept: undefined });
  if (!top.body) throw new Error(`no manifest body for ${image}`);
  const out: ImageContents = { ref, digest: top.digest, mediaType: top.mediaType, manifests: [{ digest: top.digest, mediaType: top.mediaType, size: top.size }], blobs: [], platforms: [] };
  let images: { digest: string; body: Buffer; platform: string }[];
  if (isIndexMediaType(top.mediaType)) {
    const entries = parseManifest(top.body).manifests.filter((d) => o.allPlatforms || o.platforms.some((p) => platformMatches(d, p)));
    if (entries.length === 0) {
      const offered = parseManifest(top.body).manifests.map((d) => formatPlatform(d.platform));
      throw new Error(`${image} has no manifest for ${o.platforms.map(formatPlatform).join(', ')} (it offers ${offered.join(', ') || 'none'})`);
    }
    images = [];
    for (const e of entries) {
      const m = await mirror.manifest(target, e.digest, { byDigest: true, head: false, accept: undefined });
      out.manifests.push({ digest: m.digest, mediaType: m.mediaType, size: m.size });
      images.push({ digest: m.digest, body: m.body ?? Buffer.alloc(0), platform: formatPlatform(e.platform) });
    }
  } else {
    images = [{ digest: top.digest, body: top.body, platform: 'single' }];
  }
  const seen = new Set<string>();
  for (const img of images) {
    out.platforms.push(img.platform);
    for (const b of parseManifest(img.body).blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      out.blobs.push({ digest: b.digest, size: b.size ?? 0 });
    }
  }
  return out;
}

export async function prefetchImage(mirror: Mirror, pins: Pins, logger: Logger, image: string, o: PrefetchOptions): Promise<PrefetchResult> {
  const contents = await resolveImage(mirror, image, o);
  const name = formatImageReference(contents.ref);
  const progress: PrefetchProgress = {
    image: name,
    blobsDone: 0,
    blobsTotal: contents.blobs.length,
    bytesDone: 0,
    bytesTotal: contents.blobs.reduce((a, b) => a + b.size, 0),
    fetchedBytes: 0,
  };
  o.onProgress?.({ ...progress });
  const queue = new PQueue({ concurrency: Math.max(1, o.concurrency) });
  const target = { ns: contents.ref.registry, name: contents.ref.repository };
  const mine = o.owns ? contents.blobs.filter((b) => o.owns!(b.digest)) : contents.blobs;
  if (mine.length < contents.blobs.length) {
    progress.blobsTotal = mine.length;
    progress.bytesTotal = mine.reduce((a, b) => a + b.size, 0);
  }
  await Promise.all(
    mine.map((b) =>
      queue.add(async () => {
        const r = await mirror.ensureBlob(target, b.digest);
        progress.blobsDone++;
        progress.bytesDone += r.size;
        if (r.fetched) progress.fetchedBytes += r.size;
        o.onProgress?.({ ...progress });
      }),
    ),
  );
  if (o.pin) pins.pin(name, contents.digest);
  logger.info({ image: name, digest: contents.digest, blobs: contents.blobs.length, bytes: progress.bytesDone, fetched: progress.fetchedBytes, pinned: o.pin }, 'prefetched');
  return {
    image: name,
    digest: contents.digest,
    manifests: contents.manifests.length,
    blobs: contents.blobs.length,
    bytes: progress.bytesDone,
    fetchedBytes: progress.fetchedBytes,
    platforms: contents.platforms,
  };
}

/**
 * The daemon's own prefetch runs: the [[prefetch]] list at start-up and then
 * every interval, one run at a time, so a site fills (and refreshes moved
 * tags of) what it must have before the link goes down.
 */
export function schedulePrefetch(
  mirror: Mirror,
  pins: Pins,
  logger: Logger,
  list: () => Promise<readonly { image: string; platforms: Platform[] }[]>,
  intervalMs: number,
  owns?: (digest: string) => boolean,
): { stop(): void; runNow(): Promise<void> } {
  const queue = new PQueue({ concurrency: 1 });
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const runOnce = async () => {
    for (const item of await list()) {
      if (stopped) return;
      try {
        await prefetchImage(mirror, pins, logger, item.image, { platforms: item.platforms, allPlatforms: false, concurrency: 2, pin: true, ...(owns ? { owns } : {}) });
      } catch (err) {
        logger.warn({ image: item.image, err: err instanceof Error ? err.message : String(err) }, 'scheduled prefetch failed; will try again next run');
      }
    }
  };
  const runNow = () => (queue.size > 0 ? queue.onIdle() : queue.add(runOnce));
  if (intervalMs > 0) {
    void runNow();
    timer = setInterval(() => void runNow(), intervalMs);
    timer.unref();
  }
  return {
    stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      queue.clear();
    },
    runNow,
  };
}
