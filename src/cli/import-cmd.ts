import fs from 'node:fs';
import type { Command } from './command.js';
import { EXIT, UsageError, out } from './command.js';
import { COMMON_FLAGS, configFrom, parse, withRuntime } from './common.js';
import { importArchive } from '../airgap/import.js';
import { formatSize } from '../config/units.js';

export const importCommand: Command = {
  name: 'import',
  summary: 'load an OCI image-layout tar into the cache, verified, and pin it',
  help: `Usage: berth import FILE

Loads an OCI image-layout tar (from \`berth export\` or \`skopeo copy …
oci-archive:FILE:docker.io/library/nginx:1.27\`) into the cache. Every blob
is hashed against its digest and sized against its descriptor, and every
blob an image needs must be present, before anything enters the cache; an
entry with "..", an absolute path, a symlink or a hard link refuses the
whole tar. On any problem nothing from the tar is kept (exit 1, the reason
printed). Images named by a full reference get their tag recorded; all are
pinned.

Options:
  --json          print the result as JSON
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, COMMON_FLAGS, true);
    if (positionals.length !== 1) throw new UsageError('name exactly one FILE');
    const file = positionals[0]!;
    if (!fs.existsSync(file)) throw new UsageError(`${file}: no such file`);
    const config = configFrom(values.config);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const r = await importArchive({ store: rt.store, pins: rt.index.pins }, fs.createReadStream(file, { highWaterMark: 1 << 20 }));
      if (values.json) out(JSON.stringify(r, null, 2));
      else {
        for (const i of r.images) out(`${i.name}@${i.digest}  pinned${i.tagged ? ', tagged' : ''}`);
        out(`imported ${r.manifests} manifests, ${r.blobs} blobs, ${formatSize(r.bytes)}`);
      }
      return EXIT.ok;
    });
  },
};
