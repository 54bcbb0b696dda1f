/**
 * The archive manifest (`berth-archive.json`, the first entry of every tar
 * `berth export` writes) and its signature (`berth-archive.sig`, the second
 * entry, with `export --sign`). Format version 1:
 *
 *   {
 *     "mediaType": "application/vnd.berth.archive.v1+json",
 *     "version": 1,
 *     "created": "2025-01-31T12:00:00.000Z",
 *     "creator": "berth 0.1.0",
 *     "inventory": "sha256:…" | null,     the inventory file (as given to
 *                                          --have, its bytes) or null: full
 *     "entries": [                         every other entry, in tar order
 *       { "name": "oci-layout", "size": 30, "digest": "sha256:…" }, …
 *     ],
 *     "omitted": [                         left out: the importer must hold them
 *       { "digest": "sha256:…", "kind": "blob" | "manifest", "size": 1234 }, …
 *     ]
 *   }
 *
 * The signature file is JSON too:
 *
 *   { "algorithm": "ed25519", "key": "sha256:<hex of the SPKI DER>",
 *     "signature": "<base64 of the ed25519 signature of berth-archive.json's bytes>" }
 *
 * `key` only says which key signed (so a refusal can name it); what decides
 * is the signature verifying with one of the trusted public keys.
 * Keys are PEM: PKCS8 for the private key, SPKI for the public one (what
 * `berth keygen` writes, and `openssl genpkey -algorithm ed25519` too).
 */
import fs from 'node:fs';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto';
import { isDigest, sha256 } from '../oci/digest.js';
import { ARCHIVE_MANIFEST_FILE, ARCHIVE_SIGNATURE_FILE, classifyEntry } from './layout.js';

export const ARCHIVE_MEDIA_TYPE = 'application/vnd.berth.archive.v1+json';
export const ARCHIVE_VERSION = 1;
/** The archive manifest is read whole: far more than 100k entries fit. */
export const MAX_ARCHIVE_MANIFEST = 64 * 1024 * 1024;

export interface ArchiveEntry {
  name: string;
  size: number;
  digest: string;
}

export interface OmittedDigest {
  digest: string;
  kind: 'blob' | 'manifest';
  size: number;
}

export interface ArchiveManifest {
  mediaType: typeof ARCHIVE_MEDIA_TYPE;
  version: number;
  created: string;
  creator: string;
  inventory: string | null;
  entries: ArchiveEntry[];
  omitted: OmittedDigest[];
}

export class ArchiveFormatError extends Error {
  readonly code = 'ARCHIVE_FORMAT';
}

const bad = (what: string): never => {
  throw new ArchiveFormatError(`${ARCHIVE_MANIFEST_FILE}: ${what}`);
};

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and checks an archive manifest; every problem is an ArchiveFormatError that says which field. */
export function parseArchiveManifest(bytes: Buffer): ArchiveManifest {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    return bad('is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('is not a JSON object');
  const o = v as Record<string, unknown>;
  if (o.mediaType !== ARCHIVE_MEDIA_TYPE) return bad(`mediaType is ${JSON.stringify(o.mediaType)?.slice(0, 80)}, expected ${ARCHIVE_MEDIA_TYPE}`);
  if (typeof o.version !== 'number') return bad('has no version');
  if (o.version > ARCHIVE_VERSION) return bad(`is version ${o.version}, written by a newer berth (this one reads version ${ARCHIVE_VERSION})`);
  if (o.version !== ARCHIVE_VERSION) return bad(`version ${o.version} is not known`);
  if (o.inventory !== null && (typeof o.inventory !== 'string' || !isDigest(o.inventory))) return bad('inventory must be a sha256 digest or null');
  if (!Array.isArray(o.entries)) return bad('entries must be a list');
  if (!Array.isArray(o.omitted)) return bad('omitted must be a list');
  const names = new Set<string>();
  const entries: ArchiveEntry[] = o.entries.map((e: unknown, i) => {
    const x = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
    if (typeof x.name !== 'string') return bad(`entries[${i}] has no name`);
    if (!isSize(x.size)) return bad(`entries[${i}] (${x.name.slice(0, 100)}): size must be a whole number of bytes`);
    if (typeof x.digest !== 'string' || !isDigest(x.digest)) return bad(`entries[${i}] (${x.name.slice(0, 100)}): digest must be sha256:<64 hex>`);
    const c = classifyEntry(x.name);
    if (c.kind === 'bad' || c.kind === 'dir' || c.kind === 'archive-manifest' || c.kind === 'archive-signature') return bad(`entries[${i}]: ${JSON.stringify(x.name.slice(0, 100))} is not a file of the layout`);
    if (c.kind === 'blob' && c.digest !== x.digest) return bad(`entries[${i}]: ${x.name} is listed with digest ${x.digest}, not its name`);
    if (names.has(x.name)) return bad(`entries[${i}]: ${x.name} is listed twice`);
    names.add(x.name);
    return { name: x.name, size: x.size, digest: x.digest };
  });
  const omittedSeen = new Set<string>();
  const omitted: OmittedDigest[] = o.omitted.map((e: unknown, i) => {
    const x = (typeof e === 'object' && e !== null ? e : {}) as Record<string, unknown>;
    if (typeof x.digest !== 'string' || !isDigest(x.digest)) return bad(`omitted[${i}]: digest must be sha256:<64 hex>`);
    if (x.kind !== 'blob' && x.kind !== 'manifest') return bad(`omitted[${i}] (${x.digest}): kind must be "blob" or "manifest"`);
    if (!isSize(x.size)) return bad(`omitted[${i}] (${x.digest}): size must be a whole number of bytes`);
    if (names.has(`blobs/sha256/${x.digest.slice(7)}`)) return bad(`omitted[${i}]: ${x.digest} is both omitted and in the archive`);
    if (omittedSeen.has(x.digest)) return bad(`omitted[${i}]: ${x.digest} is listed twice`);
    omittedSeen.add(x.digest);
    return { digest: x.digest, kind: x.kind, size: x.size };
  });
  return { mediaType: ARCHIVE_MEDIA_TYPE, version: o.version, created: typeof o.created === 'string' ? o.created : '', creator: typeof o.creator === 'string' ? o.creator : '', inventory: o.inventory, entries, omitted };
}

export function serializeArchiveManifest(m: ArchiveManifest): Buffer {
  return Buffer.from(JSON.stringify(m));
}

// --- keys and signatures ----------------------------------------------------

/** A public key's fingerprint: the sha256 of its SPKI DER. */
export function keyFingerprint(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return sha256(pub.export({ type: 'spki', format: 'der' }));
}

export function generateSigningKey(): { privatePem: string; publicPem: string; fingerprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    fingerprint: keyFingerprint(publicKey),
  };
}

function readKeyFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ArchiveFormatError(`cannot read the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** An ed25519 private key from a PKCS8 PEM file (`berth keygen`'s PREFIX.key). */
export function loadSigningKey(file: string): KeyObject {
  const pem = readKeyFile(file, 'signing key');
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new ArchiveFormatError(`${file} is not a PEM private key (make one with \`berth keygen -o PREFIX\`)`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ArchiveFormatError(`${file} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; berth signs with ed25519 only`);
  return key;
}

export interface TrustedKey {
  file: string;
  key: KeyObject;
  fingerprint: string;
}

/** An ed25519 public key from an SPKI PEM file (`berth keygen`'s PREFIX.pub). */
export function loadTrustedKey(file: string): TrustedKey {
  const pem = readKeyFile(file, 'trusted key');
  if (/PRIVATE KEY/.test(pem)) throw new ArchiveFormatError(`${file} holds a private key; trust the public one (PREFIX.pub), and keep the private key with the exporter`);
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch {
    throw new ArchiveFormatError(`${file} is not a PEM public key (berth keygen writes one as PREFIX.pub)`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ArchiveFormatError(`${file} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; berth verifies ed25519 only`);
  return { file, key, fingerprint: keyFingerprint(key) };
}

export function signArchiveManifest(manifest: Buffer, key: KeyObject): Buffer {
  const signature = edSign(null, manifest, key).toString('base64');
  return Buffer.from(JSON.stringify({ algorithm: 'ed25519', key: keyFingerprint(key), signature }));
}

/**
 * Checks the signature file against the manifest's bytes and the trusted keys.
 * Returns the key that verified; throws ArchiveFormatError saying why not.
 */
export function verifyArchiveSignature(manifest: Buffer, sigFile: Buffer, trusted: readonly TrustedKey[]): TrustedKey {
  let v: unknown;
  try {
    v = JSON.parse(sigFile.toString('utf8'));
  } catch {
    throw new ArchiveFormatError(`${ARCHIVE_SIGNATURE_FILE} is not JSON (damaged)`);
  }
  const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
  if (o.algorithm !== 'ed25519') throw new ArchiveFormatError(`${ARCHIVE_SIGNATURE_FILE}: algorithm ${JSON.stringify(o.algorithm)?.slice(0, 40)} is not ed25519`);
  if (typeof o.signature !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(o.signature)) throw new ArchiveFormatError(`${ARCHIVE_SIGNATURE_FILE} has no base64 signature`);
  const signature = Buffer.from(o.signature, 'base64');
  const signer = typeof o.key === 'string' ? o.key.slice(0, 80) : 'an unnamed key';
  for (const t of trusted) {
    if (edVerify(null, manifest, t.key, signature)) return t;
  }
  if (trusted.some((t) => t.fingerprint === signer)) {
    throw new ArchiveFormatError(`the signature of ${ARCHIVE_MANIFEST_FILE} does not verify with the trusted key ${signer}: the archive was altered after it was signed`);
  }
  throw new ArchiveFormatError(`the archive is signed by key ${signer}, which is not trusted (trusted: ${trusted.map((t) => `${t.fingerprint} from ${t.file}`).join(', ')})`);
}
