/** Manifest media types berth stores and serves verbatim. */
export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifestV1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerManifestV1: 'application/vnd.docker.distribution.manifest.v1+json',
} as const;

export const INDEX_MEDIA_TYPES: readonly string[] = [MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList];

/** What berth asks an upstream for when the client sent no Accept header. */
export const DEFAULT_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
].join(', ');

/**
 * The Accept header to send upstream for a client's. Distribution 2.8 answers
 * 404 for an OCI manifest unless OCI types are named explicitly, so a missing
 * or wildcard Accept (curl, fetch) is widened to the explicit list.
 */
export function upstreamAccept(clientAccept: string | undefined | null): string {
  if (!clientAccept || !clientAccept.trim()) return DEFAULT_ACCEPT;
  const wild = clientAccept.split(',').some((p) => {
    const type = baseMediaType(p);
    return type === '*/*' || type === 'application/*';
  });
  return wild ? `${DEFAULT_ACCEPT}, ${clientAccept}` : clientAccept;
}

/** A media type without parameters, lower-cased ("application/json; charset=utf-8" -> "application/json"). */
export function baseMediaType(value: string | undefined | null): string {
  if (!value) return '';
  return (value.split(';')[0] ?? '').trim().toLowerCase();
}

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_MEDIA_TYPES.includes(baseMediaType(mediaType));
}

/**
 * Whether an Accept header admits a media type. No header, or a wildcard,
 * admits everything (registries answer such clients with whatever they have).
 */
export function acceptAllows(accept: string | undefined | null, mediaType: string): boolean {
  if (!accept || !accept.trim()) return true;
  const wanted = baseMediaType(mediaType);
  for (const part of accept.split(',')) {
    const type = baseMediaType(part);
    if (type === '*/*' || type === 'application/*' || type === wanted) return true;
  }
  return false;
}

/** The media type a manifest body declares in its own `mediaType` field, if any. */
export function declaredMediaType(body: Uint8Array): string | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(body).toString('utf8'));
    if (parsed && typeof parsed === 'object' && 'mediaType' in parsed) {
      const mt = (parsed as { mediaType?: unknown }).mediaType;
      if (typeof mt === 'string') return mt;
    }
  } catch {
    // not JSON: the caller falls back to the upstream's Content-Type
  }
  return undefined;
}

/** Whether an Accept header admits an index of either kind (then a tag may be moved for everyone). */
export function acceptsIndex(accept: string | undefined | null): boolean {
  return INDEX_MEDIA_TYPES.some((type) => acceptAllows(accept, type));
}

/**
 * Whether a manifest of this type may answer a request with this Accept, as
 * Distribution decides it: an OCI manifest or index only when the Accept
 * admits its type, a Docker type whatever the Accept (Distribution serves
 * those by digest regardless). q-values are not read, as Distribution does not.
 */
export function acceptAdmitsManifest(accept: string | undefined | null, mediaType: string): boolean {
  const type = baseMediaType(mediaType);
  return (type !== MEDIA_TYPES.ociManifest && type !== MEDIA_TYPES.ociIndex) || acceptAllows(accept, type);
}

/**
 * A manifest's media type from an upstream's answer. Upstreams sometimes answer
 * text/plain or application/json; the manifest's own field is better then.
 */
export function pickMediaType(contentType: string, body: Uint8Array): string {
  const ct = baseMediaType(contentType);
  if (ct && ct !== 'application/json' && ct !== 'text/plain' && ct !== 'application/octet-stream') return ct;
  return declaredMediaType(body) ?? (ct || MEDIA_TYPES.ociManifest);
}
