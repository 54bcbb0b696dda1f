/**
 * The index's core schema, as an ordered list of migrations: the index
 * records how many it has run (PRAGMA user_version) and runs the rest at
 * start-up. Append only; never edit a migration that has shipped.
 *
 * One exception, made once: migration 3 used to create Harbor's tables too.
 * Harbor now owns them (harbor/schema.ts, versioned under its own name in
 * `schema_versions`); an index that ran the old migration 3 already has
 * them, and Harbor's migrations recognise that.
 */

export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE blobs (
     digest TEXT PRIMARY KEY,
     size INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     last_access INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE manifests (
     digest TEXT PRIMARY KEY,
     media_type TEXT NOT NULL,
     body BLOB NOT NULL,
     created_at INTEGER NOT NULL,
     last_access INTEGER NOT NULL
   ) WITHOUT ROWID;
   -- children a manifest names (layers, config, index entries): what a pin keeps
   CREATE TABLE refs (
     parent TEXT NOT NULL,
     child TEXT NOT NULL,
     PRIMARY KEY (parent, child)
   ) WITHOUT ROWID;
   CREATE INDEX refs_child ON refs (child);
   CREATE TABLE tags (
     registry TEXT NOT NULL,
     repository TEXT NOT NULL,
     tag TEXT NOT NULL,
     digest TEXT NOT NULL,
     media_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     fetched_at INTEGER NOT NULL,
     PRIMARY KEY (registry, repository, tag)
   ) WITHOUT ROWID;
   -- which repository a digest was fetched through (content is served per repository)
   CREATE TABLE links (
     registry TEXT NOT NULL,
     repository TEXT NOT NULL,
     digest TEXT NOT NULL,
     PRIMARY KEY (registry, repository, digest)
   ) WITHOUT ROWID;`,
  // 2: pins (prefetched and imported images, never evicted with all they reference) and
  // counters the daemon persists so that `berth status` can report them from another process.
  `CREATE TABLE pins (
     image TEXT NOT NULL,
     digest TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (image, digest)
   ) WITHOUT ROWID;
   CREATE INDEX pins_digest ON pins (digest);
   CREATE TABLE counters (
     name TEXT PRIMARY KEY,
     value INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX blobs_lru ON blobs (last_access);
   CREATE INDEX manifests_lru ON manifests (last_access);`,
  // 3: the audit record of manifest requests (an edge site's only witness of who pulled what).
  `CREATE TABLE audit (
       id INTEGER PRIMARY KEY,
       at INTEGER NOT NULL,
       registry TEXT NOT NULL,
       repository TEXT NOT NULL,
       reference TEXT NOT NULL,
       digest TEXT,
       method TEXT NOT NULL,
       decision TEXT NOT NULL,
       reason TEXT,
       client TEXT,
       username TEXT
     );
     CREATE INDEX audit_at ON audit (at);`,
  // 4: refusals an upstream's own policy gave (Harbor's 412), kept so they hold offline.
  `CREATE TABLE refusals (
     registry TEXT NOT NULL,
     repository TEXT NOT NULL,
     reference TEXT NOT NULL,
     message TEXT NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (registry, repository, reference)
   ) WITHOUT ROWID;`,
  // 5: blobs between their rename into blobs/ and their index row. Start-up completes any
  // publish a crash interrupted (usually none): no verified file is left unknown to the index.
  `CREATE TABLE publishing (
     digest TEXT PRIMARY KEY,
     accessed_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // 6: the repositories a publish links the blob to, so that completing it after a crash
  // keeps them (JSON list of {registry, repository}).
  `ALTER TABLE publishing ADD COLUMN links TEXT NOT NULL DEFAULT '[]';`,
];

/** Everything pinned: the pinned manifests and, recursively, every digest they reference. */
export const PINNED_CLOSURE = `WITH RECURSIVE keep(d) AS (
    SELECT digest FROM pins
    UNION SELECT r.child FROM refs r JOIN keep k ON r.parent = k.d
  )`;
