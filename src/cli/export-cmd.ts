import path from 'node:path';
import type { Command } from './command.js';
import { EXIT, UsageError, out } from './command.js';
import { COMMON_FLAGS, checkImageArgs, configFrom, parse, platformsFrom, withRuntime } from './common.js';
import { exportImages } from '../airgap/export.js';
import { checkExportRoom } from '../airgap/preflight.js';
import { MIN_VOLUME_SIZE, VolumeWriter } from '../airgap/volumes.js';
import { loadSigningKey } from '../airgap/archive.js';
import { formatSize, parseSize } from '../config/units.js';
import { creator } from './airgap-cmds.js';
import { TransferProgress } from './progress.js';

const OPTIONS = {
  ...COMMON_FLAGS,
  output: { type: 'string', short: 'o' },
  split: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  platform: { type: 'string', multiple: true },
  'all-platforms': { type: 'boolean' },
  have: { type: 'string' },
  sign: { type: 'string' },
} as const;

export const exportCommand: Command = {
  name: 'export',
  options: OPTIONS,
  summary: 'write cached images as an OCI image-layout tar for an air gap',
  help: `Usage: berth export IMAGE... -o FILE [--split SIZE] [--platform OS/ARCH]... [--all-platforms]
                    [--have INVENTORY] [--sign KEYFILE] [--json] [-q]

Writes the images as an OCI image layout in a plain tar (oci-layout,
index.json, blobs/sha256/...), each named in index.json by the
org.opencontainers.image.ref.name annotation holding its full reference
(docker.io/library/nginx:1.27). skopeo reads it (oci-archive:FILE:REF) and
\`berth import\` loads it. Content comes from the cache; what is missing is
fetched first. The file is written to FILE.partial and renamed when complete.

The tar opens with berth-archive.json, the archive manifest: every other
entry's name, size and sha256, and what the export left out. skopeo ignores
it. With --have, only what the inventory (\`berth inventory\` of the
importing berth) lacks is written: index.json still names every image, and
the archive manifest lists the digests left out, which the importing berth
must hold (such a differential tar is for \`berth import\` on that berth, not
for skopeo). With --sign, the archive manifest is signed (berth-archive.sig,
ed25519) for \`berth import --trust\`.

Before writing, the tar's size is computed and checked against the free
space where FILE goes; not enough refuses with the numbers, nothing written.

With --split SIZE the tar is cut into volumes FILE.000, FILE.001, … of at
most SIZE bytes each (e.g. 4GiB for a FAT32 stick; at least 1MiB): the tar
byte stream cut at SIZE boundaries, so \`cat FILE.0* > FILE\` gives the plain
tar. \`berth import FILE.0*\` takes the set. Older volumes FILE.NNN past the
new last one are removed.

Options:
  -o, --output FILE   the tar to write (required)
  --split SIZE        write volumes of at most SIZE (512MiB, 4GiB, 4000MB, …)
  --platform P        platforms to include from an index (default: this node's)
  --all-platforms     every platform an index offers
  --have INVENTORY    leave out what this inventory (berth inventory) holds
  --sign KEYFILE      sign with this ed25519 private key (berth keygen's .key)
  --json              print the result as JSON (no progress)
  -q, --quiet         no progress (a bar on a terminal, else a line every 5s or 10%)
  -v, --verbose       log to stderr
  --config FILE       configuration file
  -h, --help          show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, true);
    if (!values.output) throw new UsageError('-o FILE is required');
    if (positionals.length === 0) throw new UsageError('name at least one IMAGE');
    checkImageArgs(positionals);
    const platforms = platformsFrom(values.platform);
    const split = values.split === undefined ? undefined : splitSize(values.split);
    const config = configFrom(values.config);
    // A bad key fails before anything is fetched or written.
    const signingKey = values.sign === undefined ? undefined : loadSigningKey(path.resolve(values.sign));
    const target = path.resolve(values.output);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const writer = new VolumeWriter(target, split);
      let progress: TransferProgress | undefined;
      let blobs = 0;
      try {
        const r = await exportImages(rt, positionals, writer, {
          platforms,
          allPlatforms: values['all-platforms'] === true,
          creator: creator(),
          ...(values.have !== undefined ? { have: path.resolve(values.have) } : {}),
          ...(signingKey ? { signingKey } : {}),
          beforeWrite: async (plan) => {
            await checkExportRoom(path.dirname(target), plan.bytes);
            const p = new TransferProgress({ label: 'export', totalBytes: plan.bytes, totalBlobs: plan.blobs, silent: values.json === true || values.quiet === true });
            writer.onBytes = (bytes) => p.update({ bytes });
            progress = p;
          },
          onBlob: () => progress?.update({ blobs: ++blobs }),
        });
        const removed = await writer.commit();
        progress?.end(true, { bytes: writer.bytes, blobs });
        if (values.json) out(JSON.stringify({ file: target, ...(split === undefined ? {} : { volumes: writer.files, removedStaleVolumes: removed }), ...r }, null, 2));
        else {
          for (const i of r.images) out(`${i.name}@${i.digest}`);
          const what = `${r.manifests} manifests, ${r.blobs} blobs, ${formatSize(r.bytes)}`;
          if (split === undefined) out(`wrote ${target}: ${what}`);
          else {
            out(`wrote ${writer.files.length} volumes of at most ${formatSize(split)}: ${writer.files.join(', ')}: ${what}`);
            out(`(cat ${path.basename(target)}.0* > ${path.basename(target)} gives the plain tar; berth import takes the volumes)`);
            for (const f of removed) out(`removed ${f}, left from an older set`);
          }
          if (r.inventory) out(`left out ${r.omitted.manifests} manifests, ${r.omitted.blobs} blobs, ${formatSize(r.omitted.bytes)} the inventory holds (${r.inventory})`);
          if (r.signedBy) out(`signed by ${r.signedBy}`);
        }
        return EXIT.ok;
      } catch (e) {
        progress?.end(false);
        writer.destroy();
        await writer.abort();
        throw e;
      }
    });
  },
};

function splitSize(text: string): number {
  let bytes: number;
  try {
    bytes = parseSize(text);
  } catch (e) {
    throw new UsageError(`--split: ${(e as Error).message}`);
  }
  if (bytes < MIN_VOLUME_SIZE) throw new UsageError(`--split ${text}: a volume must be at least ${formatSize(MIN_VOLUME_SIZE)}`);
  return bytes;
}
