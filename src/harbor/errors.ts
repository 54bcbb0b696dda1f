/**
 * Errors of the Harbor client, with stable codes: callers (sync, enforcement,
 * `berth doctor`) branch on `code`, never on the message. Messages name the
 * Harbor URL path and Harbor's own error code/message, never a header, so no
 * credential can leak through them.
 */
import { toUpstreamError } from '../upstream/errors.js';
import { UpstreamError } from '../upstream/types.js';

export type HarborErrorCode =
  | 'HARBOR_UNREACHABLE' // connect refused/reset, DNS
  | 'HARBOR_TIMEOUT' // connect, headers, body idle or whole-request deadline
  | 'HARBOR_TLS' // certificate, handshake, unreadable ca_file
  | 'HARBOR_AUTH' // 401: the configured account was not accepted
  | 'HARBOR_FORBIDDEN' // 403: accepted, but lacks a permission
  | 'HARBOR_NOT_FOUND' // 404
  | 'HARBOR_STATUS' // any other unexpected status
  | 'HARBOR_PROTOCOL'; // an answer that is not what the v2.0 API sends

export class HarborError extends Error {
  readonly code: HarborErrorCode;
  /** HTTP status, when an answer came. */
  readonly status: number | undefined;
  /** Harbor's `errors[0].code` (e.g. "FORBIDDEN", "UNAUTHORIZED"), when it sent one. */
  readonly harborCode: string | undefined;

  constructor(code: HarborErrorCode, message: string, opts: { status?: number; harborCode?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'HarborError';
    this.code = code;
    this.status = opts.status;
    this.harborCode = opts.harborCode;
  }
}

/** True when Harbor could not be asked at all (as opposed to answering no). */
export function isHarborUnreachable(err: unknown): boolean {
  return err instanceof HarborError && (err.code === 'HARBOR_UNREACHABLE' || err.code === 'HARBOR_TIMEOUT' || err.code === 'HARBOR_TLS');
}

const FROM_UPSTREAM: Record<UpstreamError['code'], HarborErrorCode> = {
  UPSTREAM_UNREACHABLE: 'HARBOR_UNREACHABLE',
  UPSTREAM_TIMEOUT: 'HARBOR_TIMEOUT',
  UPSTREAM_TLS: 'HARBOR_TLS',
  UPSTREAM_AUTH: 'HARBOR_AUTH',
  UPSTREAM_RATE_LIMITED: 'HARBOR_STATUS',
  UPSTREAM_POLICY: 'HARBOR_STATUS',
  UPSTREAM_STATUS: 'HARBOR_STATUS',
  UPSTREAM_PROTOCOL: 'HARBOR_PROTOCOL',
};

/**
 * Maps a thrown transport error (undici, net, tls, an aborted deadline) to a
 * HarborError. The socket-level classification is the upstream client's, so
 * both report the same failure the same way.
 */
export function toHarborError(err: unknown, what: string): HarborError {
  if (err instanceof HarborError) return err;
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
    return new HarborError('HARBOR_TIMEOUT', `harbor ${what}: no answer within the deadline`, { cause: err });
  }
  const mapped = err instanceof UpstreamError ? err : toUpstreamError(err, 'harbor');
  return new HarborError(FROM_UPSTREAM[mapped.code], `harbor ${what}: ${mapped.message.replace(/^upstream harbor /, '')}`, { cause: err });
}
