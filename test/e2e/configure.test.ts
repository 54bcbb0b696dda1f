/**
 * `berth configure containerd` and `berth doctor` as an operator runs them
 * (the built CLI), with a real containerd pulling through the hosts.toml that
 * configure wrote: with the upstream as fallback and with --no-fallback, over
 * a fresh directory and over MicroK8s' shipped docker.io file; then --undo.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'smol-toml';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';

const MICROK8S_DOCKER_IO = 'server = "https://docker.io"\n\n[host."https://registry-1.docker.io"]\n  capabilities = ["pull", "resolve"]\n\n';
const REF = 'docker.io/library/app:v1';

type HostsFile = { server?: string; host?: Record<string, unknown> };

t.test('containerd pulls through the hosts.toml berth configure wrote', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-configure');
  const img = await makeImage(path.join(work, 'app'), { layers: 2, layerSize: 100_000, seed: 'configure', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'pusher:push-secret' });
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const ctd = await startContainerd(t);

  /** berth's access-log lines for the app's manifests so far. */
  const manifestHits = () => berth.logs().filter((l) => l.msg === 'request' && String(l.path).startsWith('/v2/library/app/manifests/') && l.status === 200).length;
  const hostsFile = (dir: string) => path.join(dir, 'docker.io', 'hosts.toml');
  const readHosts = (dir: string) => parse(fs.readFileSync(hostsFile(dir), 'utf8')) as HostsFile;
  const microk8sDir = (name: string) => {
    const dir = path.join(work, name);
    fs.mkdirSync(path.join(dir, 'docker.io'), { recursive: true });
    fs.writeFileSync(hostsFile(dir), MICROK8S_DOCKER_IO);
    return dir;
  };
  const configure = async (args: string[]) => {
    const r = await berth.cli(['configure', 'containerd', ...args]);
    t.equal(r.code, 0, `configure ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  /** Pulls with berth stopped, then starts it again. */
  const pullWithBerthDown = async (hostsDir: string) => {
    await ctd.forget(REF);
    await berth.stop();
    try {
      return await ctd.pull(REF, { hostsDir, timeoutMs: 90_000 });
    } finally {
      await berth.restart();
    }
  };

  await t.test('with the upstream as fallback (a fresh directory)', async (t) => {
    const dir = path.join(work, 'fallback');
    const r = await configure(['--hosts-dir', dir]);
    t.match(r.stdout, /docker\.io: created /);
    const hosts = readHosts(dir);
    t.equal(hosts.server, registry.url, 'the upstream is the fallback server');
    t.same(Object.keys(hosts.host ?? {}), [berth.url]);

    const before = manifestHits();
    const pull = await ctd.pull(REF, { hostsDir: dir });
    t.equal(pull.code, 0, `ctr pull: ${pull.stderr}`);
    t.ok(manifestHits() > before, 'containerd asked berth');
    t.ok(registry.requests({ method: 'GET', pathRe: /\/blobs\// }).length >= img.blobs.length, 'berth filled from the upstream');

    const down = await pullWithBerthDown(dir);
    t.equal(down.code, 0, `with berth stopped containerd falls back to the upstream: ${down.stderr}`);
  });

  await t.test('--no-fallback over MicroK8s\' docker.io file, then --undo', async (t) => {
    const dir = microk8sDir('microk8s-nofallback');
    const dry = await configure(['--hosts-dir', dir, '--no-fallback', '--dry-run']);
    t.match(dry.stdout, /^--- a\/docker\.io\/hosts\.toml$/m, 'a unified diff');
    t.match(dry.stdout, new RegExp(`^\\+server = "${berth.url}"$`, 'm'));
    t.match(dry.stdout, /^-server = "https:\/\/docker\.io"$/m);
    t.equal(fs.readFileSync(hostsFile(dir), 'utf8'), MICROK8S_DOCKER_IO, 'the dry run wrote nothing');
    t.same(fs.readdirSync(path.join(dir, 'docker.io')), ['hosts.toml']);

    await configure(['--hosts-dir', dir, '--no-fallback']);
    const hosts = readHosts(dir);
    t.equal(hosts.server, berth.url, 'berth is the server');
    t.same(Object.keys(hosts.host ?? {}), [berth.url], 'and the only host (containerd 1.6 needs the table)');
    const written = fs.readFileSync(hostsFile(dir));

    await ctd.forget(REF);
    const before = manifestHits();
    const pull = await ctd.pull(REF, { hostsDir: dir });
    t.equal(pull.code, 0, `ctr pull: ${pull.stderr}`);
    t.ok(manifestHits() > before, 'containerd asked berth');

    const down = await pullWithBerthDown(dir);
    t.not(down.code, 0, 'with berth stopped there is no way around it');

    const again = await configure(['--hosts-dir', dir, '--no-fallback']);
    t.match(again.stdout, /docker\.io: unchanged/);
    t.same(fs.readFileSync(hostsFile(dir)), written, 'a second run changes nothing');

    const undo = await configure(['--hosts-dir', dir, '--undo']);
    t.match(undo.stdout, /docker\.io: restored /);
    t.equal(fs.readFileSync(hostsFile(dir), 'utf8'), MICROK8S_DOCKER_IO, 'MicroK8s\' file is back, byte for byte');
    t.same(fs.readdirSync(path.join(dir, 'docker.io')), ['hosts.toml'], 'nothing left beside it');
  });

  await t.test("with fallback over MicroK8s' file: berth first, the shipped host behind it", async (t) => {
    const dir = microk8sDir('microk8s-fallback');
    await configure(['--hosts-dir', dir]);
    const hosts = readHosts(dir);
    t.equal(hosts.server, 'https://docker.io');
    t.same(Object.keys(hosts.host ?? {}), [berth.url, 'https://registry-1.docker.io']);
    await ctd.forget(REF);
    const before = manifestHits();
    const pull = await ctd.pull(REF, { hostsDir: dir });
    t.equal(pull.code, 0, `containerd accepts the merged file and pulls: ${pull.stderr}`);
    t.ok(manifestHits() > before, 'through berth');
  });

  await t.test('doctor on the configured node, then with berth stopped', async (t) => {
    const dir = path.join(work, 'fallback');
    const ctdConfig = path.join(work, 'containerd-config.toml');
    fs.writeFileSync(ctdConfig, `version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "${dir}"\n`);
    const ok = await berth.cli(['doctor', '--containerd-config', ctdConfig]);
    t.equal(ok.code, 0, `doctor:\n${ok.stdout}${ok.stderr}`);
    t.match(ok.stdout, /^ok {5}containerd \d+\.\d+/m, 'the real containerd found');
    t.match(ok.stdout, new RegExp(`^ok {5}berth at ${berth.url} answers GET /v2/`, 'm'));
    t.match(ok.stdout, /^ok {5}docker\.io: .* sends pulls to berth first/m);
    t.match(ok.stdout, /^ok {5}upstream docker\.io .* answers as a registry/m);
    const json = await berth.cli(['doctor', '--containerd-config', ctdConfig, '--json']);
    t.equal((JSON.parse(json.stdout) as { errors: number }).errors, 0);

    await berth.stop();
    try {
      const bad = await berth.cli(['doctor', '--containerd-config', ctdConfig]);
      t.equal(bad.code, 1, 'an error finding exits 1');
      t.match(bad.stdout, new RegExp(`^error  berth at ${berth.url} is not answering .* — fix: sudo systemctl start berth`, 'm'));
    } finally {
      await berth.restart();
    }
  });

  await t.test('bad usage exits 2', async (t) => {
    t.equal((await berth.cli(['configure'])).code, 2);
    t.equal((await berth.cli(['configure', 'docker'])).code, 2);
    t.equal((await berth.cli(['configure', 'containerd', '--microk8s', '--hosts-dir', work])).code, 2);
    t.equal((await berth.cli(['configure', 'containerd', '--hosts-dir', work, '--berth-url', 'ftp://x'])).code, 2);
  });
});
