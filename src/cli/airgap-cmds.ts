/** `berth inventory` and `berth keygen`: the two ends of a differential, signed air-gap update. */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Command } from './command.js';
import { EXIT, UsageError, err, out } from './command.js';
import { CONFIG_FLAG, configFrom, parse } from './common.js';
import { Layout } from '../store/layout.js';
import { openDatabase } from '../store/db.js';
import { writeEmptyInventory, writeInventory, type InventoryCounts } from '../airgap/inventory.js';
import { generateSigningKey, loadTrustedKey, type TrustedKey } from '../airgap/archive.js';

/** "berth 0.1.0": what an inventory or an archive says made it. */
export function creator(): string {
  const require = createRequire(import.meta.url);
  return `berth ${(require('../../package.json') as { version: string }).version}`;
}

/** The keys `import` trusts: --trust files, else [airgap] trust. */
export function trustedKeys(flags: string[] | undefined, configured: readonly string[]): TrustedKey[] {
  const files = flags && flags.length > 0 ? flags : configured;
  return files.map((f) => loadTrustedKey(path.resolve(f)));
}

// No -v: inventory has nothing to log.
const INVENTORY_OPTIONS = { ...CONFIG_FLAG, json: { type: 'boolean' }, out: { type: 'string', short: 'o' } } as const;

export const inventoryCommand: Command = {
  name: 'inventory',
  options: INVENTORY_OPTIONS,
  summary: 'list what this berth holds (gzip JSON lines) for another berth\'s export --have',
  help: `Usage: berth inventory [--out FILE] [--json]

Writes what this berth's cache holds: every blob (digest, size), every
manifest (digest, media type, size), every tag (registry, repository, tag,
digest) and every pin, as gzip'd JSON lines (format version 1, documented
in docs/airgap.md). Carry it to a berth with a link and give it to
\`berth export --have FILE\`, which then leaves out what this berth has.

Reads the index directly, in one read transaction: the daemon may keep
running (what it fetches meanwhile is simply not listed). Streams row by
row: memory stays flat on a cache of any size.

Options:
  -o, --out FILE  write here (FILE.partial, renamed when complete);
                  default: stdout (not a terminal)
  --json          print the counts as JSON (with --out)
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, INVENTORY_OPTIONS, true);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (values.out === undefined && process.stdout.isTTY) throw new UsageError('the inventory is gzip data: give --out FILE or redirect stdout');
    const config = configFrom(values.config);
    const layout = new Layout(config.cache.dir);
    const target = values.out === undefined ? null : path.resolve(values.out);
    const partial = target === null ? null : `${target}.partial`;
    const stream = partial === null ? process.stdout : fs.createWriteStream(partial, { mode: 0o644 });
    let counts: InventoryCounts;
    try {
      if (!fs.existsSync(layout.indexFile)) {
        err(`berth inventory: no cache index at ${layout.indexFile}: the inventory is empty`);
        counts = await writeEmptyInventory(stream, { creator: creator() });
      } else {
        const db = openDatabase(layout.indexFile, { readonly: true });
        try {
          counts = await writeInventory(db, stream, { creator: creator() });
        } finally {
          db.close();
        }
      }
      if (partial !== null && target !== null) fs.renameSync(partial, target);
    } catch (e) {
      if (partial !== null) {
        (stream as fs.WriteStream).destroy();
        fs.rmSync(partial, { force: true });
      }
      throw e;
    }
    if (target !== null) {
      if (values.json) out(JSON.stringify({ file: target, ...counts }, null, 2));
      else out(`wrote ${target}: ${counts.blobs} blobs, ${counts.manifests} manifests, ${counts.tags} tags, ${counts.pins} pins`);
    }
    return EXIT.ok;
  },
};

const KEYGEN_OPTIONS = { ...CONFIG_FLAG, json: { type: 'boolean' }, output: { type: 'string', short: 'o' } } as const;

export const keygenCommand: Command = {
  name: 'keygen',
  options: KEYGEN_OPTIONS,
  summary: 'make an ed25519 key pair to sign exports (PREFIX.key, PREFIX.pub)',
  help: `Usage: berth keygen -o PREFIX [--json]

Makes an ed25519 key pair for signed air-gap archives: PREFIX.key (the
private key, PKCS8 PEM, mode 0600: keep it on the exporting side only) and
PREFIX.pub (the public key, SPKI PEM: give it to the importing sites for
\`berth import --trust PREFIX.pub\` or [airgap] trust). Refuses to overwrite
either file. Prints the key's fingerprint (sha256 of the public key's DER),
which refusals name.

Options:
  -o, --output PREFIX   where to write (required)
  --json                print the files and fingerprint as JSON
  --config FILE         accepted like every command's; keygen reads no
                        configuration (nor $BERTH_CONFIG)
  -h, --help            show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, KEYGEN_OPTIONS, true);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (!values.output) throw new UsageError('-o PREFIX is required');
    const prefix = path.resolve(values.output);
    const keyFile = `${prefix}.key`;
    const pubFile = `${prefix}.pub`;
    for (const f of [keyFile, pubFile]) if (fs.existsSync(f)) throw new Error(`${f} exists; keygen does not overwrite keys`);
    const k = generateSigningKey();
    // 'wx': created here, never through an existing file or link; 0600 from the start (then chmod, past the umask).
    fs.writeFileSync(keyFile, k.privatePem, { mode: 0o600, flag: 'wx' });
    fs.chmodSync(keyFile, 0o600);
    try {
      fs.writeFileSync(pubFile, k.publicPem, { mode: 0o644, flag: 'wx' });
    } catch (e) {
      fs.rmSync(keyFile, { force: true });
      throw e;
    }
    if (values.json) out(JSON.stringify({ key: keyFile, pub: pubFile, fingerprint: k.fingerprint }, null, 2));
    else out(`wrote ${keyFile} (private, 0600) and ${pubFile} (public)\nfingerprint ${k.fingerprint}`);
    return EXIT.ok;
  },
};
