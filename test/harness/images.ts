/**
 * Test images made locally (no network) as OCI image layouts, pushed into a
 * registry with skopeo.
 *
 * Each layer is a real gzip'd ustar holding one file `data-N.bin` of
 * pseudo-random bytes (AES-256-CTR keystream keyed by seed/platform/layer), so
 * the same seed gives the same tars everywhere and the same gzip'd digests
 * with the same Node (whose bundled zlib does the compressing). The config's
 * `rootfs.diff_ids` are the sha256 of the uncompressed tars, which containerd
 * checks when it unpacks.
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { run, runOk } from './procs.js';

export const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

/** An Accept header for a manifest request that takes every manifest type the harness makes (indexes, lists, images). */
export const MANIFEST_ACCEPT = [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest].join(', ');

const REF_NAME = 'org.opencontainers.image.ref.name';

export interface BlobInfo {
  digest: string;
  size: number;
  mediaType: string;
}

export interface ManifestInfo {
  digest: string;
  /** e.g. `linux/amd64`, `linux/arm/v7` */
  platform: string;
  size: number;
  mediaType: string;
  /** The config blob's digest. */
  config: string;
  /** Layer blob digests, in order. */
  layers: string[];
}

export interface TestImage {
  layoutDir: string;
  tag: string;
  seed: string;
  /** Top level: the index's digest when multi-platform, else the image manifest's. */
  manifestDigest: string;
  /** Media type of the top-level manifest or index. */
  mediaType: string;
  manifests: ManifestInfo[];
  /** All layers and configs (not the manifests or the index). */
  blobs: BlobInfo[];
}

export interface MakeImageOptions {
  layers: number;
  /** Bytes of random data per layer (the file inside the tar). */
  layerSize: number;
  /** Data is a pure function of the seed (default: random, returned in the result). */
  seed?: string;
  /** More than one makes an image index (one platform too with `index: true`). Default: [host platform], a single manifest. */
  platforms?: string[];
  /** Force an index even for one platform. */
  index?: boolean;
  /** Tag under which the layout's index.json names the image (default 'latest'). */
  tag?: string;
  /** 'oci' (default) or 'docker' (schema2 media types, manifest list) */
  format?: 'oci' | 'docker';
}

export function hostPlatform(): string {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
  return `linux/${arch}`;
}

export const sha256Digest = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Path of a blob inside an OCI layout. */
export function blobPath(layoutDir: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  if (!alg || !hex) throw new Error(`bad digest ${digest}`);
  return path.join(layoutDir, 'blobs', alg, hex);
}

/** The bytes of a blob (or manifest) in an OCI layout. */
export function readBlob(layoutDir: string, digest: string): Promise<Buffer> {
  return readFile(blobPath(layoutDir, digest));
}

/** Deterministic pseudo-random bytes for (seed, label). */
export function seededBytes(seed: string, label: string, size: number): Buffer {
  const key = createHash('sha256').update(`berth-test\0${seed}\0${label}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

function octal(value: number, width: number): string {
  // width includes the trailing NUL
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** A ustar archive with regular files (mode 0644, uid/gid 0, fixed mtime). */
export function makeTar(files: Array<{ name: string; data: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    if (Buffer.byteLength(f.name) > 100) throw new Error(`tar name too long: ${f.name}`);
    const h = Buffer.alloc(512);
    h.write(f.name, 0, 100, 'utf8');
    h.write(octal(0o644, 8), 100, 'ascii');
    h.write(octal(0, 8), 108, 'ascii');
    h.write(octal(0, 8), 116, 'ascii');
    h.write(octal(f.data.length, 12), 124, 'ascii');
    h.write(octal(1_700_000_000, 12), 136, 'ascii');
    h.write('        ', 148, 'ascii');
    h.write('0', 156, 'ascii');
    h.write('ustar\0', 257, 'ascii');
    h.write('00', 263, 'ascii');
    h.write('root', 265, 'ascii');
    h.write('root', 297, 'ascii');
    h.write(octal(0, 8), 329, 'ascii');
    h.write(octal(0, 8), 337, 'ascii');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
    parts.push(h, f.data);
    const pad = (512 - (f.data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function splitPlatform(p: string): { os: string; architecture: string; variant?: string } {
  const [os, architecture, variant] = p.split('/');
  if (!os || !architecture) throw new Error(`bad platform ${p} (want os/arch[/variant])`);
  return variant ? { os, architecture, variant } : { os, architecture };
}

async function writeBlob(layoutDir: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha256Digest(data);
  const file = blobPath(layoutDir, digest);
  await writeFile(file, data);
  return { digest, size: data.length };
}

/** Builds an image (or a multi-platform index) into the OCI layout at `dir` (created or extended). */
export async function makeImage(dir: string, opts: MakeImageOptions): Promise<TestImage> {
  const seed = opts.seed ?? randomBytes(8).toString('hex');
  const tag = opts.tag ?? 'latest';
  const docker = opts.format === 'docker';
  const platforms = opts.platforms ?? [hostPlatform()];
  if (platforms.length === 0) throw new Error('makeImage: platforms is empty');
  const asIndex = platforms.length > 1 || opts.index === true;
  const layoutDir = path.resolve(dir);
  await mkdir(path.join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const blobs: BlobInfo[] = [];
  const manifests: ManifestInfo[] = [];
  for (const platform of platforms) {
    const plat = splitPlatform(platform);
    const layerDescs: BlobInfo[] = [];
    const diffIds: string[] = [];
    for (let i = 0; i < opts.layers; i++) {
      const data = seededBytes(seed, `${platform}/layer-${i}`, opts.layerSize);
      const tar = makeTar([{ name: `data-${i}.bin`, data }]);
      diffIds.push(sha256Digest(tar));
      const gz = gzipSync(tar, { level: 1 });
      const { digest, size } = await writeBlob(layoutDir, gz);
      layerDescs.push({ mediaType: docker ? MT.dockerLayerGzip : MT.ociLayerGzip, digest, size });
    }
    const config = {
      created: '2024-01-01T00:00:00Z',
      architecture: plat.architecture,
      os: plat.os,
      ...(plat.variant ? { variant: plat.variant } : {}),
      config: {},
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `berth-test layer ${i} seed ${seed}` })),
    };
    const cfg = await writeBlob(layoutDir, Buffer.from(JSON.stringify(config)));
    const cfgDesc: BlobInfo = { mediaType: docker ? MT.dockerConfig : MT.ociConfig, ...cfg };
    const manifest = {
      schemaVersion: 2,
      mediaType: docker ? MT.dockerManifest : MT.ociManifest,
      config: cfgDesc,
      layers: layerDescs,
    };
    const m = await writeBlob(layoutDir, Buffer.from(JSON.stringify(manifest)));
    manifests.push({
      digest: m.digest,
      size: m.size,
      platform,
      mediaType: manifest.mediaType,
      config: cfg.digest,
      layers: layerDescs.map((l) => l.digest),
    });
    blobs.push(...layerDescs, cfgDesc);
  }

  let top: { mediaType: string; digest: string; size: number };
  if (asIndex) {
    const mediaType = docker ? MT.dockerList : MT.ociIndex;
    const index = {
      schemaVersion: 2,
      mediaType,
      manifests: manifests.map((m) => ({
        mediaType: m.mediaType,
        digest: m.digest,
        size: m.size,
        platform: splitPlatform(m.platform),
      })),
    };
    top = { mediaType, ...(await writeBlob(layoutDir, Buffer.from(JSON.stringify(index)))) };
  } else {
    const only = manifests[0];
    if (!only) throw new Error('unreachable: no manifest');
    top = { mediaType: only.mediaType, digest: only.digest, size: only.size };
  }

  // index.json: keep other tags already in this layout, replace this one.
  const indexFile = path.join(layoutDir, 'index.json');
  let existing: Array<{ annotations?: Record<string, string> }> = [];
  try {
    const parsed = JSON.parse(await readFile(indexFile, 'utf8')) as { manifests?: Array<{ annotations?: Record<string, string> }> };
    existing = (parsed.manifests ?? []).filter((d) => d.annotations?.[REF_NAME] !== tag);
  } catch {
    existing = [];
  }
  await writeFile(
    indexFile,
    JSON.stringify({ schemaVersion: 2, manifests: [...existing, { ...top, annotations: { [REF_NAME]: tag } }] }),
  );

  return { layoutDir, tag, seed, manifestDigest: top.digest, mediaType: top.mediaType, manifests, blobs };
}

export interface PushOptions {
  /** `user:pass` for the destination. */
  creds?: string;
  timeoutMs?: number;
}

/**
 * Pushes `oci:LAYOUT:TAG` to `docker://HOST/REPO:TAG` with digests preserved,
 * then reads the manifest back (`skopeo inspect --raw`) and checks its digest.
 * Returns the digest now behind `repoAndTag`. Throws with skopeo's stderr on failure.
 */
export async function pushImage(
  layoutDir: string,
  tag: string,
  registry: { host: string },
  repoAndTag: string,
  opts: PushOptions = {},
): Promise<string> {
  const dest = `docker://${registry.host}/${repoAndTag}`;
  const credArgs = opts.creds ? ['--dest-creds', opts.creds] : [];
  const top = await localDescriptor(layoutDir, tag);
  // skopeo 1.9's oci: transport only finds index.json entries with OCI media types;
  // docker schema2 images go through the dir: transport instead (same bytes).
  const src = top.mediaType === MT.dockerManifest || top.mediaType === MT.dockerList ? `dir:${await dirTransportCopy(layoutDir, tag)}` : `oci:${layoutDir}:${tag}`;
  const copy = await run('skopeo', ['copy', '--all', '--preserve-digests', '--dest-tls-verify=false', ...credArgs, src, dest], {
    timeoutMs: opts.timeoutMs ?? 120_000,
  });
  if (copy.code !== 0) {
    throw new Error(`skopeo copy ${src} ${dest} failed (exit ${copy.code}):\n${copy.stderr || copy.stdout}`);
  }
  const expected = top.digest;
  const got = await remoteDigest(registry, repoAndTag, opts.creds === undefined ? {} : { creds: opts.creds });
  if (got !== expected) throw new Error(`pushImage: ${dest} has ${got}, layout ${layoutDir}:${tag} has ${expected}`);
  return got;
}

/** The descriptor index.json names under `tag`. */
export async function localDescriptor(layoutDir: string, tag: string): Promise<{ mediaType: string; digest: string; size: number }> {
  const parsed = JSON.parse(await readFile(path.join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
  };
  const d = parsed.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!d) throw new Error(`no ${tag} in ${layoutDir}/index.json`);
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}

/**
 * Lays `tag` of an OCI layout out for skopeo's dir: transport (`version`,
 * `manifest.json`, `<hex>.manifest.json` per instance of a list, blobs named by
 * hex, hard-linked) in `LAYOUT/.dir/<tag>`; returns that path.
 */
export async function dirTransportCopy(layoutDir: string, tag: string): Promise<string> {
  const top = await localDescriptor(layoutDir, tag);
  const out = path.join(layoutDir, '.dir', tag);
  await rm(out, { recursive: true, force: true });
  await mkdir(out, { recursive: true });
  await writeFile(path.join(out, 'version'), 'Directory Transport Version: 1.1\n');
  const hex = (d: string): string => d.slice(d.indexOf(':') + 1);
  const topBytes = await readBlob(layoutDir, top.digest);
  await writeFile(path.join(out, 'manifest.json'), topBytes);
  const manifests: Buffer[] = [];
  const parsedTop = JSON.parse(topBytes.toString('utf8')) as { manifests?: Array<{ digest: string }> };
  if (parsedTop.manifests) {
    for (const m of parsedTop.manifests) {
      const bytes = await readBlob(layoutDir, m.digest);
      await writeFile(path.join(out, `${hex(m.digest)}.manifest.json`), bytes);
      manifests.push(bytes);
    }
  } else {
    manifests.push(topBytes);
  }
  for (const bytes of manifests) {
    const m = JSON.parse(bytes.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
      const target = path.join(out, hex(d));
      await rm(target, { force: true });
      await link(blobPath(layoutDir, d), target);
    }
  }
  return out;
}

/** Digest of the manifest bytes `skopeo inspect --raw` reads from the registry. */
export async function remoteDigest(registry: { host: string }, repoAndRef: string, opts: { creds?: string } = {}): Promise<string> {
  const res = await runOk(
    'skopeo',
    ['inspect', '--raw', '--tls-verify=false', ...(opts.creds ? ['--creds', opts.creds] : []), `docker://${registry.host}/${repoAndRef}`],
    { timeoutMs: 60_000 },
  );
  return sha256Digest(res.stdoutBuf);
}
