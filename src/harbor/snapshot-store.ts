/**
 * The policy snapshot in berth's SQLite index, so enforcement survives a
 * restart without the uplink. One row, replaced whole on each successful
 * sync: enforcement reads the snapshot from memory, never row by row, and a
 * single JSON bundle keeps save/load atomic. Harbor owns its tables: they
 * are migrated under the name "harbor" (`migrateHarbor`), apart from the
 * index's core schema; tests exec `HARBOR_SCHEMA_SQL` on their own DB.
 */
import type { Database, Statement } from 'better-sqlite3';
import { hasTable, migrateComponent } from '../store/db.js';
import { SNAPSHOT_FORMAT } from './diff.js';
import type { PolicySnapshot } from './types.js';

export const HARBOR_SCHEMA_SQL = `
  CREATE TABLE harbor_sync (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    format INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,
    hash TEXT NOT NULL,
    bundle TEXT NOT NULL
  );
  -- pull-secret credentials Harbor accepted, as salted scrypt hashes (credentials.ts)
  CREATE TABLE harbor_credentials (
    project TEXT NOT NULL,
    username TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    verified_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (project, username)
  ) WITHOUT ROWID;
`;

/**
 * Harbor's migrations. An index made before Harbor kept its own version got
 * these tables from the core's migration 3: it is at version 1 already.
 */
export function migrateHarbor(db: Database): void {
  migrateComponent(db, { name: 'harbor', migrations: [HARBOR_SCHEMA_SQL], legacyVersion: (d) => (hasTable(d, 'harbor_sync') ? 1 : 0) });
}

interface SyncRow {
  format: number;
  synced_at: number;
  hash: string;
  bundle: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Enough shape to trust the bundle we wrote ourselves; a damaged row reads as "no snapshot". */
function looksLikeSnapshot(v: unknown): v is PolicySnapshot {
  if (!isRecord(v)) return false;
  const allow = v['systemAllowlist'];
  return (
    typeof v['syncedAt'] === 'number' &&
    isRecord(allow) &&
    Array.isArray(allow['items']) &&
    isRecord(v['projects']) &&
    isRecord(v['artifacts']) &&
    isRecord(v['projectSyncedAt'])
  );
}

export class SnapshotStore {
  private readonly st: {
    get: Statement<[], SyncRow>;
    put: Statement<[number, number, string, string]>;
    meta: Statement<[], Pick<SyncRow, 'format' | 'synced_at' | 'hash'>>;
  };

  constructor(db: Database) {
    this.st = {
      get: db.prepare('SELECT format, synced_at, hash, bundle FROM harbor_sync WHERE id = 1'),
      put: db.prepare('INSERT OR REPLACE INTO harbor_sync (id, format, synced_at, hash, bundle) VALUES (1, ?, ?, ?, ?)'),
      meta: db.prepare('SELECT format, synced_at, hash FROM harbor_sync WHERE id = 1'),
    };
  }

  save(snapshot: PolicySnapshot, hash: string): void {
    this.st.put.run(SNAPSHOT_FORMAT, snapshot.syncedAt, hash, JSON.stringify(snapshot));
  }

  /** The last saved snapshot, or null when none was saved, it has another format, or it is damaged. */
  load(): PolicySnapshot | null {
    const row = this.st.get.get();
    if (!row || row.format !== SNAPSHOT_FORMAT) return null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(row.bundle);
    } catch {
      return null;
    }
    return looksLikeSnapshot(parsed) ? parsed : null;
  }

  /** The bundle hash saved with the snapshot, or null. */
  hash(): string | null {
    const row = this.st.meta.get();
    return row && row.format === SNAPSHOT_FORMAT ? row.hash : null;
  }

  /** Epoch ms of the last successful sync, or null. */
  syncedAt(): number | null {
    const row = this.st.meta.get();
    return row && row.format === SNAPSHOT_FORMAT ? row.synced_at : null;
  }

  /** Milliseconds since the last successful sync (never negative), or null when there was none. */
  age(now: number): number | null {
    const at = this.syncedAt();
    return at === null ? null : Math.max(0, now - at);
  }
}
