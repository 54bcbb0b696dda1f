/**
 * Bad arguments, command by command: each exits 2, names what is wrong, shows
 * the usage, prints no stack trace and writes nothing (no cache opened, no
 * tar, no .partial, no inventory, no certs.d). Apart from cli.test.ts so that
 * each file stays well inside tap's per-file timeout.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BERTH_BIN } from '../harness/berth.js';
import { run, tempDirFor } from '../harness/procs.js';

function berth(args: string[]) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_')));
  return run(process.execPath, [BERTH_BIN, ...args], { env: clean, timeoutMs: 30_000 });
}

/** Runs `fn` over `items`, at most `width` at once; results in the items' order. */
async function pool<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  return out;
}

t.test('a malformed argument of any command: exit 2, named, with the usage; nothing written', async (t) => {
  const dir = await tempDirFor(t, 'berth-cli-badargs');
  const cache = path.join(dir, 'cache');
  const file = path.join(dir, 'berth.toml');
  fs.writeFileSync(file, `[cache]\ndir = "${cache}"\n[[upstream]]\nregistry = "docker.io"\nurl = "http://127.0.0.1:1"\n`);
  const tar = path.join(dir, 'out.tar');
  const cases: [string[], RegExp][] = [
    [['export', 'Not/A Ref!', '-o', tar], /Not\/A Ref!/],
    [['export', 'nginx:bad:tag', '-o', tar], /nginx:bad:tag/],
    [['export', 'busybox:1.36', 'nginx@sha256:abc', '-o', tar], /nginx@sha256:abc/],
    [['export', 'busybox:1.36', '-o', tar, '--platform', 'linux/'], /linux\//],
    [['export', 'busybox:1.36', '-o', tar, '--split', '1KiB'], /--split 1KiB/],
    [['export', 'busybox:1.36'], /-o FILE is required/],
    [['prefetch', 'busybox:1.36', 'UPPER/case:1'], /UPPER\/case:1/],
    [['prefetch', 'busybox:1.36', '--platform', 'nope/'], /nope\//],
    [['prefetch', 'busybox:1.36', '--concurrency', '0'], /--concurrency/],
    [['unpin', 'nginx:bad:tag'], /nginx:bad:tag/],
    [['import'], /name the archive/],
    [['inventory', 'extra', '-o', path.join(dir, 'inv.gz')], /unexpected argument "extra"/],
    [['keygen'], /-o PREFIX is required/],
    [['status', 'extra'], /extra/],
    [['verify', 'extra'], /extra/],
    [['gc', '--json', 'extra'], /extra/],
    [['sync', 'extra'], /extra/],
    [['audit', '--since', 'last tuesday'], /--since/],
    [['audit', '--limit', '-1'], /--limit/],
    [['doctor', '--timeout', 'soon'], /soon/],
    [['doctor', '--berth-url', 'ftp://x'], /--berth-url/],
    [['configure', 'containerd', '--hosts-dir', path.join(dir, 'certs.d'), '--berth-url', 'ftp://x', '--dry-run'], /--berth-url/],
    [['configure', 'dockerd'], /dockerd/],
    [['config', 'extra'], /extra/],
    [['serve', 'extra'], /extra/],
  ];
  // Three processes at a time: each is a node start-up, and one after the other they took over a minute on a loaded CI machine.
  const results = await pool(cases, 3, ([args]) => berth([...args, '--config', file]));
  cases.forEach(([args, names], i) => {
    const r = results[i]!;
    const what = args.map((a) => a.replace(dir, '…')).join(' ');
    t.equal(r.code, 2, `${what}: exit 2 (${r.stderr.trim().split('\n')[0]})`);
    t.match(r.stderr, names, `${what}: names what is wrong`);
    t.match(r.stderr, /Usage: berth /, `${what}: with the usage`);
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  });
  t.same(fs.readdirSync(dir), ['berth.toml'], 'nothing written: no cache opened, no tar, no .partial, no inventory, no certs.d');
});
