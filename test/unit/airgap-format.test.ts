/**
 * The air-gap file formats: the archive manifest, its signature, keys, and
 * the inventory, each given bad input and expected to say clearly what is
 * wrong (never a stack trace or a silent misreading).
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { createHash, generateKeyPairSync } from 'node:crypto';
import Database from 'better-sqlite3';
import {
  ARCHIVE_MEDIA_TYPE,
  generateSigningKey,
  loadSigningKey,
  loadTrustedKey,
  parseArchiveManifest,
  signArchiveManifest,
  verifyArchiveSignature,
} from '../../src/airgap/archive.js';
import { parseInventoryLine, readInventory, writeInventory } from '../../src/airgap/inventory.js';
import { migrateCore } from '../../src/store/db.js';
import { MIGRATIONS } from '../../src/store/schema.js';
import { loadConfig } from '../../src/config/load.js';

const D = (c: string): string => `sha256:${c.repeat(64)}`;

function tempDir(tt: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'berth-airgap-format-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const validManifest = () => ({
  mediaType: ARCHIVE_MEDIA_TYPE,
  version: 1,
  created: '2025-01-01T00:00:00.000Z',
  creator: 'berth test',
  inventory: null as string | null,
  entries: [
    { name: 'oci-layout', size: 30, digest: D('1') },
    { name: `blobs/sha256/${'a'.repeat(64)}`, size: 10, digest: D('a') },
    { name: 'index.json', size: 100, digest: D('2') },
  ],
  omitted: [{ digest: D('b'), kind: 'blob', size: 5 }] as { digest: string; kind: string; size: number }[],
});

t.test('archive manifest: a good one parses; bad ones say which field', async (t) => {
  const m = parseArchiveManifest(Buffer.from(JSON.stringify(validManifest())));
  t.equal(m.entries.length, 3);
  t.same(m.omitted, [{ digest: D('b'), kind: 'blob', size: 5 }]);
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{"mediaType":', /is not JSON/],
    ['an array', [], /not a JSON object/],
    ['another media type', { ...validManifest(), mediaType: 'x' }, /mediaType is "x"/],
    ['a newer version', { ...validManifest(), version: 2 }, /version 2, written by a newer berth/],
    ['no entries', { ...validManifest(), entries: undefined }, /entries must be a list/],
    ['a negative size', { ...validManifest(), entries: [{ name: 'oci-layout', size: -1, digest: D('1') }] }, /entries\[0\] \(oci-layout\): size must be a whole number/],
    ['a bad digest', { ...validManifest(), entries: [{ name: 'oci-layout', size: 1, digest: 'md5:x' }] }, /entries\[0\] \(oci-layout\): digest must be sha256/],
    ['a path outside the layout', { ...validManifest(), entries: [{ name: '../etc/passwd', size: 1, digest: D('1') }] }, /"\.\.\/etc\/passwd" is not a file of the layout/],
    ['a blob listed under another digest', { ...validManifest(), entries: [{ name: `blobs/sha256/${'a'.repeat(64)}`, size: 1, digest: D('c') }] }, /listed with digest .* not its name/],
    ['an entry twice', { ...validManifest(), entries: [{ name: 'oci-layout', size: 1, digest: D('1') }, { name: 'oci-layout', size: 1, digest: D('1') }] }, /listed twice/],
    ['a bad omitted kind', { ...validManifest(), omitted: [{ digest: D('b'), kind: 'layer', size: 1 }] }, /omitted\[0\] .*kind must be "blob" or "manifest"/],
    ['omitted and carried', { ...validManifest(), omitted: [{ digest: D('a'), kind: 'blob', size: 10 }] }, /both omitted and in the archive/],
    ['a bad inventory digest', { ...validManifest(), inventory: 'yesterday' }, /inventory must be a sha256 digest or null/],
  ];
  for (const [name, value, why] of cases) {
    const bytes = Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));
    t.throws(() => parseArchiveManifest(bytes), why, name);
    t.throws(() => parseArchiveManifest(bytes), { code: 'ARCHIVE_FORMAT' }, `${name}: an ArchiveFormatError`);
  }
});

t.test('signatures: verify with the trusted key only, and say why not', async (t) => {
  const dir = tempDir(t);
  const a = generateSigningKey();
  const b = generateSigningKey();
  writeFileSync(join(dir, 'a.key'), a.privatePem);
  writeFileSync(join(dir, 'a.pub'), a.publicPem);
  writeFileSync(join(dir, 'b.pub'), b.publicPem);
  const signing = loadSigningKey(join(dir, 'a.key'));
  const trustA = loadTrustedKey(join(dir, 'a.pub'));
  const trustB = loadTrustedKey(join(dir, 'b.pub'));
  t.equal(trustA.fingerprint, a.fingerprint);
  const manifest = Buffer.from(JSON.stringify(validManifest()));
  const sig = signArchiveManifest(manifest, signing);
  t.equal(verifyArchiveSignature(manifest, sig, [trustB, trustA]), trustA, 'verifies with a among the trusted');
  const altered = Buffer.from(manifest);
  altered[10] = altered[10]! ^ 1;
  t.throws(() => verifyArchiveSignature(altered, sig, [trustA]), /does not verify with the trusted key sha256:[a-f0-9]{64}: the archive was altered/);
  t.throws(() => verifyArchiveSignature(manifest, sig, [trustB]), new RegExp(`signed by key ${a.fingerprint}, which is not trusted`));
  t.throws(() => verifyArchiveSignature(manifest, Buffer.from('nope'), [trustA]), /berth-archive\.sig is not JSON/);
  t.throws(() => verifyArchiveSignature(manifest, Buffer.from('{"algorithm":"rsa","signature":"AA=="}'), [trustA]), /algorithm "rsa" is not ed25519/);
  t.throws(() => verifyArchiveSignature(manifest, Buffer.from('{"algorithm":"ed25519"}'), [trustA]), /has no base64 signature/);

  t.throws(() => loadTrustedKey(join(dir, 'a.key')), /holds a private key; trust the public one/);
  t.throws(() => loadTrustedKey(join(dir, 'missing.pub')), /cannot read the trusted key .*missing\.pub: ENOENT/);
  writeFileSync(join(dir, 'junk.pub'), 'hello');
  t.throws(() => loadTrustedKey(join(dir, 'junk.pub')), /is not a PEM public key/);
  t.throws(() => loadSigningKey(join(dir, 'a.pub')), /is not a PEM private key/);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  writeFileSync(join(dir, 'rsa.key'), rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(join(dir, 'rsa.pub'), rsa.publicKey.export({ type: 'spki', format: 'pem' }));
  t.throws(() => loadSigningKey(join(dir, 'rsa.key')), /is a rsa key; berth signs with ed25519 only/);
  t.throws(() => loadTrustedKey(join(dir, 'rsa.pub')), /is a rsa key; berth verifies ed25519 only/);
});

const lines = (...ls: object[]): string => ls.map((l) => JSON.stringify(l)).join('\n') + '\n';
const header = { type: 'berth-inventory', version: 1, created: 'x', creator: 'test' };
const end = (blobs = 0, manifests = 0, tags = 0, pins = 0) => ({ type: 'end', blobs, manifests, tags, pins });

async function read(data: Buffer | string): Promise<{ got: unknown[]; digest: string }> {
  const got: unknown[] = [];
  const r = await readInventory(Readable.from([Buffer.from(data)]), (l) => got.push(l));
  return { got, digest: r.digest };
}

t.test('inventory: round trip through the index, gzip or not', async (t) => {
  const dir = tempDir(t);
  const db = new Database(join(dir, 'index.db'));
  migrateCore(db, MIGRATIONS);
  db.prepare('INSERT INTO blobs VALUES (?, ?, 0, 0)').run(D('b'), 7);
  db.prepare('INSERT INTO blobs VALUES (?, ?, 0, 0)').run(D('a'), 5);
  db.prepare('INSERT INTO manifests VALUES (?, ?, ?, 0, 0)').run(D('c'), 'application/vnd.oci.image.manifest.v1+json', Buffer.from('{}'));
  db.prepare('INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?, 0)').run('docker.io', 'library/x', '1', D('c'), 'm', 2);
  db.prepare('INSERT INTO pins VALUES (?, ?, 0)').run('docker.io/library/x:1', D('c'));
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const counts = await writeInventory(db, out, { creator: 'berth test' });
  db.close();
  t.same(counts, { blobs: 2, manifests: 1, tags: 1, pins: 1 });
  const file = Buffer.concat(chunks);
  const { got, digest } = await read(file);
  t.same(got, [
    { type: 'blob', digest: D('a'), size: 5 },
    { type: 'blob', digest: D('b'), size: 7 },
    { type: 'manifest', digest: D('c'), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 2 },
    { type: 'tag', registry: 'docker.io', repository: 'library/x', tag: '1', digest: D('c') },
    { type: 'pin', image: 'docker.io/library/x:1', digest: D('c') },
  ]);
  t.equal(digest, 'sha256:' + createHash('sha256').update(file).digest('hex'), 'the digest is of the file as given');
  const plain = await read(lines(header, { type: 'blob', digest: D('a'), size: 1 }, { type: 'future-thing', x: 1 }, end(1)));
  t.same(plain.got, [{ type: 'blob', digest: D('a'), size: 1 }], 'gunzipped works too; unknown line types are skipped');
});

t.test('inventory: bad input is refused with a clear reason', async (t) => {
  const whole = gzipSync(lines(header, { type: 'blob', digest: D('a'), size: 1 }, end(1)));
  const cases: [string, Buffer | string, RegExp][] = [
    ['empty', '', /the inventory is empty/],
    ['not JSON lines', 'PK\u0003\u0004 zip data', /not a berth inventory/],
    ['a gzip cut short', whole.subarray(0, whole.length - 10), /not a complete gzip file/],
    ['no header', lines({ type: 'blob', digest: D('a'), size: 1 }, end(1)), /first line is not \{"type":"berth-inventory"/],
    ['a newer version', lines({ ...header, version: 2 }, end()), /version 2, written by a newer berth/],
    ['no end line', lines(header, { type: 'blob', digest: D('a'), size: 1 }), /cut short \(no end line after line 2\)/],
    ['counts that do not match', lines(header, { type: 'blob', digest: D('a'), size: 1 }, end(2)), /end line counts 2 blobs, it holds 1/],
    ['a bad digest', lines(header, { type: 'blob', digest: 'sha256:xyz', size: 1 }, end(1)), /inventory line 2: blob: digest must be sha256/],
    ['a bad size', lines(header, { type: 'blob', digest: D('a'), size: '1' }, end(1)), /inventory line 2: blob: size must be a whole number/],
    ['a line that is not JSON', `${JSON.stringify(header)}\n{oops\n`, /inventory line 2: is not JSON/],
    ['content after the end', lines(header, end(), { type: 'blob', digest: D('a'), size: 1 }), /inventory line 3: content after the end line/],
    ['a second header', lines(header, header, end()), /inventory line 2: a second header/],
  ];
  for (const [name, data, why] of cases) {
    await t.rejects(read(data), why, name);
    await t.rejects(read(data), { code: 'INVENTORY_FORMAT' }, `${name}: an InventoryError`);
  }
  t.throws(() => parseInventoryLine('{"type":"tag","registry":"docker.io","repository":"","tag":"1","digest":"' + D('a') + '"}', 9), /inventory line 9: tag: repository must be a non-empty string/);
  t.throws(() => parseInventoryLine('{"digest":"x"}', 3), /inventory line 3: has no type/);
});

t.test('[airgap] trust: readable files, resolved from the working directory', async (t) => {
  const dir = tempDir(t);
  const k = generateSigningKey();
  writeFileSync(join(dir, 'site.pub'), k.publicPem);
  writeFileSync(join(dir, 'berth.toml'), '[airgap]\ntrust = ["site.pub"]\n');
  t.same(loadConfig({ file: join(dir, 'berth.toml'), env: {}, cwd: dir }).airgap.trust, [join(dir, 'site.pub')]);
  t.same(loadConfig({ env: {}, cwd: dir }).airgap.trust, [], 'none by default');
  writeFileSync(join(dir, 'bad.toml'), '[airgap]\ntrust = ["nope.pub"]\n');
  t.throws(() => loadConfig({ file: join(dir, 'bad.toml'), env: {}, cwd: dir }), /airgap\.trust: item 0: cannot read .*nope\.pub.*: ENOENT/);
  t.throws(() => loadConfig({ file: join(dir, 'bad.toml'), env: {}, cwd: dir }), { name: 'ConfigError' });
  writeFileSync(join(dir, 'typo.toml'), '[airgap]\ntrusted = ["site.pub"]\n');
  t.throws(() => loadConfig({ file: join(dir, 'typo.toml'), env: {}, cwd: dir }), /airgap\.trusted: unknown key \(known: trust\)/);
  t.same(loadConfig({ env: { BERTH_AIRGAP_TRUST: join(dir, 'site.pub') }, cwd: dir }).airgap.trust, [join(dir, 'site.pub')], 'BERTH_AIRGAP_TRUST, comma-separated');
});
