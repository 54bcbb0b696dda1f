/**
 * How an upstream failure reaches the client. containerd moves to its next
 * host on any status >= 400, so every answer here is fast and honest; the
 * detail names the upstream and the reason, never a credential.
 */
import { OciError } from '../oci/errors.js';
import { UpstreamError } from '../upstream/types.js';
import { DigestMismatchError } from '../store/blobs.js';
import { BlobNotFoundError } from './fill.js';

export function toClientError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  if (err instanceof BlobNotFoundError) return new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: err.digest });
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
        return new OciError('DENIED', `upstream ${err.registry} refused berth's credentials`, detail);
      case 'UPSTREAM_RATE_LIMITED': {
        const headers: Record<string, string> = {};
        if (err.retryAfterMs !== undefined) headers['Retry-After'] = String(Math.max(1, Math.ceil(err.retryAfterMs / 1000)));
        return new OciError('TOOMANYREQUESTS', `upstream ${err.registry} is rate limiting berth`, detail, headers);
      }
      default:
        return new OciError('BAD_GATEWAY', `upstream ${err.registry} answered badly`, detail);
    }
  }
  return new OciError('UNKNOWN');
}
