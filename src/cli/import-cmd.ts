import path from 'node:path';
import type { Command } from './command.js';
import { EXIT, UsageError, err, out } from './command.js';
import { COMMON_FLAGS, configFrom, parse, withRuntime } from './common.js';
import { importArchive } from '../airgap/import.js';
import { checkImportRoom, importNeeds } from '../airgap/preflight.js';
import { scanArchive } from '../airgap/scan.js';
import { VolumeError, VolumeSet } from '../airgap/volumes.js';
import { formatSize } from '../config/units.js';
import { TransferProgress } from './progress.js';
import { trustedKeys } from './airgap-cmds.js';

const OPTIONS = { ...COMMON_FLAGS, quiet: { type: 'boolean', short: 'q' }, trust: { type: 'string', multiple: true } } as const;

export const importCommand: Command = {
  name: 'import',
  options: OPTIONS,
  summary: 'load an OCI image-layout tar into the cache, verified, and pin it',
  help: `Usage: berth import FILE [--trust PUBKEYFILE]... [--json] [-q]
       berth import NAME.tar.000 NAME.tar.001 ... [--trust PUBKEYFILE]... [--json] [-q]
                    (the volumes of export --split, any order)

Loads an OCI image-layout tar (from \`berth export\` or \`skopeo copy …
oci-archive:FILE:docker.io/library/nginx:1.27\`) into the cache. Every blob
is hashed against its digest and sized against its descriptor, and every
blob an image needs must be present, before anything enters the cache; an
entry with "..", an absolute path, a symlink or a hard link refuses the
whole tar. On any problem nothing from the tar is kept (exit 1, the reason
printed). Images named by a full reference get their tag recorded; all are
pinned.

Before writing anything, the tar's headers are read end to end: a volume
missing, truncated, out of order or from another set refuses the import,
naming it. Then the bytes the import adds (blobs the cache lacks) are
compared with the free space of the cache's filesystem and with
cache.max_size less what eviction may free (never pinned or in-use
content): not enough refuses with the numbers, nothing written. Blobs
already in the cache are checked but not written again, so an interrupted
import run again writes only the rest.

A berth archive lists every entry in berth-archive.json: an entry not
listed, missing, or of another size or digest refuses the tar. A
differential archive (export --have) is imported only if this cache holds
every digest it leaves out. With --trust (or [airgap] trust in the config)
the archive must be signed by one of those keys, checked before any blob
is staged; without, the archive's origin is not checked (said on stderr).

Options:
  --trust FILE    require a signature by this public key (berth keygen's
                  .pub); repeatable; replaces [airgap] trust
  --json          print the result as JSON (no progress)
  -q, --quiet     no progress (a bar on a terminal, else a line every 5s or 10%)
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, true);
    if (positionals.length === 0) throw new UsageError('name the archive: FILE, or the volumes of one set');
    let set: VolumeSet;
    try {
      set = VolumeSet.open(positionals);
    } catch (e) {
      if (e instanceof VolumeError && positionals.length === 1 && / no such file$/.test(e.message)) throw new UsageError(e.message);
      throw e;
    }
    try {
      // The whole chain of headers first: a set that is not complete is refused before any write.
      const scan = scanArchive(set);
      const beyond = set.after(scan.end).filter((v) => !set.read(v.start, Math.min(v.size, 64 * 1024)).every((b) => b === 0) || v.size > 64 * 1024);
      if (beyond.length > 0) throw new VolumeError(`volume ${path.basename(beyond[0]!.file)} comes after the end of the archive: it belongs to another set`);
      const config = configFrom(values.config);
      const trusted = trustedKeys(values.trust, config.airgap.trust);
      return await withRuntime(config, values.verbose === true, async (rt) => {
        const needs = importNeeds(rt.store, scan.entries);
        await checkImportRoom(rt.store, { dir: config.cache.dir, maxBytes: config.cache.maxSizeBytes }, needs);
        const blobEnds = scan.entries.filter((e) => e.name.includes('blobs/')).map((e) => e.offset + e.size);
        const progress = new TransferProgress({ label: 'import', totalBytes: scan.end, totalBlobs: blobEnds.length, silent: values.json === true || values.quiet === true });
        let blobsDone = 0;
        const input = set.stream((bytes) => {
          while (blobsDone < blobEnds.length && blobEnds[blobsDone]! <= bytes) blobsDone++;
          progress.update({ bytes, blobs: blobsDone });
        });
        let r;
        try {
          r = await importArchive({ store: rt.store, pins: rt.index.pins }, input, { trusted });
        } catch (e) {
          progress.end(false);
          throw e;
        }
        progress.end();
        if (!r.signature.checked) err(`berth import: note: the archive's origin was not checked (${r.signature.why}; use --trust PUBKEYFILE or [airgap] trust)`);
        if (values.json) out(JSON.stringify({ ...r, alreadyHeld: needs.heldBlobs }, null, 2));
        else {
          for (const i of r.images) out(`${i.name}@${i.digest}  pinned${i.tagged ? ', tagged' : ''}`);
          out(`imported ${r.manifests} manifests, ${r.blobs} blobs, ${formatSize(r.bytes)}${needs.heldBlobs > 0 ? ` (${needs.heldBlobs} blobs were already in the cache)` : ''}${r.omitted > 0 ? `; ${r.omitted} digests left out of the archive were already here` : ''}`);
          if (r.signature.checked) out(`signature verified: ${r.signature.key} (${r.signature.file})`);
        }
        return EXIT.ok;
      });
    } finally {
      set.close();
    }
  },
};
