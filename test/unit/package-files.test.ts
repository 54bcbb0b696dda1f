/**
 * What `npm pack` puts in berth's tarball: the sendfile addon's sources (so
 * an install from the tarball builds it and serves with sendfile), never a
 * build of it (binaries for another node). Packs a copy of package.json and
 * native/ with a stand-in build/ dir, as `npm ci` leaves one, and reads
 * `npm pack --dry-run --json` (scripts off: no prepare build).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function npmPack(cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? 1 : 0, stdout, stderr });
    });
  });
}

t.test("the tarball carries native/sendfile's sources and not its build", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-pack-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const f of ['package.json', '.gitignore', '.npmignore']) {
    if (fs.existsSync(path.join(REPO, f))) fs.copyFileSync(path.join(REPO, f), path.join(dir, f));
  }
  fs.cpSync(path.join(REPO, 'native'), path.join(dir, 'native'), { recursive: true, filter: (src) => !src.split(path.sep).includes('build') });
  const build = path.join(dir, 'native/sendfile/build/Release');
  fs.mkdirSync(build, { recursive: true });
  fs.writeFileSync(path.join(build, 'berth_sendfile.node'), 'a binary built for this node');
  fs.writeFileSync(path.join(dir, 'native/sendfile/build/config.gypi'), '{}');

  const r = await npmPack(dir);
  t.equal(r.code, 0, r.stderr);
  const [pack] = JSON.parse(r.stdout) as { files: { path: string }[] }[];
  const files = pack!.files.map((f) => f.path);
  for (const f of ['native/sendfile/package.json', 'native/sendfile/index.cjs', 'native/sendfile/build.cjs', 'native/sendfile/binding.gyp', 'native/sendfile/src/sendfile.c']) {
    t.ok(files.includes(f), `${f} is packed`);
  }
  t.same(
    files.filter((f) => f.startsWith('native/sendfile/build/')),
    [],
    'nothing of its build/ dir',
  );
});

// npm 11.16+ reads package.json allowScripts (advisory now, enforced from npm 12: a dependency whose
// install script is not allowed is installed unbuilt). Every package the lock says has an install script
// is named: a registry one by name, the local addon by its file: spec (a name alone does not match it).
t.test('allowScripts names every dependency with an install script', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
  const lock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { hasInstallScript?: boolean; name?: string }> };
  const withScripts = Object.entries(lock.packages)
    .filter(([, p]) => p.hasInstallScript)
    .map(([where]) => (where.startsWith('node_modules/') ? where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length) : `file:${where}`));
  t.ok(withScripts.includes('better-sqlite3') && withScripts.includes('file:native/sendfile'), `the lock lists the two known ones (${withScripts.join(', ')})`);
  t.same(withScripts.filter((k) => pkg.allowScripts?.[k] !== true), [], 'each is allowed in package.json');
});
