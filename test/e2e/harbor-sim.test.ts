/**
 * Selftest of the Harbor simulator (test/harbor-sim): the §11 D policy scenarios of
 * reference/harbor-api.md against its /v2 front (with plain HTTP through Harbor's
 * token flow, and with skopeo as a real client), its token service, and its
 * management API (pagination, visibility, name encoding, the 401-before-404 order).
 * Expected texts are written out here, not taken from the simulator's code.
 */
import path from 'node:path';
import t, { type Test } from 'tap';
import { MANIFEST_ACCEPT, makeImage, pushImage, run, sha256Digest, startRegistry, startTokenServer } from '../harness/index.js';
import { startHarborSim, type HarborSim, type Vulnerability } from '../harbor-sim/index.js';
import { tempDirFor } from '../harness/procs.js';

const GENERIC = 'application/vnd.security.vulnerability.report; version=1.1';
const NATIVE = 'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0';
const ROBOT = 'robot$edge-sync';
const ROBOT_SECRET = 'Edge-sync-secret1';
const basic = (creds: string): string => `Basic ${Buffer.from(creds).toString('base64')}`;

const VULNS: Vulnerability[] = [
  { id: 'CVE-2024-0001', package: 'zlib', version: '1.2.13', severity: 'Low' },
  { id: 'CVE-2024-0002', package: 'openssl', version: '3.0.11', severity: 'Medium', fix_version: '3.0.13' },
  { id: 'CVE-2024-0003', package: 'openssl', version: '3.0.11', severity: 'High', fix_version: '3.0.13' },
];

const vulnMsg = (n: number, sev: string): string =>
  `current image with ${n} ${n === 1 ? 'vulnerability' : 'vulnerabilities'} cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "${sev}" or higher from running.' To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.`;
const noScanMsg = (sev: string): string =>
  `current image without vulnerability scanning cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "${sev}" or higher from running.' To continue with pull, please contact your project administrator for help.`;
const statusMsg = (status: string, sev: string): string =>
  `current image with "${status}" status of vulnerability scanning cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "${sev}" or higher from running.' To continue with pull, please contact your project administrator for help.`;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

async function call(url: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** Harbor's token flow as a registry client does it: /service/token, then the request with the Bearer token. */
async function token(sim: HarborSim, scope: string, creds?: string): Promise<string> {
  const res = await fetch(`${sim.url}/service/token?service=harbor-registry&scope=${encodeURIComponent(scope)}`, {
    headers: creds ? { Authorization: basic(creds) } : {},
  });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}

async function manifest(sim: HarborSim, repo: string, ref: string, opts: { creds?: string; method?: string } = {}): Promise<Answer> {
  const tok = await token(sim, `repository:${repo}:pull`, opts.creds ?? `${ROBOT}:${ROBOT_SECRET}`);
  return call(`${sim.url}/v2/${repo}/manifests/${ref}`, { method: opts.method ?? 'GET', headers: { Authorization: `Bearer ${tok}`, Accept: MANIFEST_ACCEPT } });
}

function policyError(t: Test, a: Answer, message: string, what: string): void {
  t.equal(a.status, 412, `${what}: 412`);
  t.equal(a.headers.get('content-type'), 'application/json; charset=utf-8', `${what}: JSON content type`);
  t.same(JSON.parse(a.text || '{}'), { errors: [{ code: 'PROJECTPOLICYVIOLATION', message }] }, `${what}: Harbor's message`);
}

t.test('Harbor simulator', async (t) => {
  const t0 = Date.now();
  const work = await tempDirFor(t, 'harbor-sim-test');
  const sim = await startHarborSim(t);
  sim.addRobot(ROBOT, ROBOT_SECRET, {
    permissions: [{ kind: 'project', namespace: '*', access: [{ resource: 'repository', action: 'pull' }, { resource: 'project', action: 'read' }, { resource: 'artifact', action: 'read' }, { resource: 'artifact', action: 'list' }, { resource: 'metadata', action: 'list' }, { resource: 'repository', action: 'list' }, { resource: 'artifact-addition', action: 'read' }, { resource: 'accessory', action: 'list' }] }],
  });

  const app = await makeImage(path.join(work, 'app'), { layers: 1, layerSize: 4096, seed: 'sim-app', tag: 'v1' });
  const multi = await makeImage(path.join(work, 'multi'), { layers: 1, layerSize: 2048, seed: 'sim-multi', tag: 'v1', platforms: ['linux/amd64', 'linux/arm64'] });
  sim.addProject('pol', { metadata: { prevent_vul: 'true', severity: 'high' } });
  const appDigest = await sim.pushImage('pol', 'app', 'v1', app);
  const multiDigest = await sim.pushImage('pol', 'multi', 'v1', multi);
  const [amd64, arm64] = multi.manifests;
  if (!amd64 || !arm64) throw new Error('multi-platform image without two manifests');

  await t.test('vulnerability thresholds', async (t) => {
    sim.setScan('pol', 'app', appDigest, { status: 'Success', vulnerabilities: VULNS });
    for (const [severity, expected] of [['none', 'None'], ['low', 'Low'], ['medium', 'Medium'], ['high', 'High']] as const) {
      sim.setMetadata('pol', 'severity', severity);
      policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(3, expected), `severity ${severity}`);
    }
    sim.setMetadata('pol', 'severity', 'critical');
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'critical threshold: a High finding passes');
    sim.setMetadata('pol', 'severity', undefined);
    policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(3, 'Unknown'), 'severity key missing: Unknown (0) blocks everything');
    sim.setMetadata('pol', 'prevent_vul', 'false');
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'prevent_vul false: no check');
    sim.setMetadata('pol', 'prevent_vul', 'true');
    sim.setMetadata('pol', 'severity', 'high');

    const head = await manifest(sim, 'pol/app', 'v1', { method: 'HEAD' });
    t.equal(head.status, 412, 'HEAD is checked too');
    t.equal(head.text, '', 'HEAD refusal has no body');
    t.ok(head.headers.get('x-request-id'), 'X-Request-Id on a /v2 answer');
    const layer = app.blobs[0];
    if (!layer) throw new Error('image without blobs');
    const blobToken = await token(sim, 'repository:pol/app:pull', `${ROBOT}:${ROBOT_SECRET}`);
    const blob = await fetch(`${sim.url}/v2/pol/app/blobs/${layer.digest}`, { headers: { Authorization: `Bearer ${blobToken}` } });
    const bytes = Buffer.from(await blob.arrayBuffer());
    t.equal(blob.status, 200, 'blobs are never policy-checked');
    t.equal(sha256Digest(bytes), layer.digest, 'the blob streams through intact');

    const scanner = 'robot$pol+scanner:Scanner-secret1';
    sim.addRobot('robot$pol+scanner', 'Scanner-secret1', { permissions: [{ kind: 'project', namespace: 'pol', access: [{ resource: 'repository', action: 'pull' }, { resource: 'repository', action: 'scanner-pull' }] }] });
    t.equal((await manifest(sim, 'pol/app', 'v1', { creds: scanner })).status, 200, 'a token with scanner-pull bypasses the policies');
    const scannerBasic = await call(`${sim.url}/v2/pol/app/manifests/v1`, { headers: { Authorization: basic(scanner), Accept: MANIFEST_ACCEPT } });
    t.equal(scannerBasic.status, 412, '... but only as a token (SkipPolicyChecking looks at v2token callers)');

    sim.setScan('pol', 'app', appDigest, { status: 'Success', vulnerabilities: [] });
    sim.setMetadata('pol', 'severity', 'none');
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'a clean report passes even at "none"');
    sim.setMetadata('pol', 'severity', 'high');
  });

  await t.test('allowlists', async (t) => {
    sim.setScan('pol', 'app', appDigest, { status: 'Success', vulnerabilities: VULNS });
    sim.setSystemAllowlist(['CVE-2024-0003']);
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'system allowlist covering every finding at or above the threshold');
    sim.setMetadata('pol', 'severity', 'low');
    policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(2, 'Low'), 'N counts every finding left after the allowlist');
    sim.setMetadata('pol', 'severity', 'high');

    sim.setSystemAllowlist(['CVE-2024-0003'], Math.floor(Date.now() / 1000) - 60);
    policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(3, 'High'), 'an expired allowlist is ignored');
    sim.setSystemAllowlist(['CVE-2024-0003'], Math.floor(Date.now() / 1000) + 3600);
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'an allowlist that expires later still applies');

    sim.setSystemAllowlist([]);
    sim.setProjectAllowlist('pol', ['CVE-2024-0003']);
    policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(3, 'High'), 'reuse_sys_cve_allowlist absent: the system list applies, not the project one');
    sim.setMetadata('pol', 'reuse_sys_cve_allowlist', 'false');
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'reuse_sys_cve_allowlist "false": the project list applies');
    sim.setSystemAllowlist(['CVE-2024-0003']);
    sim.setProjectAllowlist('pol', []);
    policyError(t, await manifest(sim, 'pol/app', 'v1'), vulnMsg(3, 'High'), 'the two lists are not merged');
    sim.setMetadata('pol', 'reuse_sys_cve_allowlist', undefined);
    sim.setSystemAllowlist([]);
  });

  await t.test('scan states and scannability', async (t) => {
    for (const status of ['Running', 'Error', 'Pending']) {
      sim.setScan('pol', 'app', appDigest, { status });
      policyError(t, await manifest(sim, 'pol/app', 'v1'), statusMsg(status, 'High'), `scan ${status}`);
    }
    sim.setScan('pol', 'app', appDigest, null);
    policyError(t, await manifest(sim, 'pol/app', 'v1'), noScanMsg('High'), 'no report on a scannable image');
    sim.setScannable('pol', 'app', appDigest, false);
    t.equal((await manifest(sim, 'pol/app', 'v1')).status, 200, 'no report on an unscannable artifact passes');
    sim.setScannable('pol', 'app', appDigest, undefined);
  });

  await t.test('an image index', async (t) => {
    policyError(t, await manifest(sim, 'pol/multi', 'v1'), noScanMsg('High'), 'index with no report anywhere is blocked');
    sim.setScan('pol', 'multi', amd64.digest, { status: 'Success', vulnerabilities: VULNS });
    sim.setScan('pol', 'multi', arm64.digest, { status: 'Success', vulnerabilities: [] });
    t.equal((await manifest(sim, 'pol/multi', 'v1')).status, 200, 'an IMAGE index passes once its children have reports');
    policyError(t, await manifest(sim, 'pol/multi', amd64.digest), vulnMsg(3, 'High'), 'the vulnerable child is checked when pulled by digest');
    t.equal((await manifest(sim, 'pol/multi', arm64.digest)).status, 200, 'the clean child pulls');
  });

  await t.test('content trust', async (t) => {
    sim.setMetadata('pol', 'prevent_vul', 'false');
    sim.setMetadata('pol', 'enable_content_trust_cosign', 'true');
    policyError(t, await manifest(sim, 'pol/multi', 'v1'), 'The image is not signed by cosign.', 'unsigned index');
    const sig = await sim.addAccessory('pol', 'multi', multiDigest, 'signature.cosign');
    t.equal((await manifest(sim, 'pol/multi', 'v1')).status, 200, 'signed index pulls');
    policyError(t, await manifest(sim, 'pol/multi', amd64.digest), 'The image is not signed by cosign.', 'a signature on the index does not cover its children');
    const sigPull = await manifest(sim, 'pol/multi', sig);
    t.equal(sigPull.status, 200, 'the signature itself pulls (exempt, though unsigned)');
    t.match(JSON.parse(sigPull.text), { subject: { digest: multiDigest } }, 'the signature manifest names its subject');

    sim.setMetadata('pol', 'enable_content_trust', 'true');
    policyError(t, await manifest(sim, 'pol/multi', 'v1'), 'The image is not signed by notation.', 'cosign alone is not enough when both are required');
    await sim.addAccessory('pol', 'multi', multiDigest, 'signature.notation');
    t.equal((await manifest(sim, 'pol/multi', 'v1')).status, 200, 'both signatures: pulls');

    sim.setMetadata('pol', 'prevent_vul', 'true');
    sim.setMetadata('pol', 'severity', 'none');
    t.equal((await manifest(sim, 'pol/multi', sig)).status, 200, 'a signature is exempt from the vulnerability check too');
    sim.setMetadata('pol', 'enable_content_trust', undefined);
    sim.setMetadata('pol', 'enable_content_trust_cosign', undefined);
    sim.setMetadata('pol', 'severity', 'high');
  });

  await t.test('skopeo as a client', async (t) => {
    sim.setScan('pol', 'app', appDigest, { status: 'Success', vulnerabilities: VULNS });
    const refused = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', `${ROBOT}:${ROBOT_SECRET}`, `docker://${sim.host}/pol/app:v1`], { timeoutMs: 60_000 });
    t.not(refused.code, 0, 'skopeo fails on a vulnerable image');
    t.match(refused.stderr, 'current image with 3 vulnerabilities cannot be pulled', "skopeo shows Harbor's message");
    sim.setScan('pol', 'app', appDigest, { status: 'Success', vulnerabilities: [] });
    const ok = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', '--creds', `${ROBOT}:${ROBOT_SECRET}`, `docker://${sim.host}/pol/app:v1`], { timeoutMs: 60_000 });
    t.equal(ok.code, 0, `skopeo reads a clean image: ${ok.stderr}`);
    t.match(ok.stdout, /"schemaVersion":\s*2/, 'the manifest came through');
  });

  await t.test('registry auth and the token service', async (t) => {
    sim.addProject('priv');
    sim.addProject('pub', { public: true });
    await sim.pushImage('priv', 'app', 'v1', app);
    await sim.pushImage('pub', 'app', 'v1', app);

    const base = await call(`${sim.url}/v2/`);
    t.equal(base.status, 401);
    t.equal(base.headers.get('www-authenticate'), `Bearer realm="${sim.url}/service/token",service="harbor-registry"`);
    t.same(JSON.parse(base.text), { errors: [{ code: 'UNAUTHORIZED', message: 'unauthorized: unauthorized' }] });

    const noHeader = await call(`${sim.url}/v2/pub/app/manifests/v1`, { method: 'HEAD' });
    t.equal(noHeader.status, 401, 'no Authorization header: 401 even on a public project');
    t.equal(noHeader.headers.get('www-authenticate'), `Bearer realm="${sim.url}/service/token",service="harbor-registry",scope="repository:pub/app:pull"`);

    const anonPub = await manifest(sim, 'pub/app', 'v1', { creds: '' });
    t.equal(anonPub.status, 200, 'an anonymous token pulls from a public project');
    t.equal(anonPub.headers.get('docker-content-digest'), appDigest, 'Docker-Content-Digest from the backing registry');
    const anonPriv = await manifest(sim, 'priv/app', 'v1', { creds: '' });
    t.equal(anonPriv.status, 401, 'an anonymous token gets nothing from a private project');
    t.equal(anonPriv.headers.get('www-authenticate'), 'Basic realm="harbor"');

    const headOk = await manifest(sim, 'pub/app', 'v1', { creds: '', method: 'HEAD' });
    t.equal(headOk.status, 200, 'HEAD on an allowed manifest');
    t.equal(headOk.headers.get('docker-content-digest'), appDigest, 'HEAD carries the digest');
    t.equal(headOk.text, '', 'and no body');
    const direct = await call(`${sim.url}/v2/priv/app/manifests/v1`, { headers: { Authorization: basic(`${ROBOT}:${ROBOT_SECRET}`), Accept: MANIFEST_ACCEPT } });
    t.equal(direct.status, 200, 'Basic auth straight on /v2 for a robot');
    const tagged = await manifest(sim, 'priv/app', 'v1');
    const notModified = await call(`${sim.url}/v2/priv/app/manifests/v1`, {
      headers: { Authorization: basic(`${ROBOT}:${ROBOT_SECRET}`), Accept: MANIFEST_ACCEPT, 'If-None-Match': tagged.headers.get('etag') ?? '' },
    });
    t.equal(notModified.status, 304, 'If-None-Match with the Etag: 304');

    const post = await call(`${sim.url}/service/token?service=harbor-registry&scope=repository:priv/app:pull`, { method: 'POST' });
    t.equal(post.status, 405, 'POST /service/token: 405');
    const wrongService = await call(`${sim.url}/service/token?service=registry.docker.io&scope=repository:priv/app:pull`);
    t.equal(wrongService.status, 400);
    t.match(wrongService.text, 'Unable to handle service: registry.docker.io');
    const login = await call(`${sim.url}/service/token?service=harbor-registry`);
    t.equal(login.status, 401, 'unauthenticated without a scope: 401');
    t.equal(login.text, '', '... with an empty body');
    const adminTok = await call(`${sim.url}/service/token?service=harbor-registry&scope=repository:priv/app:pull`, { headers: { Authorization: basic(`${sim.admin.username}:${sim.admin.password}`) } });
    const body = JSON.parse(adminTok.text) as { token: string; access_token: string; expires_in: number; issued_at: string };
    t.equal(body.access_token, '', 'access_token is an empty string');
    t.equal(body.expires_in, 1800);
    t.match(body.issued_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const claims = JSON.parse(Buffer.from(body.token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
    t.match(claims, { iss: 'harbor-token-issuer', aud: 'harbor-registry', sub: 'admin' });
    t.same(((claims.access as Array<{ actions: string[] }>)[0]?.actions ?? []).sort(), ['delete', 'pull', 'push'], 'actions are everything held, not what was asked');
  });

  await t.test('expired and disabled robots', async (t) => {
    const creds = 'robot$priv+puller:Puller-secret1';
    sim.addRobot('robot$priv+puller', 'Puller-secret1', { permissions: [{ kind: 'project', namespace: 'priv', access: [{ resource: 'repository', action: 'pull' }, { resource: 'project', action: 'read' }] }] });
    t.equal((await manifest(sim, 'priv/app', 'v1', { creds })).status, 200, 'a project robot pulls');
    t.equal((await call(`${sim.url}/api/v2.0/projects/priv`, { headers: { Authorization: basic(creds) } })).status, 200, 'and reads its project');
    for (const change of [{ disabled: true }, { disabled: false, expiresAt: Math.floor(Date.now() / 1000) - 1 }]) {
      sim.updateRobot('robot$priv+puller', change);
      const what = change.disabled ? 'disabled' : 'expired';
      t.equal((await manifest(sim, 'priv/app', 'v1', { creds })).status, 401, `${what}: its token carries nothing`);
      const viaBasic = await call(`${sim.url}/v2/priv/app/manifests/v1`, { headers: { Authorization: basic(creds), Accept: MANIFEST_ACCEPT } });
      t.equal(viaBasic.status, 401, `${what}: Basic on /v2 is refused`);
      t.equal(viaBasic.headers.get('www-authenticate'), 'Basic realm="harbor"');
      const api = await call(`${sim.url}/api/v2.0/projects/priv`, { headers: { Authorization: basic(creds) } });
      t.equal(api.status, 401, `${what}: the API treats it as anonymous`);
      t.equal((await call(`${sim.url}/api/v2.0/projects/pub`, { headers: { Authorization: basic(creds) } })).status, 200, `${what}: anonymous still reads a public project`);
    }
  });

  await t.test('management API', async (t) => {
    const admin = { Authorization: basic(`${sim.admin.username}:${sim.admin.password}`) };
    const robot = { Authorization: basic(`${ROBOT}:${ROBOT_SECRET}`) };
    for (let i = 1; i <= 21; i++) sim.addProject(`bulk${String(i).padStart(2, '0')}`, { public: i % 3 === 0 });
    sim.addUser('dev', 'Dev-pass1', { projects: { bulk01: 'developer' } });

    const infoAnon = JSON.parse((await call(`${sim.url}/api/v2.0/systeminfo`)).text) as Record<string, unknown>;
    t.notOk('harbor_version' in infoAnon, 'systeminfo: anonymous callers get no version');
    const info = JSON.parse((await call(`${sim.url}/api/v2.0/systeminfo`, { headers: robot })).text) as Record<string, unknown>;
    t.match(info.harbor_version, /^v\d+\.\d+\.\d+-[0-9a-f]{8}$/, 'systeminfo: authenticated callers get "<release>-<commit>"');
    t.match(JSON.parse((await call(`${sim.url}/api/v2.0/health`)).text), { status: 'healthy' });
    const ping = await call(`${sim.url}/api/v2.0/ping`);
    t.equal(ping.text, 'Pong');
    t.ok(ping.headers.get('x-request-id'), 'X-Request-Id on every answer');

    const p1 = await call(`${sim.url}/api/v2.0/projects?q=name%3D~bulk`, { headers: admin });
    t.equal(p1.headers.get('x-total-count'), '21');
    t.equal((JSON.parse(p1.text) as unknown[]).length, 10, 'default page_size 10');
    t.equal(p1.headers.get('link'), '</api/v2.0/projects?page=2&page_size=10&q=name=~bulk>; rel="next"');
    const p2 = await call(`${sim.url}/api/v2.0/projects?q=name%3D~bulk&page=2`, { headers: admin });
    t.equal(p2.headers.get('link'), '</api/v2.0/projects?page=1&page_size=10&q=name=~bulk>; rel="prev" , </api/v2.0/projects?page=3&page_size=10&q=name=~bulk>; rel="next"', 'prev and next joined by " , "');
    const p3 = await call(`${sim.url}/api/v2.0/projects?q=name%3D~bulk&page=3`, { headers: admin });
    t.equal((JSON.parse(p3.text) as unknown[]).length, 1);
    const tooBig = await call(`${sim.url}/api/v2.0/projects?page_size=101`, { headers: admin });
    t.equal(tooBig.status, 422);
    t.equal(tooBig.headers.get('content-type'), 'application/json; charset=utf-8');
    t.same(JSON.parse(tooBig.text), { errors: [{ code: 'UNPROCESSABLE_ENTITY', message: 'validation failure list:\npage_size in query should be less than or equal to 100' }] });

    const anon = JSON.parse((await call(`${sim.url}/api/v2.0/projects?page_size=100`)).text) as Array<{ name: string; metadata: Record<string, string> }>;
    t.ok(anon.length > 0 && anon.every((p) => p.metadata.public === 'true'), 'anonymous sees only public projects');
    const anonPrivate = await call(`${sim.url}/api/v2.0/projects?public=false`);
    t.equal(anonPrivate.headers.get('x-total-count'), '0', 'anonymous asking for private projects gets none');
    const dev = JSON.parse((await call(`${sim.url}/api/v2.0/projects?page_size=100`, { headers: { Authorization: basic('dev:Dev-pass1') } })).text) as Array<{ name: string; current_user_role_ids: number[] | null }>;
    t.ok(dev.some((p) => p.name === 'bulk01' && p.current_user_role_ids?.[0] === 2), 'a member sees its private project with its role');
    t.notOk(dev.some((p) => p.name === 'bulk02'), 'but not other private ones');
    const robotList = await call(`${sim.url}/api/v2.0/projects?page_size=100`, { headers: robot });
    t.equal(robotList.headers.get('x-total-count'), String(sim.state.projects.size), 'a namespace:"*" robot sees every project');
    const lean = JSON.parse((await call(`${sim.url}/api/v2.0/projects?with_detail=false&q=name%3Dpol`, { headers: robot })).text) as Array<Record<string, unknown>>;
    t.equal(lean.length, 1);
    t.notOk('metadata' in (lean[0] ?? {}), 'with_detail=false: no metadata');

    const pol = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol`, { headers: robot })).text) as { project_id: number; metadata: Record<string, string>; cve_allowlist: Record<string, unknown>; registry_id?: number };
    t.same(Object.keys(pol.metadata).sort(), ['prevent_vul', 'public', 'severity'], 'only the keys that were set');
    t.equal(pol.cve_allowlist.creation_time, '0001-01-01T00:00:00.000Z', "the project's own allowlist has zero timestamps");
    t.notOk('registry_id' in pol, 'registry_id absent for a normal project');
    const byId = await call(`${sim.url}/api/v2.0/projects/${pol.project_id}`, { headers: robot });
    t.equal((JSON.parse(byId.text) as { name: string }).name, 'pol', 'a number is an id');
    sim.addProject('4711');
    const asName = await call(`${sim.url}/api/v2.0/projects/4711`, { headers: { ...admin, 'X-Is-Resource-Name': 'true' } });
    t.equal((JSON.parse(asName.text) as { name: string }).name, '4711', 'X-Is-Resource-Name makes it a name');
    sim.setMetadata('bulk02', 'severity', 'negligible');
    const neg = JSON.parse((await call(`${sim.url}/api/v2.0/projects/bulk02`, { headers: admin })).text) as { metadata: Record<string, string> };
    t.equal(neg.metadata.severity, 'none', 'negligible is shown as none');
    const metas = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/metadatas/`, { headers: robot })).text) as Record<string, string>;
    t.equal(metas.prevent_vul, 'true', 'metadatas: a flat map of strings');

    const missingAnon = await call(`${sim.url}/api/v2.0/projects/nope`);
    t.equal(missingAnon.status, 401, 'unknown project, anonymous: 401 before 404');
    t.same(JSON.parse(missingAnon.text), { errors: [{ code: 'UNAUTHORIZED', message: 'unauthorized' }] });
    t.equal((await call(`${sim.url}/api/v2.0/projects/bulk02`, { headers: { Authorization: basic('dev:Dev-pass1') } })).status, 403, 'private project, no rights: 403');
    t.equal((await call(`${sim.url}/api/v2.0/projects/99999`, { headers: admin })).status, 404, 'unknown id, admin: 404');

    const sysAnon = await call(`${sim.url}/api/v2.0/system/CVEAllowlist`);
    t.equal(sysAnon.status, 401, 'the system allowlist needs authentication');
    const sys = JSON.parse((await call(`${sim.url}/api/v2.0/system/CVEAllowlist`, { headers: robot })).text) as Record<string, unknown>;
    t.match(sys, { project_id: 0, expires_at: null, items: [] }, 'any authenticated caller reads it');
  });

  await t.test('repositories, artifacts and their additions', async (t) => {
    const robot = { Authorization: basic(`${ROBOT}:${ROBOT_SECRET}`) };
    await sim.pushImage('pol', 'team/app', 'v2', app);
    sim.setScan('pol', 'team/app', 'v2', { status: 'Success', vulnerabilities: VULNS });
    const arts = await call(`${sim.url}/api/v2.0/projects/pol/repositories/team%252Fapp/artifacts?with_scan_overview=true&with_accessory=true`, { headers: robot });
    t.equal(arts.status, 200, 'a repository name with a slash, encoded twice');
    const [art] = JSON.parse(arts.text) as Array<Record<string, unknown> & { addition_links: Record<string, { href: string }>; scan_overview: Record<string, { scan_status: string; severity: string; summary: { total: number } }>; tags: Array<{ name: string }> }>;
    t.equal(art?.repository_name, 'pol/team/app');
    t.equal(art?.tags[0]?.name, 'v2');
    t.equal(art?.addition_links.vulnerabilities?.href, `/api/v2.0/projects/pol/repositories/team%252Fapp/artifacts/${appDigest}/additions/vulnerabilities`);
    t.match(art?.scan_overview[GENERIC], { scan_status: 'Success', severity: 'High', summary: { total: 3 } }, 'scan_overview keyed by mime type');
    const once = await call(`${sim.url}/api/v2.0/projects/pol/repositories/team%2Fapp/artifacts`, { headers: robot });
    t.equal(once.status, 404, 'encoded once, the slash splits the path');

    const nativeOnly = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/team%252Fapp/artifacts/v2?with_scan_overview=true`, { headers: { ...robot, 'X-Accept-Vulnerabilities': NATIVE } })).text) as Record<string, unknown>;
    t.notOk('scan_overview' in nativeOnly, 'X-Accept-Vulnerabilities without the report\'s type: no overview');
    sim.setScan('pol', 'team/app', 'v2', { status: 'Success', vulnerabilities: VULNS, mimeType: NATIVE });
    const native = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/team%252Fapp/artifacts/v2?with_scan_overview=true`, { headers: robot })).text) as { scan_overview: Record<string, unknown> };
    t.ok(native.scan_overview[NATIVE], 'an older installation\'s report type is served under its own key');

    const addition = JSON.parse((await call(`${sim.url}${art?.addition_links.vulnerabilities?.href ?? ''}`, { headers: robot })).text) as Record<string, { vulnerabilities: Array<{ id: string; package: string; version: string; severity: string }> }>;
    t.same(addition[NATIVE]?.vulnerabilities.map((v) => v.id), VULNS.map((v) => v.id), 'the full CVE list');
    sim.setScan('pol', 'team/app', 'v2', null);
    t.same(JSON.parse((await call(`${sim.url}${art?.addition_links.vulnerabilities?.href ?? ''}`, { headers: robot })).text), {}, 'no report: {}');
    sim.setScannable('pol', 'team/app', 'v2', false);
    const unscannable = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/team%252Fapp/artifacts/v2`, { headers: robot })).text) as { addition_links: Record<string, unknown> };
    t.notOk('vulnerabilities' in unscannable.addition_links, 'addition_links.vulnerabilities only when scannable');

    const multiList = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/multi/artifacts?with_accessory=true`, { headers: robot })).text) as Array<{ digest: string; references: Array<{ child_digest: string }>; accessories: Array<{ type: string; subject_artifact_digest: string }> }>;
    t.same(multiList.map((a) => a.digest), [multiDigest], 'untagged children and signatures are not listed');
    t.same(multiList[0]?.references.map((r) => r.child_digest).sort(), [amd64.digest, arm64.digest].sort());
    t.same(multiList[0]?.accessories.map((a) => a.type).sort(), ['signature.cosign', 'signature.notation']);
    const accs = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/multi/artifacts/v1/accessories?q=type%3Dsignature.cosign`, { headers: robot })).text) as Array<{ subject_artifact_digest: string }>;
    t.same(accs.map((a) => a.subject_artifact_digest), [multiDigest], 'accessories, filtered by type');

    sim.setLabels('pol', 'app', 'v1', ['edge']);
    const labelled = JSON.parse((await call(`${sim.url}/api/v2.0/projects/pol/repositories/app/artifacts/v1?with_label=true`, { headers: robot })).text) as { labels: Array<{ name: string }> };
    t.same(labelled.labels.map((l) => l.name), ['edge']);
    const missing = await call(`${sim.url}/api/v2.0/projects/pol/repositories/app/artifacts/nope`, { headers: robot });
    t.same(JSON.parse(missing.text), { errors: [{ code: 'NOT_FOUND', message: 'artifact pol/app:nope not found' }] });
  });

  await t.test('a proxy-cache project', async (t) => {
    const hubAuth = await startTokenServer(t, { users: { hubuser: 'hubpass' } });
    const hub = await startRegistry(t, { token: hubAuth });
    await pushImage(app.layoutDir, 'v1', hub, 'library/app:v1', { creds: 'hubuser:hubpass' });
    sim.addProject('dockerhub', {
      public: true,
      metadata: { prevent_vul: 'true', severity: 'low' },
      upstream: { url: hub.url, type: 'docker-hub', username: 'hubuser', password: 'hubpass' },
    });
    const tok = await token(sim, 'repository:dockerhub/app:pull', `${ROBOT}:${ROBOT_SECRET}`);
    const redirect = await call(`${sim.url}/v2/dockerhub/app/manifests/v1`, { headers: { Authorization: `Bearer ${tok}`, Accept: MANIFEST_ACCEPT }, redirect: 'manual' });
    t.equal(redirect.status, 301, 'docker-hub upstream: a name without a slash is redirected');
    t.equal(redirect.headers.get('location'), '/v2/dockerhub/library/app/manifests/v1');

    const first = await manifest(sim, 'dockerhub/library/app', 'v1');
    t.equal(first.status, 200, 'the first pull comes from upstream and bypasses the policies');
    t.equal(first.headers.get('docker-content-digest'), appDigest);
    await sim.proxyIdle();
    const cached = await call(`${sim.url}/api/v2.0/projects/dockerhub/repositories/library%252Fapp/artifacts/v1`, { headers: { Authorization: basic(`${ROBOT}:${ROBOT_SECRET}`) } });
    t.equal(cached.status, 200, 'the artifact appears once the background copy is done');
    t.equal((JSON.parse(cached.text) as { digest: string }).digest, appDigest);
    policyError(t, await manifest(sim, 'dockerhub/library/app', 'v1'), noScanMsg('Low'), 'once cached, the policies apply');

    await hub.stop();
    policyError(t, await manifest(sim, 'dockerhub/library/app', 'v1'), noScanMsg('Low'), 'upstream down: the cached copy, still under the policies');
    sim.setScan('dockerhub', 'library/app', 'v1', { status: 'Success', vulnerabilities: [] });
    t.equal((await manifest(sim, 'dockerhub/library/app', 'v1')).status, 200, 'upstream down: served from the cache');
    const layer = app.blobs[0];
    const blob = await fetch(`${sim.url}/v2/dockerhub/library/app/blobs/${layer?.digest ?? ''}`, { headers: { Authorization: `Bearer ${await token(sim, 'repository:dockerhub/library/app:pull')}` } });
    t.equal(sha256Digest(Buffer.from(await blob.arrayBuffer())), layer?.digest, 'blobs come from the cache');
    const summary = JSON.parse((await call(`${sim.url}/api/v2.0/projects/dockerhub/summary`)).text) as { registry?: Record<string, unknown> };
    t.match(summary.registry, { type: 'docker-hub', url: hub.url }, 'summary names the upstream');
    t.notOk(summary.registry && 'credential' in summary.registry, 'without its credential');
  });

  await t.test('stop and start', async (t) => {
    await sim.stop();
    await t.rejects(fetch(`${sim.url}/api/v2.0/ping`), 'stopped: nothing answers');
    await sim.start();
    t.equal((await manifest(sim, 'priv/app', 'v1')).status, 200, 'started again: same port, same state, content still there');
  });

  t.same(sim.errors(), [], 'the simulator had no internal errors');
  t.ok(sim.requests({ kind: 'v2' }).some((r) => r.status === 412 && r.user === ROBOT), 'requests are recorded with their caller');
  t.comment(`harbor-sim selftest took ${Date.now() - t0} ms`);
});
