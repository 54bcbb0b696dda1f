/**
 * Reversible changes to containerd's hosts directory. Next to each
 * `<dir>/<registry>/hosts.toml` berth touches it keeps one of:
 *
 *   hosts.toml.berth-backup    the original file, a hard link to its inode (same
 *                              bytes, mode, owner, mtime); written before berth's
 *                              first change and never again
 *   hosts.toml.berth-created   a marker: there was no hosts.toml before berth;
 *                              its content says whether berth made the directory too
 *
 * and `<dir>/.berth-created` when berth had to create the hosts directory itself.
 *
 * containerd only reads `hosts.toml` (and certificate files when there is no
 * hosts.toml), so these siblings are inert. `--undo` renames the backup back
 * over hosts.toml (the original inode returns) or removes what berth created;
 * it finds them by scanning the directory, so it also undoes registries that
 * have since left berth's config.
 *
 * Work is planned first (read only), then applied: `--dry-run` prints the plan
 * and writes nothing; applying an unchanged plan writes nothing either.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { isManaged, mergeBerth, parseHostsToml, renderHostsToml, sameUrl, type HostsDoc } from './hosts-toml.js';
import { registryDirName } from './targets.js';

export const HOSTS_FILE = 'hosts.toml';
export const BACKUP_SUFFIX = '.berth-backup';
export const CREATED_SUFFIX = '.berth-created';
const TEMP_SUFFIX = '.berth-tmp';
const CREATED_DIR = 'directory\n';
const CREATED_FILE = 'file\n';
/** In the hosts directory itself when berth had to create it (containerd never looks up a registry by this name). */
export const DIR_MARKER = '.berth-created';

export type ChangeKind = 'create' | 'update' | 'unchanged' | 'restore' | 'remove' | 'skip';

export interface FileChange {
  registry: string;
  file: string;
  kind: ChangeKind;
  /** Current content (null: no file). */
  before: string | null;
  /** Content once applied (null: no file). For 'skip', equal to before. */
  after: string | null;
  notes: string[];
}

export interface Plan {
  hostsDir: string;
  changes: FileChange[];
}

export interface Target {
  registry: string;
  /** The upstream's URL: `server` of a new file, so containerd can still pull when berth cannot help. */
  upstreamUrl: string;
  /** The upstream's ca_file, for the fallback `server`. */
  upstreamCa?: string;
}

export interface ConfigureOptions {
  hostsDir: string;
  targets: Target[];
  berthUrl: string;
  noFallback: boolean;
  ca?: string;
}

/** A text file's contents, or null when it does not exist (other errors are thrown). */
export async function readOrNull(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

function paths(hostsDir: string, registry: string) {
  const dir = path.join(hostsDir, registryDirName(registry));
  const file = path.join(dir, HOSTS_FILE);
  return { dir, file, backup: file + BACKUP_SUFFIX, created: file + CREATED_SUFFIX, temp: file + TEMP_SUFFIX };
}

/** The document to merge berth into: the file as it is, or the original when berth's own no-fallback file is being turned back. */
async function baseDoc(p: ReturnType<typeof paths>, before: string | null, opts: ConfigureOptions): Promise<HostsDoc | null> {
  if (before === null) return null;
  const current = parseHostsToml(before, p.file);
  if (!opts.noFallback && current.server !== undefined && sameUrl(current.server, opts.berthUrl)) {
    const original = await readOrNull(p.backup);
    if (original !== null) return parseHostsToml(original, p.backup);
  }
  return current;
}

async function planTarget(t: Target, opts: ConfigureOptions): Promise<FileChange> {
  const p = paths(opts.hostsDir, t.registry);
  const before = await readOrNull(p.file);
  const base = await baseDoc(p, before, opts);
  const mergeOpts = {
    berthUrl: opts.berthUrl,
    noFallback: opts.noFallback,
    fallbackServer: t.upstreamUrl,
    ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
    ...(t.upstreamCa !== undefined ? { serverCa: t.upstreamCa } : {}),
  };
  const { doc, notes } = mergeBerth(base, mergeOpts);
  const after = renderHostsToml(doc);
  const kind: ChangeKind = before === after ? 'unchanged' : before === null ? 'create' : 'update';
  if (kind !== 'unchanged' && before !== null && !(await exists(p.backup)) && !(await exists(p.created))) {
    notes.push(`the original is kept as ${path.basename(p.backup)}`);
  }
  return { registry: t.registry, file: p.file, kind, before, after, notes: kind === 'unchanged' ? [] : notes };
}

async function planRestore(hostsDir: string, registry: string): Promise<FileChange | null> {
  const p = paths(hostsDir, registry);
  const backup = await readOrNull(p.backup);
  const created = await readOrNull(p.created);
  if (backup === null && created === null) return null;
  const before = await readOrNull(p.file);
  if (before !== null && !isManaged(before)) {
    const left = backup !== null ? `; the original is in ${p.backup}` : '';
    return { registry, file: p.file, kind: 'skip', before, after: before, notes: [`left alone: changed since berth wrote it (no berth header)${left}`] };
  }
  if (backup !== null) return { registry, file: p.file, kind: 'restore', before, after: backup, notes: [] };
  return { registry, file: p.file, kind: 'remove', before, after: null, notes: [] };
}

/** Registry directories holding a berth backup or marker. */
async function touchedRegistries(hostsDir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = (await fs.readdir(hostsDir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const found: string[] = [];
  for (const name of entries.sort()) {
    const base = path.join(hostsDir, name, HOSTS_FILE);
    if ((await exists(base + BACKUP_SUFFIX)) || (await exists(base + CREATED_SUFFIX))) found.push(name);
  }
  return found;
}

/** Every target merged; registries berth touched earlier but no longer mirrors are restored. */
export async function planConfigure(opts: ConfigureOptions): Promise<Plan> {
  const changes: FileChange[] = [];
  for (const t of opts.targets) changes.push(await planTarget(t, opts));
  const wanted = new Set(opts.targets.map((t) => t.registry));
  for (const registry of await touchedRegistries(opts.hostsDir)) {
    if (wanted.has(registry)) continue;
    const c = await planRestore(opts.hostsDir, registry);
    if (c) changes.push({ ...c, notes: [...c.notes, 'no longer an [[upstream]] of berth'] });
  }
  return { hostsDir: opts.hostsDir, changes };
}

export async function planUndo(hostsDir: string): Promise<Plan> {
  const changes: FileChange[] = [];
  for (const registry of await touchedRegistries(hostsDir)) {
    const c = await planRestore(hostsDir, registry);
    if (c) changes.push(c);
  }
  return { hostsDir, changes };
}

/** Write-to-temp, fsync, rename: containerd reads hosts.toml on every pull and must never see half a file. */
async function writeAtomic(file: string, temp: string, text: string, mode: number): Promise<void> {
  const fh = await fs.open(temp, 'w', mode);
  try {
    await fh.writeFile(text);
    await fh.chmod(mode);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(temp, file);
}

async function applyWrite(c: FileChange, hostsDir: string): Promise<void> {
  const p = paths(hostsDir, c.registry);
  let madeDir = false;
  try {
    await fs.mkdir(p.dir);
    madeDir = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const hasBackup = await exists(p.backup);
  const hasMarker = await exists(p.created);
  let mode = 0o644;
  if (c.before !== null) {
    mode = (await fs.stat(p.file)).mode & 0o7777;
    if (!hasBackup && !hasMarker) {
      try {
        await fs.link(p.file, p.backup);
      } catch {
        // a filesystem without hard links: a copy keeps the bytes and the mode
        await fs.copyFile(p.file, p.backup, fs.constants.COPYFILE_EXCL);
      }
    }
  } else if (!hasBackup && !hasMarker) {
    await fs.writeFile(p.created, madeDir ? CREATED_DIR : CREATED_FILE, { flag: 'wx' });
  }
  await writeAtomic(p.file, p.temp, c.after ?? '', mode);
}

async function applyUndo(c: FileChange, hostsDir: string): Promise<void> {
  const p = paths(hostsDir, c.registry);
  if (c.kind === 'restore') {
    await fs.rename(p.backup, p.file);
    await fs.rm(p.created, { force: true });
    return;
  }
  const marker = await readOrNull(p.created);
  await fs.rm(p.file, { force: true });
  await fs.rm(p.created, { force: true });
  if (marker === CREATED_DIR) {
    try {
      await fs.rmdir(p.dir);
    } catch (e) {
      // someone put other files there since: their directory now
      if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}

/** A hosts directory berth had to create is removed again once nothing but this marker is left in it. */
async function ensureHostsDir(hostsDir: string): Promise<void> {
  if (await exists(hostsDir)) return;
  await fs.mkdir(hostsDir, { recursive: true });
  await fs.writeFile(path.join(hostsDir, DIR_MARKER), CREATED_DIR);
}

async function removeHostsDirIfOurs(hostsDir: string): Promise<void> {
  const names = await fs.readdir(hostsDir).catch(() => null);
  if (names === null || names.length !== 1 || names[0] !== DIR_MARKER) return;
  await fs.rm(path.join(hostsDir, DIR_MARKER));
  await fs.rmdir(hostsDir).catch(() => undefined);
}

export async function applyPlan(plan: Plan): Promise<void> {
  if (plan.changes.some((c) => c.kind === 'create' || c.kind === 'update')) await ensureHostsDir(plan.hostsDir);
  for (const c of plan.changes) {
    if (c.kind === 'create' || c.kind === 'update') await applyWrite(c, plan.hostsDir);
    else if (c.kind === 'restore' || c.kind === 'remove') await applyUndo(c, plan.hostsDir);
  }
  await removeHostsDirIfOurs(plan.hostsDir);
}
