import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Layout } from '../../src/store/layout.js';
import { BlobFiles, DigestMismatchError } from '../../src/store/blobs.js';
import { Index } from '../../src/store/index-db.js';
import { sha256 } from '../../src/oci/digest.js';

function tmp(t: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('a blob is published only when its bytes match the digest', async (t) => {
  const files = new BlobFiles(new Layout(tmp(t)));
  await files.init();
  const data = Buffer.from('hello blob');
  const digest = sha256(data);
  const w = await files.createWriter(digest);
  await w.write(data.subarray(0, 4));
  t.equal(files.sizeOnDisk(digest), null, 'nothing under the digest name while writing');
  await w.write(data.subarray(4));
  await w.commit({ expectedSize: data.length });
  t.equal(fs.readFileSync(files.path(digest)).toString(), 'hello blob');
  t.same(await files.hash(digest), { digest, size: data.length });
  t.same(fs.readdirSync(files.layout.tmpDir), [], 'temp file gone');

  const bad = await files.createWriter(sha256('something else'));
  await bad.write(data);
  await t.rejects(bad.commit(), DigestMismatchError);
  t.equal(files.sizeOnDisk(sha256('something else')), null, 'mismatch never published');
  t.same(fs.readdirSync(files.layout.tmpDir), [], 'mismatch temp file removed');

  const short = await files.createWriter(digest);
  await short.write(data);
  await t.rejects(short.commit({ expectedSize: data.length + 1 }), DigestMismatchError, 'size checked too');
});

t.test('a blob whose rename failed leaves no temp file once aborted', async (t) => {
  const files = new BlobFiles(new Layout(tmp(t)));
  await files.init();
  const data = Buffer.from('rename me');
  const digest = sha256(data);
  // The blob's final path is taken by a non-empty directory: rename(2) fails (EISDIR).
  fs.mkdirSync(path.join(files.path(digest), 'x'), { recursive: true });
  const w = await files.createWriter(digest);
  await w.write(data);
  await t.rejects(w.commit({ expectedSize: data.length }), { code: 'EISDIR' });
  await w.abort();
  t.same(fs.readdirSync(files.layout.tmpDir), [], 'the abort after a failed rename removes the temp file');
});

t.test('start-up removes leftovers of interrupted writes', async (t) => {
  const layout = new Layout(tmp(t));
  const files = new BlobFiles(layout);
  await files.init();
  fs.writeFileSync(path.join(layout.tmpDir, 'abc.123.part'), 'half');
  fs.writeFileSync(path.join(layout.tmpDir, 'def.456.part'), 'half');
  t.equal(await files.init(), 2);
  t.same(fs.readdirSync(layout.tmpDir), []);
});

t.test('layout paths come only from valid digests', async (t) => {
  const layout = new Layout('/x');
  t.equal(layout.blobPath('sha256:' + 'ab'.repeat(32)), '/x/blobs/sha256/ab/' + 'ab'.repeat(32));
  t.throws(() => layout.blobPath('sha256:../../../etc/passwd'));
});

t.test('index: blobs, manifests with refs, tags, links, batched access', async (t) => {
  const dir = tmp(t);
  let now = 1000;
  const idx = new Index(path.join(dir, 'index.db'), { now: () => now, flushIntervalMs: 60_000 });
  const d1 = sha256('1');
  const d2 = sha256('2');
  idx.content.putBlob(d1, 10);
  t.match(idx.content.getBlob(d1), { digest: d1, size: 10, last_access: 1000 });
  now = 5000;
  idx.content.touch(d1);
  t.equal(idx.content.getBlob(d1)?.last_access, 1000, 'access time batched, not written per hit');
  idx.flush();
  t.equal(idx.content.getBlob(d1)?.last_access, 5000);
  idx.content.touch(d1, 4000);
  idx.flush();
  t.equal(idx.content.getBlob(d1)?.last_access, 5000, 'a use recorded late with an earlier time never moves the access time back');
  idx.content.putBlob(sha256('late'), 1, 4500);
  t.equal(idx.content.getBlob(sha256('late'))?.last_access, 4500, 'a filled blob is last used when its request came, not when the fill ended');
  idx.content.deleteBlob(sha256('late'));
  const body = Buffer.from(JSON.stringify({ layers: [{ digest: d1 }, { digest: d2 }] }));
  const md = sha256(body);
  idx.content.putManifest(md, 'application/vnd.oci.image.manifest.v1+json', body, [d1, d2]);
  t.ok(idx.content.hasManifest(md));
  t.same(idx.content.getManifest(md)?.body, body, 'manifest bytes verbatim');
  const refs = idx.db.prepare('SELECT child FROM refs WHERE parent = ? ORDER BY child').all(md) as { child: string }[];
  t.same(refs.map((r) => r.child).sort(), [d1, d2].sort());
  idx.content.putTag('docker.io', 'library/x', 'v1', { digest: md, media_type: 'm', size: body.length, fetched_at: 5000 });
  idx.content.touchTag('docker.io', 'library/x', 'v1', 7000);
  t.match(idx.content.getTag('docker.io', 'library/x', 'v1'), { digest: md, fetched_at: 7000 });
  t.same(idx.content.listTags('docker.io', 'library/x'), ['v1']);
  idx.content.deleteTag('docker.io', 'library/x', 'v1');
  t.equal(idx.content.getTag('docker.io', 'library/x', 'v1'), undefined);
  idx.content.link('docker.io', 'library/x', d1);
  t.ok(idx.content.isLinked('docker.io', 'library/x', d1));
  t.notOk(idx.content.isLinked('docker.io', 'library/y', d1));
  t.same(idx.content.stats(), { bytes: 10, blobs: 1, manifests: 1 });
  idx.close();

  const again = new Index(path.join(dir, 'index.db'));
  t.equal(again.content.getBlob(d1)?.size, 10, 'survives reopening (schema migration is idempotent)');
  const ro = new Index(path.join(dir, 'index.db'), { readonly: true });
  t.equal(ro.content.getBlob(d1)?.size, 10, 'a second (CLI) process reads while the daemon has it open');
  ro.close();
  again.close();
});

t.test('a publish a crash interrupted is completed at start-up', async (t) => {
  const dir = tmp(t);
  const files = new BlobFiles(new Layout(dir));
  await files.init();
  const idx = new Index(path.join(dir, 'index.db'));
  const data = Buffer.from('renamed, never indexed');
  const renamed = sha256(data);
  const w = await files.createWriter(renamed);
  await w.write(data);
  idx.content.beginPublish(renamed, 1234);
  await w.commit({ expectedSize: data.length });
  const lost = sha256('never renamed');
  idx.content.beginPublish(lost, 1234);
  // the crash: neither endPublish ran
  t.equal(idx.content.getBlob(renamed), undefined);
  t.equal(idx.content.recoverPublishes((d) => files.sizeOnDisk(d)), 1, 'one publish completed');
  t.match(idx.content.getBlob(renamed), { size: data.length, last_access: 1234 });
  t.equal(idx.content.getBlob(lost), undefined, 'a blob that never reached blobs/ is forgotten');
  t.equal(idx.content.recoverPublishes((d) => files.sizeOnDisk(d)), 0, 'and the journal is empty after');
  idx.close();
});

// SPEC "Audit": the record is bounded by age and count (the daemon prunes to 30 days and 200 000 entries).
t.test('the audit record is pruned by age and by count, newest kept', async (t) => {
  const index = new Index(path.join(tmp(t), 'index.db'));
  t.teardown(() => index.close());
  const now = Date.now();
  const entry = (at: number, reference: string) => ({ at, registry: 'docker.io', repository: 'library/app', reference, digest: null, method: 'GET', decision: 'cache', reason: null, client: null, username: null });
  for (let i = 0; i < 3; i++) index.audit.record(entry(now - 40 * 86_400_000 + i, `ancient${i}`));
  for (let i = 0; i < 10; i++) index.audit.record(entry(now - 1000 * (10 - i), `recent${i}`));
  index.flush();
  t.equal(index.audit.count(0), 13);
  t.equal(index.audit.prune(now - 30 * 86_400_000, 100), 3, 'older than the age bound: gone');
  t.same(index.audit.since(0, 100).map((e) => e.reference), Array.from({ length: 10 }, (_, i) => `recent${i}`));
  t.equal(index.audit.prune(now - 30 * 86_400_000, 4), 6, 'over the count bound: the oldest go');
  t.same(index.audit.since(0, 100).map((e) => e.reference), ['recent6', 'recent7', 'recent8', 'recent9']);
  t.equal(index.audit.prune(now - 30 * 86_400_000, 4), 0, 'within both bounds: nothing more');
});
