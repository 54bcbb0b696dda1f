/**
 * Every error code berth can answer, registered once with its HTTP status, as
 * Distribution does in registry/api/errcode/register.go. `renderError` turns
 * any of them into the OCI `{"errors":[…]}` envelope.
 */
export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  RANGE_INVALID: { status: 416, message: 'invalid content range' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'The operation is unsupported.' },
  NOT_FOUND: { status: 404, message: 'not found' },
  PROJECTPOLICYVIOLATION: { status: 412, message: 'the image violates a project policy' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UNKNOWN: { status: 500, message: 'unknown error' },
  BAD_GATEWAY: { status: 502, message: 'the upstream registry answered badly' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error meant for the client: its code picks the status, its message is safe to show. */
export class OciError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers (a challenge, Retry-After). */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message?: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message ?? ERROR_CODES[code].message);
    this.name = 'OciError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.detail = detail;
    this.headers = headers;
  }
}

export function isOciError(err: unknown): err is OciError {
  return err instanceof OciError;
}

export interface ErrorBody {
  errors: { code: string; message: string; detail?: unknown }[];
}

/** The JSON envelope for one error. Unknown errors never leak their message. */
export function renderError(err: unknown): { status: number; body: ErrorBody; headers: Record<string, string> } {
  if (isOciError(err)) {
    const entry: ErrorBody['errors'][number] = { code: err.code, message: err.message };
    if (err.detail !== undefined) entry.detail = err.detail;
    return { status: err.status, body: { errors: [entry] }, headers: err.headers };
  }
  return {
    status: 500,
    body: { errors: [{ code: 'UNKNOWN', message: ERROR_CODES.UNKNOWN.message }] },
    headers: {},
  };
}
