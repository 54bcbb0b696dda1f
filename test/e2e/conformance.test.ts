/**
 * Differential conformance of berth's read API against Distribution's own
 * answers (issue 13's helper "conformance"): the same request goes to a real
 * Distribution 2.8 behind token auth (with a token, as a client sends it) and
 * to berth in front of it, and the answers are compared field by field:
 * status, Content-Type, Docker-Content-Digest, Content-Length, Content-Range,
 * Accept-Ranges, ETag, Link, Docker-Distribution-API-Version, the OCI error
 * code (not the message) and the body bytes.
 *
 * Every case is sent to berth twice, cold (its first time through berth) and
 * warm (the same request again), because berth answers the two from
 * different paths (upstream exchange and fill, index and cache file). Cases
 * that name an object get one of their own (a manifest variant with its own
 * digest and tag, a blob of its own), so a case's cold request is really the
 * first berth sees of that object (berth's request log shows where each
 * answer came from); cases "after a pull with every type" have berth hold the
 * object first. Three berths, one per way containerd addresses a mirror: no
 * `ns` (the first upstream), `?ns=docker.io`, and `?ns=<the upstream's host>`.
 *
 * Where Distribution's answer is outside the OCI distribution spec or RFC 9110
 * (or SPEC.md says berth answers otherwise), `DELIBERATE` lists the cases with
 * the rule berth follows: berth is held to that answer there, and
 * Distribution's own answer is asserted too, so the list stays true.
 */
import t from 'tap';
import http from 'node:http';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob, MT, MANIFEST_ACCEPT, type TestImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';

const sha = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The connection ended before the body did (headers were received). */
  cut?: boolean;
}

/** One request with the target sent byte for byte (fetch would resolve `..`), on a fresh connection. */
function send(base: string, target: string, method: string, headers: Record<string, string>): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: target, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), cut: true }));
    });
    req.on('error', (err) => reject(new Error(`${method} ${base}${target}: ${err.message}`)));
    req.end();
  });
}

/** The fields compared, as strings ('' when absent). */
const FIELDS = ['status', 'content-type', 'docker-content-digest', 'content-length', 'content-range', 'accept-ranges', 'etag', 'link', 'docker-distribution-api-version', 'error code', 'body'] as const;
type Field = (typeof FIELDS)[number];
type Fields = Record<Field, string>;

function errorCode(a: Answer): string {
  if (a.status < 400 || a.body.length === 0) return '';
  try {
    const parsed = JSON.parse(a.body.toString('utf8')) as { errors?: Array<{ code?: string }> };
    return (parsed.errors ?? []).map((e) => e.code ?? '?').join(',') || '(no errors[])';
  } catch {
    return '(not JSON)';
  }
}

function fieldsOf(a: Answer, method: string): Fields {
  const h = (k: string): string => {
    const v = a.headers[k];
    return Array.isArray(v) ? v.join(', ') : (v ?? '');
  };
  const ok = a.status < 300;
  return {
    status: String(a.status),
    'content-type': a.status === 304 ? '' : h('content-type'),
    'docker-content-digest': h('docker-content-digest'),
    // An error's length is its message's, and messages are not compared.
    'content-length': ok ? h('content-length') : '',
    'content-range': h('content-range'),
    'accept-ranges': ok ? h('accept-ranges') : '',
    etag: ok ? h('etag') : '',
    link: h('link'),
    'docker-distribution-api-version': h('docker-distribution-api-version'),
    'error code': method === 'GET' ? errorCode(a) : '',
    body: a.cut ? `cut short after ${a.body.length} bytes` : ok && method === 'GET' ? `${a.body.length} bytes ${sha(a.body).slice(7, 19)}` : '',
  };
}

interface Case {
  name: string;
  method: 'GET' | 'HEAD';
  /** The request target below the host, without `ns`. */
  target: string;
  headers?: Record<string, string>;
  /** Sent to berth (not Distribution) before the case's cold request: berth then answers it from what it holds. */
  prime?: { target: string; headers?: Record<string, string> };
}

const JSON_TYPE = 'application/json; charset=utf-8';
const SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
const error = (code: string): Partial<Fields> => ({ 'content-type': JSON_TYPE, 'docker-content-digest': '', 'content-length': '', 'content-range': '', 'accept-ranges': '', etag: '', 'error code': code, body: '' });

/**
 * Where berth answers otherwise on purpose, each with the rule it follows
 * instead. `distribution` is what Distribution 2.8 answers (asserted, so the
 * list stays true); berth's answer is Distribution's answer to the same
 * target with the `like` headers instead (when given), with `berth`'s fields
 * over it. On HEAD, error codes and bodies are not compared.
 */
interface Deliberate {
  cases: RegExp;
  distribution: Partial<Record<Field, string | RegExp>>;
  like?: Record<string, string>;
  berth: Partial<Fields>;
  why: string;
}
const DELIBERATE: Deliberate[] = [
  {
    cases: /^(GET|HEAD) (oci|index) manifest by (tag|digest), Accept: (no Accept|\*\/\*)$/,
    distribution: { status: '404' },
    like: { accept: MANIFEST_ACCEPT },
    berth: {},
    why: 'RFC 9110 §12.5.1: a request with no Accept (or */*) accepts any media type; Distribution 2.8 answers 404 unless OCI types are named (berth widens the Accept it sends upstream: src/oci/mediatypes.ts upstreamAccept)',
  },
  {
    cases: /^(GET|HEAD) (schema2|list) manifest by tag, Accept: (no Accept|\*\/\*)$/,
    distribution: { status: '200', 'content-type': SCHEMA1 },
    like: { accept: MANIFEST_ACCEPT },
    berth: {},
    why: 'Distribution rewrites the schema2 image (or the list\'s linux/amd64 image) into a signed schema1 manifest for a client that names no schema2 type; schema1 is no part of the OCI distribution spec, and SPEC.md: "the manifest or index is stored and returned verbatim with the upstream\'s media type, so digests never drift from upstream"',
  },
  {
    cases: /^(GET|HEAD) (schema2 manifest by tag, Accept: (OCI index only|Docker manifest list only|OCI manifest only)|list manifest by tag, Accept: (OCI index only|OCI manifest only))(, after a pull with every type)?$/,
    distribution: { status: '200', 'content-type': SCHEMA1 },
    berth: { status: '404', ...error('MANIFEST_UNKNOWN') },
    why: 'the same schema1 rewrite, for an Accept that names neither the manifest\'s type nor schema1: berth has no manifest of a type the client takes, and answers as Distribution does for an OCI manifest the Accept leaves out (404 MANIFEST_UNKNOWN; SPEC.md: "A miss that berth cannot fill from any upstream is 404")',
  },
  {
    cases: /^(GET|HEAD) manifest, (malformed digest|uppercase hex digest)$/,
    distribution: { status: '500' },
    berth: { status: '400', ...error('DIGEST_INVALID') },
    why: 'Distribution fails with 500 UNKNOWN; SPEC.md: "`NAME_INVALID`/`DIGEST_INVALID` 400" (a digest\'s hex is lower case: OCI image-spec, Digests)',
  },
  {
    cases: /^(GET|HEAD) (manifest|blob|tags\/list), uppercase name$/,
    distribution: { status: '404' },
    berth: { status: '400', ...error('NAME_INVALID') },
    why: 'the distribution spec\'s name grammar has no upper case; Distribution\'s router finds no route (a text/plain 404 for manifests, BLOB_UNKNOWN, NAME_UNKNOWN); SPEC.md: "`NAME_INVALID`/`DIGEST_INVALID` 400"',
  },
  {
    cases: /^(GET|HEAD) manifest, name with \.\.$/,
    distribution: { status: '301' },
    berth: { status: '400', ...error('NAME_INVALID') },
    why: 'Go\'s path cleaning redirects to the resolved path; berth refuses a name outside the spec\'s grammar rather than resolve a path a client made (SPEC.md: no open proxy, "no request to an address a client chose"; fuzz.test.ts)',
  },
  {
    cases: /^(GET|HEAD) manifest, name over 255 characters$/,
    distribution: { status: '500' },
    berth: { status: '400', ...error('NAME_INVALID') },
    why: 'Distribution fails with 500 UNKNOWN past its 255-character limit; the spec\'s answer is NAME_INVALID (SPEC.md: "`NAME_INVALID`/`DIGEST_INVALID` 400")',
  },
  {
    cases: /^GET blob, Range past the end$/,
    distribution: { status: '416', body: /^cut short/ },
    berth: { status: '416', ...error('RANGE_INVALID'), 'content-range': 'bytes */1000' },
    why: 'RFC 9110 §15.5.17: 416 with `Content-Range: bytes */<size>`; Distribution announces the blob\'s Content-Length, then sends a short text, so its client sees a cut connection',
  },
  {
    cases: /^GET blob, (malformed Range|Range with last < first|Range in another unit)$/,
    distribution: { status: '416', body: /^cut short/ },
    like: {},
    berth: {},
    why: 'RFC 9110 §14.2: a Range that is invalid or in a unit the server does not know is ignored (200, the whole blob); Distribution answers 416 with the blob\'s Content-Length and a short text, a cut connection',
  },
  {
    cases: /^GET blob, multiple ranges$/,
    distribution: { status: '206', 'content-type': /^multipart\/byteranges/ },
    like: {},
    berth: {},
    why: 'RFC 9110 §14.2 lets a server ignore Range; berth serves one range per request (src/oci/range.ts), the way containerd asks',
  },
];

t.test('berth answers the read API as Distribution does', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-conformance');
  const creds = { creds: 'pusher:push-secret' };

  // The seed images: an OCI image, an OCI index, a Docker schema2 image and a Docker manifest list.
  const small = await makeImage(path.join(work, 'small'), { layers: 1, layerSize: 3000, seed: 'conf-small', tag: 'v1' });
  const multi = await makeImage(path.join(work, 'multi'), { layers: 1, layerSize: 2000, seed: 'conf-multi', tag: 'v1', platforms: ['linux/amd64', 'linux/arm64'] });
  const dock = await makeImage(path.join(work, 'dock'), { layers: 1, layerSize: 2000, seed: 'conf-dock', tag: 'v1', format: 'docker' });
  const dlist = await makeImage(path.join(work, 'dlist'), { layers: 1, layerSize: 2000, seed: 'conf-dlist', tag: 'v1', format: 'docker', platforms: ['linux/amd64', 'linux/arm64'] });
  const seeds: Record<string, { img: TestImage; repo: string }> = {
    oci: { img: small, repo: 'library/small' },
    index: { img: multi, repo: 'library/multi' },
    schema2: { img: dock, repo: 'library/dock' },
    list: { img: dlist, repo: 'library/dlist' },
  };
  for (const { img, repo } of Object.values(seeds)) await pushImage(img.layoutDir, 'v1', registry, `${repo}:v1`, creds);
  await pushImage(small.layoutDir, 'v1', registry, 'a/b/c:v1', creds);

  const pullToken = (name: string): string => token.issue('pusher', name ? [{ type: 'repository', name, actions: ['pull'] }] : []);
  const pushToken = (name: string): string => token.issue('pusher', [{ type: 'repository', name, actions: ['pull', 'push'] }]);
  const nameOf = (target: string): string => /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(target.split('?')[0]!)?.[1] ?? '';

  /** Puts `bytes` under `repo:tag` straight into the registry. */
  async function putManifest(repo: string, tag: string, mediaType: string, bytes: Buffer): Promise<void> {
    const res = await fetch(`${registry.url}/v2/${repo}/manifests/${tag}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${pushToken(repo)}`, 'content-type': mediaType },
      body: new Uint8Array(bytes),
    });
    if (res.status !== 201) throw new Error(`PUT ${repo}:${tag}: ${res.status} ${await res.text()}`);
  }
  /** Uploads one blob (monolithic POST + PUT) into `repo`. */
  async function putBlob(repo: string, bytes: Buffer): Promise<string> {
    const auth = { authorization: `Bearer ${pushToken(repo)}` };
    const started = await fetch(`${registry.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
    if (started.status !== 202) throw new Error(`POST upload: ${started.status}`);
    const location = new URL(started.headers.get('location')!, registry.url);
    const digest = sha(bytes);
    location.searchParams.set('digest', digest);
    const done = await fetch(location, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: new Uint8Array(bytes) });
    if (done.status !== 201) throw new Error(`PUT upload: ${done.status} ${await done.text()}`);
    return digest;
  }

  /**
   * A manifest of its own for one case: the seed's bytes with `n` spaces
   * after them (still the same JSON, another digest), tagged `c<n>`.
   */
  let variants = 0;
  async function variant(kind: keyof typeof seeds): Promise<{ repo: string; tag: string; digest: string; mediaType: string; bytes: Buffer }> {
    const { img, repo } = seeds[kind]!;
    const n = ++variants;
    const bytes = Buffer.concat([await readBlob(img.layoutDir, img.manifestDigest), Buffer.from(' '.repeat(n))]);
    const tag = `c${n}`;
    await putManifest(repo, tag, img.mediaType, bytes);
    return { repo, tag, digest: sha(bytes), mediaType: img.mediaType, bytes };
  }
  /** A blob of its own for one case. */
  async function freshBlob(size = 1000, repo = 'library/small'): Promise<{ repo: string; digest: string; size: number }> {
    const bytes = randomBytes(size);
    return { repo, digest: await putBlob(repo, bytes), size };
  }

  const ACCEPTS: Record<string, string | undefined> = {
    'all manifest types': MANIFEST_ACCEPT,
    'OCI index only': MT.ociIndex,
    'Docker manifest list only': MT.dockerList,
    'Docker schema2 only': MT.dockerManifest,
    'OCI manifest only': MT.ociManifest,
    'no Accept': undefined,
    '*/*': '*/*',
    'q-values': `${MT.ociIndex};q=0.5, ${MT.dockerList};q=0.5, ${MT.ociManifest};q=0.9, ${MT.dockerManifest};q=1`,
  };

  const cases: Case[] = [
    { name: 'GET /v2/', method: 'GET', target: '/v2/' },
    { name: 'HEAD /v2/', method: 'HEAD', target: '/v2/' },
  ];

  for (const kind of Object.keys(seeds) as Array<keyof typeof seeds>) {
    for (const [acceptName, accept] of Object.entries(ACCEPTS)) {
      for (const method of ['GET', 'HEAD'] as const) {
        for (const by of ['tag', 'digest'] as const) {
          const v = await variant(kind);
          cases.push({
            name: `${method} ${kind} manifest by ${by}, Accept: ${acceptName}`,
            method,
            target: `/v2/${v.repo}/manifests/${by === 'tag' ? v.tag : v.digest}`,
            headers: accept === undefined ? {} : { accept },
          });
        }
      }
    }
  }

  // The same narrow Accepts once berth holds the manifest (a pull with every type came first):
  // berth answers from its index and cache, and must still answer as the upstream would.
  for (const kind of Object.keys(seeds) as Array<keyof typeof seeds>) {
    for (const acceptName of ['OCI index only', 'Docker manifest list only', 'Docker schema2 only', 'OCI manifest only']) {
      for (const by of ['tag', 'digest'] as const) {
        const v = await variant(kind);
        const target = `/v2/${v.repo}/manifests/${by === 'tag' ? v.tag : v.digest}`;
        cases.push({ name: `GET ${kind} manifest by ${by}, Accept: ${acceptName}, after a pull with every type`, method: 'GET', target, headers: { accept: ACCEPTS[acceptName]! }, prime: { target, headers: { accept: MANIFEST_ACCEPT } } });
      }
    }
  }

  const smallDigest = small.manifestDigest;
  const unknownDigest = `sha256:${'0'.repeat(64)}`;
  const sha512 = `sha512:${'ab'.repeat(64)}`;
  for (const method of ['GET', 'HEAD'] as const) {
    const acc = { accept: MANIFEST_ACCEPT };
    cases.push(
      { name: `${method} manifest, unknown tag`, method, target: '/v2/library/small/manifests/nope', headers: acc },
      { name: `${method} manifest, unknown digest`, method, target: `/v2/library/small/manifests/${unknownDigest}`, headers: acc },
      { name: `${method} manifest, malformed digest`, method, target: '/v2/library/small/manifests/sha256:xyz', headers: acc },
      { name: `${method} manifest, sha512 digest`, method, target: `/v2/library/small/manifests/${sha512}`, headers: acc },
      { name: `${method} manifest, uppercase hex digest`, method, target: `/v2/library/small/manifests/sha256:${smallDigest.slice(7).toUpperCase()}`, headers: acc },
      { name: `${method} manifest, unknown repository`, method, target: '/v2/library/nosuch/manifests/v1', headers: acc },
      { name: `${method} manifest, nested name a/b/c`, method, target: '/v2/a/b/c/manifests/v1', headers: acc },
      { name: `${method} manifest, uppercase name`, method, target: '/v2/Library/Small/manifests/v1', headers: acc },
      { name: `${method} manifest, name with ..`, method, target: '/v2/library/../small/manifests/v1', headers: acc },
      { name: `${method} manifest, name over 255 characters`, method, target: `/v2/${'a'.repeat(130)}/${'b'.repeat(130)}/manifests/v1`, headers: acc },
    );
    const v1 = await variant('oci');
    cases.push({ name: `${method} manifest by tag, If-None-Match its digest`, method, target: `/v2/${v1.repo}/manifests/${v1.tag}`, headers: { ...acc, 'if-none-match': `"${v1.digest}"` } });
    const v2 = await variant('index');
    cases.push({ name: `${method} manifest by digest, If-None-Match its digest`, method, target: `/v2/${v2.repo}/manifests/${v2.digest}`, headers: { ...acc, 'if-none-match': `"${v2.digest}"` } });
    const v3 = await variant('schema2');
    cases.push({ name: `${method} manifest by tag, If-None-Match another digest`, method, target: `/v2/${v3.repo}/manifests/${v3.tag}`, headers: { ...acc, 'if-none-match': `"${unknownDigest}"` } });
  }

  const RANGES: Record<string, string | undefined> = {
    'no Range': undefined,
    'Range bytes=0-0': 'bytes=0-0',
    'Range bytes=10-': 'bytes=10-',
    'Range bytes=-10': 'bytes=-10',
    'Range bytes=10-19': 'bytes=10-19',
    'Range past the end': 'bytes=1000-',
    'Range ending past the end': 'bytes=990-2000',
    'multiple ranges': 'bytes=0-0,5-6',
    'malformed Range': 'bytes=abc',
    'Range with last < first': 'bytes=20-10',
    'Range in another unit': 'items=0-1',
  };
  for (const method of ['GET', 'HEAD'] as const) {
    for (const [rangeName, range] of Object.entries(RANGES)) {
      if (method === 'HEAD' && range !== undefined && rangeName !== 'Range bytes=10-19') continue;
      const b = await freshBlob(1000);
      cases.push({ name: `${method} blob, ${rangeName}`, method, target: `/v2/${b.repo}/blobs/${b.digest}`, headers: range === undefined ? {} : { range } });
    }
    // A blob big enough to arrive in many pieces: a cold Range is then answered from a fill still running.
    for (const [rangeName, range] of Object.entries({ 'no Range': undefined, 'Range bytes=2000000-2000099': 'bytes=2000000-2000099', 'Range bytes=-10': 'bytes=-10' })) {
      if (method === 'HEAD' && range !== undefined) continue;
      const big = await freshBlob(3 << 20);
      cases.push({ name: `${method} 3 MiB blob, ${rangeName}`, method, target: `/v2/${big.repo}/blobs/${big.digest}`, headers: range === undefined ? {} : { range } });
    }
    const nested = await freshBlob(500, 'a/b/c');
    cases.push(
      { name: `${method} blob, nested name a/b/c`, method, target: `/v2/a/b/c/blobs/${nested.digest}` },
      { name: `${method} blob, unknown digest`, method, target: `/v2/library/small/blobs/${unknownDigest}` },
      { name: `${method} blob, malformed digest`, method, target: '/v2/library/small/blobs/sha256:xyz' },
      { name: `${method} blob, sha512 digest`, method, target: `/v2/library/small/blobs/${sha512}` },
      { name: `${method} blob, uppercase hex digest`, method, target: `/v2/library/small/blobs/sha256:${small.blobs[0]!.digest.slice(7).toUpperCase()}` },
      { name: `${method} blob, uppercase name`, method, target: `/v2/Library/small/blobs/${small.blobs[0]!.digest}` },
      { name: `${method} blob, known digest in another repository`, method, target: `/v2/library/multi/blobs/${small.blobs[0]!.digest}` },
    );
    const elsewhere = await freshBlob(600);
    cases.push({
      name: `${method} blob, known digest in another repository, after a pull of it there`,
      method,
      target: `/v2/library/multi/blobs/${elsewhere.digest}`,
      prime: { target: `/v2/${elsewhere.repo}/blobs/${elsewhere.digest}` },
    });
    const other = await variant('oci');
    cases.push({
      name: `${method} manifest by digest in another repository, after a pull of it there`,
      method,
      target: `/v2/library/multi/manifests/${other.digest}`,
      headers: { accept: MANIFEST_ACCEPT },
      prime: { target: `/v2/${other.repo}/manifests/${other.digest}`, headers: { accept: MANIFEST_ACCEPT } },
    });
    const inm = await freshBlob(700);
    cases.push({ name: `${method} blob, If-None-Match its digest`, method, target: `/v2/${inm.repo}/blobs/${inm.digest}`, headers: { 'if-none-match': `"${inm.digest}"` } });
  }

  for (const q of ['', '?n=2', '?n=2&last=c1', '?last=c5', '?n=0', '?last=zzz']) {
    cases.push({ name: `GET tags/list${q}`, method: 'GET', target: `/v2/library/dock/tags/list${q}` });
  }
  cases.push(
    { name: 'GET tags/list, unknown repository', method: 'GET', target: '/v2/library/nosuch/tags/list' },
    { name: 'GET tags/list, nested name a/b/c', method: 'GET', target: '/v2/a/b/c/tags/list' },
    { name: 'GET tags/list, uppercase name', method: 'GET', target: '/v2/Library/dock/tags/list' },
  );

  // Distribution's answers, with a token for the name in the path, as a client sends them.
  const fromRegistry = (c: Case, headers: Record<string, string> | undefined): Promise<Answer> =>
    send(registry.url, c.target, c.method, { ...headers, authorization: `Bearer ${pullToken(nameOf(c.target))}` });
  const deliberate = new Map<Case, Deliberate>();
  const distribution = new Map<Case, Fields>();
  const expected = new Map<Case, Fields>();
  for (const c of cases) {
    const rule = DELIBERATE.find((d) => d.cases.test(c.name));
    const own = fieldsOf(await fromRegistry(c, c.headers), c.method);
    distribution.set(c, own);
    if (!rule) {
      expected.set(c, own);
      continue;
    }
    deliberate.set(c, rule);
    const want = { ...(rule.like ? fieldsOf(await fromRegistry(c, rule.like), c.method) : own), ...rule.berth };
    if (c.method === 'HEAD') Object.assign(want, { 'error code': '', body: '' });
    expected.set(c, want);
  }
  t.ok(DELIBERATE.every((d) => cases.some((c) => d.cases.test(c.name))), 'every deliberate difference names cases that exist');
  for (const [c, rule] of deliberate) {
    const own = distribution.get(c)!;
    for (const [f, v] of Object.entries(rule.distribution)) {
      const field = f as Field;
      if (typeof v === 'string') t.equal(own[field], v, `${c.name}: Distribution answers ${f} ${v}, as the deliberate difference says`);
      else t.match(own[field], v, `${c.name}: Distribution answers ${f} ${String(v)}, as the deliberate difference says`);
    }
  }

  const modes: Array<{ mode: string; berth: Berth; ns: string | null }> = [
    { mode: 'no ns', berth: await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] }), ns: null },
    { mode: 'ns=docker.io', berth: await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] }), ns: 'docker.io' },
    {
      mode: `ns=<upstream host>`,
      berth: await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }, { registry: registry.host, url: registry.url }] }),
      ns: registry.host,
    },
  ];

  // case: field: berth vs Distribution -> the modes and passes where berth answered so
  const differences = new Map<string, string[]>();
  // Where berth's answers came from (its request log's `source`), to show the two passes took the two paths.
  const paths: string[] = [];
  for (const { mode, berth, ns } of modes) {
    const sent: Array<{ c: Case; pass: string; reqId: string }> = [];
    for (const pass of ['cold', 'warm'] as const) {
      for (const [i, c] of cases.entries()) {
        const withNs = (target: string): string => (ns === null ? target : `${target}${target.includes('?') ? '&' : '?'}ns=${encodeURIComponent(ns)}`);
        if (c.prime && pass === 'cold') {
          const primed = await send(berth.url, withNs(c.prime.target), 'GET', c.prime.headers ?? {});
          if (primed.status !== 200) differences.set(`${c.name}: priming ${c.prime.target} answered ${primed.status}`, [mode]);
        }
        const target = withNs(c.target);
        const reqId = `conformance-${pass}-${i}`;
        sent.push({ c, pass, reqId });
        const got = fieldsOf(await send(berth.url, target, c.method, { ...c.headers, 'x-request-id': reqId }), c.method);
        const want = expected.get(c)!;
        for (const f of FIELDS) {
          if (got[f] === want[f]) continue;
          const key = `${c.name}: ${f}: berth ${JSON.stringify(got[f])}, expected ${JSON.stringify(want[f])}`;
          differences.set(key, [...(differences.get(key) ?? []), `${mode} ${pass}`]);
        }
      }
    }
    // The first request for a target: from the upstream. A GET of a blob or a manifest by digest again:
    // from the cache (a HEAD fills nothing, and a tag asked for with a narrow Accept goes upstream again:
    // such a request never moves the tag for everyone else).
    const seen = new Set<string>();
    for (const { c, pass, reqId } of sent) {
      const first = !seen.has(c.target);
      seen.add(c.target);
      if (c.prime || Number(expected.get(c)!.status) >= 300) continue;
      if (pass === 'cold' && !first) continue;
      if (pass === 'warm' && (c.method !== 'GET' || !/\/(blobs|manifests)\/sha256:/.test(c.target))) continue;
      await berth.service.waitForOutput(new RegExp(`"reqId":"${reqId}"`), 10_000);
      const source = berth.logs().find((l) => l.reqId === reqId && l.msg === 'request')?.source;
      if ((pass === 'cold') !== (source !== 'cache')) paths.push(`${mode} ${pass}: ${c.name}: answered from ${String(source)}`);
    }
  }
  t.strictSame(paths, [], 'cold answers came from the upstream, warm ones (blobs, manifests by digest) from the cache');
  t.strictSame([...differences].map(([k, where]) => `${k} (${where.length === 6 ? 'every mode, cold and warm' : where.join('; ')})`), [], 'berth answers every case as Distribution does (or as the spec says, where listed)');
});
