/**
 * syncPolicies against a small fake Harbor on loopback: paginated project
 * listing with Harbor's Link format, projects with missing metadata keys,
 * double-encoded repository names, reports keyed by mime type, accessories,
 * and the change lines and hash when Harbor's answers change.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { createHarborClient, type HarborClient } from '../../src/harbor/client.js';
import { HarborError } from '../../src/harbor/errors.js';
import { evaluate } from '../../src/harbor/policy.js';
import { syncPolicies, fetchArtifactFacts, withArtifact } from '../../src/harbor/sync.js';
import { canonicalJson, snapshotHash } from '../../src/harbor/diff.js';
import { REPORT_MIME, artifactKey } from '../../src/harbor/types.js';

const ROBOT = 'robot$edge-sync';
const SECRET = 'Zz9-secret';
const D1 = 'sha256:' + '1'.repeat(64);
const D2 = 'sha256:' + '2'.repeat(64);
const S1 = 'sha256:' + '5'.repeat(64);
const GONE = 'sha256:' + '9'.repeat(64);
const NOW = Date.UTC(2026, 7, 21);

interface FakeArtifact {
  body: Record<string, unknown>;
  /** The vulnerabilities addition, keyed by mime type. */
  report?: Record<string, unknown>;
}

interface Fake {
  url: string;
  system: { items: string[]; expires_at: number | null };
  projects: Array<Record<string, unknown>>;
  artifacts: Map<string, FakeArtifact>;
  /** Keys answered 500. */
  broken: Set<string>;
  /** Raw request targets, in order. */
  hits: Array<{ url: string; headers: http.IncomingHttpHeaders }>;
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'x-request-id': 'r1', ...headers });
  res.end(text);
}

function harborError(res: http.ServerResponse, status: number, code: string, message: string): void {
  send(res, status, { errors: [{ code, message }] });
}

/** Harbor's project shape: zero values omitted, allowlist timestamps zero. */
function projectJson(p: Record<string, unknown>): Record<string, unknown> {
  return { repo_count: 1, owner_name: 'admin', creation_time: '2026-01-01T00:00:00.000Z', ...p };
}

async function startFake(t: Test): Promise<Fake> {
  const fake: Fake = { url: '', system: { items: [], expires_at: null }, projects: [], artifacts: new Map(), broken: new Set(), hits: [] };
  const server = http.createServer((req, res) => {
    const raw = req.url ?? '/';
    fake.hits.push({ url: raw, headers: req.headers });
    const [path = '', query = ''] = raw.split('?');
    const q = new URLSearchParams(query);
    const authed = req.headers.authorization === 'Basic ' + Buffer.from(`${ROBOT}:${SECRET}`).toString('base64');
    if (path === '/api/v2.0/system/CVEAllowlist') {
      if (!authed) return harborError(res, 401, 'UNAUTHORIZED', 'unauthorized');
      return send(res, 200, { id: 1, project_id: 0, items: fake.system.items.map((cve_id) => ({ cve_id })), expires_at: fake.system.expires_at, creation_time: '2026-01-01T00:00:00Z', update_time: '2026-01-01T00:00:00Z' });
    }
    if (path === '/api/v2.0/projects') {
      // A capped page size, so the client must follow Link's page_size too.
      const size = Math.min(Number(q.get('page_size') ?? 10), 2);
      const page = Number(q.get('page') ?? 1);
      const total = fake.projects.length;
      const links: string[] = [];
      const at = (p: number): string => `</api/v2.0/projects?page=${p}&page_size=${size}&with_detail=${q.get('with_detail')}>`;
      if (page > 1) links.push(`${at(page - 1)}; rel="prev"`);
      if (page * size < total) links.push(`${at(page + 1)}; rel="next"`);
      const items = fake.projects.slice((page - 1) * size, page * size).map(projectJson);
      return send(res, 200, items, { 'x-total-count': String(total), ...(links.length ? { link: links.join(' , ') } : {}) });
    }
    const proj = /^\/api\/v2\.0\/projects\/([^/]+)$/.exec(path);
    if (proj) {
      const p = fake.projects.find((x) => x.name === decodeURIComponent(proj[1]!));
      if (!p) return harborError(res, 404, 'NOT_FOUND', `project ${proj[1]} not found`);
      return send(res, 200, projectJson(p));
    }
    const art = /^\/api\/v2\.0\/projects\/([^/]+)\/repositories\/([^/]+)\/artifacts\/([^/]+)(\/additions\/vulnerabilities)?$/.exec(path);
    if (art) {
      // What Harbor's handler does: the router unescapes once, Prepare once more.
      const repo = decodeURIComponent(decodeURIComponent(art[2]!));
      const key = artifactKey(decodeURIComponent(art[1]!), repo, decodeURIComponent(art[3]!));
      if (fake.broken.has(key)) return harborError(res, 500, 'UNKNOWN', 'internal server error');
      const a = fake.artifacts.get(key);
      if (!a) return harborError(res, 404, 'NOT_FOUND', `artifact ${key} not found`);
      if (art[4]) return send(res, 200, a.report ?? {});
      const body = { ...a.body };
      if (q.get('with_scan_overview') !== 'true') delete body['scan_overview'];
      if (q.get('with_accessory') !== 'true') delete body['accessories'];
      return send(res, 200, body);
    }
    harborError(res, 404, 'NOT_FOUND', 'not found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}

function client(t: Test, fake: Fake, auth = true): HarborClient {
  const c = createHarborClient({ url: fake.url, ...(auth ? { username: ROBOT, password: SECRET } : {}), requestTimeoutMs: 20_000 });
  t.teardown(() => c.close());
  return c;
}

function image(digest: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 1,
    type: 'IMAGE',
    digest,
    media_type: 'application/vnd.oci.image.config.v1+json',
    manifest_media_type: 'application/vnd.oci.image.manifest.v1+json',
    references: null,
    tags: [{ name: 'v1', immutable: false }],
    addition_links: { vulnerabilities: { href: `/api/v2.0/projects/x/repositories/y/artifacts/${digest}/additions/vulnerabilities`, absolute: false } },
    ...over,
  };
}

function report(items: Array<[string, string, string, string]>): Record<string, unknown> {
  return {
    [REPORT_MIME.generic]: {
      generated_at: '2026-08-20T10:00:03Z',
      severity: 'High',
      vulnerabilities: items.map(([id, pkg, version, severity]) => ({ id, package: pkg, version, severity, fix_version: '', links: [] })),
    },
  };
}

function seed(fake: Fake): void {
  fake.system = { items: ['CVE-SYS-1'], expires_at: null };
  fake.projects = [
    { project_id: 1, name: 'edge', metadata: { public: 'false', prevent_vul: 'true', severity: 'high', reuse_sys_cve_allowlist: 'false' }, cve_allowlist: { id: 4, project_id: 1, items: [{ cve_id: 'CVE-OWN-1' }], expires_at: null, creation_time: '0001-01-01T00:00:00.000Z' } },
    { project_id: 2, name: 'bare', metadata: { public: 'true' } },
    { project_id: 3, name: 'hub', registry_id: 3, metadata: { public: 'true', proxy_speed_kb: '-1' } },
    { project_id: 4, name: 'a4' },
    { project_id: 5, name: 'a5', metadata: {} },
  ];
  fake.artifacts.set(artifactKey('edge', 'team/app', D1), {
    body: image(D1, {
      scan_overview: { [REPORT_MIME.generic]: { report_id: 'r1', scan_status: 'Success', severity: 'High', summary: { total: 3 } } },
      accessories: [{ id: 9, artifact_id: 2, subject_artifact_id: 1, subject_artifact_digest: D1, digest: S1, type: 'signature.cosign', size: 10 }],
    }),
    report: report([
      ['CVE-OWN-1', 'openssl', '3.0.11', 'Critical'],
      ['CVE-2', 'zlib', '1.2', 'High'],
      ['CVE-2', 'zlib', '1.2', 'High'],
      ['CVE-3', 'bash', '5.1', 'Low'],
    ]),
  });
  // A cosign signature whose manifest looks like any image: only the
  // subject's accessory list tells it is a signature.
  fake.artifacts.set(artifactKey('edge', 'team/app', S1), { body: image(S1, { type: 'UNKNOWN', tags: [], addition_links: {} }) });
  fake.artifacts.set(artifactKey('bare', 'app', D2), { body: image(D2) });
}

const REFS = [
  { project: 'edge', repository: 'team/app', digest: D1 },
  { project: 'edge', repository: 'team/app', digest: S1 },
  { project: 'bare', repository: 'app', digest: D2 },
  { project: 'edge', repository: 'team/app', digest: GONE },
  { project: 'edge', repository: 'team/app', digest: D1 }, // duplicates are fetched once
];

t.test('a first sync builds the snapshot Harbor\'s answers describe', async (t) => {
  const fake = await startFake(t);
  seed(fake);
  const c = client(t, fake);
  const res = await syncPolicies(c, { projects: [], artifacts: REFS, now: NOW, concurrency: 2 });

  const listing = fake.hits.filter((h) => h.url.startsWith('/api/v2.0/projects?')).map((h) => h.url);
  t.same(listing, [
    '/api/v2.0/projects?with_detail=true&page=1&page_size=100',
    '/api/v2.0/projects?with_detail=true&page=2&page_size=2',
    '/api/v2.0/projects?with_detail=true&page=3&page_size=2',
  ], 'pages followed through Link, with its page_size');
  t.same(Object.keys(res.snapshot.projects).sort(), ['a4', 'a5', 'bare', 'edge', 'hub']);
  t.same(res.snapshot.projects['edge'], {
    name: 'edge', projectId: 1, public: false, registryId: 0, preventVul: true, severity: 'High', severityThreshold: 4,
    contentTrustCosign: false, contentTrustNotation: false, reuseSysAllowlist: false, projectAllowlist: { items: ['CVE-OWN-1'], expiresAt: null },
  });
  t.match(res.snapshot.projects['a4'], { public: false, preventVul: false, severity: 'Unknown', reuseSysAllowlist: true }, 'no metadata at all: defaults');
  t.equal(res.snapshot.projects['hub']?.registryId, 3);
  t.same(res.snapshot.systemAllowlist, { items: ['CVE-SYS-1'], expiresAt: null });
  t.same(res.snapshot.projectSyncedAt['edge'], NOW);

  const artifactHits = fake.hits.filter((h) => h.url.includes('/artifacts/'));
  t.ok(artifactHits.length > 0 && artifactHits.filter((h) => h.url.includes('/repositories/team')).every((h) => h.url.includes('/repositories/team%252Fapp/')), 'repository names double-encoded');
  t.ok(artifactHits.every((h) => String(h.headers['x-accept-vulnerabilities']).startsWith(REPORT_MIME.native)), 'report types asked for in Harbor\'s order');
  t.equal(fake.hits.filter((h) => h.url.includes(`/artifacts/${D1}?`)).length, 1, 'a duplicate ref is fetched once');

  const d1 = res.snapshot.artifacts[artifactKey('edge', 'team/app', D1)];
  t.same(d1?.vulnerabilities.map((v) => v.id), ['CVE-2', 'CVE-3', 'CVE-OWN-1'], 'the full list, de-duplicated');
  t.same(d1?.accessories, ['signature.cosign']);
  t.equal(res.snapshot.artifacts[artifactKey('edge', 'team/app', S1)]?.isSignature, true, 'the accessory digest is marked a signature');
  t.match(res.snapshot.artifacts[artifactKey('bare', 'app', D2)], { scanStatus: null, scannable: true, vulnerabilities: [] });
  t.notOk(res.snapshot.artifacts[artifactKey('edge', 'team/app', GONE)], 'an artifact Harbor does not have is left out');
  t.same(res.errors, []);
  t.same(res.changes, ['first sync: 5 projects, 3 artifacts']);
  t.equal(res.changed, true);
  t.match(res.hash, /^[a-f0-9]{64}$/);
  t.equal(res.hash, snapshotHash(res.snapshot));

  // The project's own list exempts CVE-OWN-1 only; CVE-2 (High) remains.
  const edge = res.snapshot.projects['edge']!;
  t.match(evaluate(edge, d1, res.snapshot.systemAllowlist, NOW), { allow: false, reason: 'vuln-severity', message: /^current image with 2 vulnerabilities / });
  t.same(evaluate(edge, res.snapshot.artifacts[artifactKey('edge', 'team/app', S1)], res.snapshot.systemAllowlist, NOW), { allow: true });
});

t.test('a sync that finds nothing new keeps the hash; changes are reported line by line', async (t) => {
  const fake = await startFake(t);
  seed(fake);
  const c = client(t, fake);
  const first = await syncPolicies(c, { projects: [], artifacts: REFS, now: NOW });
  const again = await syncPolicies(c, { projects: [], artifacts: REFS, now: NOW + 60_000, previous: first.snapshot });
  t.equal(again.hash, first.hash, 'sync time is not part of the hash');
  t.equal(again.changed, false);
  t.same(again.changes, []);
  t.equal(again.snapshot.syncedAt, NOW + 60_000);

  fake.system.items.push('CVE-SYS-0');
  fake.system.expires_at = 1798761600;
  fake.projects[1]!.metadata = { public: 'true', prevent_vul: 'true' };
  const edgeList = fake.projects[0]!.cve_allowlist as { items: Array<{ cve_id: string }> };
  edgeList.items = [{ cve_id: 'CVE-2' }];
  fake.artifacts.get(artifactKey('bare', 'app', D2))!.body['scan_overview'] = { [REPORT_MIME.generic]: { scan_status: 'Success' } };
  fake.artifacts.get(artifactKey('bare', 'app', D2))!.report = report([
    ['CVE-7', 'a', '1', 'Low'],
    ['CVE-8', 'b', '1', 'Medium'],
    ['CVE-9', 'c', '1', 'High'],
  ]);
  const changed = await syncPolicies(c, { projects: [], artifacts: REFS, now: NOW + 120_000, previous: again.snapshot });
  t.not(changed.hash, first.hash);
  t.equal(changed.changed, true);
  t.same(changed.changes, [
    'system allowlist: +CVE-SYS-0',
    'system allowlist expires_at never -> 2027-01-01T00:00:00.000Z',
    'project bare: prevent_vul false -> true',
    'project edge: allowlist: +CVE-2 -CVE-OWN-1',
    `artifact bare/app@${D2}: 3 vulnerabilities (was 0)`,
    `artifact bare/app@${D2}: scan status none -> Success`,
  ]);
  // The new allowlist turns the edge decision: CVE-OWN-1 (Critical) is no longer exempt.
  const edge = changed.snapshot.projects['edge']!;
  t.match(evaluate(edge, changed.snapshot.artifacts[artifactKey('edge', 'team/app', D1)], changed.snapshot.systemAllowlist, NOW), {
    message: /^current image with 2 vulnerabilities /,
  });
});

t.test('one failing artifact or project keeps its previous entry; the listing failing fails the sync', async (t) => {
  const fake = await startFake(t);
  seed(fake);
  const c = client(t, fake);
  const first = await syncPolicies(c, { projects: ['edge', 'bare'], artifacts: REFS, now: NOW });
  t.same(Object.keys(first.snapshot.projects).sort(), ['bare', 'edge'], 'named projects only');

  const key = artifactKey('edge', 'team/app', D1);
  fake.broken.add(key);
  fake.projects = fake.projects.filter((p) => p.name !== 'bare');
  fake.artifacts.delete(artifactKey('bare', 'app', D2));
  const partial = await syncPolicies(c, { projects: ['edge', 'bare', 'nope'], artifacts: REFS, now: NOW + 1000, previous: first.snapshot });
  t.same(partial.snapshot.artifacts[key], first.snapshot.artifacts[key], 'previous facts kept');
  t.same(partial.snapshot.projects['bare'], first.snapshot.projects['bare'], 'previous policy kept');
  t.equal(partial.snapshot.projectSyncedAt['bare'], NOW, 'with its own sync time');
  t.equal(partial.snapshot.projectSyncedAt['edge'], NOW + 1000);
  t.notOk(partial.snapshot.projects['nope']);
  t.equal(partial.errors.length, 3);
  t.match(partial.errors.join('\n'), /artifact edge\/team\/app@sha256:1+: harbor GET .*: 500 UNKNOWN: internal server error \(kept the previous facts\)/);
  t.match(partial.errors.join('\n'), /project bare: .*404 NOT_FOUND.*\(kept the previous policy\)/);
  t.match(partial.errors.join('\n'), /project nope: .*404/);
  t.same(partial.changes, [`artifact bare/app@${D2}: removed`], 'a 404 artifact is dropped');
  t.equal(partial.snapshot.artifacts[artifactKey('edge', 'team/app', S1)]?.isSignature, true, 'still a signature while its subject is unreadable');

  fake.projects = [];
  const listFails = createHarborClient({ url: fake.url + '/nowhere', username: ROBOT, password: SECRET });
  t.teardown(() => listFails.close());
  await t.rejects(syncPolicies(listFails, { projects: [], artifacts: [], now: NOW }), { code: 'HARBOR_NOT_FOUND' });
});

t.test('credentials: rejected ones fail the sync; anonymous reads the system list as empty', async (t) => {
  const fake = await startFake(t);
  seed(fake);
  const wrong = createHarborClient({ url: fake.url, username: ROBOT, password: 'wrong' });
  t.teardown(() => wrong.close());
  const err = await syncPolicies(wrong, { projects: [], artifacts: [], now: NOW }).catch((e: unknown) => e);
  t.ok(err instanceof HarborError);
  t.match(err, { code: 'HARBOR_AUTH', status: 401, harborCode: 'UNAUTHORIZED' });
  t.notMatch(String((err as Error).message), /wrong|Zz9/, 'no secret in the message');

  const anon = await syncPolicies(client(t, fake, false), { projects: [], artifacts: [], now: NOW });
  t.same(anon.snapshot.systemAllowlist, { items: [], expiresAt: null });
  t.match(anon.errors, [/system allowlist: not readable without credentials/]);
});

t.test('an online first pull: facts fetched directly and merged', async (t) => {
  const fake = await startFake(t);
  seed(fake);
  const c = client(t, fake);
  const base = await syncPolicies(c, { projects: ['edge'], artifacts: [], now: NOW });
  const facts = await fetchArtifactFacts(c, { project: 'edge', repository: 'team/app', digest: D1 });
  const merged = withArtifact(base.snapshot, facts);
  t.equal(Object.keys(base.snapshot.artifacts).length, 0, 'the original is not modified');
  t.same(merged.artifacts[artifactKey('edge', 'team/app', D1)], facts);
  await t.rejects(fetchArtifactFacts(c, { project: 'edge', repository: 'team/app', digest: GONE }), { code: 'HARBOR_NOT_FOUND' });
  await t.rejects(fetchArtifactFacts(c, { project: 'edge', repository: 'team/app', digest: 'latest' }), { code: 'HARBOR_PROTOCOL' });

  // A Success overview whose report went missing is not "no findings".
  fake.artifacts.get(artifactKey('edge', 'team/app', D1))!.report = {};
  await t.rejects(fetchArtifactFacts(c, { project: 'edge', repository: 'team/app', digest: D1 }), { code: 'HARBOR_PROTOCOL', message: /no report/ });
});

t.test('canonical JSON sorts keys at every depth', async (t) => {
  t.equal(canonicalJson({ b: 1, a: { d: [{ z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[{"y":2,"z":1}]},"b":1}');
  const s = { systemAllowlist: { items: [], expiresAt: null }, projects: {}, artifacts: {} };
  t.equal(snapshotHash(s), snapshotHash({ artifacts: {}, projects: {}, systemAllowlist: { expiresAt: null, items: [] } }));
});
