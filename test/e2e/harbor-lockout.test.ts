/**
 * Credential guessing against a private Harbor project, end to end through
 * the Harbor simulator: after ten different refused passwords for one user
 * name within five minutes, berth answers 429 TOOMANYREQUESTS with
 * Retry-After and stops asking Harbor, while the user's own pair (verified in
 * this process) still pulls, other user names are untouched, one wrong
 * password retried (a stale pull secret) never locks a name, and /metrics
 * counts both.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { startHarborSim } from '../harbor-sim/index.js';
import { makeImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';

const ACCESS = ['project:read', 'metadata:list', 'metadata:read', 'repository:list', 'repository:read', 'repository:pull', 'artifact:list', 'artifact:read', 'artifact-addition:read', 'accessory:list', 'tag:list']
  .map((s) => s.split(':'))
  .map(([resource, action]) => ({ resource: resource!, action: action! }));

async function manifest(berth: Berth, ns: string, auth: string | null, method = 'GET') {
  const res = await fetch(`${berth.url}/v2/secure/app/manifests/v1?ns=${ns}`, {
    method,
    headers: { Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json', ...(auth ? { Authorization: 'Basic ' + Buffer.from(auth).toString('base64') } : {}) },
  });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers };
}

t.test('failed sign-ins are limited per user name; right credentials are never held up', async (t) => {
  const work = await tempDirFor(t, 'berth-lockout');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-1', { permissions: [{ kind: 'project', namespace: '*', access: ACCESS }] });
  sim.addProject('secure', { public: false });
  sim.addUser('alice', 'alice-pw', { projects: { secure: 'guest' } });
  sim.addUser('bob', 'bob-pw', { projects: { secure: 'guest' } });
  sim.addUser('carol', 'carol-pw', { projects: { secure: 'guest' } });
  const img = await makeImage(path.join(work, 'img'), { layers: 1, layerSize: 20_000, seed: 'lockout', tag: 'v1' });
  await sim.pushImage('secure', 'app', 'v1', img);
  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-1\n', { mode: 0o600 });
  const berth = await startBerth(t, {
    upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
    extra: { harbor: { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h' } },
  });
  const ns = sim.host;

  t.equal((await manifest(berth, ns, 'alice:alice-pw')).status, 200, 'alice pulls: her pair is verified by Harbor and remembered');

  for (let i = 1; i <= 10; i++) {
    t.equal((await manifest(berth, ns, `alice:guess-${i}`)).status, 401, `wrong guess ${i}: 401`);
    t.equal((await manifest(berth, ns, `bob:guess-${i}`)).status, 401, `bob, wrong guess ${i}: 401`);
  }

  const mark = sim.mark();
  const locked = await manifest(berth, ns, 'alice:guess-11');
  t.equal(locked.status, 429, 'the eleventh wrong guess within five minutes: 429');
  const retryAfter = Number(locked.headers.get('retry-after'));
  t.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 300, `Retry-After in seconds within the window (${locked.headers.get('retry-after')})`);
  t.match(JSON.parse(locked.text), { errors: [{ code: 'TOOMANYREQUESTS' }] }, 'the OCI error envelope');
  const lockedHead = await manifest(berth, ns, 'alice:guess-12', 'HEAD');
  t.equal(lockedHead.status, 429, 'HEAD: 429');
  t.equal(lockedHead.text, '', 'HEAD: no body');
  t.ok(lockedHead.headers.get('retry-after'), 'HEAD: Retry-After');

  t.equal((await manifest(berth, ns, 'alice:alice-pw')).status, 200, "alice's own pair pulls during the lock-out (verified in this process)");
  t.equal((await manifest(berth, ns, 'bob:bob-pw')).status, 429, "bob's right password, never verified in this process, waits like a guess");
  const checks = sim.requests({ kind: 'token', since: mark }).filter((r) => r.user !== 'robot$edge-sync');
  t.same(checks.map((r) => `${r.method} ${r.uri} ${r.status}`), [], 'no sign-in was checked with Harbor while the names were locked');

  t.equal((await manifest(berth, ns, 'carol:carol-pw')).status, 200, 'another user name is not affected');
  const stale: number[] = [];
  for (let i = 0; i < 15; i++) stale.push((await manifest(berth, ns, 'carol:an-old-secret')).status);
  t.same(stale, Array(15).fill(401), 'one wrong password retried 15 times: 401 each time, never a lock-out');
  t.equal((await manifest(berth, ns, 'carol:carol-pw')).status, 200, 'and carol still pulls');

  const metrics = await (await fetch(`${berth.url}/metrics`)).text();
  const failures = Number(/^berth_credential_failures_total (\d+)$/m.exec(metrics)?.[1]);
  t.equal(failures, 35, 'every refused password counted: 20 guesses and 15 retries of a stale one');
  t.match(metrics, /berth_credential_lockouts_total [3-9]\b/, 'every 429 counted');
  for (const secret of ['alice-pw', 'bob-pw', 'guess-11']) t.notOk(berth.service.output().includes(secret), `${secret} is not logged`);
  t.same(sim.errors(), [], 'the simulator itself never failed');
});
