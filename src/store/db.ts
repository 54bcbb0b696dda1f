/**
 * The SQLite file behind the index (better-sqlite3, WAL), and the two things
 * every part that keeps tables in it shares: migrations, and deferred writes.
 *
 * Migrations: the core tables (store/schema.ts) are numbered by SQLite's
 * `user_version`, as they always were; a part that owns its own tables
 * (Harbor) numbers them in `schema_versions` under its own name, so neither
 * needs to know the other's schema.
 *
 * Deferred writes: a cache hit must not cost a write, so access times,
 * counters and audit entries wait in memory and are written together, in one
 * transaction, every few seconds. Each part hands its pending batch to the
 * flush; a batch that fails to write (a full disk) is put back for the next.
 */
import Database from 'better-sqlite3';
import type { Database as DB } from 'better-sqlite3';

export type { DB };

export function openDatabase(file: string, opts: { readonly?: boolean } = {}): DB {
  const db = new Database(file, { readonly: opts.readonly ?? false });
  db.pragma('busy_timeout = 5000');
  if (!opts.readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
  }
  return db;
}

/** Runs the core migrations not yet run, numbered by `user_version`. */
export function migrateCore(db: DB, migrations: readonly string[]): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > migrations.length) {
    throw new Error(`the cache index was written by a newer berth (schema ${version}, this berth knows ${migrations.length})`);
  }
  for (let v = version; v < migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

export interface Component {
  /** The name its version is kept under in `schema_versions`. */
  name: string;
  migrations: readonly string[];
  /** For an index made before components kept their own version: the version already in place. */
  legacyVersion?: (db: DB) => number;
}

/** Runs a component's migrations not yet run, numbered in `schema_versions`. */
export function migrateComponent(db: DB, c: Component): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID');
  const row = db.prepare('SELECT version FROM schema_versions WHERE component = ?').get(c.name) as { version: number } | undefined;
  const version = row?.version ?? c.legacyVersion?.(db) ?? 0;
  if (version > c.migrations.length) {
    throw new Error(`the cache index's ${c.name} tables were written by a newer berth (schema ${version}, this berth knows ${c.migrations.length})`);
  }
  const set = db.prepare('INSERT OR REPLACE INTO schema_versions (component, version) VALUES (?, ?)');
  if (!row) set.run(c.name, version);
  for (let v = version; v < c.migrations.length; v++) {
    db.transaction(() => {
      db.exec(c.migrations[v]!);
      set.run(c.name, v + 1);
    })();
  }
}

/** Whether a table exists (for `legacyVersion`). */
export function hasTable(db: DB, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/** What a part has waiting to be written: `write` runs inside the flush's transaction. */
export interface Batch {
  write(): void;
  /** The transaction failed: keep the batch for the next flush. */
  putBack(): void;
}

export interface Deferred {
  /** Takes what is pending (null: nothing). */
  take(): Batch | null;
}

/** Writes every part's pending batch in one transaction; on failure puts them all back and throws. */
export function flushDeferred(db: DB, parts: readonly Deferred[]): void {
  if (!db.open) return;
  const batches = parts.map((p) => p.take()).filter((b): b is Batch => b !== null);
  if (batches.length === 0) return;
  try {
    db.transaction(() => {
      for (const b of batches) b.write();
    })();
  } catch (err) {
    for (const b of batches) b.putBack();
    throw err;
  }
}
