/**
 * One request/response pair as the simulator handles it. Every answer goes through
 * `writeHead` here, which stamps `X-Request-Id` (Harbor sends one on every response,
 * echoing the caller's when given) and records the request before its first byte
 * leaves, so a test that holds a response always finds it in `requests()`.
 */
import { randomUUID } from 'node:crypto';
import type http from 'node:http';

export const JSON_UTF8 = 'application/json; charset=utf-8';

/** Harbor error code → HTTP status (H:src/lib/http/error.go). */
export const CODE_STATUS: Readonly<Record<string, number>> = {
  BAD_REQUEST: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  UNSUPPORTED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  DENIED: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  PRECONDITION: 412,
  PROJECTPOLICYVIOLATION: 412,
  UNPROCESSABLE_ENTITY: 422,
  TOO_MANY_REQUEST: 429,
  UNKNOWN: 500,
};

/** A Harbor-style failure a handler can throw; rendered by `Exchange.fail`. */
export class HarborError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly status: number = CODE_STATUS[code] ?? 500,
  ) {
    super(message);
  }
}

export type HeadListener = (ex: Exchange, status: number) => void;

export class Exchange {
  readonly requestId: string;
  readonly url: URL;
  readonly head: boolean;
  /** Who the request ran as, for the request record (null = anonymous). */
  user: string | null = null;

  constructor(
    readonly req: http.IncomingMessage,
    readonly res: http.ServerResponse,
    private readonly onHead: HeadListener,
  ) {
    const given = req.headers['x-request-id'];
    this.requestId = typeof given === 'string' && given.length > 0 ? given : randomUUID();
    this.url = new URL(req.url ?? '/', 'http://harbor-sim.invalid');
    this.head = req.method === 'HEAD';
  }

  /** The request target's path exactly as sent (still percent-encoded). */
  get rawPath(): string {
    const target = this.req.url ?? '/';
    const q = target.indexOf('?');
    return q < 0 ? target : target.slice(0, q);
  }

  header(name: string): string | undefined {
    const v = this.req.headers[name.toLowerCase()];
    return Array.isArray(v) ? v[0] : v;
  }

  writeHead(status: number, headers: Record<string, string | number | string[]>): void {
    this.onHead(this, status);
    this.res.writeHead(status, { ...headers, 'X-Request-Id': this.requestId });
  }

  json(status: number, body: unknown, headers: Record<string, string | number> = {}): void {
    const text = JSON.stringify(body);
    this.writeHead(status, { 'Content-Type': JSON_UTF8, 'Content-Length': Buffer.byteLength(text), ...headers });
    this.res.end(this.head ? undefined : text);
  }

  text(status: number, body: string, contentType = 'text/plain; charset=utf-8', headers: Record<string, string> = {}): void {
    this.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), ...headers });
    this.res.end(this.head ? undefined : body);
  }

  empty(status: number, headers: Record<string, string | number> = {}): void {
    this.writeHead(status, { 'Content-Length': 0, ...headers });
    this.res.end();
  }

  /** Harbor's error envelope; HEAD answers carry the headers and no body. */
  error(status: number, code: string, message: string, headers: Record<string, string> = {}): void {
    const text = JSON.stringify({ errors: [{ code, message }] });
    if (this.head) {
      this.writeHead(status, { 'Content-Type': JSON_UTF8, ...headers });
      this.res.end();
      return;
    }
    this.writeHead(status, { 'Content-Type': JSON_UTF8, 'Content-Length': Buffer.byteLength(text), ...headers });
    this.res.end(text);
  }

  fail(err: HarborError): void {
    this.error(err.status, err.code, err.message, err.headers);
  }
}

export function readBody(req: http.IncomingMessage, limit = 1 << 20): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size > limit) {
        reject(new HarborError('REQUEST_ENTITY_TOO_LARGE', 'request body too large', {}, 413));
        req.destroy();
        return;
      }
      parts.push(b);
    });
    req.once('end', () => resolve(Buffer.concat(parts)));
    req.once('error', reject);
  });
}

/** Go's strfmt.DateTime rendering: RFC 3339 with milliseconds, UTC. */
export const isoTime = (d: Date | null): string => (d ?? new Date('0001-01-01T00:00:00.000Z')).toISOString();
