/**
 * How an upstream failure reaches the client. containerd moves to its next
 * host on any status >= 400, so every answer here is fast and honest; the
 * detail names the upstream and the reason, never a credential.
 */
import { ConfigError } from '../config/errors.js';
import { OciError } from '../oci/errors.js';
import { UpstreamError } from '../upstream/types.js';
import { DigestMismatchError } from '../store/blobs.js';

/** No source has the blob (the fill's own failure, before it reaches a client). */
export class BlobNotFoundError extends Error {
  readonly code = 'BLOB_NOT_FOUND';
  constructor(readonly digest: string) {
    super(`no upstream has ${digest}`);
  }
}

/** The cache cannot hold a blob, even with everything evictable gone (then nothing is evicted). */
export class NoRoomError extends Error {
  readonly code = 'ENOSPC';
  constructor(readonly digest: string, readonly size: number) {
    super(`no room in the cache for ${digest} (${size} bytes): evicting what may go would not free enough`);
  }
}

/** The one way a client hears that a blob is not there. */
export function blobUnknown(digest: string): OciError {
  return new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest });
}

export function toClientError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  if (err instanceof BlobNotFoundError) return blobUnknown(err.digest);
  if (err instanceof DigestMismatchError) {
    return new OciError('BAD_GATEWAY', 'the upstream sent content that does not match its digest; nothing was cached', { digest: err.expected });
  }
  if (err instanceof UpstreamError) {
    const detail = { upstream: err.registry, reason: err.message };
    switch (err.code) {
      case 'UPSTREAM_UNREACHABLE':
      case 'UPSTREAM_TIMEOUT':
        return new OciError('UNAVAILABLE', `upstream ${err.registry} is unreachable and berth has no cached copy`, detail);
      case 'UPSTREAM_TLS':
        return new OciError('UNAVAILABLE', `TLS to upstream ${err.registry} failed and berth has no cached copy`, detail);
      case 'UPSTREAM_AUTH':
        // Docker Hub answers 401 for a repository that does not exist, so this is a 404
        // worded the way Docker Hub words it.
        return new OciError('NAME_UNKNOWN', `upstream ${err.registry} refused access: the repository does not exist or needs credentials berth lacks`, detail);
      case 'UPSTREAM_POLICY':
        return new OciError('PROJECTPOLICYVIOLATION', err.upstreamMessage ?? `upstream ${err.registry} refused this image by policy`);
      case 'UPSTREAM_RATE_LIMITED': {
        const headers: Record<string, string> = {};
        if (err.retryAfterMs !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
        return new OciError('TOOMANYREQUESTS', `upstream ${err.registry} is rate limiting berth`, detail, headers);
      }
      default:
        return new OciError('BAD_GATEWAY', `upstream ${err.registry} answered badly`, detail);
    }
  }
  // A password_file this process cannot read, met when the upstream asked for credentials: a command run by
  // a user who may not read it (the daemon reads every secret at start, so it never gets here).
  if (err instanceof ConfigError) return new OciError('UNAVAILABLE', err.message);
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'SQLITE_FULL' || code === 'EDQUOT') {
    return new OciError('UNAVAILABLE', 'the cache disk is full', { reason: String(code) });
  }
  return new OciError('UNKNOWN');
}
