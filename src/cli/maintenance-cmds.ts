import type { Command } from './command.js';
import { EXIT, UsageError, out } from './command.js';
import { COMMON_FLAGS, configFrom, parse, withRuntime } from './common.js';
import { collectGarbage, verifyCache } from '../cache/maintenance.js';
import { parseImageReference, formatImageReference } from '../oci/paths.js';
import { isDigest } from '../oci/digest.js';
import { formatSize } from '../config/units.js';
import { Progress } from './progress.js';

export const gcCommand: Command = {
  name: 'gc',
  options: COMMON_FLAGS,
  summary: 'evict to the size limit now and remove unreferenced files',
  help: `Usage: berth gc [--json]

Evicts least recently used, unpinned content when the cache is over
[cache] max_size (down to 90% of it), removes blob files the index does not
know (older than a minute: a running daemon indexes its fills a moment after
writing them) and index rows whose file is gone. Safe beside a running daemon.

Options:
  --json          print the result as JSON
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, COMMON_FLAGS);
    const config = configFrom(values.config);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const r = await collectGarbage(rt.store);
      const total = rt.store.totalBytes();
      if (values.json) out(JSON.stringify({ ...r, totalBytes: total, maxBytes: config.cache.maxSizeBytes }, null, 2));
      else {
        const e = r.eviction;
        out(e ? `evicted ${e.evictedBlobs} blobs and ${e.evictedManifests} manifests, freed ${formatSize(e.freedBytes)}${e.shortBy > 0 ? ` (still ${formatSize(e.shortBy)} over target: pinned or in use)` : ''}` : 'under max_size: nothing to evict');
        out(`removed ${r.orphanFilesRemoved} unreferenced files (${formatSize(r.orphanBytesRemoved)}), dropped ${r.missingRowsDropped} index rows without a file`);
        out(`cache: ${formatSize(total)} of ${formatSize(config.cache.maxSizeBytes)}`);
      }
      return EXIT.ok;
    });
  },
};

export const verifyCommand: Command = {
  name: 'verify',
  options: COMMON_FLAGS,
  summary: 're-hash every cached blob and quarantine any that does not match',
  help: `Usage: berth verify [--json]

Re-hashes every blob in the cache and every manifest in the index. A blob
whose bytes do not match its digest is moved to <cache>/quarantine/ and
dropped from the index (the next pull fetches it again); an indexed blob
with no file is dropped. A blob file the index does not know (a crash
between its rename and its index row) is indexed again when it hashes to its
name, quarantined when it does not. Exit 0 when all is well, 1 if anything
was wrong.

Options:
  --json          print the result as JSON
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, COMMON_FLAGS);
    const config = configFrom(values.config);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const progress = new Progress();
      const r = await verifyCache(rt.store, rt.logger, (done, total) => progress.line('verifying', done, total));
      progress.end();
      const bad = r.corrupt.length + r.missing.length + r.corruptManifests.length + r.strays.length;
      if (values.json) out(JSON.stringify({ ok: bad === 0, ...r }, null, 2));
      else {
        out(`checked ${r.blobsChecked} blobs (${formatSize(r.bytesChecked)}) and ${r.manifestsChecked} manifests`);
        for (const c of r.corrupt) out(`corrupt: ${c.digest} -> quarantined at ${c.quarantinedAt}`);
        for (const m of r.missing) out(`missing: ${m} (dropped from the index)`);
        for (const m of r.corruptManifests) out(`corrupt manifest: ${m} (dropped)`);
        for (const a of r.adopted) out(`unindexed but intact: ${a} (indexed again)`);
        for (const x of r.strays) out(`unindexed and corrupt: ${x} (quarantined)`);
        if (r.tmpFiles > 0) out(`${r.tmpFiles} file(s) in tmp/: fills under way, or leftovers the daemon removes at its next start`);
        out(bad === 0 ? 'ok' : `${bad} problem(s) found and removed from the cache`);
      }
      return bad === 0 ? EXIT.ok : EXIT.failure;
    });
  },
};

export const unpinCommand: Command = {
  name: 'unpin',
  options: COMMON_FLAGS,
  summary: 'release pins so eviction may take the content',
  help: `Usage: berth unpin IMAGE... [--json]

Releases the pins of each image (as prefetch or import named it, e.g.
nginx:1.27 or docker.io/library/nginx:1.27, or a pinned digest). The content
stays cached until eviction needs the room. Exit 1 if an IMAGE was not pinned.

Options:
  --json          print the result as JSON
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, COMMON_FLAGS, true);
    if (positionals.length === 0) throw new UsageError('name at least one IMAGE');
    // Every IMAGE is checked before the cache is opened: a malformed one releases nothing.
    const keys = positionals.map((image) => {
      if (isDigest(image)) return { image, key: image };
      try {
        return { image, key: formatImageReference(parseImageReference(image)) };
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    });
    const config = configFrom(values.config);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const results = keys.map(({ image, key }) => ({ image, key, released: rt.index.pins.unpin(key) }));
      if (values.json) out(JSON.stringify(results, null, 2));
      else for (const r of results) out(r.released > 0 ? `unpinned ${r.key}` : `${r.image}: not pinned`);
      return results.every((r) => r.released > 0) ? EXIT.ok : EXIT.failure;
    });
  },
};
