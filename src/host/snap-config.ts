/**
 * The snap's configure hook (snap/hooks/configure runs this with the snap's
 * node): `snap set berth …` settings become $SNAP_DATA/berth.toml.
 *
 *   snap set berth server.listen=127.0.0.1:5050 cache.max-size=50GiB \
 *     upstream.docker.registry=docker.io upstream.docker.url=https://registry-1.docker.io
 *
 *   snap set berth peers.listen=10.0.0.11:5051 peers.key-file=/var/snap/berth/common/site.key \
 *     peers.members=10.0.0.11:5051,10.0.0.12:5051,10.0.0.13:5051
 *
 * Snap option names allow no underscores, so `max-size` is berth's `max_size`.
 * A list key (`peers.members`, `harbor.projects`, `airgap.trust`, …) is a JSON
 * list or one comma-separated string, as its BERTH_* variable takes it.
 * `upstream.<name>.*` are the [[upstream]] entries and `prefetch.<name>.*`
 * the [[prefetch]] ones, in name order (snapd hands options over sorted); no
 * upstream set: berth's built-in docker.io. The cache
 * lives under $SNAP_COMMON (not copied on refresh: it can be many GB) unless
 * cache.dir says otherwise. The result is validated exactly as `berth serve`
 * will load it; an invalid one exits non-zero, which makes snapd roll the
 * `snap set` back, and the running daemon keeps its old file.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'smol-toml';
import { ConfigError, loadConfig } from '../config/load.js';
import { LIST_SECTIONS, TABLE_SECTIONS } from '../config/schema.js';

type Table = Record<string, unknown>;

/** The option groups read with `snapctl get -d`. */
export const SNAP_SECTIONS = ['server', 'cache', 'log', 'harbor', 'upstream', 'peers', 'prefetch', 'airgap'] as const;

const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `max-size` -> `max_size`, recursively for nested tables. */
function tomlKeys(t: Table): Table {
  const out: Table = {};
  for (const [k, v] of Object.entries(t)) {
    if (v === '' || v === null) continue; // snapctl reports an unset option as ""
    out[k.replace(/-/g, '_')] = isTable(v) ? tomlKeys(v) : v;
  }
  return out;
}

/** A list key given as one string (`harbor.projects=a,b`) is comma-separated, as BERTH_* takes it. */
function lists(t: Table, kinds: Readonly<Record<string, string>>): Table {
  for (const [k, v] of Object.entries(t)) {
    if (kinds[k] === 'list' && typeof v === 'string') {
      t[k] = v
        .split(',')
        .map((m) => m.trim())
        .filter((m) => m !== '');
    }
  }
  return t;
}

export class SnapConfigError extends Error {}

/** Settings as `snapctl get -d` prints them -> berth.toml text. */
export function snapSettingsToToml(settings: Table, snapCommon: string): string {
  const doc: Table = {};
  for (const section of ['server', 'cache', 'log', 'harbor', 'peers', 'airgap'] as const) {
    const v = settings[section];
    if (v === undefined || v === '' || v === null) continue;
    if (!isTable(v)) throw new SnapConfigError(`${section} must be a group of options (snap set berth ${section}.<key>=<value>)`);
    const t = lists(tomlKeys(v), TABLE_SECTIONS[section]);
    if (Object.keys(t).length > 0) doc[section] = t;
  }
  const cache = (doc.cache as Table | undefined) ?? {};
  if (cache.dir === undefined) cache.dir = path.join(snapCommon, 'cache');
  doc.cache = cache;

  for (const section of ['upstream', 'prefetch'] as const) {
    const groups = settings[section];
    if (groups === undefined || groups === '' || groups === null) continue;
    const example = section === 'upstream' ? 'upstream.<name>.registry=… upstream.<name>.url=…' : 'prefetch.<name>.image=… prefetch.<name>.platforms=…';
    if (!isTable(groups)) throw new SnapConfigError(`${section} must be named groups: snap set berth ${example}`);
    doc[section] = Object.keys(groups)
      .sort()
      .map((name) => {
        const entry = groups[name];
        if (!isTable(entry)) throw new SnapConfigError(`${section}.${name} must be a group: ${example.replaceAll('<name>', name)}`);
        return lists(tomlKeys(entry), LIST_SECTIONS[section]);
      });
  }
  return '# Written by the berth snap\'s configure hook from `snap set berth …`; edits here are overwritten.\n\n' + stringify(doc);
}

export interface HookEnv {
  SNAP_DATA?: string | undefined;
  SNAP_COMMON?: string | undefined;
  SNAP_INSTANCE_NAME?: string | undefined;
  SNAP_NAME?: string | undefined;
}

function snapctl(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`snapctl ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Writes $SNAP_DATA/berth.toml; restarts the daemon when a file it runs on changed. Returns the exit code. */
export async function runConfigureHook(env: HookEnv, log: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<number> {
  const data = env.SNAP_DATA;
  const common = env.SNAP_COMMON;
  if (!data || !common) {
    log('berth configure hook: SNAP_DATA and SNAP_COMMON must be set (run by snapd)');
    return 1;
  }
  const bin = 'snapctl';
  const file = path.join(data, 'berth.toml');
  const next = file + '.new';
  try {
    const raw = await snapctl(bin, ['get', '-d', ...SNAP_SECTIONS]);
    const settings = JSON.parse(raw === '' ? '{}' : raw) as unknown;
    if (!isTable(settings)) throw new SnapConfigError('snapctl get -d printed no JSON object');
    const text = snapSettingsToToml(settings, common);
    await fs.writeFile(next, text, { mode: 0o600 });
    loadConfig({ file: next, env: {}, cwd: data });
    const before = await fs.readFile(file, 'utf8').catch(() => null);
    if (before === text) {
      await fs.rm(next, { force: true });
      return 0;
    }
    await fs.rename(next, file);
    // On install the daemon is not running yet; snapd starts it after this hook.
    if (before !== null) await snapctl(bin, ['restart', `${env.SNAP_INSTANCE_NAME ?? env.SNAP_NAME ?? 'berth'}.daemon`]);
    return 0;
  } catch (e) {
    await fs.rm(next, { force: true }).catch(() => undefined);
    // In snap option spelling: the user typed cache.max-size, not cache.max_size.
    const msg = e instanceof ConfigError ? (e.key === '' ? e.problem : `${e.key.replace(/_/g, '-')}: ${e.problem}`) : (e as Error).message;
    log(`berth: refused: ${msg}`);
    return 1;
  }
}
