/**
 * A fault-injecting HTTP proxy for berth's upstream side. It sits between
 * berth and a real Distribution (berth's `[[upstream]] url` points at it) and
 * forwards every request untouched unless a rule chosen by the test matches.
 *
 * A rule matches on method, a regex over the request path (no query) and
 * whether the request carried `Authorization` or `Range`, and applies once, N
 * times or always. Faults come in three phases:
 *  - answered by the proxy itself, nothing forwarded: `status` (429 with
 *    Retry-After, 500, 503…), `stallHeaders`, `redirect`, `redirectLoop`;
 *  - a change to the forwarded request: `ignoreRange` (drops `Range`, so the
 *    upstream answers 200 with the whole body);
 *  - applied to the upstream's answer, and only to a 200/206 with a body (a
 *    401 challenge or a 404 passes untouched and does not use the rule up):
 *    `reset` (TCP RST after N body bytes), `truncate` (FIN after N body bytes,
 *    headers still announcing the full length), `flip` (one byte XORed),
 *    `stallBody` (N bytes, then silence), `trickle` (slow drip).
 * At most one rule of each phase applies to a request (the first that matches).
 *
 * Every request is recorded when it arrives, before it is forwarded, so a
 * client holding berth's answer can assert on `requests()` at once.
 *
 * `startOrigin` is the second host of a redirect: a plain server on another
 * loopback address that serves bytes the test gives it and records whether a
 * request carried `Authorization` (it never should: undici drops it across
 * origins and berth must not add it back).
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { Teardown } from './procs.js';

export type Fault =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string | ((req: ProxyRequest) => string) }
  | { kind: 'stallHeaders' }
  | { kind: 'redirect'; location: string | ((req: ProxyRequest) => string); status?: 301 | 302 | 303 | 307 | 308 }
  | { kind: 'redirectLoop'; sameUrl?: boolean }
  | { kind: 'ignoreRange' }
  | { kind: 'reset'; afterBytes: number }
  | { kind: 'truncate'; afterBytes: number }
  | { kind: 'flip'; offset: number }
  | { kind: 'stallBody'; afterBytes: number }
  | { kind: 'trickle'; chunkBytes: number; intervalMs: number };

export type FaultKind = Fault['kind'];

export interface FaultRule {
  /** Upper-case method; any when absent. */
  method?: string;
  /** Tested against the request path without its query string. */
  path?: RegExp;
  /** Only requests that carried (true) or lacked (false) an Authorization header. */
  authorized?: boolean;
  /** Only requests that carried (true) or lacked (false) a Range header. */
  ranged?: boolean;
  /** How many requests it applies to; default: always. */
  times?: number;
  fault: Fault;
}

export interface RuleHandle {
  /** How many requests the rule was applied to. */
  readonly applied: number;
  remove(): void;
}

export interface ProxyRequest {
  seq: number;
  method: string;
  /** Path without the query string. */
  path: string;
  /** The request target as received. */
  url: string;
  /** The Range header berth sent (before any `ignoreRange`). */
  range: string | undefined;
  authorized: boolean;
  /** The header's value, for tests that look for leaked secrets. */
  authorization: string | undefined;
  /** Faults applied to this request, in phase order. */
  faults: FaultKind[];
  /** Status the proxy answered with; undefined while pending or when none was sent. */
  status: number | undefined;
  at: number;
}

export interface RequestQuery {
  method?: string;
  pathRe?: RegExp;
  since?: number;
}

export interface FaultProxy {
  url: string;
  host: string;
  port: number;
  addRule(rule: FaultRule): RuleHandle;
  clearRules(): void;
  requests(q?: RequestQuery): ProxyRequest[];
  /** The `seq` the next request gets; pass as `since`. */
  mark(): number;
  waitForRequests(pred: (reqs: ProxyRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  /** Ends every stalled answer (stallHeaders, stallBody) by destroying its socket. */
  releaseStalls(): void;
  close(): Promise<void>;
}

const REQUEST_PHASE: ReadonlySet<FaultKind> = new Set(['status', 'stallHeaders', 'redirect', 'redirectLoop']);
const MODIFIER_PHASE: ReadonlySet<FaultKind> = new Set(['ignoreRange']);
const RESPONSE_PHASE: ReadonlySet<FaultKind> = new Set(['reset', 'truncate', 'flip', 'stallBody', 'trickle']);

/** Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

interface LiveRule {
  rule: FaultRule;
  left: number;
  applied: number;
}

function listen(server: http.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function writeAsync(res: http.ServerResponse, chunk: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (chunk.length === 0 || res.destroyed) {
      resolve();
      return;
    }
    // The callback fires once the bytes are handed to the kernel (or the socket died).
    res.write(chunk, () => resolve());
  });
}

function collect(stream: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
  });
}

export async function startFaultProxy(t: Teardown, opts: { target: string; host?: string }): Promise<FaultProxy> {
  const target = new URL(opts.target);
  const bindHost = opts.host ?? '127.0.0.1';
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const rules: LiveRule[] = [];
  const recorded: ProxyRequest[] = [];
  const events = new EventEmitter();
  events.setMaxListeners(0);
  const stalled = new Set<Socket>();

  const pick = (phase: ReadonlySet<FaultKind>, rec: ProxyRequest, consume: boolean): LiveRule | undefined => {
    const hit = rules.find(
      (r) =>
        r.left > 0 &&
        phase.has(r.rule.fault.kind) &&
        (r.rule.method === undefined || r.rule.method.toUpperCase() === rec.method) &&
        (r.rule.path === undefined || ((r.rule.path.lastIndex = 0), r.rule.path.test(rec.path))) &&
        (r.rule.authorized === undefined || r.rule.authorized === rec.authorized) &&
        (r.rule.ranged === undefined || r.rule.ranged === (rec.range !== undefined)),
    );
    if (hit && consume) {
      hit.left--;
      hit.applied++;
      rec.faults.push(hit.rule.fault.kind);
    }
    return hit;
  };

  const stall = (res: http.ServerResponse): void => {
    const sock = res.socket;
    if (!sock) return;
    stalled.add(sock);
    sock.once('close', () => stalled.delete(sock));
  };

  const answerItself = (fault: Fault, rec: ProxyRequest, req: http.IncomingMessage, res: http.ServerResponse): void => {
    switch (fault.kind) {
      case 'status': {
        const body = (typeof fault.body === 'function' ? fault.body(rec) : fault.body) ?? JSON.stringify({ errors: [{ code: 'FAULT', message: `injected ${fault.status}` }] });
        rec.status = fault.status;
        res.writeHead(fault.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...fault.headers });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      case 'stallHeaders':
        stall(res);
        return;
      case 'redirect': {
        const location = typeof fault.location === 'function' ? fault.location(rec) : fault.location;
        rec.status = fault.status ?? 307;
        res.writeHead(rec.status, { location, 'content-length': 0 });
        res.end();
        return;
      }
      case 'redirectLoop': {
        // sameUrl: straight back to itself (undici spots that); else a fresh query each hop (it cannot).
        const hop = Number(new URLSearchParams(rec.url.split('?')[1] ?? '').get('fault-hop') ?? '0') + 1;
        const location = fault.sameUrl ? rec.url : `${rec.path}?fault-hop=${hop}`;
        rec.status = 302;
        res.writeHead(302, { location, 'content-length': 0 });
        res.end();
        return;
      }
      default:
        throw new Error(`fault ${fault.kind} is not answered by the proxy itself`);
    }
  };

  const applyToBody = async (fault: Fault, upRes: http.IncomingMessage, res: http.ServerResponse, headers: string[]): Promise<void> => {
    const body = await collect(upRes);
    res.writeHead(upRes.statusCode ?? 502, headers);
    switch (fault.kind) {
      case 'reset':
        await writeAsync(res, body.subarray(0, fault.afterBytes));
        res.socket?.resetAndDestroy();
        return;
      case 'truncate':
        await writeAsync(res, body.subarray(0, fault.afterBytes));
        // A clean FIN while Content-Length still promises the rest.
        res.socket?.end();
        return;
      case 'flip': {
        const copy = Buffer.from(body);
        if (fault.offset < copy.length) copy[fault.offset] = (copy[fault.offset] ?? 0) ^ 0xff;
        res.end(copy);
        return;
      }
      case 'stallBody':
        await writeAsync(res, body.subarray(0, fault.afterBytes));
        stall(res);
        return;
      case 'trickle':
        for (let off = 0; off < body.length && !res.destroyed; off += fault.chunkBytes) {
          await writeAsync(res, body.subarray(off, off + fault.chunkBytes));
          // The drip rate is the fault itself, not a wait for some state.
          if (off + fault.chunkBytes < body.length) await delay(fault.intervalMs);
        }
        res.end();
        return;
      default:
        throw new Error(`fault ${fault.kind} does not apply to a body`);
    }
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const auth = req.headers.authorization;
    const rec: ProxyRequest = {
      seq: recorded.length,
      method: req.method ?? 'GET',
      path: qi < 0 ? url : url.slice(0, qi),
      url,
      range: req.headers.range,
      authorized: auth !== undefined,
      authorization: auth,
      faults: [],
      status: undefined,
      at: Date.now(),
    };
    recorded.push(rec);
    events.emit('request');

    const early = pick(REQUEST_PHASE, rec, true);
    if (early) {
      answerItself(early.rule.fault, rec, req, res);
      return;
    }
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: target.host };
    if (pick(MODIFIER_PHASE, rec, true)) delete headers.range;
    const upReq = http.request(
      { protocol: target.protocol, hostname: target.hostname, port: target.port, method: rec.method, path: url, headers, agent },
      (upRes) => {
        const status = upRes.statusCode ?? 502;
        rec.status = status;
        const out: string[] = [];
        for (let i = 0; i + 1 < upRes.rawHeaders.length; i += 2) {
          const name = upRes.rawHeaders[i] ?? '';
          if (!HOP_BY_HOP.has(name.toLowerCase())) out.push(name, upRes.rawHeaders[i + 1] ?? '');
        }
        const hasBody = rec.method !== 'HEAD' && (status === 200 || status === 206);
        const late = hasBody ? pick(RESPONSE_PHASE, rec, true) : undefined;
        if (late) {
          applyToBody(late.rule.fault, upRes, res, out).catch(() => res.destroy());
          return;
        }
        res.writeHead(status, out);
        upRes.pipe(res);
        upRes.once('error', () => res.destroy());
      },
    );
    // The upstream is gone: look gone too (no answer berth could mistake for the registry's).
    upReq.once('error', () => res.destroy());
    res.once('close', () => {
      if (!res.writableFinished) upReq.destroy();
    });
    req.pipe(upReq);
  };

  const server = http.createServer(handle);
  server.keepAliveTimeout = 30_000;
  const port = await listen(server, bindHost);
  const url = `http://${bindHost}:${port}`;

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      for (const s of stalled) s.destroy();
      agent.destroy();
    });
    return closing;
  };
  t.teardown(close);

  const matches = (r: ProxyRequest, q: RequestQuery): boolean =>
    (q.method === undefined || r.method === q.method.toUpperCase()) &&
    (q.pathRe === undefined || ((q.pathRe.lastIndex = 0), q.pathRe.test(r.path))) &&
    (q.since === undefined || r.seq >= q.since);

  return {
    url,
    host: `${bindHost}:${port}`,
    port,
    addRule(rule) {
      if (rule.times !== undefined && (!Number.isInteger(rule.times) || rule.times < 1)) throw new Error(`times must be a positive integer, got ${rule.times}`);
      const live: LiveRule = { rule, left: rule.times ?? Number.POSITIVE_INFINITY, applied: 0 };
      rules.push(live);
      return {
        get applied() {
          return live.applied;
        },
        remove() {
          const i = rules.indexOf(live);
          if (i >= 0) rules.splice(i, 1);
        },
      };
    },
    clearRules() {
      rules.length = 0;
    },
    requests: (q = {}) => recorded.filter((r) => matches(r, q)).map((r) => ({ ...r, faults: [...r.faults] })),
    mark: () => recorded.length,
    waitForRequests(pred, timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const check = (): boolean => pred(recorded.map((r) => ({ ...r, faults: [...r.faults] })));
        if (check()) {
          resolve();
          return;
        }
        const onRequest = (): void => {
          if (!check()) return;
          clearTimeout(timer);
          events.off('request', onRequest);
          resolve();
        };
        const timer = setTimeout(() => {
          events.off('request', onRequest);
          const tail = recorded.slice(-20).map((r) => `${r.method} ${r.url} range=${r.range ?? '-'} -> ${r.status ?? '?'} [${r.faults.join(',')}]`);
          reject(new Error(`fault proxy: condition not met within ${timeoutMs} ms; last requests:\n${tail.join('\n')}`));
        }, timeoutMs);
        events.on('request', onRequest);
      });
    },
    releaseStalls() {
      for (const s of stalled) s.destroy();
      stalled.clear();
    },
    close,
  };
}

export interface OriginRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorized: boolean;
  status: number;
}

export interface Origin {
  url: string;
  host: string;
  requests: OriginRequest[];
  close(): Promise<void>;
}

/**
 * A second origin (object storage, a CDN) on another loopback address.
 * `lookup(path)` gives the bytes for a path, or undefined for a 404. Honours a
 * single `Range: bytes=a-` / `bytes=a-b` with 206, as object stores do.
 */
export async function startOrigin(t: Teardown, opts: { host?: string; lookup: (path: string) => Buffer | undefined }): Promise<Origin> {
  const host = opts.host ?? '127.0.0.2';
  const requests: OriginRequest[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const pathOnly = qi < 0 ? url : url.slice(0, qi);
    const rec: OriginRequest = { method: req.method ?? 'GET', path: pathOnly, range: req.headers.range, authorized: req.headers.authorization !== undefined, status: 404 };
    requests.push(rec);
    const body = opts.lookup(pathOnly);
    if (!body) {
      res.writeHead(404, { 'content-length': 0 });
      res.end();
      return;
    }
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = body.length - 1;
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), end) : end;
    }
    if (start > end) {
      rec.status = 416;
      res.writeHead(416, { 'content-range': `bytes */${body.length}`, 'content-length': 0 });
      res.end();
      return;
    }
    rec.status = m ? 206 : 200;
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream', 'content-length': end - start + 1 };
    if (m) headers['content-range'] = `bytes ${start}-${end}/${body.length}`;
    res.writeHead(rec.status, headers);
    res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1));
  });
  const port = await listen(server, host);
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  t.teardown(close);
  return { url: `http://${host}:${port}`, host: `${host}:${port}`, requests, close };
}

// ---------------------------------------------------------------------------
// The client side of a fault test: what one client got, and what it amounts to.

export interface Fetched {
  /** 0 when the connection died before any status line. */
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The body arrived whole (as many bytes as announced, no error). */
  complete: boolean;
  error: string | undefined;
  ms: number;
}

/** One request on a fresh connection; never rejects (a dead connection is a result too). */
export function fetchOnce(url: string, opts: { method?: string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<Fetched> {
  const started = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    const done = (f: Omit<Fetched, 'ms'>): void => {
      if (settled) return;
      settled = true;
      resolve({ ...f, ms: Date.now() - started });
    };
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let error: string | undefined;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => (error = e.message));
      res.once('close', () =>
        done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete && error === undefined, error }),
      );
    });
    req.setTimeout(opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 60_000} ms`)));
    req.once('error', (e) => done({ status: 0, headers: {}, body: Buffer.alloc(0), complete: false, error: e.message }));
    req.end();
  });
}

/**
 * exact: a complete 2xx with the expected bytes. truncated: a 2xx cut short, or
 * a connection that died (the client knows it failed). error: a 4xx/5xx with
 * the OCI envelope. wrong: anything else, above all a complete 2xx with other
 * bytes, which is the one outcome berth must never produce.
 */
export type Outcome = 'exact' | 'truncated' | 'error' | 'wrong';

export function outcomeOf(f: Fetched, expected: Buffer): Outcome {
  if (f.status === 0) return 'truncated';
  if (f.status === 200 || f.status === 206) {
    if (!f.complete) return 'truncated';
    return f.body.equals(expected) ? 'exact' : 'wrong';
  }
  if (f.status >= 400) {
    try {
      const parsed = JSON.parse(f.body.toString('utf8')) as { errors?: Array<{ code?: unknown }> };
      return typeof parsed.errors?.[0]?.code === 'string' ? 'error' : 'wrong';
    } catch {
      return 'wrong';
    }
  }
  return 'wrong';
}

// ---------------------------------------------------------------------------
// The cache directory as berth left it, checked the way `berth verify` will.

export interface CacheReport {
  /** Files left in tmp/. */
  tmp: string[];
  /** digest -> size of every file under blobs/sha256/. */
  files: Map<string, number>;
  /** digest -> size of every row in the index's blobs table. */
  indexed: Map<string, number>;
  /** Digests of the manifests the index holds. */
  manifests: Set<string>;
  /** Everything wrong, one line each; empty when index and disk agree and every blob hashes to its name. */
  problems: string[];
}

/**
 * Reads `<cacheDir>` without berth's help: the tmp/ directory, every blob file
 * (re-hashed when `rehash`), and the index through a read-only SQLite handle
 * (safe while berth runs: WAL readers never block the writer).
 */
export async function inspectCache(cacheDir: string, opts: { rehash?: boolean } = {}): Promise<CacheReport> {
  const problems: string[] = [];
  const tmpDir = path.join(cacheDir, 'tmp');
  const tmp = existsSync(tmpDir) ? await readdir(tmpDir) : [];
  for (const f of tmp) problems.push(`tmp/${f} survived`);

  const files = new Map<string, number>();
  const blobsDir = path.join(cacheDir, 'blobs', 'sha256');
  const buckets = existsSync(blobsDir) ? await readdir(blobsDir) : [];
  for (const bucket of buckets) {
    const entries = await readdir(path.join(blobsDir, bucket));
    for (const name of entries) {
      const file = path.join(blobsDir, bucket, name);
      if (!/^[0-9a-f]{64}$/.test(name) || name.slice(0, 2) !== bucket) {
        problems.push(`stray file blobs/sha256/${bucket}/${name}`);
        continue;
      }
      const digest = `sha256:${name}`;
      files.set(digest, (await stat(file)).size);
      if (opts.rehash) {
        const h = createHash('sha256');
        for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
        if (h.digest('hex') !== name) problems.push(`${digest}: file does not hash to its name`);
      }
    }
  }

  const indexed = new Map<string, number>();
  const manifests = new Set<string>();
  const dbFile = path.join(cacheDir, 'index.db');
  if (existsSync(dbFile)) {
    const db = new Database(dbFile, { readonly: true, fileMustExist: true });
    try {
      for (const row of db.prepare('SELECT digest, size FROM blobs').all() as Array<{ digest: string; size: number }>) indexed.set(row.digest, row.size);
      for (const row of db.prepare('SELECT digest, body FROM manifests').all() as Array<{ digest: string; body: Buffer }>) {
        manifests.add(row.digest);
        if (opts.rehash && `sha256:${createHash('sha256').update(row.body).digest('hex')}` !== row.digest) problems.push(`manifest ${row.digest}: body does not hash to its digest`);
      }
    } finally {
      db.close();
    }
  }
  for (const [digest, size] of indexed) {
    const onDisk = files.get(digest);
    if (onDisk === undefined) problems.push(`${digest}: indexed but no file`);
    else if (onDisk !== size) problems.push(`${digest}: indexed as ${size} bytes, file has ${onDisk}`);
  }
  for (const digest of files.keys()) if (!indexed.has(digest)) problems.push(`${digest}: file not in the index`);
  return { tmp, files, indexed, manifests, problems };
}
