/**
 * The index keeps the tags it has read in memory (the hot path of a manifest
 * by tag is then a Map hit), and must still answer what SQLite holds: its own
 * writes update the copy, and a commit by another connection (`berth import`
 * in another process) is noticed through PRAGMA data_version, checked once
 * per event-loop turn. Two Index objects on one file stand in for the daemon
 * and the CLI; the turn between them is what separates two processes' work.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Index, type TagRow } from '../../src/store/index-db.js';

const A: TagRow = { digest: `sha256:${'a'.repeat(64)}`, media_type: 'application/vnd.oci.image.index.v1+json', size: 100, fetched_at: 1000 };
const B: TagRow = { digest: `sha256:${'b'.repeat(64)}`, media_type: 'application/vnd.oci.image.manifest.v1+json', size: 200, fetched_at: 2000 };

function twoConnections(t: { teardown(fn: () => unknown): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-tagcache-'));
  const file = path.join(dir, 'index.db');
  const daemon = new Index(file);
  const cli = new Index(file);
  t.teardown(() => {
    daemon.close();
    cli.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { daemon: daemon.content, cli: cli.content, daemonDb: daemon.db };
}

const get = (ix: Index['content'], tag = 'v1') => ix.getTag('docker.io', 'library/app', tag);

t.test("this connection's own writes are read back at once", async (t) => {
  const { daemon } = twoConnections(t);
  t.equal(get(daemon), undefined, 'unknown tag');
  daemon.putTag('docker.io', 'library/app', 'v1', A);
  t.same(get(daemon), A, 'put: read back without waiting for a turn');
  daemon.putTag('docker.io', 'library/app', 'v1', B);
  t.same(get(daemon), B, 'moved');
  daemon.touchTag('docker.io', 'library/app', 'v1', 5000);
  t.same(get(daemon), { ...B, fetched_at: 5000 }, 'touched: the new fetched_at');
  daemon.deleteTag('docker.io', 'library/app', 'v1');
  t.equal(get(daemon), undefined, 'deleted');
  daemon.putTag('docker.io', 'library/app', 'v1', A);
  daemon.putTag('docker.io', 'library/app', 'v2', A);
  daemon.putTag('docker.io', 'library/app', 'v3', B);
  t.same(get(daemon, 'v2'), A);
  daemon.deleteManifest(A.digest);
  t.equal(get(daemon), undefined, 'deleting a manifest drops its tags (v1)');
  t.equal(get(daemon, 'v2'), undefined, 'deleting a manifest drops its tags (v2)');
  t.same(get(daemon, 'v3'), B, "another manifest's tag stays");
});

t.test("another connection's commit is what the next turn reads", async (t) => {
  const { daemon, cli } = twoConnections(t);
  daemon.putTag('docker.io', 'library/app', 'v1', A);
  t.same(get(daemon), A, 'the daemon knows v1 -> A');
  await nextTurn();
  t.equal(get(daemon, 'v9'), undefined, 'an unknown tag, read (and remembered as unknown)');

  await nextTurn();
  cli.putTag('docker.io', 'library/app', 'v1', B);
  cli.putTag('docker.io', 'library/app', 'v9', A);
  await nextTurn();
  t.same(get(daemon), B, 'moved by the other connection: B');
  t.same(get(daemon, 'v9'), A, 'made by the other connection: no longer unknown');

  await nextTurn();
  cli.touchTag('docker.io', 'library/app', 'v1', 9000);
  await nextTurn();
  t.equal(get(daemon)?.fetched_at, 9000, 'touched by the other connection');

  await nextTurn();
  cli.deleteTag('docker.io', 'library/app', 'v1');
  await nextTurn();
  t.equal(get(daemon), undefined, 'deleted by the other connection');
});

t.test('a rolled-back transaction leaves no trace in the copy', async (t) => {
  const { daemon, daemonDb } = twoConnections(t);
  daemon.putTag('docker.io', 'library/app', 'v1', A);
  t.throws(
    () =>
      daemonDb.transaction(() => {
        daemon.putTag('docker.io', 'library/app', 'v1', B);
        t.same(get(daemon), B, 'inside the transaction: B');
        throw new Error('roll back');
      })(),
    /roll back/,
  );
  t.same(get(daemon), A, 'after the rollback: A again');
});

t.test('rows handed out cannot be changed behind the copy', async (t) => {
  const { daemon } = twoConnections(t);
  daemon.putTag('docker.io', 'library/app', 'v1', A);
  const row = get(daemon)!;
  t.throws(() => {
    (row as { digest: string }).digest = B.digest;
  }, TypeError);
  t.same(get(daemon), A);
});

t.test('many tags: the copy stays bounded and still answers every one', async (t) => {
  const { daemon } = twoConnections(t);
  const n = 25_000;
  t.equal(get(daemon, 'none'), undefined);
  for (let i = 0; i < n; i++) daemon.putTag('docker.io', 'library/app', `t${i}`, { ...A, fetched_at: i });
  for (const i of [0, 1, 12_345, n - 1]) t.equal(get(daemon, `t${i}`)?.fetched_at, i, `t${i}`);
  t.ok(daemon.cachedTags() <= 10_000, `at most 10,000 tags in memory (${daemon.cachedTags()})`);
});
