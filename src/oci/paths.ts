/**
 * The OCI distribution paths berth answers, parsed once into a typed route
 * (after Spegel's pkg/oci/distribution.go): validate, then dispatch. Nothing
 * here touches the disk or the network.
 *
 * Names are matched on the raw (still percent-encoded) path against the
 * distribution-spec grammar, which has no '%', '.', '..' segments or
 * backslashes, so no encoded trick can reach a file path later.
 */
import { OciError } from './errors.js';
import { isDigest, looksLikeDigest } from './digest.js';

const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Distribution limits registry host + name to 255 characters. */
export const MAX_NAME_LENGTH = 255;

const REGISTRY_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$/;

export type V2Route =
  | { kind: 'base' }
  | { kind: 'manifest'; name: string; reference: string; byDigest: boolean }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'tags'; name: string }
  | { kind: 'upload'; name: string };

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

/** A registry host as containerd sends it in ?ns= ("docker.io", "harbor.example.com:8443"). */
export function isValidRegistryHost(host: string): boolean {
  return host.length > 0 && host.length <= 253 && REGISTRY_RE.test(host);
}

function checkName(name: string): string {
  if (!isValidName(name)) throw new OciError('NAME_INVALID', 'invalid repository name', { name: name.slice(0, 300) });
  return name;
}

/** Digests of the other algorithms Distribution knows (go-digest): well-formed, just never held here. */
const OTHER_ALGORITHM_RE = /^(?:sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$/;

function checkDigest(value: string, unknown: 'MANIFEST_UNKNOWN' | 'BLOB_UNKNOWN'): string {
  if (isDigest(value)) return value;
  // Content berth cannot hold nor fetch (it stores by sha256): a miss, 404 as Distribution answers it,
  // so containerd asks its next host rather than give up on a 400 (SPEC: a miss berth cannot fill is 404).
  if (OTHER_ALGORITHM_RE.test(value)) throw new OciError(unknown, 'berth holds sha256 content only', { digest: value });
  if (looksLikeDigest(value)) throw new OciError('DIGEST_INVALID', 'unsupported digest algorithm or malformed digest', { digest: value.slice(0, 200) });
  throw new OciError('DIGEST_INVALID', 'invalid digest', { digest: value.slice(0, 200) });
}

/**
 * Parses a request path below /v2. Throws an OciError for a malformed name or
 * digest, MANIFEST_UNKNOWN for a manifest reference that is neither tag nor
 * digest, and NOT_FOUND for a path that is no registry endpoint.
 */
export function parseV2Path(pathname: string): V2Route {
  if (pathname === '/v2' || pathname === '/v2/') return { kind: 'base' };
  if (!pathname.startsWith('/v2/')) throw new OciError('NOT_FOUND', 'not a registry path');
  const rest = pathname.slice('/v2/'.length);

  let m = /^(.+)\/manifests\/([^/]+)$/.exec(rest);
  if (m) {
    const name = checkName(m[1]!);
    const reference = m[2]!;
    // A tag has no ':', so a reference with one was meant as a digest: a malformed one is the client's error.
    if (reference.includes(':')) return { kind: 'manifest', name, reference: checkDigest(reference, 'MANIFEST_UNKNOWN'), byDigest: true };
    // Anything else that is no tag names no manifest anywhere: 404, as Distribution answers and the
    // conformance suite expects ("HEAD/GET nonexistent manifest"), and no upstream need be asked.
    if (!isValidTag(reference)) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown: the reference is neither a valid tag nor a digest');
    return { kind: 'manifest', name, reference, byDigest: false };
  }
  m = /^(.+)\/blobs\/uploads(?:\/[^/]*)?$/.exec(rest);
  if (m) return { kind: 'upload', name: checkName(m[1]!) };
  m = /^(.+)\/blobs\/([^/]+)$/.exec(rest);
  if (m) return { kind: 'blob', name: checkName(m[1]!), digest: checkDigest(m[2]!, 'BLOB_UNKNOWN') };
  m = /^(.+)\/tags\/list$/.exec(rest);
  if (m) return { kind: 'tags', name: checkName(m[1]!) };
  throw new OciError('NOT_FOUND', 'not a registry path');
}

/**
 * The repository name as the upstream knows it. Docker Hub keeps official
 * images under library/, so "nginx" and "library/nginx" are one repository.
 */
export function canonicalRepository(registry: string, name: string): string {
  if (registry === 'docker.io' && !name.includes('/')) {
    const full = `library/${name}`;
    // The upstream would refuse it (Distribution: 500): the name is the client's to fix, not the upstream's fault.
    if (full.length > MAX_NAME_LENGTH) throw new OciError('NAME_INVALID', `invalid repository name: ${full.length} characters as library/${name.slice(0, 20)}…, over ${MAX_NAME_LENGTH}`, { name: name.slice(0, 300) });
    return full;
  }
  return name;
}

/** A full image reference as users write it: [registry/]name[:tag][@digest]. */
export interface ImageReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

/**
 * Parses "nginx:1.27", "docker.io/library/nginx@sha256:…",
 * "harbor.example.com/proj/app:v1". A first component with a dot, a colon or
 * "localhost" is a registry host; otherwise the image is on docker.io.
 */
export function parseImageReference(ref: string): ImageReference {
  let rest = ref.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw new TypeError(`invalid digest in image reference ${JSON.stringify(ref)}`);
  }
  let registry = 'docker.io';
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      registry = first === 'index.docker.io' || first === 'registry-1.docker.io' ? 'docker.io' : first;
      rest = rest.slice(slash + 1);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw new TypeError(`invalid tag in image reference ${JSON.stringify(ref)}`);
  }
  if (!isValidName(rest)) throw new TypeError(`invalid repository name in image reference ${JSON.stringify(ref)}`);
  if (!isValidRegistryHost(registry)) throw new TypeError(`invalid registry in image reference ${JSON.stringify(ref)}`);
  if (!tag && !digest) tag = 'latest';
  const out: ImageReference = { registry, repository: canonicalRepository(registry, rest) };
  if (tag) out.tag = tag;
  if (digest) out.digest = digest;
  return out;
}

export function formatImageReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}
