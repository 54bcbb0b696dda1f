/**
 * Proves the harness end to end without berth: token server + Distribution with
 * token auth, locally built images pushed with skopeo, and a real containerd
 * pulling them through hosts.toml straight from the registry.
 */
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { makeImage, MT, pushImage, readBlob, sha256Digest } from '../harness/images.js';
import { freePort, spawnService, tempDirFor, waitFor, withParentDeathSignal } from '../harness/procs.js';
import { startRegistry, type RegistryRequest } from '../harness/registry.js';
import { makeServerCert } from '../harness/tls.js';
import { startTokenServer } from '../harness/token-server.js';

/** Running (not gone, not a zombie nobody reaped yet). */
const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};
const comm = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};

t.test('procs: services, output, stop', async (t) => {
  const port = await freePort();
  t.ok(port > 0 && port < 65536, 'freePort gives a port');

  const echo = spawnService('echo', 'sh', ['-c', 'echo hello-from-child; echo oops >&2; exit 3']);
  await echo.waitForOutput(/hello-from-child/);
  t.equal(await echo.exited, 3, 'exit code is reported');
  t.match(echo.output(), /oops/, 'stderr is captured');

  const sleeper = spawnService('sleeper', 'sleep', ['300']);
  t.ok(sleeper.pid > 0);
  await sleeper.stop();
  t.equal(await sleeper.exited, null, 'stopped by a signal');
  t.ok(sleeper.hasExited());

  const stubborn = spawnService('stubborn', 'sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 0.1; done']);
  await stubborn.waitForOutput(/ready/);
  const t0 = Date.now();
  await stubborn.stop('SIGTERM', 500);
  t.ok(Date.now() - t0 < 5000, 'SIGKILL follows an ignored SIGTERM');
  t.match(stubborn.output(), /sending SIGKILL/);

  // A child of a process that dies (even by SIGKILL) is killed by the kernel.
  const [file, argv] = withParentDeathSignal('sleep', ['301']);
  const parent = spawnService('parent', 'sh', ['-c', `${[file, ...argv].join(' ')} & echo child=$!; wait`]);
  await parent.waitForOutput(/child=\d+/);
  const childPid = Number(/child=(\d+)/.exec(parent.output())?.[1]);
  // setpriv sets the parent-death signal before it execs: wait for the exec.
  await waitFor('grandchild exec', () => comm(childPid) === 'sleep', { timeoutMs: 5000, intervalMs: 10 });
  await parent.kill9();
  await waitFor('orphan killed by pdeathsig', () => !alive(childPid), { timeoutMs: 5000, intervalMs: 20 });
  t.pass('orphan killed by its parent-death signal');

  const gone = spawnService('gone', 'true', []);
  await t.rejects(gone.waitForOutput(/never/, 5000), /exited/, 'waitForOutput fails fast when the process exits');
});

const blobGets = (reqs: RegistryRequest[], digest: string, since = 0): RegistryRequest[] =>
  reqs.filter((r) => r.seq >= since && r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`) && r.status === 200);

t.test('harness end to end', async (t) => {
  const work = await tempDirFor(t, 'berth-selftest');
  const token = await startTokenServer(t, { users: { alice: 'wonderland' } });
  const [registry, app, multi, ctd] = await Promise.all([
    startRegistry(t, { token }),
    makeImage(path.join(work, 'app'), { layers: 2, layerSize: 300_000, seed: 'selftest-app', tag: 'v1' }),
    makeImage(path.join(work, 'multi'), {
      layers: 1,
      layerSize: 100_000,
      seed: 'selftest-multi',
      tag: 'v1',
      platforms: ['linux/amd64', 'linux/arm64'],
    }),
    startContainerd(t),
  ]);
  t.comment(`containerd snapshotter: ${ctd.snapshotter}; registry ${registry.url}; token ${token.url}`);

  await t.test('images are deterministic and well formed', async (t) => {
    const again = await makeImage(path.join(work, 'app-again'), { layers: 2, layerSize: 300_000, seed: 'selftest-app', tag: 'v1' });
    t.equal(again.manifestDigest, app.manifestDigest, 'same seed, same digest');
    t.equal(app.mediaType, MT.ociManifest);
    t.equal(app.blobs.length, 3, '2 layers + config');
    t.equal(multi.mediaType, MT.ociIndex);
    t.equal(multi.manifests.length, 2);
    t.equal(multi.blobs.length, 4, '2 x (1 layer + config)');
    t.same(
      multi.manifests.map((m) => m.platform),
      ['linux/amd64', 'linux/arm64'],
    );
    for (const b of [...app.blobs, ...multi.blobs]) {
      t.equal(sha256Digest(await readBlob(app.blobs.includes(b) ? app.layoutDir : multi.layoutDir, b.digest)), b.digest);
    }
    const files = await readdir(path.join(app.layoutDir, 'blobs', 'sha256'));
    t.equal(files.length, 4, 'layout holds 2 layers, config, manifest');
  });

  await t.test('token auth and push', async (t) => {
    const v2 = await fetch(`${registry.url}/v2/`);
    t.equal(v2.status, 401, 'registry demands a token');
    const challenge = v2.headers.get('www-authenticate') ?? '';
    t.match(challenge, `Bearer realm="${token.realm}"`);
    t.match(challenge, `service="${token.service}"`);

    await t.rejects(pushImage(app.layoutDir, 'v1', registry, 'library/app:v1'), /skopeo copy .* failed/, 'anonymous push refused');
    await t.rejects(
      pushImage(app.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'alice:wrong' }),
      /failed/,
      'bad password refused',
    );
    t.ok(token.requests.some((r) => r.user === 'alice' && r.status === 401), 'token server saw the bad password');

    t.equal(await pushImage(app.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'alice:wonderland' }), app.manifestDigest);
    t.equal(await pushImage(multi.layoutDir, 'v1', registry, 'library/multi:v1', { creds: 'alice:wonderland' }), multi.manifestDigest);
    t.ok(
      token.requests.some((r) => r.user === 'alice' && r.status === 200 && /repository:library\/app:.*push/.test(r.scope ?? '')),
      'push token requested by alice',
    );

    // Anonymous pull token, then the manifest by tag and a blob by digest.
    const tr = await fetch(`${token.realm}?service=${encodeURIComponent(token.service)}&scope=repository:library/app:pull,push`);
    t.equal(tr.status, 200);
    const body = (await tr.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    t.equal(body.token, body.access_token);
    t.equal(body.expires_in, 300);
    const claims = JSON.parse(Buffer.from(body.token.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      access: Array<{ name: string; actions: string[] }>;
    };
    t.same(claims.access, [{ type: 'repository', name: 'library/app', actions: ['pull'] }], 'anonymous gets pull only');
    const auth = { authorization: `Bearer ${body.token}` };
    const since = registry.mark();
    const man = await fetch(`${registry.url}/v2/library/app/manifests/v1`, { headers: { ...auth, accept: MT.ociManifest } });
    t.equal(man.status, 200, 'Distribution accepts the x5c-signed token');
    t.equal(man.headers.get('docker-content-digest'), app.manifestDigest);
    t.equal(sha256Digest(Buffer.from(await man.arrayBuffer())), app.manifestDigest, 'manifest bytes preserved');
    const layer = app.blobs[0];
    if (!layer) throw new Error('no layer');
    const blob = await fetch(`${registry.url}/v2/library/app/blobs/${layer.digest}`, { headers: auth });
    t.equal(blob.status, 200);
    t.equal(sha256Digest(Buffer.from(await blob.arrayBuffer())), layer.digest);

    const bad = await fetch(`${token.realm}?service=${token.service}&scope=repository:library/app:pull`, {
      headers: { authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` },
    });
    t.equal(bad.status, 401, 'token server refuses a bad password');
    await bad.arrayBuffer();

    await registry.waitForRequests((reqs) => blobGets(reqs, layer.digest, since).length === 1);
    t.equal(registry.requests({ method: 'GET', pathRe: /\/manifests\/v1$/, status: 200, since }).length, 1, 'one manifest GET recorded');
    t.ok(registry.requests({ status: 401 }).length >= 1, '401 challenges are recorded too');
  });

  const hostsDir = path.join(work, 'hosts');
  await writeHostsToml(hostsDir, 'docker.io', registry.url);
  const ref = 'docker.io/library/app:v1';

  await t.test('containerd pulls through hosts.toml and unpacks', async (t) => {
    const since = registry.mark();
    const res = await ctd.pull(ref, { hostsDir });
    t.equal(res.code, 0, `ctr pull: ${res.stderr}`);
    t.equal((await ctd.images()).get(ref), app.manifestDigest, 'image recorded with the pushed digest');
    await registry.waitForRequests((reqs) => app.blobs.every((b) => blobGets(reqs, b.digest, since).length >= 1));
    const reqs = registry.requests({ since });
    for (const b of app.blobs) t.equal(blobGets(reqs, b.digest).length, 1, `blob ${b.digest.slice(0, 19)} fetched once`);
    t.ok(
      reqs.filter((r) => r.status !== 401).every((r) => r.uri.includes('ns=docker.io')),
      'containerd adds ?ns=docker.io (the registry is not docker.io)',
    );
    const content = await ctd.content();
    for (const b of app.blobs) t.ok(content.includes(b.digest), `content store has ${b.digest.slice(0, 19)}`);
  });

  await t.test('forget makes the next pull fetch everything again', async (t) => {
    await ctd.forget(ref);
    t.same(await ctd.content(), [], 'content store empty');
    t.equal((await ctd.images()).size, 0);
    const since = registry.mark();
    const res = await ctd.pull(ref, { hostsDir });
    t.equal(res.code, 0, `ctr pull: ${res.stderr}`);
    await registry.waitForRequests((reqs) => app.blobs.every((b) => blobGets(reqs, b.digest, since).length >= 1));
    for (const b of app.blobs) t.equal(blobGets(registry.requests(), b.digest, since).length, 1);
    for (const b of app.blobs) t.equal(blobGets(registry.requests(), b.digest).length, b === app.blobs[0] ? 3 : 2, 'counted over the whole run');
  });

  await t.test('multi-platform index: only the chosen platform is fetched', async (t) => {
    const since = registry.mark();
    const res = await ctd.pull('docker.io/library/multi:v1', { hostsDir, platform: 'linux/arm64' });
    t.equal(res.code, 0, `ctr pull: ${res.stderr}`);
    const arm = multi.manifests.find((m) => m.platform === 'linux/arm64');
    const amd = multi.manifests.find((m) => m.platform === 'linux/amd64');
    if (!arm || !amd) throw new Error('platforms missing');
    const armBlobs = [arm.config, ...arm.layers];
    await registry.waitForRequests((reqs) => armBlobs.every((d) => blobGets(reqs, d, since).length === 1));
    await registry.barrier();
    const reqs = registry.requests({ since });
    t.notOk(reqs.some((r) => r.uri.includes('berth-barrier')), 'barrier requests are not recorded');
    for (const d of [amd.config, ...amd.layers]) t.equal(blobGets(reqs, d).length, 0, 'no amd64 blob fetched');
    t.ok(
      reqs.some((r) => r.method === 'GET' && r.path.endsWith(`/manifests/${arm.digest}`) && r.status === 200),
      'arm64 manifest fetched by digest',
    );
    t.equal((await ctd.images()).get('docker.io/library/multi:v1'), multi.manifestDigest);
  });

  await t.test('docker schema2 list; credentials go through the OAuth POST', async (t) => {
    const dock = await makeImage(path.join(work, 'dock'), {
      layers: 1,
      layerSize: 50_000,
      seed: 'selftest-dock',
      tag: 'v1',
      format: 'docker',
      platforms: ['linux/amd64', 'linux/arm/v7'],
    });
    t.equal(dock.mediaType, MT.dockerList);
    t.equal(await pushImage(dock.layoutDir, 'v1', registry, 'library/dock:v1', { creds: 'alice:wonderland' }), dock.manifestDigest);
    const before = token.requests.length;
    const res = await ctd.pull('docker.io/library/dock:v1', { hostsDir, platform: 'linux/arm/v7', user: 'alice:wonderland' });
    t.equal(res.code, 0, `ctr pull: ${res.stderr}`);
    t.equal((await ctd.images()).get('docker.io/library/dock:v1'), dock.manifestDigest);
    t.ok(
      token.requests.slice(before).some((r) => r.method === 'POST' && r.user === 'alice' && r.status === 200),
      'containerd with credentials uses POST /token (grant_type=password)',
    );
  });

  await t.test('HTTPS registry, trusted through hosts.toml `ca`', async (t) => {
    const tlsFiles = await makeServerCert(work, { name: 'registry-tls' });
    const [secure, small] = await Promise.all([
      startRegistry(t, { tls: tlsFiles }),
      makeImage(path.join(work, 'small'), { layers: 1, layerSize: 10_000, seed: 'selftest-small', tag: 'v1' }),
    ]);
    t.match(secure.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    t.equal(await pushImage(small.layoutDir, 'v1', secure, 'team/small:v1'), small.manifestDigest);
    const tlsHosts = path.join(work, 'hosts-tls');
    await writeHostsToml(tlsHosts, secure.host, secure.url, { caFile: tlsFiles.caFile });
    const res = await ctd.pull(`${secure.host}/team/small:v1`, { hostsDir: tlsHosts });
    t.equal(res.code, 0, `ctr pull over https: ${res.stderr}`);
    await secure.waitForRequests((reqs) => small.blobs.every((b) => blobGets(reqs, b.digest).length === 1));
    t.ok(
      secure.requests({ pathRe: /\/blobs\// }).every((r) => !r.uri.includes('ns=')),
      'no ?ns= when the host is the image registry itself',
    );
    await secure.stop();
  });

  await t.test('registry restart keeps data and port', async (t) => {
    const pid = registry.service.pid;
    await registry.stop();
    t.ok(registry.service.hasExited());
    await registry.start();
    t.not(registry.service.pid, pid, 'a new process');
    t.notOk(registry.requests().some((r) => r.uri.includes('berth-barrier')), 'readiness probes are not recorded');
    await ctd.forget();
    const since = registry.mark();
    const res = await ctd.pull(ref, { hostsDir });
    t.equal(res.code, 0, `ctr pull after restart: ${res.stderr}`);
    await registry.waitForRequests((reqs) => app.blobs.every((b) => blobGets(reqs, b.digest, since).length === 1));
    t.pass('all blobs served again after the restart');
  });
});
