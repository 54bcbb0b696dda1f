/**
 * What survives a restart: the policy snapshot in SQLite, and remembered
 * pull-secret credentials (salted, expiring, constant-time checked).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { CredentialCache } from '../../src/harbor/credentials.js';
import { snapshotHash } from '../../src/harbor/diff.js';
import { HARBOR_SCHEMA_SQL, SnapshotStore } from '../../src/harbor/snapshot-store.js';
import { artifactKey, type PolicySnapshot } from '../../src/harbor/types.js';

function tempDb(t: Test): { file: string; open(): Database.Database } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-harbor-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'index.db');
  const open = (): Database.Database => {
    const db = new Database(file);
    t.teardown(() => db.close());
    return db;
  };
  const first = open();
  first.exec(HARBOR_SCHEMA_SQL);
  return { file, open };
}

const D = 'sha256:' + 'e'.repeat(64);

function snapshot(syncedAt: number): PolicySnapshot {
  return {
    syncedAt,
    systemAllowlist: { items: ['CVE-1'], expiresAt: 1798761600 },
    projects: {
      edge: {
        name: 'edge', projectId: 1, public: false, registryId: 0, preventVul: true, severity: 'High', severityThreshold: 4,
        contentTrustCosign: true, contentTrustNotation: false, reuseSysAllowlist: false, projectAllowlist: { items: ['CVE-9'], expiresAt: null },
      },
    },
    artifacts: {
      [artifactKey('edge', 'team/app', D)]: {
        project: 'edge', repository: 'team/app', digest: D, type: 'IMAGE', mediaType: 'application/vnd.oci.image.manifest.v1+json',
        isIndex: false, scannable: true, scanStatus: 'Success', vulnerabilities: [{ id: 'CVE-2', package: 'zlib', version: '1', severity: 'High' }],
        accessories: ['signature.cosign'], isSignature: false,
      },
    },
    projectSyncedAt: { edge: syncedAt },
  };
}

t.test('the snapshot round-trips through the index and survives reopening', async (t) => {
  const { open } = tempDb(t);
  const store = new SnapshotStore(open());
  t.equal(store.load(), null, 'nothing saved yet');
  t.equal(store.hash(), null);
  t.equal(store.age(5000), null);

  const s = snapshot(1_000_000);
  const hash = snapshotHash(s);
  store.save(s, hash);
  const again = new SnapshotStore(open()).load();
  t.same(again, s, 'every field back, nulls included');
  t.equal(snapshotHash(again!), hash, 'and it hashes the same');
  t.equal(store.hash(), hash);
  t.equal(store.age(1_060_000), 60_000);
  t.equal(store.age(0), 0, 'a clock behind the sync is not a negative age');

  const newer = snapshot(2_000_000);
  newer.projects['edge']!.preventVul = false;
  store.save(newer, snapshotHash(newer));
  t.equal(store.load()?.projects['edge']?.preventVul, false, 'replaced whole');
  t.equal(store.syncedAt(), 2_000_000);
});

t.test('a damaged or foreign-format row reads as no snapshot', async (t) => {
  const { open } = tempDb(t);
  const db = open();
  const store = new SnapshotStore(db);
  db.prepare("INSERT INTO harbor_sync (id, format, synced_at, hash, bundle) VALUES (1, 1, 5, 'h', '{not json')").run();
  t.equal(store.load(), null);
  db.prepare("UPDATE harbor_sync SET bundle = '{\"syncedAt\":5}'").run();
  t.equal(store.load(), null, 'JSON of the wrong shape');
  db.prepare('UPDATE harbor_sync SET format = 99, bundle = ?').run(JSON.stringify(snapshot(5)));
  t.equal(store.load(), null, 'a format this berth does not know');
  t.equal(store.hash(), null);
  t.throws(() => db.prepare("INSERT INTO harbor_sync (id, format, synced_at, hash, bundle) VALUES (2, 1, 5, 'h', '{}')").run(), /CHECK/, 'one row only');
});

t.test('credentials: valid, mismatch, unknown, expiry, forget', async (t) => {
  const cache = new CredentialCache({ ttlMs: 60_000 });
  t.equal(await cache.check('priv', 'robot$priv+puller', 'right', 0), 'unknown');
  await cache.remember('priv', 'robot$priv+puller', 'right', 1000);
  t.equal(await cache.check('priv', 'robot$priv+puller', 'right', 2000), 'valid');
  t.equal(await cache.check('priv', 'robot$priv+puller', 'right', 2000), 'valid', 'the memoised path agrees');
  t.equal(await cache.check('priv', 'robot$priv+puller', 'wrong', 2000), 'mismatch');
  t.equal(await cache.check('priv', 'robot$priv+puller', 'righ', 2000), 'mismatch');
  t.equal(await cache.check('other', 'robot$priv+puller', 'right', 2000), 'unknown', 'per project');
  t.equal(await cache.check('priv', 'someone', 'right', 2000), 'unknown');
  t.equal(cache.verifiedAt('priv', 'robot$priv+puller'), 1000);
  t.equal(await cache.check('priv', 'robot$priv+puller', 'right', 61_000), 'unknown', 'expired at verifiedAt + ttl');
  t.equal(cache.size, 0, 'and dropped');

  await cache.remember('priv', 'alice', 'pw', 0);
  cache.forget('priv', 'alice');
  t.equal(await cache.check('priv', 'alice', 'pw', 1), 'unknown', 'forgotten when Harbor refuses the pair');
  await cache.remember('priv', 'alice', 'old', 0);
  await cache.remember('priv', 'alice', 'new', 10);
  t.equal(await cache.check('priv', 'alice', 'old', 20), 'mismatch', 'a rotated secret replaces the old one');
  t.equal(await cache.check('priv', 'alice', 'new', 20), 'valid');
  t.throws(() => new CredentialCache({ ttlMs: 0 }), RangeError);
});

t.test('credentials are stored salted and hashed, never in clear, and persist', async (t) => {
  const { open } = tempDb(t);
  const db = open();
  const cache = new CredentialCache({ ttlMs: 3_600_000, db });
  await cache.remember('priv', 'alice', 'hunter2-secret', 1000);
  await cache.remember('priv2', 'alice', 'hunter2-secret', 1000);
  const rows = db.prepare<[], { project: string; salt: Buffer; hash: Buffer; expires_at: number }>('SELECT project, salt, hash, expires_at FROM harbor_credentials ORDER BY project').all();
  t.equal(rows.length, 2);
  t.not(rows[0]!.hash.toString('hex'), rows[1]!.hash.toString('hex'), 'the same password stored twice: different hashes');
  t.not(rows[0]!.salt.toString('hex'), rows[1]!.salt.toString('hex'), 'different salts');
  t.equal(rows[0]!.expires_at, 3_601_000);
  const raw = fs.readFileSync(db.name);
  t.equal(raw.includes(Buffer.from('hunter2-secret')), false, 'no password in the database file');
  const wal = db.name + '-wal';
  if (fs.existsSync(wal)) t.equal(fs.readFileSync(wal).includes(Buffer.from('hunter2-secret')), false, 'nor in its WAL');

  const restarted = new CredentialCache({ ttlMs: 3_600_000, db: open() });
  t.equal(await restarted.check('priv', 'alice', 'hunter2-secret', 2000), 'valid', 'after a restart, without Harbor');
  t.equal(await restarted.check('priv', 'alice', 'hunter2', 2000), 'mismatch');
  restarted.forget('priv2', 'alice');
  t.equal(db.prepare('SELECT COUNT(*) AS n FROM harbor_credentials').pluck().get(), 1, 'forget reaches the DB');
  t.equal(restarted.purge(3_601_000), 1);
  t.equal(db.prepare('SELECT COUNT(*) AS n FROM harbor_credentials').pluck().get(), 0, 'expired rows removed');
});

t.test('the number of remembered pairs is bounded', async (t) => {
  const cache = new CredentialCache({ ttlMs: 60_000, maxEntries: 2 });
  await cache.remember('p', 'u1', 'x', 1);
  await cache.remember('p', 'u2', 'x', 2);
  await cache.remember('p', 'u3', 'x', 3);
  t.equal(cache.size, 2);
  t.equal(await cache.check('p', 'u1', 'x', 4), 'unknown', 'the least recently verified went first');
  t.equal(await cache.check('p', 'u3', 'x', 4), 'valid');
});
