/**
 * What the cache needs from a registry upstream. The cache never sees HTTP
 * details (tokens, redirects, retries); the client never sees the disk.
 */
import type { Readable } from 'node:stream';

export type UpstreamErrorCode =
  | 'UPSTREAM_UNREACHABLE' // connect refused/reset, DNS, circuit open
  | 'UPSTREAM_TIMEOUT' // connect, headers or body idle timeout
  | 'UPSTREAM_TLS' // certificate or handshake failure
  | 'UPSTREAM_AUTH' // 401/403 after the credential/token flow
  | 'UPSTREAM_RATE_LIMITED' // 429 after bounded retries
  | 'UPSTREAM_POLICY' // 412: the upstream's own policy refused (Harbor's PROJECTPOLICYVIOLATION)
  | 'UPSTREAM_STATUS' // any other unexpected status (5xx, 400…)
  | 'UPSTREAM_PROTOCOL'; // malformed answer (bad digest header, missing length…)

export class UpstreamError extends Error {
  readonly code: UpstreamErrorCode;
  readonly registry: string;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  /** The upstream's own error message, for refusals passed on to the client as they were worded. */
  readonly upstreamMessage: string | undefined;

  constructor(code: UpstreamErrorCode, registry: string, message: string, opts: { status?: number; retryAfterMs?: number; cause?: unknown; upstreamMessage?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UpstreamError';
    this.code = code;
    this.registry = registry;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
    this.upstreamMessage = opts.upstreamMessage;
  }
}

/** True for failures that mean "the upstream cannot be reached right now" (serve stale, 503). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof UpstreamError && ['UPSTREAM_UNREACHABLE', 'UPSTREAM_TIMEOUT', 'UPSTREAM_TLS'].includes(err.code);
}

export interface ManifestAnswer {
  /** Docker-Content-Digest from the upstream, or sha256 of the body when absent (GET only). */
  digest: string;
  /** Content-Type without parameters. */
  mediaType: string;
  size: number;
  /** Present for GET; the exact bytes the upstream sent. */
  body?: Buffer;
}

export interface BlobAnswer {
  /** 200 for the whole blob, 206 when `offset` > 0 was honoured. */
  status: 200 | 206;
  /** Byte offset of the first body byte within the blob (0 for a 200). */
  offset: number;
  /** Total blob size if the upstream said it (Content-Length or Content-Range). */
  size: number | undefined;
  /** Must be consumed or destroyed by the caller. */
  body: Readable;
}

export interface RequestOptions {
  /** Accept header to pass upstream (manifests). */
  accept?: string;
  signal?: AbortSignal;
  /** Request id of the client request that caused this, for log correlation. */
  reqId?: string;
  /** Query parameters to add (a site peer is told the upstream with `ns`). */
  query?: Record<string, string>;
}

export interface UpstreamEvent {
  registry: string;
  kind: 'manifest' | 'blob' | 'tags' | 'token' | 'ping';
  method: 'GET' | 'HEAD';
  /** HTTP status of the final answer, or 'error' when none came. */
  status: number | 'error';
  durationMs: number;
}

export interface UpstreamHealth {
  up: boolean;
  consecutiveFailures: number;
  lastError?: string;
  lastOkAt?: number;
  lastFailureAt?: number;
}

export interface RegistryClient {
  readonly registry: string;
  /** null: the upstream answered 404 (unknown name, tag or digest). */
  getManifest(repository: string, reference: string, opts?: RequestOptions): Promise<ManifestAnswer | null>;
  headManifest(repository: string, reference: string, opts?: RequestOptions): Promise<Omit<ManifestAnswer, 'body'> | null>;
  headBlob(repository: string, digest: string, opts?: RequestOptions): Promise<{ size: number } | null>;
  /** GET a blob from `offset` (Range) following redirects; null on 404. */
  getBlob(repository: string, digest: string, opts?: RequestOptions & { offset?: number }): Promise<BlobAnswer | null>;
  /** GET /v2/<repo>/tags/list with the given raw query string (n, last); null on 404. */
  getTags(repository: string, query: string, opts?: RequestOptions): Promise<{ body: Buffer; link?: string } | null>;
  /** GET /v2/ with auth: true when the upstream answers as a registry. */
  ping(opts?: RequestOptions): Promise<boolean>;
  /**
   * Best effort, for the daemon at start: opens a connection and learns the
   * upstream's auth scheme from GET /v2/ (no token), so the first pull pays
   * neither. Never throws; outside the circuit and the metrics.
   */
  warm?(): Promise<void>;
  health(): UpstreamHealth;
  close(): Promise<void>;
}
