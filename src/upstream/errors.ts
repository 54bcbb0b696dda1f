/**
 * Turns whatever undici, Node's net/tls or an upstream status throws at us into
 * an UpstreamError with a stable code. Code matches on `err.code`, never on the
 * message (undici and OpenSSL reword messages between releases).
 */
import { header, parseRetryAfter } from './headers.js';
import type { Answer } from './transport.js';
import { UpstreamError, type UpstreamErrorCode } from './types.js';

const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_FAIL',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);

/** OpenSSL verification results as Node reports them in `err.code`. */
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  // "wrong version number": an https:// URL pointed at a plain-HTTP port.
  'EPROTO',
]);

const PROTOCOL_CODES = new Set([
  // undici's redirect handler: "Redirect loop detected", or more hops than allowed. The upstream
  // answered, badly: a 502, and no count against the circuit breaker.
  'UND_ERR_INVALID_ARG',
  'UND_ERR_MAX_REDIRECTIONS',
  'HPE_INVALID_CONSTANT',
  'UND_ERR_HEADERS_OVERFLOW',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_EXCEEDED_MAX_SIZE',
]);

/** The `code` of an error, or of the first error inside an AggregateError (happy-eyeballs connects). */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return code;
  if (err instanceof AggregateError) return errorCode(err.errors[0]);
  return undefined;
}

function classify(code: string | undefined): UpstreamErrorCode {
  if (code === undefined) return 'UPSTREAM_UNREACHABLE';
  if (TIMEOUT_CODES.has(code)) return 'UPSTREAM_TIMEOUT';
  if (TLS_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) return 'UPSTREAM_TLS';
  if (PROTOCOL_CODES.has(code) || code.startsWith('HPE_')) return 'UPSTREAM_PROTOCOL';
  if (UNREACHABLE_CODES.has(code)) return 'UPSTREAM_UNREACHABLE';
  // Anything else from the socket layer still means "no usable answer came back".
  return 'UPSTREAM_UNREACHABLE';
}

const WHAT: Record<UpstreamErrorCode, string> = {
  UPSTREAM_UNREACHABLE: 'unreachable',
  UPSTREAM_TIMEOUT: 'timed out',
  UPSTREAM_TLS: 'TLS failure',
  UPSTREAM_AUTH: 'refused authentication',
  UPSTREAM_RATE_LIMITED: 'rate limited',
  UPSTREAM_POLICY: 'refused by policy',
  UPSTREAM_STATUS: 'unexpected status',
  UPSTREAM_PROTOCOL: 'malformed answer',
};

/**
 * Maps a thrown transport error. The message names the registry and the
 * underlying reason (e.g. the OpenSSL verify code); it never contains request
 * headers, so no credential can leak through it.
 */
export function toUpstreamError(err: unknown, registry: string): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const code = errorCode(err);
  const kind = classify(code);
  const reason = err instanceof Error ? err.message : String(err);
  const detail = code && !reason.includes(code) ? `${code}: ${reason}` : reason;
  return new UpstreamError(kind, registry, `upstream ${registry} ${WHAT[kind]}: ${detail}`, { cause: err });
}

/** True for socket resets that a fresh connection may not hit (a stale keep-alive socket). */
export function isTransientReset(err: unknown): boolean {
  if (!(err instanceof UpstreamError) || err.code !== 'UPSTREAM_UNREACHABLE') return false;
  const code = errorCode(err.cause);
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET';
}

/**
 * The first `{"errors":[{code,message}]}` entry of an upstream error body, for
 * operators reading logs. Registries put no request secrets in these bodies.
 */
/**
 * The OCI error code of an upstream's error body ("MANIFEST_UNKNOWN"), and
 * nothing else: an upstream's message text is not relayed to clients or
 * logs, because an upstream may echo back what it was sent (a token).
 */
export function describeErrorBody(body: Buffer): string {
  if (body.length === 0) return '';
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (parsed && typeof parsed === 'object' && 'errors' in parsed && Array.isArray(parsed.errors)) {
      const first: unknown = parsed.errors[0];
      if (first && typeof first === 'object') {
        const { code } = first as { code?: unknown };
        if (typeof code === 'string' && /^[A-Z_]{1,64}$/.test(code)) return code;
      }
    }
  } catch {
    // not the OCI envelope: say nothing rather than echo arbitrary HTML
  }
  return '';
}

/** How much of an error body we read for the log line; the rest is discarded. */
const ERROR_BODY_LIMIT = 4 * 1024;

/**
 * The error for a status the caller cannot use: 401/403 after the auth flow,
 * 429 once retries are spent (with the upstream's Retry-After), anything else
 * as UPSTREAM_STATUS. Consumes the answer's body either way.
 */
/** The first error's message of an OCI error body, verbatim (bounded). */
function firstErrorMessage(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: { message?: unknown }[] };
    const m = parsed.errors?.[0]?.message;
    return typeof m === 'string' ? m.slice(0, 2000) : undefined;
  } catch {
    return undefined;
  }
}

export async function statusError(answer: Answer, registry: string, what: string): Promise<UpstreamError> {
  let detail = '';
  let body: Buffer | undefined;
  try {
    body = await answer.read(ERROR_BODY_LIMIT);
    detail = describeErrorBody(body);
  } catch {
    answer.discard();
  }
  const status = answer.status;
  if (status === 412) {
    // Harbor's pull-time policy said no: the client must hear it as Harbor worded it.
    const upstreamMessage = body ? firstErrorMessage(body) : undefined;
    return new UpstreamError('UPSTREAM_POLICY', registry, `upstream ${registry} refused ${what} by policy (412${detail ? ` ${detail}` : ''})`, { status, ...(upstreamMessage ? { upstreamMessage } : {}) });
  }
  const suffix = detail ? ` (${status} ${detail})` : ` (${status})`;
  if ((status === 401 || status === 403) && !answer.redirected) {
    return new UpstreamError('UPSTREAM_AUTH', registry, `upstream ${registry} refused ${what}${suffix}`, { status });
  }
  if (status === 429) {
    const retryAfterMs = parseRetryAfter(header(answer.headers, 'retry-after'));
    return new UpstreamError('UPSTREAM_RATE_LIMITED', registry, `upstream ${registry} rate-limited ${what}${suffix}`, {
      status,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }
  const where = answer.redirected ? ' after a redirect' : '';
  return new UpstreamError('UPSTREAM_STATUS', registry, `upstream ${registry} answered ${what}${where} unexpectedly${suffix}`, { status });
}
