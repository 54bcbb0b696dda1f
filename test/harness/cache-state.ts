/**
 * What "the cache is unchanged" means for the air-gap tests: the files under
 * blobs/ (with their sizes), the names under tmp/, and the row count of every
 * content table of the index. Compared before and after a refused import.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';

export interface CacheState {
  files: string;
  tmp: string[];
  rows: Record<string, number>;
  blobs: number;
}

const TABLES = ['blobs', 'manifests', 'refs', 'tags', 'links', 'pins'];

export function cacheState(cacheDir: string): CacheState {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const n of fs.existsSync(d) ? fs.readdirSync(d) : []) {
      const p = path.join(d, n);
      if (fs.statSync(p).isDirectory()) walk(p);
      else files.push(`${path.relative(cacheDir, p)}:${fs.statSync(p).size}`);
    }
  };
  walk(path.join(cacheDir, 'blobs'));
  const tmpDir = path.join(cacheDir, 'tmp');
  const tmp = fs.existsSync(tmpDir) ? fs.readdirSync(tmpDir).sort() : [];
  const rows: Record<string, number> = {};
  const index = path.join(cacheDir, 'index.db');
  if (fs.existsSync(index)) {
    const db = new Database(index, { readonly: true });
    try {
      for (const table of TABLES) rows[table] = (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
    } finally {
      db.close();
    }
  }
  return { files: files.sort().join('\n'), tmp, rows, blobs: rows.blobs ?? 0 };
}

/** path -> size:mtime:sha256 of everything under `dir`, skipping `skip`: what "nothing else was touched" is compared on. */
export function treeSnapshot(dir: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (p === skip) continue;
      if (e.isDirectory()) walk(p);
      else {
        const st = fs.lstatSync(p);
        const sum = st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : 'not-a-file';
        out.set(p, `${st.size}:${st.mtimeMs}:${sum}`);
      }
    }
  };
  walk(dir);
  return out;
}
