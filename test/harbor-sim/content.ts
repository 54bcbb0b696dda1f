/**
 * Content in the backing Distribution: registering what `pushImage` put there (the
 * artifact records Harbor would create on push, index children included), and
 * pushing small signature manifests (cosign / notation accessories) with the OCI
 * `subject` field, straight over the registry API with a token the simulator mints.
 */
import { createHash } from 'node:crypto';
import { readBlob, type TestImage } from '../harness/images.js';
import { type Artifact, type ChildReference, type HarborState, type Project, INDEX_MANIFEST_TYPES, ACCESSORY_COSIGN } from './state.js';

export interface Backing {
  url: string;
  /** A Bearer token for the backing registry with these actions on the repository. */
  token(repository: string, actions: string[]): string;
}

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  author?: string;
  config?: unknown;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { architecture?: string; os?: string; variant?: string };
}

interface ParsedManifest {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

/** Reads manifests and blobs by digest, wherever they live (an OCI layout, a registry). */
export interface ContentReader {
  manifest(digest: string): Promise<Buffer>;
  blob(digest: string): Promise<Buffer>;
}

async function registerImage(state: HarborState, project: Project, repo: string, digest: string, read: ContentReader): Promise<Artifact> {
  const bytes = await read.manifest(digest);
  const m = JSON.parse(bytes.toString('utf8')) as ParsedManifest;
  const cfg = m.config ? (JSON.parse((await read.blob(m.config.digest)).toString('utf8')) as ImageConfig) : {};
  const size = bytes.length + (m.config?.size ?? 0) + (m.layers ?? []).reduce((n, l) => n + l.size, 0);
  return state.registerManifest(project, repo, {
    digest,
    size,
    type: 'IMAGE',
    mediaType: m.config?.mediaType ?? 'application/vnd.oci.image.config.v1+json',
    manifestMediaType: m.mediaType ?? 'application/vnd.oci.image.manifest.v1+json',
    extraAttrs: {
      architecture: cfg.architecture ?? '',
      os: cfg.os ?? '',
      ...(cfg.variant ? { variant: cfg.variant } : {}),
      created: cfg.created ?? '',
      author: cfg.author ?? '',
      config: cfg.config ?? {},
    },
  });
}

/**
 * Records a manifest (and, for an index, its children first) the way Harbor's artifact
 * processors do on push, then points `tag` at it when given.
 */
export async function registerTree(state: HarborState, project: Project, repo: string, digest: string, read: ContentReader, tag: string | null): Promise<Artifact> {
  const bytes = await read.manifest(digest);
  const parsed = JSON.parse(bytes.toString('utf8')) as ParsedManifest;
  let top: Artifact;
  // OCI makes an index's mediaType optional: `manifests` without a `config` is one.
  if (parsed.manifests !== undefined && (!parsed.config || INDEX_MANIFEST_TYPES.includes(parsed.mediaType ?? ''))) {
    const mediaType = parsed.mediaType ?? 'application/vnd.oci.image.index.v1+json';
    const children: ChildReference[] = [];
    let childSizes = 0;
    for (const d of parsed.manifests) {
      const child = await registerImage(state, project, repo, d.digest, read);
      childSizes += child.size;
      const p = d.platform;
      children.push({ childId: child.id, childDigest: d.digest, ...(p ? { platform: { architecture: p.architecture ?? '', os: p.os ?? '', ...(p.variant ? { variant: p.variant } : {}) } } : {}) });
    }
    top = state.registerManifest(project, repo, {
      digest,
      size: bytes.length + childSizes,
      // An index of images is an IMAGE artifact in Harbor (which is what exempts it from the vulnerability check).
      type: 'IMAGE',
      mediaType,
      manifestMediaType: mediaType,
      references: children,
    });
  } else {
    top = await registerImage(state, project, repo, digest, read);
  }
  if (tag !== null) state.tagArtifact(top, tag);
  return top;
}

/** Records a TestImage that pushImage put into the backing registry. */
export function registerTestImage(state: HarborState, project: Project, repo: string, tag: string, image: TestImage): Promise<Artifact> {
  const fromLayout = (d: string): Promise<Buffer> => readBlob(image.layoutDir, d);
  return registerTree(state, project, repo, image.manifestDigest, { manifest: fromLayout, blob: fromLayout }, tag);
}

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

/** A ContentReader over the backing registry. */
export function backingReader(b: Backing, repository: string): ContentReader {
  const get = async (kind: 'manifests' | 'blobs', digest: string): Promise<Buffer> => {
    const res = await check(
      await fetch(`${b.url}/v2/${repository}/${kind}/${digest}`, { headers: { Authorization: `Bearer ${b.token(repository, ['pull'])}`, Accept: MANIFEST_ACCEPT } }),
      `read ${repository}/${kind}/${digest}`,
    );
    return Buffer.from(await res.arrayBuffer());
  };
  return { manifest: (d) => get('manifests', d), blob: (d) => get('blobs', d) };
}

/** Records what a proxy-cache copy just put into the backing registry. */
export function registerFromRegistry(state: HarborState, b: Backing, project: Project, repo: string, digest: string, tag: string | null): Promise<Artifact> {
  return registerTree(state, project, repo, digest, backingReader(b, `${project.name}/${repo}`), tag);
}

async function check(res: Response, what: string): Promise<Response> {
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

async function pushBlob(b: Backing, repository: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  const auth = { Authorization: `Bearer ${b.token(repository, ['pull', 'push'])}` };
  const head = await fetch(`${b.url}/v2/${repository}/blobs/${digest}`, { method: 'HEAD', headers: auth });
  if (head.ok) return digest;
  const start = await check(await fetch(`${b.url}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: auth }), `start upload to ${repository}`);
  const location = new URL(start.headers.get('location') ?? '', b.url);
  location.searchParams.set('digest', digest);
  await check(
    await fetch(location, { method: 'PUT', headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(data.length) }, body: new Uint8Array(data) }),
    `upload ${digest} to ${repository}`,
  );
  return digest;
}

export interface PushedManifest {
  digest: string;
  size: number;
  mediaType: string;
  artifactType: string;
}

/**
 * A signature artifact for `subject`: an OCI manifest with `artifactType` and a
 * `subject` descriptor, the empty config, and one layer standing in for the signature.
 * Cosign's is also tagged `sha256-<hex>.sig`, as cosign itself does.
 */
export async function pushSignature(b: Backing, repository: string, subject: Artifact, type: string): Promise<PushedManifest> {
  const cosign = type === ACCESSORY_COSIGN;
  const artifactType = cosign ? 'application/vnd.dev.cosign.artifact.sig.v1+json' : 'application/vnd.cncf.notary.signature';
  const emptyConfig = Buffer.from('{}');
  await pushBlob(b, repository, emptyConfig);
  const payload = Buffer.from(JSON.stringify({ critical: { image: { 'docker-manifest-digest': subject.digest }, type }, simulated: true }));
  const payloadDigest = await pushBlob(b, repository, payload);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(emptyConfig), size: emptyConfig.length },
    layers: [{ mediaType: cosign ? 'application/vnd.dev.cosign.simplesigning.v1+json' : 'application/jose+json', digest: payloadDigest, size: payload.length }],
    subject: { mediaType: subject.manifestMediaType, digest: subject.digest, size: subject.size },
    annotations: { 'org.opencontainers.image.created': new Date().toISOString() },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256(bytes);
  const ref = cosign ? `sha256-${subject.digest.slice('sha256:'.length)}.sig` : digest;
  await check(
    await fetch(`${b.url}/v2/${repository}/manifests/${ref}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${b.token(repository, ['pull', 'push'])}`, 'Content-Type': manifest.mediaType },
      body: new Uint8Array(bytes),
    }),
    `push ${type} signature for ${repository}@${subject.digest}`,
  );
  return { digest, size: bytes.length, mediaType: manifest.mediaType, artifactType };
}

const COSIGN_SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';

/**
 * What `cosign sign` pushes by default (its tag scheme, no OCI `subject`): an
 * image manifest under the tag `sha256-<hex>.sig` whose layers are simplesigning
 * payloads, one per signature, with an image config listing them. Signing again
 * reads the manifest behind the tag, appends a layer and pushes the result to
 * the same tag, so the tag moves and the earlier manifest stays behind untagged.
 * Harbor records such a push as a `signature.cosign` accessory from the tag
 * (H:src/server/middleware/cosign/cosign.go).
 */
export async function pushCosignTagSignature(b: Backing, repository: string, subject: Artifact): Promise<PushedManifest> {
  const tag = `sha256-${subject.digest.slice('sha256:'.length)}.sig`;
  const auth = { Authorization: `Bearer ${b.token(repository, ['pull', 'push'])}` };
  const previous = await fetch(`${b.url}/v2/${repository}/manifests/${tag}`, { headers: { ...auth, Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const layers: Descriptor[] = [];
  if (previous.ok) layers.push(...((JSON.parse(await previous.text()) as ParsedManifest).layers ?? []));
  else await previous.arrayBuffer();
  const payload = Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': repository }, image: { 'docker-manifest-digest': subject.digest }, type: 'cosign container image signature' }, optional: { n: layers.length } }));
  layers.push({ mediaType: COSIGN_SIMPLESIGNING, digest: await pushBlob(b, repository, payload), size: payload.length });
  const config = Buffer.from(
    JSON.stringify({ architecture: '', created: '0001-01-01T00:00:00Z', history: [{ created: '0001-01-01T00:00:00Z' }], os: '', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) }, config: {} }),
  );
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await pushBlob(b, repository, config), size: config.length },
    layers: layers.map((l) => ({ ...l, annotations: { 'dev.cosignproject.cosign/signature': 'MEUCIQ-simulated' } })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  await check(
    await fetch(`${b.url}/v2/${repository}/manifests/${tag}`, { method: 'PUT', headers: { ...auth, 'Content-Type': manifest.mediaType }, body: new Uint8Array(bytes) }),
    `push the cosign signature ${repository}:${tag}`,
  );
  return { digest: sha256(bytes), size: bytes.length, mediaType: manifest.mediaType, artifactType: manifest.config.mediaType };
}

/** Reads an existing manifest from the backing registry (to register it as an accessory). */
export async function fetchManifest(b: Backing, repository: string, digest: string): Promise<PushedManifest> {
  const res = await check(
    await fetch(`${b.url}/v2/${repository}/manifests/${digest}`, {
      headers: {
        Authorization: `Bearer ${b.token(repository, ['pull'])}`,
        Accept: MANIFEST_ACCEPT,
      },
    }),
    `fetch ${repository}@${digest}`,
  );
  const bytes = Buffer.from(await res.arrayBuffer());
  const parsed = JSON.parse(bytes.toString('utf8')) as { mediaType?: string; artifactType?: string; config?: { mediaType?: string } };
  return {
    digest: sha256(bytes),
    size: bytes.length,
    mediaType: parsed.mediaType ?? res.headers.get('content-type') ?? '',
    artifactType: parsed.artifactType ?? parsed.config?.mediaType ?? '',
  };
}
