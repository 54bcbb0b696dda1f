import fs from 'node:fs';
import path from 'node:path';
import type { Command } from './command.js';
import { EXIT, UsageError, out } from './command.js';
import { COMMON_FLAGS, configFrom, parse, platformsFrom, withRuntime } from './common.js';
import { exportImages } from '../airgap/export.js';
import { formatSize } from '../config/units.js';
import { loadSigningKey } from '../airgap/archive.js';
import { creator } from './airgap-cmds.js';

export const exportCommand: Command = {
  name: 'export',
  summary: 'write cached images as an OCI image-layout tar for an air gap',
  help: `Usage: berth export IMAGE... -o FILE [--platform OS/ARCH]... [--all-platforms]
                    [--have INVENTORY] [--sign KEYFILE]

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

Options:
  -o, --output FILE   the tar to write (required)
  --platform P        platforms to include from an index (default: this node's)
  --all-platforms     every platform an index offers
  --have INVENTORY    leave out what this inventory (berth inventory) holds
  --sign KEYFILE      sign with this ed25519 private key (berth keygen's .key)
  --json              print the result as JSON
  -v, --verbose       log to stderr
  --config FILE       configuration file
  -h, --help          show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...COMMON_FLAGS, output: { type: 'string', short: 'o' }, platform: { type: 'string', multiple: true }, 'all-platforms': { type: 'boolean' }, have: { type: 'string' }, sign: { type: 'string' } }, true);
    if (!values.output) throw new UsageError('-o FILE is required');
    if (positionals.length === 0) throw new UsageError('name at least one IMAGE');
    const config = configFrom(values.config);
    // A bad key fails before anything is fetched or written.
    const signingKey = values.sign === undefined ? undefined : loadSigningKey(path.resolve(values.sign));
    const target = path.resolve(values.output);
    const partial = `${target}.partial`;
    return withRuntime(config, values.verbose === true, async (rt) => {
      const stream = fs.createWriteStream(partial, { mode: 0o644 });
      try {
        const r = await exportImages(rt, positionals, stream, {
          platforms: platformsFrom(values.platform),
          allPlatforms: values['all-platforms'] === true,
          creator: creator(),
          ...(values.have !== undefined ? { have: path.resolve(values.have) } : {}),
          ...(signingKey ? { signingKey } : {}),
        });
        fs.renameSync(partial, target);
        if (values.json) out(JSON.stringify({ file: target, ...r }, null, 2));
        else {
          for (const i of r.images) out(`${i.name}@${i.digest}`);
          out(`wrote ${target}: ${r.manifests} manifests, ${r.blobs} blobs, ${formatSize(r.bytes)}`);
          if (r.inventory) out(`left out ${r.omitted.manifests} manifests, ${r.omitted.blobs} blobs, ${formatSize(r.omitted.bytes)} the inventory holds (${r.inventory})`);
          if (r.signedBy) out(`signed by ${r.signedBy}`);
        }
        return EXIT.ok;
      } catch (e) {
        stream.destroy();
        fs.rmSync(partial, { force: true });
        throw e;
      }
    });
  },
};
