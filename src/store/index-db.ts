/**
 * The SQLite index (better-sqlite3, WAL). It is synchronous, so the request
 * path only runs tiny prepared statements; access times are batched in
 * memory and written in one transaction every few seconds, because a write
 * per cache hit would cost more than the hit itself. CLI commands open the
 * same file while the daemon runs (busy_timeout covers short lock waits).
 */
import Database from 'better-sqlite3';
import { MIGRATIONS } from './schema.js';
import type { Database as DB, Statement } from 'better-sqlite3';

export interface AuditEntry {
  at: number;
  registry: string;
  repository: string;
  reference: string;
  digest: string | null;
  method: string;
  /** cache | filled | stale | refused | unauthorized | error */
  decision: string;
  reason: string | null;
  client: string | null;
  username: string | null;
}

/** Everything pinned: the pinned manifests and, recursively, every digest they reference. */
const PINNED_CLOSURE = `WITH RECURSIVE keep(d) AS (
    SELECT digest FROM pins
    UNION SELECT r.child FROM refs r JOIN keep k ON r.parent = k.d
  )`;

export interface BlobRow {
  digest: string;
  size: number;
  created_at: number;
  last_access: number;
}

export interface ManifestRow {
  digest: string;
  media_type: string;
  body: Buffer;
}

export interface TagRow {
  digest: string;
  media_type: string;
  size: number;
  fetched_at: number;
}

export interface IndexOptions {
  readonly?: boolean;
  /** Where failures of background writes go (a full disk): they must never crash the daemon. */
  onBackgroundError?: (err: unknown) => void;
  /** How often batched access times are written. */
  flushIntervalMs?: number;
  now?: () => number;
}

export class Index {
  readonly db: DB;
  private readonly now: () => number;
  private readonly pendingAccess = new Map<string, number>();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly st: {
    getBlob: Statement<[string], BlobRow>;
    putBlob: Statement<[string, number, number, number]>;
    deleteBlob: Statement<[string]>;
    getManifest: Statement<[string], ManifestRow>;
    hasManifest: Statement<[string], { one: number }>;
    putManifest: Statement<[string, string, Buffer, number, number]>;
    putRef: Statement<[string, string]>;
    getTag: Statement<[string, string, string], TagRow>;
    putTag: Statement<[string, string, string, string, string, number, number]>;
    touchTag: Statement<[number, string, string, string]>;
    deleteTag: Statement<[string, string, string]>;
    listTags: Statement<[string, string], { tag: string }>;
    link: Statement<[string, string, string]>;
    isLinked: Statement<[string, string, string], { one: number }>;
    touchBlob: Statement<[number, string]>;
    touchManifest: Statement<[number, string]>;
    blobStats: Statement<[], { bytes: number; blobs: number }>;
    manifestCount: Statement<[], { n: number }>;
    bumpCounter: Statement<[string, number]>;
  };
  private readonly pendingCounters = new Map<string, number>();
  private readonly pendingAudit: AuditEntry[] = [];

  private readonly onBackgroundError: (err: unknown) => void;

  constructor(file: string, opts: IndexOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.onBackgroundError = opts.onBackgroundError ?? (() => undefined);
    this.db = new Database(file, { readonly: opts.readonly ?? false });
    this.db.pragma('busy_timeout = 5000');
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.migrate();
    }
    const db = this.db;
    this.st = {
      getBlob: db.prepare('SELECT digest, size, created_at, last_access FROM blobs WHERE digest = ?'),
      putBlob: db.prepare('INSERT OR REPLACE INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?)'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      getManifest: db.prepare('SELECT digest, media_type, body FROM manifests WHERE digest = ?'),
      hasManifest: db.prepare('SELECT 1 AS one FROM manifests WHERE digest = ?'),
      putManifest: db.prepare('INSERT OR IGNORE INTO manifests (digest, media_type, body, created_at, last_access) VALUES (?, ?, ?, ?, ?)'),
      putRef: db.prepare('INSERT OR IGNORE INTO refs (parent, child) VALUES (?, ?)'),
      getTag: db.prepare('SELECT digest, media_type, size, fetched_at FROM tags WHERE registry = ? AND repository = ? AND tag = ?'),
      putTag: db.prepare('INSERT OR REPLACE INTO tags (registry, repository, tag, digest, media_type, size, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      touchTag: db.prepare('UPDATE tags SET fetched_at = ? WHERE registry = ? AND repository = ? AND tag = ?'),
      deleteTag: db.prepare('DELETE FROM tags WHERE registry = ? AND repository = ? AND tag = ?'),
      listTags: db.prepare('SELECT tag FROM tags WHERE registry = ? AND repository = ? ORDER BY tag'),
      link: db.prepare('INSERT OR IGNORE INTO links (registry, repository, digest) VALUES (?, ?, ?)'),
      isLinked: db.prepare('SELECT 1 AS one FROM links WHERE registry = ? AND repository = ? AND digest = ?'),
      touchBlob: db.prepare('UPDATE blobs SET last_access = MAX(last_access, ?) WHERE digest = ?'),
      touchManifest: db.prepare('UPDATE manifests SET last_access = MAX(last_access, ?) WHERE digest = ?'),
      blobStats: db.prepare('SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS blobs FROM blobs'),
      manifestCount: db.prepare('SELECT COUNT(*) AS n FROM manifests'),
      bumpCounter: db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value'),
    };
    if (!opts.readonly) {
      this.flushTimer = setInterval(() => this.backgroundFlush(), opts.flushIntervalMs ?? 5000);
      this.flushTimer.unref();
    }
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new Error(`the cache index was written by a newer berth (schema ${version}, this berth knows ${MIGRATIONS.length})`);
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  getBlob(digest: string): BlobRow | undefined {
    return this.st.getBlob.get(digest);
  }

  /** Notes that a verified blob is about to be renamed into place (before the rename). */
  beginPublish(digest: string, accessedAt: number): void {
    this.db.prepare('INSERT OR REPLACE INTO publishing (digest, accessed_at) VALUES (?, ?)').run(digest, accessedAt);
  }

  /** The blob is in place: index it and close its journal entry, in one transaction. */
  endPublish(digest: string, size: number, accessedAt: number): void {
    this.db.transaction(() => {
      this.putBlob(digest, size, accessedAt);
      this.db.prepare('DELETE FROM publishing WHERE digest = ?').run(digest);
    })();
  }

  /**
   * Start-up: completes publishes a crash interrupted. A file that made it
   * into blobs/ was verified and fsynced before its rename: index it; one
   * that did not is forgotten. Returns how many were completed.
   */
  recoverPublishes(sizeOnDisk: (digest: string) => number | null): number {
    const rows = this.db.prepare('SELECT digest, accessed_at FROM publishing').all() as { digest: string; accessed_at: number }[];
    let completed = 0;
    for (const r of rows) {
      const size = sizeOnDisk(r.digest);
      if (size !== null) {
        this.endPublish(r.digest, size, r.accessed_at);
        completed++;
      } else this.db.prepare('DELETE FROM publishing WHERE digest = ?').run(r.digest);
    }
    return completed;
  }

  /** `accessedAt`: when the request that brought the blob came (a fill ends later than it starts). */
  putBlob(digest: string, size: number, accessedAt?: number): void {
    const now = this.now();
    this.st.putBlob.run(digest, size, now, Math.min(now, accessedAt ?? now));
  }

  deleteBlob(digest: string): void {
    this.st.deleteBlob.run(digest);
    this.pendingAccess.delete(digest);
  }

  getManifest(digest: string): ManifestRow | undefined {
    return this.st.getManifest.get(digest);
  }

  hasManifest(digest: string): boolean {
    return this.st.hasManifest.get(digest) !== undefined;
  }

  /** Stores a manifest verbatim with the digests it references, in one transaction. */
  putManifest(digest: string, mediaType: string, body: Buffer, children: readonly string[]): void {
    const now = this.now();
    this.db.transaction(() => {
      this.st.putManifest.run(digest, mediaType, body, now, now);
      for (const child of children) this.st.putRef.run(digest, child);
    })();
  }

  getTag(registry: string, repository: string, tag: string): TagRow | undefined {
    return this.st.getTag.get(registry, repository, tag);
  }

  putTag(registry: string, repository: string, tag: string, row: TagRow): void {
    this.st.putTag.run(registry, repository, tag, row.digest, row.media_type, row.size, row.fetched_at);
  }

  touchTag(registry: string, repository: string, tag: string, fetchedAt: number): void {
    this.st.touchTag.run(fetchedAt, registry, repository, tag);
  }

  deleteTag(registry: string, repository: string, tag: string): void {
    this.st.deleteTag.run(registry, repository, tag);
  }

  listTags(registry: string, repository: string): string[] {
    return this.st.listTags.all(registry, repository).map((r) => r.tag);
  }

  link(registry: string, repository: string, digest: string): void {
    this.st.link.run(registry, repository, digest);
  }

  isLinked(registry: string, repository: string, digest: string): boolean {
    return this.st.isLinked.get(registry, repository, digest) !== undefined;
  }

  stats(): { bytes: number; blobs: number; manifests: number } {
    const b = this.st.blobStats.get() ?? { bytes: 0, blobs: 0 };
    return { bytes: b.bytes, blobs: b.blobs, manifests: this.st.manifestCount.get()?.n ?? 0 };
  }

  /** Records a use (at `at`, default now); written with the next batch. Access times never go backwards. */
  touch(digest: string, at: number = this.now()): void {
    const prev = this.pendingAccess.get(digest);
    if (prev === undefined || at > prev) this.pendingAccess.set(digest, at);
  }

  /** Adds to a persisted counter; written with the next batch. */
  bump(name: string, n = 1): void {
    this.pendingCounters.set(name, (this.pendingCounters.get(name) ?? 0) + n);
  }

  private auditTimer: NodeJS.Timeout | null = null;

  /**
   * Records a manifest request. Written within half a second (batched, but
   * `berth audit` in another process should see a refusal at once) or as
   * soon as a burst reaches 1000 entries.
   */
  audit(entry: AuditEntry): void {
    this.pendingAudit.push(entry);
    if (this.pendingAudit.length >= 1000) this.backgroundFlush();
    else if (!this.auditTimer) {
      this.auditTimer = setTimeout(() => {
        this.auditTimer = null;
        this.backgroundFlush();
      }, 500);
      this.auditTimer.unref();
    }
  }

  /** A flush from a timer: a failure is reported, never thrown (flushAccess keeps the batch). */
  private backgroundFlush(): void {
    try {
      this.flushAccess();
    } catch (err) {
      this.onBackgroundError(err);
    }
  }

  /**
   * Writes the batched access times, counters and audit entries in one
   * transaction. On failure (SQLITE_FULL on a full disk) the batch is kept
   * for the next try (bounded: access times and counters are maps; the
   * audit backlog keeps its newest 10 000) and the error is thrown.
   */
  flushAccess(): void {
    if ((this.pendingAccess.size === 0 && this.pendingCounters.size === 0 && this.pendingAudit.length === 0) || !this.db.open) return;
    const batch = [...this.pendingAccess];
    const counters = [...this.pendingCounters];
    const audit = this.pendingAudit.splice(0);
    this.pendingAccess.clear();
    this.pendingCounters.clear();
    const insertAudit = audit.length > 0
      ? this.db.prepare('INSERT INTO audit (at, registry, repository, reference, digest, method, decision, reason, client, username) VALUES (@at, @registry, @repository, @reference, @digest, @method, @decision, @reason, @client, @username)')
      : null;
    try {
      this.db.transaction(() => {
        for (const a of audit) insertAudit!.run(a);
        for (const [digest, at] of batch) {
          this.st.touchBlob.run(at, digest);
          this.st.touchManifest.run(at, digest);
        }
        for (const [name, n] of counters) this.st.bumpCounter.run(name, n);
      })();
    } catch (err) {
      for (const [d, at] of batch) this.touch(d, at);
      for (const [n, v] of counters) this.pendingCounters.set(n, (this.pendingCounters.get(n) ?? 0) + v);
      this.pendingAudit.unshift(...audit.slice(-10_000));
      if (this.pendingAudit.length > 10_000) this.pendingAudit.splice(0, this.pendingAudit.length - 10_000);
      throw err;
    }
  }


  /** The audit record since `since` (epoch ms), oldest first, at most `limit` rows. */
  auditSince(since: number, limit: number): (AuditEntry & { id: number })[] {
    return this.db.prepare('SELECT * FROM audit WHERE at >= ? ORDER BY at, id LIMIT ?').all(since, limit) as (AuditEntry & { id: number })[];
  }

  auditSummary(since: number): { decision: string; n: number }[] {
    return this.db.prepare('SELECT decision, COUNT(*) AS n FROM audit WHERE at >= ? GROUP BY decision ORDER BY decision').all(since) as { decision: string; n: number }[];
  }

  /** Keeps the audit record bounded by age and count. */
  pruneAudit(olderThan: number, keepRows: number): number {
    const byAge = this.db.prepare('DELETE FROM audit WHERE at < ?').run(olderThan).changes;
    const byCount = this.db.prepare('DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?)').run(keepRows).changes;
    return byAge + byCount;
  }

  /** Records an upstream policy refusal (keeps an earlier message when this one has none, as for HEAD). */
  putRefusal(registry: string, repository: string, reference: string, message: string | undefined): void {
    this.db
      .prepare(
        `INSERT INTO refusals (registry, repository, reference, message, at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (registry, repository, reference) DO UPDATE SET at = excluded.at,
           message = CASE WHEN ? THEN excluded.message ELSE refusals.message END`,
      )
      .run(registry, repository, reference, message ?? '', this.now(), message ? 1 : 0);
  }

  getRefusal(registry: string, repository: string, reference: string): { message: string; at: number } | undefined {
    return this.db.prepare('SELECT message, at FROM refusals WHERE registry = ? AND repository = ? AND reference = ?').get(registry, repository, reference) as { message: string; at: number } | undefined;
  }

  clearRefusal(registry: string, repository: string, reference: string): void {
    this.db.prepare('DELETE FROM refusals WHERE registry = ? AND repository = ? AND reference = ?').run(registry, repository, reference);
  }

  /** Manifests berth holds that were fetched through a registry: what Harbor sync needs facts for. */
  manifestLinks(registry: string): { repository: string; digest: string }[] {
    return this.db
      .prepare('SELECT l.repository, l.digest FROM links l JOIN manifests m ON m.digest = l.digest WHERE l.registry = ? ORDER BY l.repository, l.digest')
      .all(registry) as { repository: string; digest: string }[];
  }

  counters(): Record<string, number> {
    const rows = this.db.prepare('SELECT name, value FROM counters').all() as { name: string; value: number }[];
    return Object.fromEntries(rows.map((r) => [r.name, r.value]));
  }

  // --- pins -------------------------------------------------------------

  /** Pins an image reference to a digest; re-pinning a moved tag releases the old digest. */
  pin(image: string, digest: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM pins WHERE image = ?').run(image);
      this.db.prepare('INSERT INTO pins (image, digest, created_at) VALUES (?, ?, ?)').run(image, digest, this.now());
    })();
  }

  /** Removes the pins of an image reference (or of a digest). Returns how many. */
  unpin(imageOrDigest: string): number {
    return this.db.prepare('DELETE FROM pins WHERE image = ? OR digest = ?').run(imageOrDigest, imageOrDigest).changes;
  }

  pins(): { image: string; digest: string; created_at: number }[] {
    return this.db.prepare('SELECT image, digest, created_at FROM pins ORDER BY image').all() as { image: string; digest: string; created_at: number }[];
  }

  pinnedBytes(): number {
    const row = this.db.prepare(`${PINNED_CLOSURE} SELECT COALESCE(SUM(b.size), 0) AS bytes FROM blobs b JOIN keep k ON b.digest = k.d`).get() as { bytes: number };
    return row.bytes;
  }

  /**
   * Unpinned blobs and manifests, least recently used first, in pages: what
   * eviction may take. Blob rows carry their size; manifests their length.
   */
  evictionCandidates(limit: number, afterAccess = -1, afterDigest = ''): { kind: 'blob' | 'manifest'; digest: string; size: number; last_access: number }[] {
    return this.db
      .prepare(
        `${PINNED_CLOSURE}
         SELECT kind, digest, size, last_access FROM (
           SELECT 'blob' AS kind, digest, size, last_access FROM blobs
           UNION ALL
           SELECT 'manifest' AS kind, digest, length(body) AS size, last_access FROM manifests
         ) c
         WHERE c.digest NOT IN (SELECT d FROM keep)
           AND (c.last_access > ? OR (c.last_access = ? AND c.digest > ?))
         ORDER BY c.last_access, c.digest
         LIMIT ?`,
      )
      .all(afterAccess, afterAccess, afterDigest, limit) as { kind: 'blob' | 'manifest'; digest: string; size: number; last_access: number }[];
  }

  deleteManifest(digest: string): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM manifests WHERE digest = ?').run(digest);
      this.db.prepare('DELETE FROM refs WHERE parent = ?').run(digest);
      this.db.prepare('DELETE FROM tags WHERE digest = ?').run(digest);
    })();
    this.pendingAccess.delete(digest);
  }

  /** Bytes counted against max_size: blobs on disk plus manifest bodies. */
  totalBytes(): number {
    const b = this.st.blobStats.get() ?? { bytes: 0, blobs: 0 };
    const m = this.db.prepare('SELECT COALESCE(SUM(length(body)), 0) AS bytes FROM manifests').get() as { bytes: number };
    return b.bytes + m.bytes;
  }

  /** Every blob row, in pages by digest (verify, gc). */
  blobPage(afterDigest: string, limit: number): BlobRow[] {
    return this.db.prepare('SELECT digest, size, created_at, last_access FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?').all(afterDigest, limit) as BlobRow[];
  }

  close(): void {
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.auditTimer) clearTimeout(this.auditTimer);
    this.auditTimer = null;
    this.flushTimer = null;
    if (!this.db.open) return;
    if (!this.db.readonly) this.backgroundFlush();
    this.db.close();
  }
}
