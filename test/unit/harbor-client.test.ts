/**
 * The Harbor REST client against loopback servers: pagination without Link,
 * Link with Harbor's unescaped query, encodings and headers, error codes,
 * deadlines, and the token-service check of pull-secret credentials.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { createHarborClient, nextLink, repositorySegment, tokenGrantsPull, type HarborClientOptions } from '../../src/harbor/client.js';
import { REPORT_MIME } from '../../src/harbor/types.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

interface Srv {
  url: string;
  hits: Array<{ url: string; headers: http.IncomingHttpHeaders }>;
}

async function serve(t: Test, handler: Handler): Promise<Srv> {
  const hits: Srv['hits'] = [];
  const server = http.createServer((req, res) => {
    hits.push({ url: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function client(t: Test, url: string, over: Partial<HarborClientOptions> = {}) {
  const c = createHarborClient({ url, username: 'robot$sync', password: 's3cret', requestTimeoutMs: 20_000, ...over });
  t.teardown(() => c.close());
  return c;
}

const D = 'sha256:' + 'd'.repeat(64);
const art = (i: number) => ({ id: i, type: 'IMAGE', digest: 'sha256:' + String(i).padStart(64, '0'), manifest_media_type: 'application/vnd.oci.image.manifest.v1+json' });

t.test('paths, encodings and headers', async (t) => {
  t.equal(repositorySegment('a/b'), 'a%252Fb');
  t.equal(repositorySegment('app'), 'app');
  t.throws(() => repositorySegment('../etc'), { code: 'HARBOR_PROTOCOL' });
  const srv = await serve(t, (req, res) => {
    if (req.url?.startsWith('/api/v2.0/projects/123?') || req.url === '/api/v2.0/projects/123') return json(res, 200, { project_id: 9, name: '123' });
    if (req.url?.includes('/additions/vulnerabilities')) {
      return json(res, 200, {
        [REPORT_MIME.generic]: { vulnerabilities: [{ id: 'CVE-G', package: 'p', version: '1', severity: 'Low' }] },
        [REPORT_MIME.native]: { vulnerabilities: [{ id: 'CVE-N', package: 'p', version: '1', severity: 'High' }] },
      });
    }
    if (req.url?.includes('/artifacts/')) return json(res, 200, { ...art(1), digest: D });
    if (req.url === '/api/v2.0/ping') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      return res.end('Pong');
    }
    json(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'nothing here' }] });
  });
  const c = client(t, srv.url);
  await c.ping();
  t.same((await c.getProject('123')).name, '123');
  t.equal(srv.hits.at(-1)?.headers['x-is-resource-name'], 'true', 'a numeric name stays a name');
  t.equal(srv.hits.at(-1)?.headers.authorization, 'Basic ' + Buffer.from('robot$sync:s3cret').toString('base64'));
  await c.getArtifact('proj', 'team/sub/app', D, { withScanOverview: true, withAccessory: true });
  t.equal(srv.hits.at(-1)?.url, `/api/v2.0/projects/proj/repositories/team%252Fsub%252Fapp/artifacts/${D}?with_tag=true&with_label=false&with_scan_overview=true&with_accessory=true`);
  t.equal(srv.hits.at(-1)?.headers['x-accept-vulnerabilities'], `${REPORT_MIME.native}, ${REPORT_MIME.generic}`);
  const v = await c.getVulnerabilities('proj', 'app', D);
  t.equal(v?.mimeType, REPORT_MIME.native, 'the report Harbor\'s pull check reads first');
  t.same(v?.report.vulnerabilities.map((x) => x.id), ['CVE-N']);
  await t.rejects(c.getArtifact('proj', 'app', 'bad tag!'), { code: 'HARBOR_PROTOCOL' });

  const anon = client(t, srv.url, { username: undefined, password: undefined });
  t.equal(anon.authenticated, false);
  await anon.getProject('123');
  t.equal(srv.hits.at(-1)?.headers.authorization, undefined, 'no credentials, no header');

  // password_file is read where it is used: `berth status` builds this client and never calls Harbor.
  let reads = 0;
  const lazy = client(t, srv.url, {
    password: {
      reveal: () => {
        reads++;
        return 's3cret';
      },
    },
  });
  t.equal(lazy.authenticated, true);
  await lazy.ping();
  t.equal(reads, 0, 'built and pinged: the password is not read');
  await lazy.getProject('123');
  await lazy.getProject('123');
  t.equal(reads, 1, 'read at the first API call, then kept');
  t.equal(srv.hits.at(-1)?.headers.authorization, 'Basic ' + Buffer.from('robot$sync:s3cret').toString('base64'));
});

t.test('pagination by X-Total-Count alone, and by a Link with an unescaped query', async (t) => {
  const items = Array.from({ length: 150 }, (_, i) => art(i + 1));
  const srv = await serve(t, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const page = Number(u.searchParams.get('page'));
    const size = Number(u.searchParams.get('page_size'));
    const slice = items.slice((page - 1) * size, page * size);
    if (u.pathname.endsWith('/repositories/plain/artifacts')) return json(res, 200, slice, { 'x-total-count': String(items.length) });
    // Harbor writes the query unescaped, commas and spaces included.
    const link: Record<string, string> = page * size < items.length ? { link: `</api/v2.0/projects/p/repositories/linked/artifacts?q=labels=(3 7),type=IMAGE&page=${page + 1}&page_size=${size}>; rel="next"` } : {};
    json(res, 200, slice, { 'x-total-count': String(items.length), ...link });
  });
  const c = client(t, srv.url);
  t.equal((await c.listArtifacts('p', 'plain')).length, 150);
  t.same(srv.hits.map((h) => new URL(h.url, 'http://x').searchParams.get('page')), ['1', '2']);
  const got = await c.listArtifacts('p', 'linked', { q: 'labels=(3 7),type=IMAGE', withLabel: true });
  t.equal(got.length, 150);
  const second = new URL(srv.hits.at(-1)!.url, 'http://x').searchParams;
  t.same([second.get('page'), second.get('q'), second.get('with_label')], ['2', 'labels=(3 7),type=IMAGE', 'true'], 'our own query, the link\'s page');

  t.equal(nextLink('</a?page=1&q=x,y>; rel="prev" , </a?page=3&q=x,y>; rel="next"'), '/a?page=3&q=x,y');
  t.equal(nextLink('</a?page=1>; rel="prev"'), undefined);
  t.equal(nextLink(undefined), undefined);
});

t.test('errors carry stable codes and no secrets', async (t) => {
  let hold: http.ServerResponse | undefined;
  const srv = await serve(t, (req, res) => {
    if (req.url?.startsWith('/api/v2.0/projects/forbidden')) return json(res, 403, { errors: [{ code: 'FORBIDDEN', message: 'forbidden' }] });
    if (req.url?.startsWith('/api/v2.0/projects/boom')) {
      res.writeHead(502, { 'content-type': 'text/html' });
      return res.end('<html>' + 'x'.repeat(100_000) + '</html>');
    }
    if (req.url?.startsWith('/api/v2.0/projects/garbled')) return json(res, 200, '{"project_id": 1, "na');
    if (req.url?.startsWith('/api/v2.0/projects/wrongtype')) return json(res, 200, { project_id: '1', name: 'x' });
    if (req.url?.startsWith('/api/v2.0/projects/big')) return json(res, 200, { project_id: 1, name: 'big', metadata: { pad: 'y'.repeat(10_000) } });
    if (req.url?.startsWith('/api/v2.0/projects/silent')) {
      hold = res; // never answered: the client's deadline must end the wait
      return;
    }
    if (req.url === '/api/v2.0/ping') return json(res, 200, 'Pang');
    json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'unauthorized' }] });
  });
  t.teardown(() => hold?.destroy());
  const c = client(t, srv.url, { requestTimeoutMs: 500, maxBodyBytes: 4096 });
  await t.rejects(c.getProject('forbidden'), { code: 'HARBOR_FORBIDDEN', status: 403, harborCode: 'FORBIDDEN', message: 'harbor GET /api/v2.0/projects/forbidden: 403 FORBIDDEN: forbidden' });
  await t.rejects(c.getProject('boom'), { code: 'HARBOR_STATUS', status: 502 }, 'an HTML error page is cut short, not an error of its own');
  await t.rejects(c.getProject('garbled'), { code: 'HARBOR_PROTOCOL', message: /not JSON/ });
  await t.rejects(c.getProject('wrongtype'), { code: 'HARBOR_PROTOCOL', message: /project\.project_id is missing or not a number/ });
  await t.rejects(c.getProject('big'), { code: 'HARBOR_PROTOCOL', message: /exceeds 4096 bytes/ });
  await t.rejects(c.getSystemAllowlist(), { code: 'HARBOR_AUTH', status: 401 });
  await t.rejects(c.ping(), { code: 'HARBOR_PROTOCOL' });
  const started = Date.now();
  await t.rejects(c.getProject('silent'), { code: 'HARBOR_TIMEOUT' });
  t.ok(Date.now() - started < 10_000, 'bounded by the deadline');

  const caller = new AbortController();
  const pending = c.getProject('silent', { signal: caller.signal });
  caller.abort(new Error('shutting down'));
  await t.rejects(pending, { message: 'shutting down' }, 'a caller\'s abort is the caller\'s, not a Harbor timeout');

  // A port nothing listens on.
  const probe = http.createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const dead = client(t, `http://127.0.0.1:${port}`);
  const err = await dead.listProjects().catch((e: unknown) => e);
  t.match(err, { code: 'HARBOR_UNREACHABLE' });
  t.notMatch(String((err as Error).message), /s3cret|c3luYw/, 'neither the secret nor its base64');

  t.throws(() => createHarborClient({ url: 'not a url' }), { code: 'HARBOR_PROTOCOL' });
  t.throws(() => createHarborClient({ url: 'ftp://h' }), { code: 'HARBOR_PROTOCOL' });
  t.throws(() => createHarborClient({ url: srv.url, caFile: '/nonexistent/ca.pem' }), { code: 'HARBOR_TLS' });
});

function jwt(claims: Record<string, unknown>): string {
  const part = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'RS256', typ: 'JWT', kid: 'k' })}.${part(claims)}.c2ln`;
}

t.test('pull-secret credentials are checked through the token service', async (t) => {
  // Harbor's semantics: rejected credentials (wrong secret, disabled or
  // expired robot) fall back to anonymous, which gets no pull on a private
  // project; granted actions are keyed by the requested repository.
  const accounts: Record<string, { password: string; pull: boolean }> = {
    'robot$priv+puller': { password: 'right', pull: true },
    'robot$priv+disabled': { password: 'right', pull: false },
    alice: { password: 'pw:with:colons', pull: true },
    bob: { password: 'bob', pull: false },
  };
  const srv = await serve(t, (req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/service/token') return json(res, 404, {});
    if (u.searchParams.get('service') !== 'harbor-registry') return json(res, 400, 'Unable to handle service');
    const scope = u.searchParams.get('scope') ?? '';
    const m = /^repository:([^:]+):pull$/.exec(scope);
    if (scope === 'repository:priv/crash:pull') return json(res, 500, { errors: [{ code: 'UNKNOWN', message: 'internal server error' }] });
    const auth = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString();
    const colon = auth.indexOf(':');
    const user = auth.slice(0, colon);
    const account = accounts[user];
    const ok = account !== undefined && account.password === auth.slice(colon + 1) && user !== 'robot$priv+disabled';
    if (!m) return ok ? json(res, 200, { token: jwt({ sub: user, access: [] }) }) : json(res, 401, '');
    const sub = ok ? user : '';
    const actions = ok && account?.pull && m[1] !== 'other/app' ? ['pull', 'push'] : [];
    json(res, 200, { token: jwt({ iss: 'harbor-token-issuer', aud: 'harbor-registry', sub, access: [{ type: 'repository', name: m[1], actions }] }), access_token: '', expires_in: 1800 });
  });
  const c = client(t, srv.url);
  t.equal(await c.checkPullCredentials('priv', 'team/app', 'robot$priv+puller', 'right'), true);
  const hit = srv.hits.at(-1)!;
  t.same(Object.fromEntries(new URL(hit.url, 'http://x').searchParams), { service: 'harbor-registry', scope: 'repository:priv/team/app:pull' });
  t.equal(hit.headers.authorization, 'Basic ' + Buffer.from('robot$priv+puller:right').toString('base64'), 'the pull secret, not berth\'s robot');
  t.equal(await c.checkPullCredentials('priv', 'team/app', 'robot$priv+puller', 'wrong'), false, 'wrong secret');
  t.equal(await c.checkPullCredentials('priv', 'team/app', 'robot$priv+disabled', 'right'), false, 'disabled robot');
  t.equal(await c.checkPullCredentials('priv', 'app', 'alice', 'pw:with:colons'), true, 'colons in a password are fine');
  t.equal(await c.checkPullCredentials('priv', 'app', 'bob', 'bob'), false, 'authenticated without pull');
  t.equal(await c.checkPullCredentials('other', 'app', 'alice', 'pw:with:colons'), false, 'no grant on that project');
  const before = srv.hits.length;
  t.equal(await c.checkPullCredentials('priv', 'app', 'a:b', 'x'), false, 'a user-id with a colon cannot be sent');
  t.equal(srv.hits.length, before, 'and is not sent');
  await t.rejects(c.checkPullCredentials('priv', 'crash', 'alice', 'pw:with:colons'), { code: 'HARBOR_STATUS', status: 500 });
  await t.rejects(c.checkPullCredentials('Bad Project', 'app', 'alice', 'x'), { code: 'HARBOR_PROTOCOL' });

  t.equal(tokenGrantsPull(jwt({ sub: 'u', access: [{ type: 'repository', name: 'p/r', actions: ['pull'] }] }), 'p', 'r'), true);
  t.equal(tokenGrantsPull(jwt({ sub: 'u', access: [{ type: 'repository', name: 'p/other', actions: ['pull'] }] }), 'p', 'r'), false, 'another repository');
  t.equal(tokenGrantsPull(jwt({ sub: '', access: [{ type: 'repository', name: 'p/r', actions: ['pull'] }] }), 'p', 'r'), false, 'anonymous (public project) is not these credentials');
  t.equal(tokenGrantsPull(jwt({ sub: 'u', access: [{ type: 'registry', name: 'p/r', actions: ['pull'] }] }), 'p', 'r'), false);
  t.equal(tokenGrantsPull('not-a-jwt', 'p', 'r'), false);
  t.equal(tokenGrantsPull('a.!!!.c', 'p', 'r'), false);
});
