/**
 * berth as the systemd unit runs it: the `Environment=` assignments of
 * systemd/berth.service (NODE_OPTIONS with its heap cap, MALLOC_ARENA_MAX,
 * whatever the unit sets), so the bench measures memory and speed in the
 * configuration that ships, and follows the unit when it changes. The
 * install script's wrapper (/usr/local/bin/berth) adds no node flags of its
 * own, so the environment is all there is to copy. BERTH_* variables are
 * left out: the bench gives berth its config in a file of its own.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export interface UnitEnv {
  file: string;
  env: Record<string, string>;
  /** Assignments not copied (BERTH_*), and EnvironmentFile= lines, for the report's notes. */
  skipped: string[];
}

/** Splits an `Environment=` value into its assignments (systemd's quoting: "…" or '…' around a whole word). */
export function splitAssignments(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let inWord = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (quote) {
      if (ch === '\\' && i + 1 < value.length) cur += value[++i];
      else if (ch === quote) quote = null;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** The environment the unit file sets for the daemon (later assignments win, as in systemd). */
export function unitEnv(file: string): UnitEnv {
  const env: Record<string, string> = {};
  const skipped: string[] = [];
  let section = '';
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (key === 'EnvironmentFile') skipped.push(line);
    if (key !== 'Environment') continue;
    if (value === '') {
      for (const k of Object.keys(env)) delete env[k];
      continue;
    }
    for (const a of splitAssignments(value)) {
      const i = a.indexOf('=');
      if (i <= 0) continue;
      const name = a.slice(0, i);
      if (name.startsWith('BERTH_')) skipped.push(a);
      else env[name] = a.slice(i + 1);
    }
  }
  return { file, env, skipped };
}

/**
 * The unit file for a run: `--unit=PATH`, or none with `--unit=none`; by
 * default the one of the checkout whose build is measured (`--berth=X/dist/cli/main.js`
 * → X/systemd/berth.service), else this checkout's.
 */
export function findUnit(repoRoot: string, arg: string | undefined, main: string | undefined): string | null {
  if (arg === 'none') return null;
  if (arg !== undefined) return path.resolve(arg);
  if (main) {
    const theirs = path.resolve(path.dirname(main), '..', '..', 'systemd', 'berth.service');
    if (existsSync(theirs)) return theirs;
  }
  const ours = path.join(repoRoot, 'systemd', 'berth.service');
  return existsSync(ours) ? ours : null;
}
