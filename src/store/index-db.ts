/**
 * The SQLite index (better-sqlite3, WAL), as the parts that keep tables in
 * it: content (blobs, manifests, tags, links: only the content store in
 * cache/ uses it), pins, the audit record, persisted counters and upstream
 * refusals. It is synchronous, so the request path only runs tiny prepared
 * statements; deferred writes (access times, counters, audit entries) go in
 * one transaction every few seconds. CLI commands open the same file while
 * the daemon runs (busy_timeout covers short lock waits). Harbor keeps its
 * own tables in the same file (harbor/schema.ts) through `db`.
 */
import { flushDeferred, migrateCore, openDatabase, type DB, type Deferred } from './db.js';
import { MIGRATIONS } from './schema.js';
import { ContentIndex } from './content-index.js';
import { Pins } from './pins.js';
import { AuditLog, Counters } from './audit.js';
import { Refusals } from './refusals.js';

export type { BlobRow, ManifestRow, TagRow } from './content-index.js';
export type { AuditEntry } from './audit.js';

export interface IndexOptions {
  readonly?: boolean;
  /** Where failures of background writes go (a full disk): they must never crash the daemon. */
  onBackgroundError?: (err: unknown) => void;
  /** How often deferred writes are written. */
  flushIntervalMs?: number;
  now?: () => number;
}

export class Index {
  readonly db: DB;
  readonly content: ContentIndex;
  readonly pins: Pins;
  readonly audit: AuditLog;
  readonly counters: Counters;
  readonly refusals: Refusals;
  private readonly deferred: readonly Deferred[];
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly onBackgroundError: (err: unknown) => void;

  constructor(file: string, opts: IndexOptions = {}) {
    const now = opts.now ?? Date.now;
    this.onBackgroundError = opts.onBackgroundError ?? (() => undefined);
    this.db = openDatabase(file, { readonly: opts.readonly ?? false });
    if (!opts.readonly) migrateCore(this.db, MIGRATIONS);
    this.content = new ContentIndex(this.db, now);
    this.pins = new Pins(this.db, now);
    this.audit = new AuditLog(this.db, () => this.backgroundFlush());
    this.counters = new Counters(this.db);
    this.refusals = new Refusals(this.db, now);
    this.deferred = [this.audit, this.content, this.counters];
    if (!opts.readonly) {
      this.flushTimer = setInterval(() => this.backgroundFlush(), opts.flushIntervalMs ?? 5000);
      this.flushTimer.unref();
    }
  }

  /** A flush from a timer: a failure is reported, never thrown (the batches are kept). */
  private backgroundFlush(): void {
    try {
      this.flush();
    } catch (err) {
      this.onBackgroundError(err);
    }
  }

  /**
   * Writes the deferred access times, counters and audit entries in one
   * transaction. On failure (SQLITE_FULL on a full disk) the batches are
   * kept for the next try (bounded) and the error is thrown.
   */
  flush(): void {
    flushDeferred(this.db, this.deferred);
  }

  close(): void {
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = null;
    this.audit.stop();
    if (!this.db.open) return;
    if (!this.db.readonly) this.backgroundFlush();
    this.db.close();
  }
}
