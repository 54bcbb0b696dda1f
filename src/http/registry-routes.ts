/**
 * The read half of the OCI distribution API. Thin: parse the path once,
 * ask the mirror, write the answer. Blob bodies go straight to the Node
 * response (hono's web-stream path would add a copy per chunk), and HEAD
 * never opens a body: hono would drop it without cancelling it.
 */
import { pipeline } from 'node:stream';
import type { Context, Hono } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { OciError } from '../oci/errors.js';
import { parseV2Path, type V2Route } from '../oci/paths.js';
import { contentRange, parseRange } from '../oci/range.js';
import type { Mirror, Target } from '../cache/mirror.js';
import type { BlobHandle } from '../cache/blobs.js';
import type { Metrics } from '../metrics/metrics.js';
import { API_VERSION_HEADER, JSON_CONTENT_TYPE } from './respond.js';
import type { AppEnv } from './app.js';
import type { AuditEntry } from '../store/index-db.js';
import type { ZeroCopy } from './sendfile.js';

/** Splits the raw request target; the path is matched still percent-encoded. */
export function rawTarget(c: Context<AppEnv>): { path: string; query: URLSearchParams; rawQuery: string } {
  const raw = c.env?.incoming?.url ?? new URL(c.req.url).pathname + new URL(c.req.url).search;
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const rawQuery = q < 0 ? '' : raw.slice(q + 1);
  return { path, query: new URLSearchParams(rawQuery), rawQuery };
}

/**
 * Registry requests are dispatched on the raw request target, before hono's
 * router sees a URL whose dot segments the WHATWG parser has already
 * resolved: "/v2/a/../../x" must be refused as a bad name, not routed as "/x".
 */
export function registerRegistryRoutes(app: Hono<AppEnv>, mirror: Mirror, metrics: Metrics, audit?: (e: AuditEntry) => void, zeroCopy?: ZeroCopy | null): void {
  app.use('*', async (c, next) => {
    const { path, query } = rawTarget(c);
    if (path !== '/v2' && !path.startsWith('/v2/')) return next();
    const method = c.req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      // Everything else under /v2 is a write: a mirror does not take pushes.
      c.set('route', 'push');
      throw readOnly();
    }
    // One registry per request: a repeated ns would mean one thing to berth and maybe another to a proxy or log in front.
    if (query.getAll('ns').length > 1) throw new OciError('NAME_INVALID', 'ns given more than once', { ns: query.getAll('ns').map((v) => v.slice(0, 100)).slice(0, 5) });
    const route = parseV2Path(path);
    c.set('route', route.kind);
    const head = method === 'HEAD';
    const target: Target = { ns: query.get('ns'), name: 'name' in route ? route.name : '', reqId: c.get('reqId'), credentials: basicCredentials(c.req.header('authorization')) };
    switch (route.kind) {
      case 'base':
        // As Distribution answers it; a HEAD gets the GET's headers, Content-Length included.
        return new Response(head ? null : '{}', { status: 200, headers: { ...API_VERSION_HEADER, 'Content-Type': JSON_CONTENT_TYPE, 'Content-Length': '2' } });
      case 'manifest':
        return manifest(c, mirror, target, route, head, audit);
      case 'blob':
        return blob(c, mirror, metrics, target, route, head, zeroCopy ?? null);
      case 'tags':
        return tags(c, mirror, target, query);
      case 'upload':
        throw readOnly();
    }
  });
}

/** 405 for a write: RFC 9110 §15.5.6 asks a 405 to say, in Allow, which methods the resource takes. */
function readOnly(): OciError {
  return new OciError('UNSUPPORTED', 'berth is a pull-through mirror: push to the upstream registry', undefined, { Allow: 'GET, HEAD' });
}

/** Basic credentials a client sent (containerd sends pull-secret credentials after a Basic challenge). */
export function basicCredentials(header: string | undefined): { username: string; password: string } | null {
  if (!header || header.length > 4096) return null;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return null;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/**
 * Whether an If-None-Match header names the ETag berth gives `digest`
 * (`"<digest>"`), or is `*`. Weak comparison, as RFC 9110 §13.1.2 asks for
 * GET and HEAD; the bare digest is taken too, as Distribution takes it.
 */
export function noneMatch(header: string | undefined, digest: string): boolean {
  if (!header || header.length > 8192) return false;
  return header.split(',').some((raw) => {
    const tag = raw.trim().replace(/^W\//, '');
    return tag === '*' || tag === `"${digest}"` || tag === digest;
  });
}

/** 304 for a conditional request whose ETag matched: no body, and none of the body's headers. */
function notModified(digest: string, extra: Record<string, string> = {}): Response {
  return new Response(null, { status: 304, headers: { ...API_VERSION_HEADER, ...extra, Etag: `"${digest}"` } });
}

const DECISION: Record<string, string> = { cache: 'cache', upstream: 'filled', stale: 'stale' };

async function manifest(
  c: Context<AppEnv>,
  mirror: Mirror,
  target: Target,
  route: Extract<V2Route, { kind: 'manifest' }>,
  head: boolean,
  audit: ((e: AuditEntry) => void) | undefined,
): Promise<Response> {
  const where = mirror.where(target);
  const record = (decision: string, digest: string | null, reason: string | null) =>
    audit?.({
      at: Date.now(),
      registry: where.registry,
      repository: where.repository,
      reference: route.reference,
      digest,
      method: c.req.method,
      decision,
      reason,
      client: c.env?.incoming?.socket?.remoteAddress ?? null,
      username: target.credentials?.username ?? null,
    });
  let r: Awaited<ReturnType<Mirror['manifest']>>;
  try {
    r = await mirror.manifest(target, route.reference, { byDigest: route.byDigest, head, accept: c.req.header('accept') });
  } catch (err) {
    if (err instanceof OciError) {
      const decision = err.code === 'PROJECTPOLICYVIOLATION' ? 'refused' : err.code === 'UNAUTHORIZED' ? 'unauthorized' : err.status === 404 ? 'not_found' : 'error';
      record(decision, route.byDigest ? route.reference : null, err.message.slice(0, 500));
    }
    throw err;
  }
  record(DECISION[r.source] ?? r.source, r.digest, null);
  c.set('source', r.source);
  c.set('digest', r.digest);
  const headers: Record<string, string> = {
    ...API_VERSION_HEADER,
    'Content-Type': r.mediaType,
    'Content-Length': String(r.size),
    'Docker-Content-Digest': r.digest,
    Etag: `"${r.digest}"`,
  };
  if (r.warning) headers.Warning = r.warning;
  if (noneMatch(c.req.header('if-none-match'), r.digest)) return notModified(r.digest, r.warning ? { Warning: r.warning } : {});
  return new Response(head || !r.body ? null : bytes(r.body), { status: 200, headers });
}

async function blob(c: Context<AppEnv>, mirror: Mirror, metrics: Metrics, target: Target, route: Extract<V2Route, { kind: 'blob' }>, head: boolean, zeroCopy: ZeroCopy | null): Promise<Response> {
  // The digest is the ETag: a match needs only to know the blob exists, as a HEAD does.
  const unchanged = noneMatch(c.req.header('if-none-match'), route.digest);
  const handle = await mirror.blob(target, route.digest, { head: head || unchanged });
  if (unchanged) {
    c.set('source', handle.source);
    c.set('digest', handle.digest);
    handle.release();
    return notModified(handle.digest, { 'Docker-Content-Digest': handle.digest });
  }
  return sendBlob(c, handle, head, (source, n) => metrics.served(source, n), zeroCopy);
}

/**
 * Writes a blob answer: Range and 206, the registry headers, and the body
 * straight to the Node response: on a plain TCP socket with sendfile(2)
 * when `zeroCopy` is given (a cached blob in one send, a fill followed as its
 * file grows), anything else copied through Node buffers. `sent` is told the bytes once they are all out (a truncated body
 * is a destroyed socket, and counts nothing).
 */
export async function sendBlob(
  c: Context<AppEnv>,
  handle: BlobHandle,
  head: boolean,
  sent: (source: 'cache' | 'upstream', n: number) => void,
  zeroCopy: ZeroCopy | null = null,
): Promise<Response> {
  c.set('source', handle.source);
  c.set('digest', handle.digest);
  const size = handle.size;
  const range = parseRange(c.req.header('range'), size);
  const headers: Record<string, string> = {
    ...API_VERSION_HEADER,
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': handle.digest,
    'Accept-Ranges': 'bytes',
    Etag: `"${handle.digest}"`,
  };
  if (range.kind === 'unsatisfiable') {
    handle.release();
    throw new OciError('RANGE_INVALID', 'requested range not satisfiable', { size }, { 'Content-Range': `bytes */${size}` });
  }
  let status = 200;
  let start = 0;
  let end = size - 1;
  if (range.kind === 'range') {
    status = 206;
    start = range.start;
    end = range.end;
    headers['Content-Range'] = contentRange(start, end, size);
  }
  headers['Content-Length'] = String(end - start + 1);
  if (head || !handle.open) {
    handle.release();
    return new Response(null, { status, headers });
  }
  const source = handle.source === 'cache' ? 'cache' : 'upstream';
  const outgoing = c.env?.outgoing;
  const length = end - start + 1;
  if (outgoing && zeroCopy && length > 0 && (handle.takeFile || handle.follow) && zeroCopy.usable(outgoing)) {
    headers['X-Request-Id'] = c.get('reqId');
    outgoing.writeHead(status, headers);
    // A cached blob in one send; a fill followed, one send per run of bytes that reached its file.
    let sending: Promise<number>;
    let done: () => void;
    if (handle.takeFile) {
      const file = handle.takeFile();
      sending = zeroCopy.send(outgoing, file.fd, start, length);
      done = file.done;
    } else {
      const body = handle.follow!(start, end);
      sending = zeroCopy.follow(outgoing, body.next);
      done = body.done;
    }
    void sending.then((errno) => {
      done();
      if (errno !== 0) {
        // A failed fill or a client gone: a truncated body is the only honest signal left once headers are out.
        outgoing.destroy();
        return;
      }
      outgoing.end();
      sent(source, length);
    });
    return RESPONSE_ALREADY_SENT;
  }
  const body = handle.open(start, end);
  if (!outgoing) {
    // app.request() in tests: no Node response to write to.
    const { Readable } = await import('node:stream');
    return new Response(Readable.toWeb(body) as ReadableStream, { status, headers });
  }
  headers['X-Request-Id'] = c.get('reqId');
  outgoing.writeHead(status, headers);
  pipeline(body, outgoing, (err) => {
    if (err) {
      // A truncated body is the only honest signal left once headers are out.
      outgoing.destroy();
      return;
    }
    sent(source, length);
  });
  return RESPONSE_ALREADY_SENT;
}

async function tags(c: Context<AppEnv>, mirror: Mirror, target: Target, query: URLSearchParams): Promise<Response> {
  const q = new URLSearchParams();
  for (const key of ['n', 'last']) {
    const v = query.get(key);
    if (v !== null) q.set(key, v);
  }
  const r = await mirror.tags(target, q.toString());
  const headers: Record<string, string> = { ...API_VERSION_HEADER, 'Content-Type': JSON_CONTENT_TYPE };
  if (r.link) headers.Link = r.link;
  if (r.stale) headers.Warning = '299 - "berth: upstream unreachable; listing only the tags berth has seen"';
  return new Response(c.req.method === 'HEAD' ? null : bytes(r.body), { status: 200, headers });
}

function bytes(b: Buffer): Uint8Array<ArrayBuffer> {
  return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, b.length);
}

export type { HttpBindings };
