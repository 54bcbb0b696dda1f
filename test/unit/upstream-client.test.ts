/**
 * The upstream client against real loopback servers: a fake registry with
 * Bearer or Basic challenges, a token service, object storage on another
 * origin, and misbehaving servers (429, 5xx, silence, refused ports, bad TLS).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { createRegistryClient, type ClientOptions } from '../../src/upstream/client.js';
import { UpstreamError, type RegistryClient, type UpstreamEvent } from '../../src/upstream/types.js';
import { DEFAULT_ACCEPT, MEDIA_TYPES } from '../../src/oci/mediatypes.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

interface Hit {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

interface Srv {
  url: string;
  port: number;
  hits: Hit[];
  /** TCP connections accepted so far. */
  connections(): number;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

async function serve(t: Teardown, handler: Handler, host = '127.0.0.1', server: http.Server = http.createServer()): Promise<Srv> {
  const hits: Hit[] = [];
  let connections = 0;
  server.on('connection', () => connections++);
  server.on('secureConnection', () => connections++);
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    hits.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
    handler(req, res);
  });
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const scheme = server instanceof https.Server ? 'https' : 'http';
  return { url: `${scheme}://${host}:${port}`, port, hits, connections: () => connections };
}

/** A port nothing listens on: bind, note the port, close. */
async function refusedPort(): Promise<number> {
  const s = http.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

function digestOf(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Serves bytes with RFC 9110 single-range support, as Distribution and S3 do. */
function sendBytes(req: http.IncomingMessage, res: http.ServerResponse, bytes: Buffer, honourRange = true): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && honourRange) {
    const first = Number(m[1]);
    res.writeHead(206, { 'content-length': bytes.length - first, 'content-range': `bytes ${first}-${bytes.length - 1}/${bytes.length}` });
    res.end(req.method === 'HEAD' ? undefined : bytes.subarray(first));
    return;
  }
  res.writeHead(200, { 'content-length': bytes.length, 'docker-content-digest': digestOf(bytes) });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

const PASSWORD = 's3cret-pa55word';
const USER = 'robot$edge';

/** Token service: `tok:<scope>` tokens; optionally insists on Basic credentials. */
async function tokenService(t: Teardown, opts: { requireBasic?: boolean; host?: string; expiresIn?: number } = {}): Promise<Srv & { realm: string }> {
  const expected = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
  const srv = await serve(
    t,
    (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (opts.requireBasic && req.headers.authorization !== expected) {
        json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
        return;
      }
      const scope = url.searchParams.get('scope') ?? '';
      json(res, 200, { token: `tok:${scope}`, expires_in: opts.expiresIn ?? 300 });
    },
    opts.host,
  );
  return { ...srv, realm: `${srv.url}/token` };
}

interface RegistryOptions {
  auth: 'none' | 'bearer' | 'basic';
  realm?: string;
  manifests?: Map<string, { body: Buffer; type: string; digestHeader?: boolean }>;
  blobs?: Map<string, Buffer>;
  /** Answer blob GETs with a 307 to this origin's /storage/<digest>. */
  storage?: string;
  /** Tokens the registry treats as revoked. */
  revoked?: Set<string>;
}

/** A fake Distribution: checks `Bearer tok:repository:<repo>:pull` for the repository in the path. */
async function fakeRegistry(t: Teardown, o: RegistryOptions): Promise<Srv> {
  const basic = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
  return serve(t, (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/v2\/(.+)\/(manifests|blobs|tags)\/([^/]+)$/.exec(url.pathname);
    const repo = m?.[1];
    const authz = req.headers.authorization;
    if (o.auth === 'bearer') {
      const scope = repo === undefined ? undefined : `repository:${repo}:pull`;
      const ok = authz?.startsWith('Bearer tok:') && !o.revoked?.has(authz) && (scope === undefined || authz === `Bearer tok:${scope}`);
      if (!ok) {
        const scopePart = scope ? `,scope="${scope}"` : '';
        json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
          'www-authenticate': `Bearer realm="${o.realm}",service="fake-registry"${scopePart}`,
        });
        return;
      }
    } else if (o.auth === 'basic' && authz !== basic) {
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': 'Basic realm="fake"' });
      return;
    }
    if (url.pathname === '/v2/') {
      json(res, 200, {});
      return;
    }
    const kind = m?.[2];
    const ref = decodeURIComponent(m?.[3] ?? '');
    if (kind === 'manifests') {
      const man = o.manifests?.get(`${repo}:${ref}`);
      if (!man) {
        json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
        return;
      }
      const headers: http.OutgoingHttpHeaders = { 'content-type': `${man.type}; charset=utf-8`, 'content-length': man.body.length };
      if (man.digestHeader !== false) headers['docker-content-digest'] = digestOf(man.body);
      res.writeHead(200, headers);
      res.end(req.method === 'HEAD' ? undefined : man.body);
      return;
    }
    if (kind === 'blobs') {
      const blob = o.blobs?.get(ref);
      if (!blob) {
        json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown' }] });
        return;
      }
      if (o.storage && req.method === 'GET') {
        res.writeHead(307, { location: `${o.storage}/storage/${ref}?X-Amz-Signature=abc` });
        res.end();
        return;
      }
      sendBytes(req, res, blob);
      return;
    }
    if (kind === 'tags' && ref === 'list') {
      const link = `</v2/${repo}/tags/list?n=2&last=b>; rel="next"`;
      json(res, 200, { name: repo, tags: ['a', 'b'], query: url.search }, { link });
      return;
    }
    json(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'not found' }] });
  });
}

/** A logger whose every line is kept, to prove secrets never reach it. */
function capturingLogger(): { logger: ClientOptions['logger']; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

function client(t: Teardown, url: string, extra: Partial<ClientOptions> = {}): RegistryClient & { events: UpstreamEvent[]; lines: string[] } {
  const { logger, lines } = capturingLogger();
  const events: UpstreamEvent[] = [];
  const c = createRegistryClient({
    registry: 'test.registry',
    url,
    timeouts: { connectMs: 1000, headersMs: 2000, bodyIdleMs: 2000 },
    logger,
    observer: (e) => events.push(e),
    pool: { keepAliveTimeoutMs: 10 },
    ...extra,
  });
  t.teardown(() => c.close());
  return Object.assign(c, { events, lines });
}

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof UpstreamError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

const manifestBody = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, layers: [] }));
const blobBytes = Buffer.from('0123456789abcdefghij');
const blobDigest = digestOf(blobBytes);

t.test('bearer: one token per scope for many requests, sent up front afterwards', async (t) => {
  const tokens = await tokenService(t);
  const reg = await fakeRegistry(t, {
    auth: 'bearer',
    realm: tokens.realm,
    manifests: new Map([['library/nginx:1.27', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]),
  });
  const c = client(t, reg.url);

  const concurrent = await Promise.all(Array.from({ length: 10 }, () => c.getManifest('library/nginx', '1.27')));
  for (const m of concurrent) t.equal(m?.digest, digestOf(manifestBody));
  t.equal(tokens.hits.length, 1, 'concurrent challenges share one token fetch');
  t.match(tokens.hits[0]?.path, /service=fake-registry/);
  t.match(decodeURIComponent(tokens.hits[0]?.path ?? ''), /scope=repository:library\/nginx:pull/);

  const unauthorizedBefore = reg.hits.filter((h) => h.headers.authorization === undefined).length;
  for (let i = 0; i < 5; i++) await c.headManifest('library/nginx', '1.27');
  t.equal(tokens.hits.length, 1, 'cached token reused');
  t.equal(reg.hits.filter((h) => h.headers.authorization === undefined).length, unauthorizedBefore, 'no more anonymous tries: scheme remembered');
  t.equal(reg.hits.at(-1)?.headers.authorization, 'Bearer tok:repository:library/nginx:pull', 'the token reaches the registry');

  await c.getManifest('library/redis', 'latest');
  t.equal(tokens.hits.length, 2, 'another repository is another scope');
  t.equal(reg.hits.at(-1)?.headers.authorization, 'Bearer tok:repository:library/redis:pull', 'fetched before the request, no 401 first');

  const kinds = c.events.map((e) => `${e.kind}:${e.status}`);
  t.equal(kinds.filter((k) => k === 'token:200').length, 2, 'observer sees token exchanges');
  t.ok(c.events.every((e) => e.registry === 'test.registry' && e.durationMs >= 0));
});

t.test('bearer: a rejected cached token is replaced once', async (t) => {
  const tokens = await tokenService(t);
  const revoked = new Set<string>();
  const reg = await fakeRegistry(t, {
    auth: 'bearer',
    realm: tokens.realm,
    manifests: new Map([['a/b:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]),
    revoked,
  });
  const c = client(t, reg.url);
  t.ok(await c.getManifest('a/b', '1'));
  revoked.add('Bearer tok:repository:a/b:pull');
  const err = await rejection(c.getManifest('a/b', '1'));
  t.equal(err.code, 'UPSTREAM_AUTH', 'still refused after one fresh token: give up');
  t.equal(err.status, 401);
  t.equal(tokens.hits.length, 2, 'exactly one refetch');
});

t.test('bearer: a just-fetched token that is refused is not fetched again', async (t) => {
  const tokens = await tokenService(t);
  // Docker Hub answers 401, not 404, for a repository that does not exist.
  const reg = await fakeRegistry(t, { auth: 'bearer', realm: tokens.realm, revoked: new Set(['Bearer tok:repository:no/such:pull']) });
  const c = client(t, reg.url);
  const err = await rejection(c.getManifest('no/such', 'latest'));
  t.equal(err.code, 'UPSTREAM_AUTH');
  t.equal(tokens.hits.length, 1, 'one token fetch');
  t.equal(reg.hits.length, 2, 'anonymous try, then one try with the token');
  t.equal(reg.hits[0]?.headers['user-agent'], 'berth');
});

t.test('bearer: credentials go to a realm on the same host', async (t) => {
  const tokens = await tokenService(t, { requireBasic: true });
  const reg = await fakeRegistry(t, { auth: 'bearer', realm: tokens.realm });
  const c = client(t, reg.url, { username: USER, password: PASSWORD });
  t.equal(await c.ping(), true);
  t.equal(tokens.hits[0]?.headers.authorization, 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64'));
  for (const line of c.lines) {
    t.notMatch(line, PASSWORD);
    t.notMatch(line, 'tok:');
  }
});

// The config's password_file is read where it is used: a client only built (berth status), or talking to
// an upstream that never challenges, must not read it (the user running the command may not be allowed to).
t.test('a password source is read when the upstream first asks for credentials, and once', async (t) => {
  let reads = 0;
  const password = {
    reveal() {
      reads++;
      return PASSWORD;
    },
  };
  const open = await fakeRegistry(t, { auth: 'none', manifests: new Map([['x/y:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]) });
  const anonymous = client(t, open.url, { username: USER, password });
  t.equal(await anonymous.ping(), true);
  t.ok(await anonymous.getManifest('x/y', '1'));
  t.equal(reads, 0, 'an upstream that never challenges: never read');

  const tokens = await tokenService(t, { requireBasic: true });
  const bearer = client(t, (await fakeRegistry(t, { auth: 'bearer', realm: tokens.realm, manifests: new Map([['x/y:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]) })).url, { username: USER, password });
  t.equal(reads, 0, 'building a client reads nothing');
  t.ok(await bearer.getManifest('x/y', '1'));
  t.equal(await bearer.getManifest('x/z', '1'), null, 'another scope: another token (and a 404)');
  t.equal(tokens.hits.length, 2);
  t.equal(reads, 1, 'bearer: read for the first token, then kept');

  const basic = client(t, (await fakeRegistry(t, { auth: 'basic' })).url, { username: USER, password });
  t.equal(await basic.ping(), true);
  t.equal(await basic.ping(), true);
  t.equal(reads, 2, 'basic: read at the first challenge, then kept');

  const failing = client(t, (await fakeRegistry(t, { auth: 'basic' })).url, {
    username: USER,
    password: {
      reveal() {
        throw new Error('upstream[0].password_file: cannot read "/etc/berth/p": EACCES');
      },
    },
  });
  await t.rejects(failing.ping(), /password_file: cannot read .*EACCES/, 'unreadable when needed: the reason reaches the caller');
});

t.test('bearer: credentials are withheld from a realm on a foreign domain', async (t) => {
  // Upstream by IP, realm by name: not the same host and no shared registrable domain.
  const tokens = await tokenService(t, { host: 'localhost' });
  const reg = await fakeRegistry(t, {
    auth: 'bearer',
    realm: tokens.realm,
    manifests: new Map([['x/y:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]),
  });
  const c = client(t, reg.url, { username: USER, password: PASSWORD });
  t.ok(await c.getManifest('x/y', '1'), 'anonymous token still works');
  t.equal(tokens.hits.length, 1);
  t.equal(tokens.hits[0]?.headers.authorization, undefined, 'no Basic credentials sent to the foreign realm');
  t.ok(c.lines.some((l) => l.includes('outside the upstream domain') && l.includes('"level":40')), 'warned');
});

t.test('bearer: wrong password is UPSTREAM_AUTH without leaking the secret', async (t) => {
  const tokens = await tokenService(t, { requireBasic: true });
  const reg = await fakeRegistry(t, { auth: 'bearer', realm: tokens.realm });
  const c = client(t, reg.url, { username: USER, password: 'wrong-' + PASSWORD });
  const err = await rejection(c.getManifest('x/y', '1'));
  t.equal(err.code, 'UPSTREAM_AUTH');
  t.equal(err.status, 401);
  t.match(err.message, /token request/);
  t.notMatch(err.message, PASSWORD);
  t.notMatch(JSON.stringify(c.lines), PASSWORD);
});

t.test('basic: retried with credentials, then sent up front', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'basic', manifests: new Map([['p/q:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]) });
  const c = client(t, reg.url, { username: USER, password: PASSWORD });
  t.ok(await c.getManifest('p/q', '1'));
  t.ok(await c.getManifest('p/q', '1'));
  t.ok(await c.headManifest('p/q', '1'));
  t.same(
    reg.hits.map((h) => h.headers.authorization === undefined),
    [true, false, false, false],
    'one 401, then credentials up front',
  );

  const anon = client(t, reg.url);
  const err = await rejection(anon.getManifest('p/q', '1'));
  t.equal(err.code, 'UPSTREAM_AUTH', 'Basic challenge without credentials');
  t.match(err.message, /\(401 UNAUTHORIZED\)/, "the upstream's error code in the message");
  t.notMatch(err.message, /authentication required/, "but not the upstream's own text (it could echo a credential)");
});

t.test('redirected blob: Authorization stays with the registry', async (t) => {
  const tokens = await tokenService(t);
  const storage = await serve(t, (req, res) => sendBytes(req, res, blobBytes));
  const reg = await fakeRegistry(t, { auth: 'bearer', realm: tokens.realm, blobs: new Map([[blobDigest, blobBytes]]), storage: storage.url });
  t.not(new URL(storage.url).origin, new URL(reg.url).origin, 'different origin (port)');
  const c = client(t, reg.url);

  const whole = await c.getBlob('lib/app', blobDigest);
  t.equal(whole?.status, 200);
  t.equal(whole?.size, blobBytes.length);
  t.same(Buffer.concat(await whole!.body.toArray()), blobBytes);
  t.equal(reg.hits.at(-1)?.headers.authorization, 'Bearer tok:repository:lib/app:pull', 'registry got the token');
  t.equal(storage.hits.length, 1);
  t.equal(storage.hits[0]?.headers.authorization, undefined, 'object storage got no Authorization');
  t.match(storage.hits[0]?.path, /X-Amz-Signature/);

  const part = await c.getBlob('lib/app', blobDigest, { offset: 5 });
  t.equal(part?.status, 206);
  t.equal(part?.offset, 5);
  t.equal(part?.size, blobBytes.length, 'total size from Content-Range');
  t.equal(Buffer.concat(await part!.body.toArray()).toString(), blobBytes.subarray(5).toString());
  t.equal(storage.hits[1]?.headers.range, 'bytes=5-', 'Range follows the redirect');
  t.equal(storage.hits[1]?.headers.authorization, undefined);
});

t.test('blobs: HEAD size, 404, range ignored, bad Content-Range', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'none', blobs: new Map([[blobDigest, blobBytes]]) });
  const c = client(t, reg.url);
  t.same(await c.headBlob('a/b', blobDigest), { size: blobBytes.length });
  t.equal(await c.headBlob('a/b', digestOf(Buffer.from('nope'))), null);
  t.equal(await c.getBlob('a/b', digestOf(Buffer.from('nope'))), null);
  t.equal(reg.hits.at(-1)?.path, `/v2/a/b/blobs/${digestOf(Buffer.from('nope'))}`, 'digest colon kept literal');

  const ignoring = await serve(t, (req, res) => sendBytes(req, res, blobBytes, false));
  const c2 = client(t, ignoring.url);
  const whole = await c2.getBlob('a/b', blobDigest, { offset: 7 });
  t.equal(whole?.status, 200, 'upstream ignored Range');
  t.equal(whole?.offset, 0, 'so the body starts at 0');
  // Regression: destroying an unread undici body emits UND_ERR_ABORTED, which
  // crashed the test process as an uncaught exception before getBlob guarded it.
  whole?.body.destroy();

  const lying = await serve(t, (_req, res) => {
    res.writeHead(206, { 'content-range': 'bytes 3-19/20', 'content-length': 17 });
    res.end(blobBytes.subarray(3));
  });
  const err = await rejection(client(t, lying.url).getBlob('a/b', blobDigest, { offset: 5 }));
  t.equal(err.code, 'UPSTREAM_PROTOCOL', '206 for another offset');
  await t.rejects(c.getBlob('a/b', blobDigest, { offset: -1 }), RangeError);
});

t.test('manifests: Accept, digest, media type, size, 404, limits', async (t) => {
  const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
  const reg = await fakeRegistry(t, {
    auth: 'none',
    manifests: new Map([
      ['r/m:tag', { body: manifestBody, type: MEDIA_TYPES.ociManifest }],
      ['r/m:nodigest', { body: manifestBody, type: MEDIA_TYPES.dockerManifest, digestHeader: false }],
      [`r/m:${digestOf(manifestBody)}`, { body: manifestBody, type: MEDIA_TYPES.ociManifest }],
      ['r/m:big', { body: big, type: MEDIA_TYPES.ociManifest }],
    ]),
  });
  const c = client(t, reg.url);

  const got = await c.getManifest('r/m', 'tag');
  t.same(got, { digest: digestOf(manifestBody), mediaType: MEDIA_TYPES.ociManifest, size: manifestBody.length, body: manifestBody });
  t.equal(reg.hits.at(-1)?.headers.accept, DEFAULT_ACCEPT, 'default Accept');

  await c.headManifest('r/m', 'tag', { accept: MEDIA_TYPES.dockerManifest });
  t.equal(reg.hits.at(-1)?.headers.accept, MEDIA_TYPES.dockerManifest, "the client's Accept passed through");
  t.equal(reg.hits.at(-1)?.method, 'HEAD');

  const computed = await c.getManifest('r/m', 'nodigest');
  t.equal(computed?.digest, digestOf(manifestBody), 'sha256 of the body when the header is absent');
  t.equal(computed?.mediaType, MEDIA_TYPES.dockerManifest);
  t.equal((await rejection(c.headManifest('r/m', 'nodigest'))).code, 'UPSTREAM_PROTOCOL', 'HEAD by tag needs the header');

  t.same(await c.headManifest('r/m', digestOf(manifestBody)), { digest: digestOf(manifestBody), mediaType: MEDIA_TYPES.ociManifest, size: manifestBody.length });
  t.equal(await c.getManifest('r/m', 'missing'), null);
  t.equal(await c.headManifest('r/m', 'missing'), null);

  const tooBig = await rejection(c.getManifest('r/m', 'big'));
  t.equal(tooBig.code, 'UPSTREAM_PROTOCOL');
  t.match(tooBig.message, /4194304/);
});

t.test('manifests: a body that does not match its digest is refused', async (t) => {
  const liar = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'docker-content-digest': digestOf(Buffer.from('other')) });
    res.end(manifestBody);
  });
  const c = client(t, liar.url);
  t.equal((await rejection(c.getManifest('r/m', 'tag'))).code, 'UPSTREAM_PROTOCOL');
  t.equal((await rejection(c.getManifest('r/m', digestOf(Buffer.from('x'))))).code, 'UPSTREAM_PROTOCOL');
});

t.test('manifests: a schema1 rewrite the Accept did not name is no manifest (Distribution rewrites schema2 for such a tag request)', async (t) => {
  // What Distribution 2.8 sends: a signed schema1 body whose Docker-Content-Digest is its payload's, not its bytes'.
  const signed = Buffer.from('{"schemaVersion":1,"signatures":[]}');
  const rewriter = await serve(t, (req, res) => {
    res.writeHead(200, { 'content-type': MEDIA_TYPES.dockerManifestV1Signed, 'docker-content-digest': digestOf(Buffer.from('payload')), 'content-length': signed.length });
    res.end(req.method === 'HEAD' ? undefined : signed);
  });
  const c = client(t, rewriter.url);
  t.equal(await c.getManifest('r/m', 'tag', { accept: MEDIA_TYPES.ociIndex }), null, 'GET: nothing of a type asked for');
  t.equal(await c.headManifest('r/m', 'tag', { accept: `${MEDIA_TYPES.ociManifest}, ${MEDIA_TYPES.dockerManifestList}` }), null, 'HEAD: the same');
  t.equal((await rejection(c.getManifest('r/m', 'tag', { accept: MEDIA_TYPES.dockerManifestV1Signed }))).code, 'UPSTREAM_PROTOCOL', 'asked for by name, it is checked like any manifest');
});

t.test('tags: query and Link passed through', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'none' });
  const c = client(t, reg.url);
  const tags = await c.getTags('library/nginx', 'n=2&last=a');
  t.equal(reg.hits.at(-1)?.path, '/v2/library/nginx/tags/list?n=2&last=a');
  t.match(JSON.parse(tags?.body.toString() ?? '{}'), { tags: ['a', 'b'] });
  t.equal(tags?.link, '</v2/library/nginx/tags/list?n=2&last=b>; rel="next"');
  const none = await c.getTags('library/nginx', '');
  t.equal(reg.hits.at(-1)?.path, '/v2/library/nginx/tags/list');
  t.ok(none);
});

t.test('ping: true on 200, false on a non-registry, throws when unreachable', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'none' });
  t.equal(await client(t, reg.url).ping(), true);
  const web = await serve(t, (_req, res) => {
    res.writeHead(404);
    res.end('not a registry');
  });
  t.equal(await client(t, web.url).ping(), false);
  const port = await refusedPort();
  t.equal((await rejection(client(t, `http://127.0.0.1:${port}`).ping())).code, 'UPSTREAM_UNREACHABLE');
});

t.test('warm: the challenge is learnt before the first pull, which then pays no 401 and reuses the socket', async (t) => {
  const tokens = await tokenService(t);
  const reg = await fakeRegistry(t, {
    auth: 'bearer',
    realm: tokens.realm,
    manifests: new Map([['library/nginx:1.27', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]),
    blobs: new Map([[blobDigest, blobBytes]]),
  });
  const c = client(t, reg.url, { pool: { keepAliveTimeoutMs: 30_000 } });
  await c.warm?.();
  t.same(reg.hits.map((h) => `${h.method} ${h.path} ${h.headers.authorization === undefined ? 'anonymous' : 'credentials'}`), ['GET /v2/ anonymous'], 'warm-up: one anonymous GET /v2/');
  t.equal(tokens.hits.length, 0, 'and no token: its scope is not known yet');
  t.same(c.events, [], 'nobody\'s request: not in the metrics');
  const before = reg.hits.length;
  t.equal((await c.getManifest('library/nginx', '1.27'))?.digest, digestOf(manifestBody));
  t.equal(reg.connections(), 1, "the warm-up's connection is the first request's");
  t.equal(tokens.hits.length, 1, 'one token, for the pull\'s scope');
  const blob = await c.getBlob('library/nginx', blobDigest);
  blob?.body.resume();
  t.same(
    reg.hits.slice(before).map((h) => h.headers.authorization),
    ['Bearer tok:repository:library/nginx:pull', 'Bearer tok:repository:library/nginx:pull'],
    'the first pull request carries its token on the first try: no anonymous 401 round trip',
  );
});

t.test('warm: Basic is learnt too; an unreachable upstream is no error and leaves the circuit closed', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'basic', manifests: new Map([['p/q:1', { body: manifestBody, type: MEDIA_TYPES.ociManifest }]]) });
  const c = client(t, reg.url, { username: USER, password: PASSWORD });
  await c.warm?.();
  const before = reg.hits.length;
  t.ok(await c.getManifest('p/q', '1'));
  t.same(reg.hits.slice(before).map((h) => h.headers.authorization === undefined), [false], 'credentials up front from the first request');

  const port = await refusedPort();
  const away = client(t, `http://127.0.0.1:${port}`, { circuit: { maxFails: 1, failTimeoutMs: 60_000 } });
  await away.warm?.();
  t.equal(away.health().up, true, 'a failed warm-up does not open the circuit');
  t.equal(away.health().consecutiveFailures, 0);
  t.equal((await rejection(away.headManifest('r/x', 'tag'))).code, 'UPSTREAM_UNREACHABLE');
  t.notMatch((await rejection(away.headManifest('r/x', 'tag'))).message, /warm/, 'errors are the requests\' own');
});

t.test('429: waits for a short Retry-After, gives up on a long one', async (t) => {
  let calls = 0;
  const limited = await serve(t, (req, res) => {
    calls++;
    if (req.url?.includes('long')) {
      json(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }, { 'retry-after': '60' });
    } else if (calls === 1) {
      json(res, 429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }, { 'retry-after': '1' });
    } else {
      sendBytes(req, res, blobBytes);
    }
  });
  const c = client(t, limited.url);
  const started = performance.now();
  const ok = await c.headBlob('r/short', blobDigest);
  t.same(ok, { size: blobBytes.length });
  t.ok(performance.now() - started >= 900, 'waited about Retry-After (1 s)');
  t.equal(calls, 2);

  const before = calls;
  const t0 = performance.now();
  const err = await rejection(c.headBlob('r/long', blobDigest));
  t.equal(err.code, 'UPSTREAM_RATE_LIMITED');
  t.equal(err.retryAfterMs, 60_000);
  t.equal(calls - before, 1, 'no retry when Retry-After exceeds maxRetryAfterMs');
  t.ok(performance.now() - t0 < 1000, 'answered at once');
});

t.test('5xx: bounded retries with backoff, then UPSTREAM_STATUS', async (t) => {
  let calls = 0;
  let failFirst = 1;
  const flaky = await serve(t, (req, res) => {
    calls++;
    if (calls <= failFirst) json(res, 503, { errors: [{ code: 'UNAVAILABLE', message: 'busy' }] });
    else sendBytes(req, res, blobBytes);
  });
  const c = client(t, flaky.url);
  const started = performance.now();
  t.same(await c.headBlob('r/x', blobDigest), { size: blobBytes.length });
  t.equal(calls, 2, '503 then 200');
  t.ok(performance.now() - started >= 90, 'backed off ~100 ms');

  calls = 0;
  failFirst = 100;
  const err = await rejection(c.getManifest('r/x', 'tag'));
  t.equal(err.code, 'UPSTREAM_STATUS');
  t.equal(err.status, 503);
  t.equal(calls, 3, 'one try plus maxRetries (2)');
  t.match(err.message, /\(503 UNAVAILABLE\)/);
  t.notMatch(err.message, /busy/, "the upstream's text is not relayed");
  t.equal(c.health().up, true, 'a 5xx proves the upstream is reachable');
});

t.test('a reset socket is retried once on a fresh connection', async (t) => {
  let calls = 0;
  const resetting = await serve(t, (req, res) => {
    calls++;
    if (calls === 1) req.socket.destroy();
    else sendBytes(req, res, blobBytes);
  });
  const c = client(t, resetting.url);
  t.same(await c.headBlob('r/x', blobDigest), { size: blobBytes.length });
  t.equal(calls, 2);
  t.same(
    c.events.map((e) => e.status),
    ['error', 200],
    'one observer event per exchange',
  );
});

t.test('token service faults are typed', async (t) => {
  let mode = 'garbage';
  const tokens = await serve(t, (_req, res) => {
    if (mode === 'garbage') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>login</html>');
    } else if (mode === 'empty') json(res, 200, { token: '' });
    else json(res, 500, { errors: [{ code: 'UNKNOWN', message: 'boom' }] });
  });
  const reg = await fakeRegistry(t, { auth: 'bearer', realm: `${tokens.url}/token` });
  const c = client(t, reg.url, { retry: { maxRetries: 0 } });
  t.equal((await rejection(c.ping())).code, 'UPSTREAM_PROTOCOL', 'non-JSON');
  mode = 'empty';
  t.equal((await rejection(c.ping())).code, 'UPSTREAM_PROTOCOL', 'no token in the JSON');
  mode = 'error';
  const err = await rejection(c.ping());
  t.equal(err.code, 'UPSTREAM_STATUS');
  t.match(err.message, /token request/);

  const weird = await fakeRegistry(t, { auth: 'bearer', realm: 'ftp://example.invalid/token' });
  t.equal((await rejection(client(t, weird.url).ping())).code, 'UPSTREAM_PROTOCOL', 'realm that is not http(s)');
  const relative = await fakeRegistry(t, { auth: 'bearer', realm: '/token' });
  t.equal((await rejection(client(t, relative.url).ping())).code, 'UPSTREAM_PROTOCOL', 'realm that is not a URL');
});

t.test('ping and tags: auth failures throw, unknown repositories are null', async (t) => {
  const reg = await fakeRegistry(t, { auth: 'basic' });
  const anon = client(t, reg.url);
  t.equal((await rejection(anon.ping())).code, 'UPSTREAM_AUTH');
  const ok = client(t, reg.url, { username: USER, password: PASSWORD });
  t.equal(await ok.ping(), true);
  const plain = await serve(t, (_req, res) => json(res, 404, { errors: [{ code: 'NAME_UNKNOWN', message: 'no such repo' }] }));
  t.equal(await client(t, plain.url).getTags('no/such', ''), null);
});

t.test('abort while reading a manifest body is the caller\'s, not the upstream\'s', async (t) => {
  const stalling = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'content-length': 1000 });
    res.write('{"schemaVersion":');
  });
  const ac = new AbortController();
  // The observer runs as the headers arrive, so this aborts during the body read.
  const c = client(t, stalling.url, { circuit: { maxFails: 1 }, observer: () => ac.abort() });
  await t.rejects(c.getManifest('r/x', 'tag', { signal: ac.signal }), { name: 'AbortError' });
  t.equal(c.health().up, true);
  t.equal(c.health().consecutiveFailures, 0);
});

t.test('a chunked manifest past the limit is cut off; a throwing observer is only logged', async (t) => {
  const chunked = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest });
    const piece = Buffer.alloc(1024 * 1024, 0x20);
    for (let i = 0; i < 5; i++) res.write(piece);
    res.end();
  });
  const c = client(t, chunked.url, {
    observer: () => {
      throw new Error('metrics bug');
    },
  });
  const err = await rejection(c.getManifest('r/x', 'tag'));
  t.equal(err.code, 'UPSTREAM_PROTOCOL');
  t.match(err.message, /exceeds 4194304 bytes/);
  t.ok(c.lines.some((l) => l.includes('upstream observer threw')));
});

t.test('timeouts: headers and body idle end within bounds as UPSTREAM_TIMEOUT', async (t) => {
  const silent = await serve(t, () => {
    // never answers
  });
  const timeouts = { connectMs: 200, headersMs: 200, bodyIdleMs: 200 };
  const c = client(t, silent.url, { timeouts, retry: { maxRetries: 0 } });
  let started = performance.now();
  const err = await rejection(c.getManifest('r/x', 'tag'));
  t.equal(err.code, 'UPSTREAM_TIMEOUT');
  t.ok(performance.now() - started < 3000, 'headers timeout honoured');
  t.equal(c.events.at(-1)?.status, 'error', 'observer sees the failed exchange');

  const stalling = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MEDIA_TYPES.ociManifest, 'content-length': 1000 });
    res.write('{"schemaVersion":');
  });
  const c2 = client(t, stalling.url, { timeouts });
  started = performance.now();
  const err2 = await rejection(c2.getManifest('r/x', 'tag'));
  t.equal(err2.code, 'UPSTREAM_TIMEOUT', 'body idle timeout while reading a manifest');
  t.ok(performance.now() - started < 3000);

  // A blob body is the caller's to read: a stall mid-stream reaches its reader
  // as undici's own error (the guard in getBlob must not swallow it).
  const blob = await c2.getBlob('r/x', blobDigest);
  t.equal(blob?.status, 200);
  started = performance.now();
  await t.rejects(blob!.body.toArray(), { code: 'UND_ERR_BODY_TIMEOUT' });
  t.ok(performance.now() - started < 3000);
});

t.test('connection refused is UPSTREAM_UNREACHABLE; the circuit then fails fast', async (t) => {
  const port = await refusedPort();
  const c = client(t, `http://127.0.0.1:${port}`, { circuit: { maxFails: 3, failTimeoutMs: 60_000 } });
  for (let i = 0; i < 3; i++) {
    const err = await rejection(c.headManifest('r/x', 'tag'));
    t.equal(err.code, 'UPSTREAM_UNREACHABLE');
    t.notMatch(err.message, /circuit/);
  }
  t.equal(c.health().up, false);
  t.equal(c.health().consecutiveFailures, 3);
  t.match(c.health().lastError, /ECONNREFUSED/);
  const exchanges = c.events.length;
  const started = performance.now();
  const err = await rejection(c.getBlob('r/x', blobDigest));
  t.equal(err.code, 'UPSTREAM_UNREACHABLE');
  t.match(err.message, /circuit open/);
  t.ok(performance.now() - started < 50, 'fails fast');
  t.equal(c.events.length, exchanges, 'no exchange attempted');
});

t.test('circuit: a silent WAN costs maxFails timeouts, then a probe after failTimeout closes it', async (t) => {
  let silent = true;
  const wan = await serve(t, (req, res) => {
    if (!silent) sendBytes(req, res, blobBytes);
  });
  const c = client(t, wan.url, {
    timeouts: { connectMs: 200, headersMs: 150, bodyIdleMs: 200 },
    retry: { maxRetries: 0 },
    circuit: { maxFails: 2, failTimeoutMs: 300 },
  });
  for (let i = 0; i < 2; i++) t.equal((await rejection(c.headBlob('r/x', blobDigest))).code, 'UPSTREAM_TIMEOUT');
  const t0 = performance.now();
  t.match((await rejection(c.headBlob('r/x', blobDigest))).message, /circuit open/);
  t.ok(performance.now() - t0 < 50, 'open circuit answers before any timeout');

  silent = false;
  // The cool-down is a timer inside the client; waiting it out is the behaviour under test.
  await new Promise((resolve) => setTimeout(resolve, 350));
  t.same(await c.headBlob('r/x', blobDigest), { size: blobBytes.length }, 'probe let through');
  t.equal(c.health().up, true);
  t.equal(c.health().consecutiveFailures, 0);
});

t.test('discarded bodies do not leak connections', async (t) => {
  let size = 16 * 1024;
  let n = 0;
  const noisy = await serve(t, (req, res) => {
    n++;
    const status = [404, 500, 401, 403][n % 4] ?? 404;
    res.writeHead(status, { 'content-length': size, 'content-type': 'text/plain' });
    res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(size, 0x61));
  });
  // One socket: a single body left unread (bigger than undici's buffer) stalls
  // every request queued behind it until the body idle timeout.
  const c = client(t, noisy.url, {
    pool: { connections: 1, keepAliveTimeoutMs: 10 },
    retry: { maxRetries: 1 },
    timeouts: { connectMs: 1000, headersMs: 2000, bodyIdleMs: 2000 },
  });
  const burst = (): Promise<PromiseSettledResult<unknown>[]> =>
    Promise.allSettled(Array.from({ length: 40 }, (_v, i) => (i % 2 ? c.getManifest('r/x', 'tag') : c.getBlob('r/x', blobDigest))));
  const settledWithoutTimeout = (outcomes: PromiseSettledResult<unknown>[]): boolean =>
    outcomes.every((o) => o.status === 'fulfilled' || (o.reason instanceof UpstreamError && o.reason.code !== 'UPSTREAM_TIMEOUT'));

  let started = performance.now();
  t.ok(settledWithoutTimeout(await burst()), 'small error bodies: no request stalled');
  t.ok(performance.now() - started < 3000);
  t.ok(noisy.connections() <= 2, `small error bodies are drained and the socket reused (${noisy.connections()} connections)`);

  size = 2 * 1024 * 1024;
  started = performance.now();
  t.ok(settledWithoutTimeout(await burst()), 'large error bodies: no request stalled');
  t.ok(performance.now() - started < 5000, 'large bodies are cut off rather than downloaded or left hanging');
});

t.test('abort: the caller signal cancels without counting against the upstream', async (t) => {
  const silent = await serve(t, () => {
    // never answers
  });
  const c = client(t, silent.url, { circuit: { maxFails: 1 } });
  const ac = new AbortController();
  const p = c.getManifest('r/x', 'tag', { signal: ac.signal });
  ac.abort();
  await t.rejects(p, { name: 'AbortError' });
  t.equal(c.health().up, true);
  t.equal(c.health().consecutiveFailures, 0);
});

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

t.test('TLS: private CA added to the roots, self-signed refused, skipVerify', { skip: hasOpenssl() ? false : 'openssl not available' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'berth-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    { stdio: 'ignore' },
  );
  const server = https.createServer({ key: readFileSync(key), cert: readFileSync(cert) });
  const reg = await serve(t, (_req, res) => json(res, 200, {}), '127.0.0.1', server);

  const strict = client(t, reg.url);
  const err = await rejection(strict.ping());
  t.equal(err.code, 'UPSTREAM_TLS');
  t.match(err.message, /DEPTH_ZERO_SELF_SIGNED_CERT|self.signed/i, 'reason in the message');

  t.equal(await client(t, reg.url, { caFile: cert }).ping(), true, 'caFile trusted');
  t.equal(await client(t, reg.url, { skipVerify: true }).ping(), true, 'skipVerify');

  const byName = await rejection(client(t, reg.url.replace('127.0.0.1', 'localhost'), { caFile: cert }).ping());
  t.equal(byName.code, 'UPSTREAM_TLS', 'a name the certificate does not carry');
  t.match(byName.message, /ERR_TLS_CERT_ALTNAME_INVALID/);

  t.throws(() => client(t, reg.url, { caFile: join(dir, 'missing.pem') }), { code: 'UPSTREAM_TLS', message: /missing\.pem/ });
});
