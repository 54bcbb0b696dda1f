/**
 * A real containerd daemon (1.6 here) of the test's own: own root, state and
 * socket under a temp dir, no CRI, driven with `ctr`.
 *
 * Snapshotter: overlayfs when an overlay mount works on the temp filesystem
 * (probed once per process with a real `mount -t overlay`), else `native`.
 * `ctr images pull` in 1.6 always unpacks (there is no --skip-unpack), which is
 * what we want: a successful pull proves the layers and diff_ids are valid.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { cleanup, run, spawnService, type RunResult, type Service, type Teardown } from './procs.js';

export interface PullOptions {
  hostsDir: string;
  /** e.g. 'linux/arm64'; default: ctr's default (the host platform). */
  platform?: string;
  allPlatforms?: boolean;
  /** `user:password` passed as `ctr --user`. */
  user?: string;
  /** Kill ctr and reject after this long (default 60 s). */
  timeoutMs?: number;
  /** Extra flags before the reference, e.g. ['--http-dump']. */
  extraArgs?: string[];
}

export interface Containerd {
  socket: string;
  namespace: string;
  root: string;
  snapshotter: string;
  service: Service;
  /** `ctr -a SOCK -n NS images pull --hosts-dir DIR [--platform P] REF` (unpacks). Rejects only on timeout. */
  pull(ref: string, opts: PullOptions): Promise<RunResult>;
  /**
   * Removes `ref` (all images when omitted) with a synchronous GC, then every
   * content blob and snapshot in the namespace, so the next pull fetches
   * everything again. Checks `ctr content ls` ends up empty.
   */
  forget(ref?: string): Promise<void>;
  /** Any ctr subcommand against this daemon and namespace. */
  ctr(args: string[], timeoutMs?: number): Promise<RunResult>;
  /** `ctr images ls` as name -> target digest. */
  images(): Promise<Map<string, string>>;
  /** Digests in the content store. */
  content(): Promise<string[]>;
  stop(): Promise<void>;
}

let overlayProbe: Promise<boolean> | null = null;

/** Whether an overlay mount works under os.tmpdir() (cached per process). */
export function overlayWorks(): Promise<boolean> {
  overlayProbe ??= (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ovl-probe-'));
    try {
      const [lower, upper, work, merged] = ['l', 'u', 'w', 'm'].map((d) => path.join(dir, d)) as [string, string, string, string];
      for (const d of [lower, upper, work, merged]) await mkdir(d);
      const res = await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged], {
        timeoutMs: 10_000,
      });
      if (res.code !== 0) return false;
      await run('umount', [merged], { timeoutMs: 10_000 });
      return true;
    } catch {
      return false;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return overlayProbe;
}

const tomlStr = (s: string): string => JSON.stringify(s);

/** Unmounts anything still mounted below `dir` (deepest first). */
async function unmountBelow(dir: string): Promise<void> {
  let mounts: string;
  try {
    mounts = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const points = mounts
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p === dir || p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { timeoutMs: 10_000 });
}

export async function startContainerd(t: Teardown, opts: { namespace?: string; snapshotter?: string } = {}): Promise<Containerd> {
  // unix socket paths must stay under ~107 bytes: use /tmp when os.tmpdir() is long
  const base = os.tmpdir().length <= 40 ? os.tmpdir() : '/tmp';
  const root = await mkdtemp(path.join(base, 'ctd-'));
  t.teardown(async () => {
    await unmountBelow(root);
    await cleanup(root);
  });
  const socket = path.join(root, 'c.sock');
  const namespace = opts.namespace ?? 'berth-test';
  const snapshotter = opts.snapshotter ?? ((await overlayWorks()) ? 'overlayfs' : 'native');
  const configFile = path.join(root, 'config.toml');
  await writeFile(
    configFile,
    [
      'version = 2',
      `root = ${tomlStr(path.join(root, 'root'))}`,
      `state = ${tomlStr(path.join(root, 'state'))}`,
      'disabled_plugins = [',
      '  "io.containerd.grpc.v1.cri",',
      '  "io.containerd.snapshotter.v1.aufs",',
      '  "io.containerd.snapshotter.v1.btrfs",',
      '  "io.containerd.snapshotter.v1.zfs",',
      '  "io.containerd.snapshotter.v1.devmapper",',
      ']',
      '',
      '[grpc]',
      `  address = ${tomlStr(socket)}`,
      '',
      '[ttrpc]',
      `  address = ${tomlStr(socket + '.ttrpc')}`,
      '',
      '[debug]',
      '  address = ""',
      '  level = "info"',
      '',
      '[metrics]',
      '  address = ""',
      '',
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = ${tomlStr(path.join(root, 'opt'))}`,
      '',
    ].join('\n'),
  );

  const service = spawnService(`containerd@${root}`, 'containerd', ['--config', configFile]);
  const stop = async (): Promise<void> => {
    await service.stop('SIGTERM', 10_000);
  };
  t.teardown(stop);

  // containerd logs "containerd successfully booted in 0.05s" once serving.
  await service.waitForOutput(/containerd successfully booted/, 30_000);

  const ctr = (args: string[], timeoutMs = 60_000): Promise<RunResult> =>
    run('ctr', ['-a', socket, '-n', namespace, ...args], { timeoutMs });
  const ctrOk = async (args: string[], timeoutMs?: number): Promise<RunResult> => {
    const res = await ctr(args, timeoutMs);
    if (res.code !== 0) throw new Error(`ctr ${args.join(' ')} exited ${res.code}: ${res.stderr || res.stdout}`);
    return res;
  };
  await ctrOk(['version'], 30_000);

  const content = async (): Promise<string[]> =>
    (await ctrOk(['content', 'ls', '-q'])).stdout.split('\n').map((s) => s.trim()).filter((s) => s.startsWith('sha256:'));

  const images = async (): Promise<Map<string, string>> => {
    const out = (await ctrOk(['images', 'ls'])).stdout.split('\n').slice(1);
    const map = new Map<string, string>();
    for (const line of out) {
      // REF TYPE DIGEST SIZE PLATFORMS LABELS
      const cols = line.trim().split(/\s+/);
      const digest = cols.find((c) => c.startsWith('sha256:'));
      if (cols[0] && digest) map.set(cols[0], digest);
    }
    return map;
  };

  const snapshots = async (): Promise<string[]> =>
    (await ctrOk(['snapshots', '--snapshotter', snapshotter, 'ls'])).stdout
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter((k) => k.length > 0);

  const forget = async (ref?: string): Promise<void> => {
    const refs = ref !== undefined ? [ref] : [...(await images()).keys()];
    if (refs.length) {
      const res = await ctr(['images', 'rm', '--sync', ...refs]);
      if (res.code !== 0 && !/not found/i.test(res.stderr)) {
        throw new Error(`ctr images rm ${refs.join(' ')} exited ${res.code}: ${res.stderr}`);
      }
    }
    // Everything left (other images' content, leftovers the GC kept) goes too.
    const left = await content();
    if (left.length) await ctr(['content', 'rm', ...left]);
    // Snapshots: remove leaves first; a parent fails while it still has children, so repeat.
    for (let round = 0; round < 50; round++) {
      const snaps = await snapshots();
      if (snaps.length === 0) break;
      for (const key of snaps) await ctr(['snapshots', '--snapshotter', snapshotter, 'rm', key]);
    }
    const still = await content();
    if (still.length) throw new Error(`forget: content store still holds ${still.join(', ')}`);
    const snapsLeft = await snapshots();
    if (snapsLeft.length) throw new Error(`forget: snapshots left: ${snapsLeft.join(', ')}`);
  };

  const pull = (ref: string, o: PullOptions): Promise<RunResult> => {
    const args = ['images', 'pull', '--hosts-dir', o.hostsDir, '--snapshotter', snapshotter];
    if (o.platform) args.push('--platform', o.platform);
    if (o.allPlatforms) args.push('--all-platforms');
    if (o.user) args.push('--user', o.user);
    args.push(...(o.extraArgs ?? []), ref);
    return ctr(args, o.timeoutMs ?? 60_000);
  };

  return { socket, namespace, root, snapshotter, service, pull, forget, ctr, images, content, stop };
}

export interface HostsTomlOptions {
  /** Fallback `server` URL (default: the mirror itself, so nothing else is tried). */
  server?: string;
  /** Capabilities of the mirror host (default pull, resolve). */
  capabilities?: string[];
  /** `skip_verify = true` on the mirror host (self-signed HTTPS mirrors). */
  skipVerify?: boolean;
  /** `ca = "…"` on the mirror host. */
  caFile?: string;
}

/**
 * Writes `HOSTSDIR/<registry>/hosts.toml`:
 *
 *   server = "<server or mirror>"
 *   [host."<mirrorUrl>"]
 *     capabilities = ["pull", "resolve"]
 *
 * containerd 1.6 rejects a file with `server` but no `[host."…"]` table and then
 * silently uses the default endpoint, so the host table is always written.
 */
export async function writeHostsToml(hostsDir: string, registry: string, mirrorUrl: string, opts: HostsTomlOptions = {}): Promise<string> {
  const dir = path.join(hostsDir, registry);
  await mkdir(dir, { recursive: true });
  const caps = opts.capabilities ?? ['pull', 'resolve'];
  const lines = [
    `server = ${tomlStr(opts.server ?? mirrorUrl)}`,
    '',
    `[host.${tomlStr(mirrorUrl)}]`,
    `  capabilities = [${caps.map(tomlStr).join(', ')}]`,
  ];
  if (opts.skipVerify) lines.push('  skip_verify = true');
  if (opts.caFile) lines.push(`  ca = ${tomlStr(opts.caFile)}`);
  const file = path.join(dir, 'hosts.toml');
  await writeFile(file, lines.join('\n') + '\n');
  return file;
}
