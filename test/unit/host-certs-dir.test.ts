/**
 * configure/undo against real directories holding what operators have: the
 * MicroK8s docker.io file, a site mirror someone added, MicroK8s' local
 * registry file berth does not mirror. Undo must give back every byte, mode
 * and inode; a second run and a dry run must not touch anything.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'smol-toml';
import { applyPlan, planConfigure, planUndo, BACKUP_SUFFIX, CREATED_SUFFIX, DIR_MARKER, type ConfigureOptions } from '../../src/host/certs-dir.js';
import { isManaged } from '../../src/host/hosts-toml.js';

const MICROK8S_DOCKER_IO = 'server = "https://docker.io"\n\n[host."https://registry-1.docker.io"]\n  capabilities = ["pull", "resolve"]\n\n';
const MICROK8S_LOCAL_REGISTRY = 'server = "http://localhost:32000"\n\n[host."http://localhost:32000"]\n  capabilities = ["pull", "resolve"]\n';
const SITE_MIRROR = '# plant 7 mirror\nserver = "https://ghcr.io"\n\n[host."https://mirror.plant7.example"]\n  capabilities = ["pull", "resolve"]\n  skip_verify = true\n';
const BERTH = 'http://127.0.0.1:5050';

type Entry = { kind: 'file' | 'dir'; mode: number; ino: number; mtimeMs: number; bytes?: Buffer };

/** Every file and directory below `root` with bytes, mode, inode and mtime. */
function snapshot(root: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      const st = fs.lstatSync(p);
      const rel = path.relative(root, p);
      if (st.isDirectory()) {
        out.set(rel, { kind: 'dir', mode: st.mode, ino: st.ino, mtimeMs: 0 });
        walk(p);
      } else {
        out.set(rel, { kind: 'file', mode: st.mode, ino: st.ino, mtimeMs: st.mtimeMs, bytes: fs.readFileSync(p) });
      }
    }
  };
  walk(root);
  return out;
}

function tempHostsDir(t: { teardown(fn: () => void): void }): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-certs-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'certs.d');
  const put = (rel: string, text: string, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text, { mode });
    fs.chmodSync(path.join(dir, rel), mode);
  };
  put('docker.io/hosts.toml', MICROK8S_DOCKER_IO);
  put('ghcr.io/hosts.toml', SITE_MIRROR, 0o600);
  put('localhost:32000/hosts.toml', MICROK8S_LOCAL_REGISTRY);
  return dir;
}

const options = (hostsDir: string, o: Partial<ConfigureOptions> = {}): ConfigureOptions => ({
  hostsDir,
  berthUrl: BERTH,
  noFallback: false,
  targets: [
    { registry: 'docker.io', upstreamUrl: 'https://registry-1.docker.io' },
    { registry: 'ghcr.io', upstreamUrl: 'https://ghcr.io' },
    { registry: 'quay.io', upstreamUrl: 'https://quay.io' },
  ],
  ...o,
});

const read = (p: string) => fs.readFileSync(p, 'utf8');

t.test('configure merges, backs up, creates; a second run and undo', async (t) => {
  const dir = tempHostsDir(t);
  const original = snapshot(dir);

  const plan = await planConfigure(options(dir));
  t.same(plan.changes.map((c) => [c.registry, c.kind]), [['docker.io', 'update'], ['ghcr.io', 'update'], ['quay.io', 'create']]);
  t.same(snapshot(dir), original, 'planning (what --dry-run prints) writes nothing');
  await applyPlan(plan);

  const docker = parse(read(path.join(dir, 'docker.io/hosts.toml'))) as { server: string; host: Record<string, unknown> };
  t.equal(docker.server, 'https://docker.io');
  t.same(Object.keys(docker.host), [BERTH, 'https://registry-1.docker.io'], 'berth first, MicroK8s host kept');
  const ghcr = parse(read(path.join(dir, 'ghcr.io/hosts.toml'))) as { host: Record<string, unknown> };
  t.same(Object.keys(ghcr.host), [BERTH, 'https://mirror.plant7.example'], 'the site mirror stays, after berth');
  t.equal(fs.statSync(path.join(dir, 'ghcr.io/hosts.toml')).mode & 0o777, 0o600, 'the file keeps its mode');
  t.same(parse(read(path.join(dir, 'quay.io/hosts.toml'))), { server: 'https://quay.io', host: { [BERTH]: { capabilities: ['pull', 'resolve'] } } });

  const backup = path.join(dir, 'docker.io/hosts.toml' + BACKUP_SUFFIX);
  t.equal(read(backup), MICROK8S_DOCKER_IO, 'the backup holds the original bytes');
  t.equal(fs.statSync(backup).ino, original.get('docker.io/hosts.toml')?.ino, 'the backup is the original inode');
  t.ok(fs.existsSync(path.join(dir, 'quay.io/hosts.toml' + CREATED_SUFFIX)), 'a created file is marked');
  t.same(fs.readdirSync(path.join(dir, 'localhost:32000')), ['hosts.toml'], 'a registry berth does not mirror is left alone');
  t.equal(read(path.join(dir, 'localhost:32000/hosts.toml')), MICROK8S_LOCAL_REGISTRY);

  const configured = snapshot(dir);
  const again = await planConfigure(options(dir));
  t.same(again.changes.map((c) => c.kind), ['unchanged', 'unchanged', 'unchanged']);
  await applyPlan(again);
  t.same(snapshot(dir), configured, 'a second run changes nothing: bytes, modes, inodes, mtimes');

  const undo = await planUndo(dir);
  t.same(undo.changes.map((c) => [c.registry, c.kind]), [['docker.io', 'restore'], ['ghcr.io', 'restore'], ['quay.io', 'remove']]);
  t.same(snapshot(dir), configured, 'planning the undo writes nothing');
  await applyPlan(undo);
  t.same(snapshot(dir), original, 'undo restores every byte, mode and inode, and removes what berth created');
  t.same((await planUndo(dir)).changes, [], 'nothing left to undo');
});

t.test('a hosts directory berth had to create goes away on undo', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-certs-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'certs.d');
  await applyPlan(await planConfigure(options(dir, { targets: [{ registry: 'docker.io', upstreamUrl: 'https://registry-1.docker.io' }] })));
  t.same(fs.readdirSync(dir).sort(), [DIR_MARKER, 'docker.io']);
  await applyPlan(await planUndo(dir));
  t.notOk(fs.existsSync(dir), 'the directory is gone again');
});

t.test('--no-fallback and back: the original hosts return from the backup', async (t) => {
  const dir = tempHostsDir(t);
  await applyPlan(await planConfigure(options(dir)));
  const fallback = read(path.join(dir, 'docker.io/hosts.toml'));

  await applyPlan(await planConfigure(options(dir, { noFallback: true })));
  const noFb = parse(read(path.join(dir, 'docker.io/hosts.toml'))) as { server: string; host: Record<string, unknown> };
  t.equal(noFb.server, BERTH);
  t.same(Object.keys(noFb.host), [BERTH]);
  t.equal(read(path.join(dir, 'docker.io/hosts.toml' + BACKUP_SUFFIX)), MICROK8S_DOCKER_IO, 'the backup is still the first original');

  await applyPlan(await planConfigure(options(dir)));
  t.equal(read(path.join(dir, 'docker.io/hosts.toml')), fallback, 'same bytes as the first fallback run');
});

t.test('a registry that left the config is restored on the next configure', async (t) => {
  const dir = tempHostsDir(t);
  await applyPlan(await planConfigure(options(dir)));
  const plan = await planConfigure(options(dir, { targets: [{ registry: 'docker.io', upstreamUrl: 'https://registry-1.docker.io' }] }));
  t.same(plan.changes.map((c) => [c.registry, c.kind]), [['docker.io', 'unchanged'], ['ghcr.io', 'restore'], ['quay.io', 'remove']]);
  t.match(plan.changes[1]?.notes.join(' '), /no longer an \[\[upstream\]\]/);
  await applyPlan(plan);
  t.equal(read(path.join(dir, 'ghcr.io/hosts.toml')), SITE_MIRROR);
  t.notOk(fs.existsSync(path.join(dir, 'quay.io')));
});

t.test('an existing file berth cannot parse is refused and nothing is written', async (t) => {
  const dir = tempHostsDir(t);
  fs.writeFileSync(path.join(dir, 'ghcr.io/hosts.toml'), 'server = "https://ghcr.io\n[host\n');
  const before = snapshot(dir);
  await t.rejects(planConfigure(options(dir)), { code: 'HOSTS_TOML', message: /ghcr\.io\/hosts\.toml: not valid TOML/ });
  t.same(snapshot(dir), before);
});

t.test('undo leaves alone a file someone replaced since berth wrote it', async (t) => {
  const dir = tempHostsDir(t);
  await applyPlan(await planConfigure(options(dir)));
  const theirs = 'server = "https://registry-1.docker.io"\n[host."https://other.example"]\n';
  fs.writeFileSync(path.join(dir, 'docker.io/hosts.toml'), theirs);
  const undo = await planUndo(dir);
  const docker = undo.changes.find((c) => c.registry === 'docker.io');
  t.equal(docker?.kind, 'skip');
  t.match(docker?.notes.join(' '), /changed since berth wrote it/);
  await applyPlan(undo);
  t.equal(read(path.join(dir, 'docker.io/hosts.toml')), theirs, 'their file stays');
  t.ok(fs.existsSync(path.join(dir, 'docker.io/hosts.toml' + BACKUP_SUFFIX)), 'and so does the backup');
  t.equal(read(path.join(dir, 'ghcr.io/hosts.toml')), SITE_MIRROR, 'the others are restored');
  t.notOk(isManaged(read(path.join(dir, 'ghcr.io/hosts.toml'))));
});

t.test('a registry name that is no host[:port] is refused', async (t) => {
  const dir = tempHostsDir(t);
  await t.rejects(planConfigure(options(dir, { targets: [{ registry: '../etc', upstreamUrl: 'https://x' }] })), /not host\[:port\]/);
});
