/**
 * The index's core tables: blobs, manifests (verbatim bytes) with the
 * digests they reference, tags, repository links, and the publish journal.
 * Only the content store (cache/) uses this class: it is what keeps these
 * tables and the files on disk in agreement. Every statement is prepared
 * once; access times are deferred (see db.ts).
 *
 * Tags are kept in memory once read (a manifest by tag is then a Map hit, not
 * a SQLite read transaction: ~16 µs each, most of it locking). The copy stays
 * what the index holds: this connection's own writes update it, and a commit
 * by any other connection (`berth import` or `berth prefetch` in another
 * process) changes `PRAGMA data_version`, which empties it. That pragma is a
 * read transaction too, so it is asked once per event-loop turn, not per
 * read: a commit is seen by the first request of the next turn.
 */
import type { Statement } from 'better-sqlite3';
import { flushDeferred, type Batch, type DB, type Deferred } from './db.js';
import { PINNED_CLOSURE } from './schema.js';

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

export interface RepositoryLink {
  registry: string;
  repository: string;
}

/** The journal's links column: what we wrote, or nothing when it is not that. */
function parseLinks(text: string): RepositoryLink[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v.filter((l): l is RepositoryLink => typeof l?.registry === 'string' && typeof l?.repository === 'string') : [];
  } catch {
    return [];
  }
}

export interface EvictionCandidate {
  kind: 'blob' | 'manifest';
  digest: string;
  size: number;
  last_access: number;
}

/** Tags kept in memory at most; past it the oldest read goes first. */
const MAX_CACHED_TAGS = 10_000;

const tagKey = (registry: string, repository: string, tag: string): string => `${registry}\0${repository}\0${tag}`;

export class ContentIndex implements Deferred {
  private readonly pendingAccess = new Map<string, number>();
  private readonly st: ReturnType<typeof prepare>;
  /** Tags as the index holds them (null: no such tag), valid for `tagsVersion`. */
  private readonly tags = new Map<string, Readonly<TagRow> | null>();
  private tagsVersion = -1;
  /** data_version was read in this event-loop turn. */
  private versionChecked = false;
  private readonly nextTurn = (): void => {
    this.versionChecked = false;
  };

  constructor(readonly db: DB, private readonly now: () => number) {
    this.st = prepare(db);
  }

  getBlob(digest: string): BlobRow | undefined {
    return this.st.getBlob.get(digest);
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

  /** Notes that a verified blob is about to be renamed into place (before the rename), with the links it gets. */
  beginPublish(digest: string, accessedAt: number, links: readonly RepositoryLink[] = []): void {
    this.st.beginPublish.run(digest, accessedAt, JSON.stringify(links));
  }

  /** The blob is in place: index it (and link it) and close its journal entry, in one transaction. */
  endPublish(digest: string, size: number, accessedAt: number, links: readonly RepositoryLink[] = []): void {
    this.db.transaction(() => {
      this.putBlob(digest, size, accessedAt);
      for (const l of links) this.st.link.run(l.registry, l.repository, digest);
      this.st.endPublish.run(digest);
    })();
  }

  /**
   * Start-up: completes publishes a crash interrupted. A file that made it
   * into blobs/ was verified and fsynced before its rename: index it; one
   * that did not is forgotten. Returns how many were completed.
   */
  recoverPublishes(sizeOnDisk: (digest: string) => number | null): number {
    let completed = 0;
    for (const r of this.st.publishing.all()) {
      const size = sizeOnDisk(r.digest);
      if (size !== null) {
        this.endPublish(r.digest, size, r.accessed_at, parseLinks(r.links));
        completed++;
      } else this.st.endPublish.run(r.digest);
    }
    return completed;
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

  deleteManifest(digest: string): void {
    this.db.transaction(() => {
      this.st.deleteManifest.run(digest);
      this.st.deleteRefs.run(digest);
      this.st.deleteTagsOf.run(digest);
    })();
    // Which tags pointed at it is not known here; eviction and gc are rare.
    this.tags.clear();
    this.pendingAccess.delete(digest);
  }

  /** Every manifest, for verify. */
  allManifests(): IterableIterator<{ digest: string; body: Buffer }> {
    return this.st.allManifests.iterate();
  }

  /** The tag's row (frozen: it may be the in-memory copy). */
  getTag(registry: string, repository: string, tag: string): Readonly<TagRow> | undefined {
    this.dropTagsOthersChanged();
    const key = tagKey(registry, repository, tag);
    const kept = this.tags.get(key);
    if (kept !== undefined) return kept ?? undefined;
    const row = this.st.getTag.get(registry, repository, tag);
    const frozen = row ? Object.freeze(row) : undefined;
    this.keepTag(key, frozen ?? null);
    return frozen;
  }

  putTag(registry: string, repository: string, tag: string, row: TagRow): void {
    this.st.putTag.run(registry, repository, tag, row.digest, row.media_type, row.size, row.fetched_at);
    this.keepTag(tagKey(registry, repository, tag), Object.freeze({ digest: row.digest, media_type: row.media_type, size: row.size, fetched_at: row.fetched_at }));
  }

  touchTag(registry: string, repository: string, tag: string, fetchedAt: number): void {
    const changed = this.st.touchTag.run(fetchedAt, registry, repository, tag).changes > 0;
    const key = tagKey(registry, repository, tag);
    const kept = this.tags.get(key);
    this.keepTag(key, changed && kept ? Object.freeze({ ...kept, fetched_at: fetchedAt }) : changed ? undefined : null);
  }

  deleteTag(registry: string, repository: string, tag: string): void {
    this.st.deleteTag.run(registry, repository, tag);
    this.keepTag(tagKey(registry, repository, tag), null);
  }

  /** How many tags are held in memory (tests). */
  cachedTags(): number {
    return this.tags.size;
  }

  /** Empties the tag copy when another connection has committed since it was filled; asked once per turn. */
  private dropTagsOthersChanged(): void {
    if (this.versionChecked) return;
    this.versionChecked = true;
    setImmediate(this.nextTurn);
    const version = this.st.dataVersion.get() as number;
    if (version !== this.tagsVersion) {
      this.tags.clear();
      this.tagsVersion = version;
    }
  }

  /**
   * Remembers a row this connection read or wrote (undefined: not known,
   * read it next time). Inside a transaction the row may yet be rolled back:
   * then it is only forgotten, and read again.
   */
  private keepTag(key: string, row: Readonly<TagRow> | null | undefined): void {
    this.tags.delete(key);
    if (row === undefined || this.db.inTransaction) return;
    if (this.tags.size >= MAX_CACHED_TAGS) this.tags.delete(this.tags.keys().next().value!);
    this.tags.set(key, row);
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

  /** Manifests berth holds that were fetched through a registry: what Harbor sync needs facts for. */
  manifestLinks(registry: string): { repository: string; digest: string }[] {
    return this.st.manifestLinks.all(registry);
  }

  stats(): { bytes: number; blobs: number; manifests: number } {
    const b = this.st.blobStats.get() ?? { bytes: 0, blobs: 0 };
    return { bytes: b.bytes, blobs: b.blobs, manifests: this.st.manifestCount.get()?.n ?? 0 };
  }

  /** Bytes counted against max_size: blobs on disk plus manifest bodies. */
  totalBytes(): number {
    const b = this.st.blobStats.get() ?? { bytes: 0, blobs: 0 };
    return b.bytes + (this.st.manifestBytes.get()?.bytes ?? 0);
  }

  /** Every blob row, in pages by digest (verify, gc). */
  blobPage(afterDigest: string, limit: number): BlobRow[] {
    return this.st.blobPage.all(afterDigest, limit);
  }

  /**
   * Unpinned blobs and manifests, least recently used first, in pages: what
   * eviction may take. Blob rows carry their size; manifests their length.
   */
  evictionCandidates(limit: number, afterAccess = -1, afterDigest = ''): EvictionCandidate[] {
    return this.st.evictionCandidates.all(afterAccess, afterAccess, afterDigest, limit);
  }

  /**
   * Every eviction candidate, in the same order, read `pageSize` rows at a
   * time as the caller goes on (rows deleted meanwhile do not disturb it).
   */
  *eachEvictionCandidate(pageSize = 200): Generator<EvictionCandidate> {
    let access = -1;
    let digest = '';
    for (;;) {
      const page = this.evictionCandidates(pageSize, access, digest);
      if (page.length === 0) return;
      for (const c of page) {
        access = c.last_access;
        digest = c.digest;
        yield c;
      }
    }
  }

  /** Records a use (at `at`, default now); written with the next batch. Access times never go backwards. */
  touch(digest: string, at: number = this.now()): void {
    const prev = this.pendingAccess.get(digest);
    if (prev === undefined || at > prev) this.pendingAccess.set(digest, at);
  }

  /** Writes the batched access times now (eviction ranks by them); throws on failure, keeping them. */
  flushAccess(): void {
    flushDeferred(this.db, [this]);
  }

  take(): Batch | null {
    if (this.pendingAccess.size === 0) return null;
    const batch = [...this.pendingAccess];
    this.pendingAccess.clear();
    return {
      write: () => {
        for (const [digest, at] of batch) {
          this.st.touchBlob.run(at, digest);
          this.st.touchManifest.run(at, digest);
        }
      },
      putBack: () => {
        for (const [d, at] of batch) this.touch(d, at);
      },
    };
  }
}

function prepare(db: DB) {
  return {
    getBlob: db.prepare('SELECT digest, size, created_at, last_access FROM blobs WHERE digest = ?') as Statement<[string], BlobRow>,
    putBlob: db.prepare('INSERT OR REPLACE INTO blobs (digest, size, created_at, last_access) VALUES (?, ?, ?, ?)') as Statement<[string, number, number, number]>,
    deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?') as Statement<[string]>,
    beginPublish: db.prepare('INSERT OR REPLACE INTO publishing (digest, accessed_at, links) VALUES (?, ?, ?)') as Statement<[string, number, string]>,
    endPublish: db.prepare('DELETE FROM publishing WHERE digest = ?') as Statement<[string]>,
    publishing: db.prepare('SELECT digest, accessed_at, links FROM publishing') as Statement<[], { digest: string; accessed_at: number; links: string }>,
    getManifest: db.prepare('SELECT digest, media_type, body FROM manifests WHERE digest = ?') as Statement<[string], ManifestRow>,
    hasManifest: db.prepare('SELECT 1 AS one FROM manifests WHERE digest = ?') as Statement<[string], { one: number }>,
    putManifest: db.prepare('INSERT OR IGNORE INTO manifests (digest, media_type, body, created_at, last_access) VALUES (?, ?, ?, ?, ?)') as Statement<[string, string, Buffer, number, number]>,
    putRef: db.prepare('INSERT OR IGNORE INTO refs (parent, child) VALUES (?, ?)') as Statement<[string, string]>,
    deleteManifest: db.prepare('DELETE FROM manifests WHERE digest = ?') as Statement<[string]>,
    deleteRefs: db.prepare('DELETE FROM refs WHERE parent = ?') as Statement<[string]>,
    deleteTagsOf: db.prepare('DELETE FROM tags WHERE digest = ?') as Statement<[string]>,
    allManifests: db.prepare('SELECT digest, body FROM manifests') as Statement<[], { digest: string; body: Buffer }>,
    getTag: db.prepare('SELECT digest, media_type, size, fetched_at FROM tags WHERE registry = ? AND repository = ? AND tag = ?') as Statement<[string, string, string], TagRow>,
    putTag: db.prepare('INSERT OR REPLACE INTO tags (registry, repository, tag, digest, media_type, size, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?)') as Statement<[string, string, string, string, string, number, number]>,
    touchTag: db.prepare('UPDATE tags SET fetched_at = ? WHERE registry = ? AND repository = ? AND tag = ?') as Statement<[number, string, string, string]>,
    deleteTag: db.prepare('DELETE FROM tags WHERE registry = ? AND repository = ? AND tag = ?') as Statement<[string, string, string]>,
    dataVersion: db.prepare('PRAGMA data_version').pluck() as Statement<[], number>,
    listTags: db.prepare('SELECT tag FROM tags WHERE registry = ? AND repository = ? ORDER BY tag') as Statement<[string, string], { tag: string }>,
    link: db.prepare('INSERT OR IGNORE INTO links (registry, repository, digest) VALUES (?, ?, ?)') as Statement<[string, string, string]>,
    isLinked: db.prepare('SELECT 1 AS one FROM links WHERE registry = ? AND repository = ? AND digest = ?') as Statement<[string, string, string], { one: number }>,
    manifestLinks: db.prepare(
      'SELECT l.repository, l.digest FROM links l JOIN manifests m ON m.digest = l.digest WHERE l.registry = ? ORDER BY l.repository, l.digest',
    ) as Statement<[string], { repository: string; digest: string }>,
    touchBlob: db.prepare('UPDATE blobs SET last_access = MAX(last_access, ?) WHERE digest = ?') as Statement<[number, string]>,
    touchManifest: db.prepare('UPDATE manifests SET last_access = MAX(last_access, ?) WHERE digest = ?') as Statement<[number, string]>,
    blobStats: db.prepare('SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS blobs FROM blobs') as Statement<[], { bytes: number; blobs: number }>,
    manifestCount: db.prepare('SELECT COUNT(*) AS n FROM manifests') as Statement<[], { n: number }>,
    manifestBytes: db.prepare('SELECT COALESCE(SUM(length(body)), 0) AS bytes FROM manifests') as Statement<[], { bytes: number }>,
    blobPage: db.prepare('SELECT digest, size, created_at, last_access FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?') as Statement<[string, number], BlobRow>,
    evictionCandidates: db.prepare(
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
    ) as Statement<[number, number, string, number], EvictionCandidate>,
  };
}
