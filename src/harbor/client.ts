/**
 * A client for the part of Harbor's v2.0 REST API that policy sync, label
 * prefetch lists and pull-secret checks need (reference/harbor-api.md §0, §1,
 * §3, §4, §7). GET only. Conventions it owns:
 *  - Basic auth with the configured robot or user. Harbor treats credentials
 *    it rejects as anonymous rather than answering 401, so a wrong secret
 *    shows up as "fewer projects"; `getSystemAllowlist` needs an
 *    authenticated caller and is what sync calls first, as the credential check.
 *  - Pagination: page/page_size=100, following `Link: <…>; rel="next"` (its
 *    page and page_size only; the rest of the query stays ours) or
 *    X-Total-Count when Link is missing.
 *  - Repository names URL-encoded twice (`a/b` → `a%252Fb`); project names
 *    sent with `X-Is-Resource-Name: true` so "123" is a name, not an id.
 *  - Report mime types asked for in Harbor's pull-check order.
 *  - Bounded time: connect/headers/body-idle timeouts on the Agent plus a
 *    deadline for each whole exchange.
 */
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { isDigest } from '../oci/digest.js';
import { isValidName, isValidTag } from '../oci/paths.js';
import { lazyBasic, type Password } from '../upstream/auth.js';
import { createDispatcher, type RequestDispatcher } from '../upstream/dispatcher.js';
import { HarborError, toHarborError } from './errors.js';
import { REPORT_MIME_ORDER } from './types.js';
import type { HarborAccessory, HarborArtifact, HarborCveAllowlist, HarborPreheatPolicy, HarborProject, HarborRepository, HarborVulnerabilityReport } from './types.js';
import { parseAccessory, parseAllowlist, parseArtifact, parsePreheatPolicy, parseProject, parseRepository, parseVulnerabilityReports } from './wire.js';
import { pickReportMime } from './normalise.js';

export interface HarborClientOptions {
  /** Base URL, e.g. "https://harbor.example.com". */
  url: string;
  username?: string;
  /** Read on the first API call (a client only built, as `berth status` does, never reads it); never logged. */
  password?: Password;
  caFile?: string;
  skipVerify?: boolean;
  timeouts?: { connectMs: number; headersMs: number; bodyIdleMs: number };
  /** Deadline for one whole exchange (headers and body). Default 60 s. */
  requestTimeoutMs?: number;
  /** Largest JSON body accepted (vulnerability reports of big images run to megabytes). Default 64 MiB. */
  maxBodyBytes?: number;
  /** A dispatcher to use instead of an own Agent (not closed by `close()`). */
  dispatcher?: RequestDispatcher;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ArtifactQuery extends CallOptions {
  withTag?: boolean;
  withLabel?: boolean;
  withScanOverview?: boolean;
  withAccessory?: boolean;
}

export interface ArtifactListQuery extends ArtifactQuery {
  /** Harbor's query language, e.g. `labels=(3 7)`, `tags=~v1`, `type=IMAGE`. */
  q?: string;
  sort?: string;
}

export interface VulnerabilityAnswer {
  mimeType: string;
  report: HarborVulnerabilityReport;
}

export interface HarborClient {
  readonly url: string;
  /** Whether a username is configured (Basic auth is sent). */
  readonly authenticated: boolean;
  ping(call?: CallOptions): Promise<void>;
  listProjects(opts?: CallOptions & { name?: string; public?: boolean }): Promise<HarborProject[]>;
  getProject(name: string, call?: CallOptions): Promise<HarborProject>;
  getSystemAllowlist(call?: CallOptions): Promise<HarborCveAllowlist>;
  listRepositories(project: string, opts?: CallOptions & { q?: string }): Promise<HarborRepository[]>;
  getArtifact(project: string, repository: string, reference: string, opts?: ArtifactQuery): Promise<HarborArtifact>;
  listArtifacts(project: string, repository: string, opts?: ArtifactListQuery): Promise<HarborArtifact[]>;
  listAccessories(project: string, repository: string, reference: string, call?: CallOptions): Promise<HarborAccessory[]>;
  /** P2P preheat policies of a project (filters decoded from Harbor's JSON strings). */
  listPreheatPolicies(project: string, call?: CallOptions): Promise<HarborPreheatPolicy[]>;
  /** The report Harbor's pull check would judge, or null when Harbor has none. */
  getVulnerabilities(project: string, repository: string, digest: string, call?: CallOptions): Promise<VulnerabilityAnswer | null>;
  /**
   * Whether Harbor grants `pull` on project/repository to these credentials
   * (a pod's pull secret), asked of its token service. False for credentials
   * Harbor rejects, for a disabled or expired robot and for a grant without
   * pull; throws HarborError only when Harbor could not answer.
   */
  checkPullCredentials(project: string, repository: string, username: string, password: string, call?: CallOptions): Promise<boolean>;
  close(): Promise<void>;
}

const API = '/api/v2.0';
const PAGE_SIZE = 100;
/** 100 items a page: this stops a server that always says "next" long after any real Harbor. */
const MAX_PAGES = 10_000;
const ERROR_BODY_LIMIT = 4096;
const DEFAULT_TIMEOUTS = { connectMs: 5_000, headersMs: 30_000, bodyIdleMs: 60_000 };
const ACCEPT_VULNERABILITIES = REPORT_MIME_ORDER.join(', ');

function basic(username: string, password: string): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`, 'utf8').toString('base64');
}

function projectSegment(project: string): string {
  if (!isValidName(project) || project.includes('/')) throw new HarborError('HARBOR_PROTOCOL', `not a Harbor project name: ${JSON.stringify(project).slice(0, 80)}`);
  return encodeURIComponent(project);
}

/** §0: a repository name with slashes is URL-encoded twice in API paths. */
export function repositorySegment(repository: string): string {
  if (!isValidName(repository)) throw new HarborError('HARBOR_PROTOCOL', `not a repository name: ${JSON.stringify(repository).slice(0, 80)}`);
  return encodeURIComponent(encodeURIComponent(repository));
}

function referenceSegment(reference: string): string {
  if (!isDigest(reference) && !isValidTag(reference)) throw new HarborError('HARBOR_PROTOCOL', `not a tag or digest: ${JSON.stringify(reference).slice(0, 80)}`);
  return reference;
}

/**
 * The target of `rel="next"` in a Link header. Harbor joins entries with
 * " , " and writes its query unescaped, so a `q=` with commas is inside the
 * `<…>`: match whole entries instead of splitting on commas.
 */
export function nextLink(link: string | undefined): string | undefined {
  if (!link) return undefined;
  for (const m of link.matchAll(/<([^>]*)>\s*;\s*rel="?([^",;]+)"?/g)) {
    if (m[2]?.trim() === 'next') return m[1];
  }
  return undefined;
}

function firstHeader(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** The body up to `limit` bytes; more is a protocol error, or cut off when `truncate` (error pages). */
async function readLimited(body: Readable, limit: number, what: string, truncate = false): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    if (size + buf.length > limit) {
      body.destroy();
      if (truncate) {
        chunks.push(buf.subarray(0, limit - size));
        return Buffer.concat(chunks, limit);
      }
      throw new HarborError('HARBOR_PROTOCOL', `harbor ${what}: answer exceeds ${limit} bytes`);
    }
    size += buf.length;
    chunks.push(buf);
  }
  return Buffer.concat(chunks, size);
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** JWT payload claims Harbor's token service issues (§7); the signature is not checked: the token came over our own TLS connection. */
interface TokenClaims {
  sub?: unknown;
  access?: unknown;
}

export function tokenGrantsPull(token: string, project: string, repository: string): boolean {
  const payload = token.split('.')[1];
  if (payload === undefined) return false;
  let claims: TokenClaims;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as TokenClaims;
  } catch {
    return false;
  }
  // An empty subject is Harbor's anonymous fallback for credentials it rejected.
  if (typeof claims.sub !== 'string' || claims.sub === '' || !Array.isArray(claims.access)) return false;
  const name = `${project}/${repository}`;
  return claims.access.some((entry: unknown) => {
    if (typeof entry !== 'object' || entry === null) return false;
    const { type, name: n, actions } = entry as { type?: unknown; name?: unknown; actions?: unknown };
    return type === 'repository' && n === name && Array.isArray(actions) && actions.includes('pull');
  });
}

export function createHarborClient(opts: HarborClientOptions): HarborClient {
  let base: URL;
  try {
    base = new URL(opts.url);
  } catch {
    throw new HarborError('HARBOR_PROTOCOL', 'harbor url is not a URL');
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new HarborError('HARBOR_PROTOCOL', `harbor url must be http(s), not ${base.protocol}`);
  const prefix = base.pathname.replace(/\/+$/, '');
  const origin = base.origin;
  const ownDispatcher = opts.dispatcher
    ? undefined
    : (() => {
        try {
          return createDispatcher({
            registry: 'harbor',
            timeouts: opts.timeouts ?? DEFAULT_TIMEOUTS,
            caFile: opts.caFile,
            skipVerify: opts.skipVerify,
            connections: 8,
          });
        } catch (err) {
          throw toHarborError(err, 'ca_file');
        }
      })();
  const dispatcher = opts.dispatcher ?? ownDispatcher!.dispatcher;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
  const maxBody = opts.maxBodyBytes ?? 64 * 1024 * 1024;
  const auth = opts.username !== undefined ? lazyBasic(opts.username, opts.password) : undefined;

  /** One GET; any status comes back (the caller decides what it means). */
  async function get(path: string, headers: Record<string, string>, call: CallOptions | undefined, limit = maxBody): Promise<Reply> {
    const what = `GET ${path.split('?')[0]}`;
    const deadline = AbortSignal.timeout(requestTimeoutMs);
    const signal = call?.signal ? AbortSignal.any([call.signal, deadline]) : deadline;
    try {
      const res = await dispatcher.request({
        origin,
        path: prefix + path,
        method: 'GET',
        headers: { 'user-agent': 'berth', accept: 'application/json', ...headers },
        signal,
      });
      const failed = res.statusCode >= 400;
      const body = await readLimited(res.body, failed ? ERROR_BODY_LIMIT : limit, what, failed);
      return { status: res.statusCode, headers: res.headers, body };
    } catch (err) {
      if (call?.signal?.aborted) throw call.signal.reason;
      throw toHarborError(err, what);
    }
  }

  function statusError(reply: Reply, what: string): HarborError {
    let harborCode: string | undefined;
    let detail = '';
    try {
      const parsed = JSON.parse(reply.body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
      const first = parsed.errors?.[0];
      if (first && typeof first.code === 'string') harborCode = first.code;
      if (first && typeof first.message === 'string') detail = first.message.slice(0, 200);
    } catch {
      // not Harbor's envelope (a proxy's HTML page): the status says enough
    }
    const code = reply.status === 401 ? 'HARBOR_AUTH' : reply.status === 403 ? 'HARBOR_FORBIDDEN' : reply.status === 404 ? 'HARBOR_NOT_FOUND' : 'HARBOR_STATUS';
    const text = [harborCode, detail].filter((s) => s).join(': ');
    return new HarborError(code, `harbor ${what}: ${reply.status}${text ? ` ${text}` : ''}`, {
      status: reply.status,
      ...(harborCode === undefined ? {} : { harborCode }),
    });
  }

  function json(reply: Reply, what: string): unknown {
    try {
      return JSON.parse(reply.body.toString('utf8'));
    } catch {
      throw new HarborError('HARBOR_PROTOCOL', `harbor ${what}: answer is not JSON`);
    }
  }

  function apiHeaders(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(auth ? { authorization: auth() } : {}), ...extra };
  }

  async function getJson(path: string, call: CallOptions | undefined, extra: Record<string, string> = {}): Promise<unknown> {
    const what = `GET ${API}${path.split('?')[0]}`;
    const reply = await get(API + path, apiHeaders(extra), call);
    if (reply.status !== 200) throw statusError(reply, what);
    return json(reply, what);
  }

  async function listAll<T>(path: string, query: URLSearchParams, parse: (v: unknown, where: string) => T, call: CallOptions | undefined, extra: Record<string, string> = {}): Promise<T[]> {
    const what = `GET ${API}${path}`;
    const out: T[] = [];
    let page = 1;
    let pageSize = PAGE_SIZE;
    for (let n = 0; n < MAX_PAGES; n++) {
      query.set('page', String(page));
      query.set('page_size', String(pageSize));
      const reply = await get(`${API}${path}?${query.toString()}`, apiHeaders(extra), call);
      if (reply.status !== 200) throw statusError(reply, what);
      const body = json(reply, what);
      if (!Array.isArray(body)) throw new HarborError('HARBOR_PROTOCOL', `harbor ${what}: answer is not a list`);
      const offset = out.length;
      body.forEach((item, i) => out.push(parse(item, `${path}[${offset + i}]`)));
      const next = nextLink(firstHeader(reply.headers, 'link'));
      if (next !== undefined) {
        // Only page and page_size are taken from the link: Harbor writes its
        // query unescaped there, and the rest of the query is ours anyway.
        const params = new URL(next, 'http://link.invalid').searchParams;
        const nextPage = Number(params.get('page'));
        const nextSize = Number(params.get('page_size'));
        page = Number.isInteger(nextPage) && nextPage > page ? nextPage : page + 1;
        if (Number.isInteger(nextSize) && nextSize > 0 && nextSize <= PAGE_SIZE) pageSize = nextSize;
        continue;
      }
      const total = Number(firstHeader(reply.headers, 'x-total-count'));
      if (body.length > 0 && Number.isFinite(total) && out.length < total && firstHeader(reply.headers, 'link') === undefined) {
        page++;
        continue;
      }
      return out;
    }
    throw new HarborError('HARBOR_PROTOCOL', `harbor ${what}: more than ${MAX_PAGES} pages`);
  }

  const byName = { 'x-is-resource-name': 'true' };
  const vulnHeaders = { 'x-accept-vulnerabilities': ACCEPT_VULNERABILITIES };
  const artifactPath = (project: string, repository: string): string =>
    `/projects/${projectSegment(project)}/repositories/${repositorySegment(repository)}/artifacts`;
  const artifactFlags = (q: URLSearchParams, o: ArtifactQuery): URLSearchParams => {
    q.set('with_tag', String(o.withTag ?? true));
    q.set('with_label', String(o.withLabel ?? false));
    q.set('with_scan_overview', String(o.withScanOverview ?? false));
    q.set('with_accessory', String(o.withAccessory ?? false));
    return q;
  };

  return {
    url: base.href,
    authenticated: auth !== undefined,

    async ping(call) {
      const reply = await get(`${API}/ping`, {}, call, ERROR_BODY_LIMIT);
      if (reply.status !== 200) throw statusError(reply, 'GET /api/v2.0/ping');
      if (reply.body.toString('utf8').trim() !== 'Pong') throw new HarborError('HARBOR_PROTOCOL', 'harbor GET /api/v2.0/ping: answer is not "Pong"');
    },

    async listProjects(o = {}) {
      const q = new URLSearchParams({ with_detail: 'true' });
      if (o.name !== undefined) q.set('name', o.name);
      if (o.public !== undefined) q.set('public', String(o.public));
      return listAll('/projects', q, parseProject, o);
    },

    async getProject(name, call) {
      return parseProject(await getJson(`/projects/${projectSegment(name)}`, call, byName));
    },

    async getSystemAllowlist(call) {
      return parseAllowlist(await getJson('/system/CVEAllowlist', call), 'system/CVEAllowlist');
    },

    async listRepositories(project, o = {}) {
      const q = new URLSearchParams();
      if (o.q !== undefined) q.set('q', o.q);
      return listAll(`/projects/${projectSegment(project)}/repositories`, q, parseRepository, o);
    },

    async getArtifact(project, repository, reference, o = {}) {
      const q = artifactFlags(new URLSearchParams(), o);
      const path = `${artifactPath(project, repository)}/${referenceSegment(reference)}?${q.toString()}`;
      return parseArtifact(await getJson(path, o, vulnHeaders));
    },

    async listArtifacts(project, repository, o = {}) {
      const q = artifactFlags(new URLSearchParams(), o);
      if (o.q !== undefined) q.set('q', o.q);
      if (o.sort !== undefined) q.set('sort', o.sort);
      return listAll(artifactPath(project, repository), q, parseArtifact, o, vulnHeaders);
    },

    async listPreheatPolicies(project, call) {
      return listAll(`/projects/${projectSegment(project)}/preheat/policies`, new URLSearchParams(), parsePreheatPolicy, call);
    },

    async listAccessories(project, repository, reference, call) {
      return listAll(`${artifactPath(project, repository)}/${referenceSegment(reference)}/accessories`, new URLSearchParams(), parseAccessory, call);
    },

    async getVulnerabilities(project, repository, digest, call) {
      const path = `${artifactPath(project, repository)}/${referenceSegment(digest)}/additions/vulnerabilities`;
      const reports = parseVulnerabilityReports(await getJson(path, call, vulnHeaders));
      const mimeType = pickReportMime(Object.keys(reports));
      const report = mimeType === undefined ? undefined : reports[mimeType];
      return mimeType === undefined || report === undefined ? null : { mimeType, report };
    },

    async checkPullCredentials(project, repository, username, password, call) {
      projectSegment(project);
      repositorySegment(repository);
      // RFC 7617: a user-id with ':' cannot be sent, so it cannot be granted anything.
      if (username === '' || username.includes(':')) return false;
      const q = new URLSearchParams({ service: 'harbor-registry', scope: `repository:${project}/${repository}:pull` });
      const reply = await get(`/service/token?${q.toString()}`, { authorization: basic(username, password) }, call, 64 * 1024);
      if (reply.status === 401 || reply.status === 403) return false;
      if (reply.status !== 200) throw statusError(reply, 'GET /service/token');
      const body = json(reply, 'GET /service/token');
      const token = typeof body === 'object' && body !== null ? ((body as { token?: unknown; access_token?: unknown }).token ?? (body as { access_token?: unknown }).access_token) : undefined;
      if (typeof token !== 'string' || token === '') throw new HarborError('HARBOR_PROTOCOL', 'harbor GET /service/token: answer has no token');
      return tokenGrantsPull(token, project, repository);
    },

    async close() {
      await ownDispatcher?.close();
    },
  };
}
