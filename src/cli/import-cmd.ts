import fs from 'node:fs';
import type { Command } from './command.js';
import { EXIT, UsageError, err, out } from './command.js';
import { COMMON_FLAGS, configFrom, parse, withRuntime } from './common.js';
import { importArchive } from '../airgap/import.js';
import { formatSize } from '../config/units.js';
import { trustedKeys } from './airgap-cmds.js';

export const importCommand: Command = {
  name: 'import',
  summary: 'load an OCI image-layout tar into the cache, verified, and pin it',
  help: `Usage: berth import FILE [--trust PUBKEYFILE]...

Loads an OCI image-layout tar (from \`berth export\` or \`skopeo copy …
oci-archive:FILE:docker.io/library/nginx:1.27\`) into the cache. Every blob
is hashed against its digest and sized against its descriptor, and every
blob an image needs must be present, before anything enters the cache; an
entry with "..", an absolute path, a symlink or a hard link refuses the
whole tar. On any problem nothing from the tar is kept (exit 1, the reason
printed). Images named by a full reference get their tag recorded; all are
pinned.

A berth archive lists every entry in berth-archive.json: an entry not
listed, missing, or of another size or digest refuses the tar. A
differential archive (export --have) is imported only if this cache holds
every digest it leaves out. With --trust (or [airgap] trust in the config)
the archive must be signed by one of those keys, checked before any blob
is staged; without, the archive's origin is not checked (said on stderr).

Options:
  --trust FILE    require a signature by this public key (berth keygen's
                  .pub); repeatable; replaces [airgap] trust
  --json          print the result as JSON
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { ...COMMON_FLAGS, trust: { type: 'string', multiple: true } }, true);
    if (positionals.length !== 1) throw new UsageError('name exactly one FILE');
    const file = positionals[0]!;
    if (!fs.existsSync(file)) throw new UsageError(`${file}: no such file`);
    const config = configFrom(values.config);
    const trusted = trustedKeys(values.trust, config.airgap.trust);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const r = await importArchive({ store: rt.store, pins: rt.index.pins }, fs.createReadStream(file, { highWaterMark: 1 << 20 }), { trusted });
      if (!r.signature.checked) err(`berth import: note: the archive's origin was not checked (${r.signature.why}; use --trust PUBKEYFILE or [airgap] trust)`);
      if (values.json) out(JSON.stringify(r, null, 2));
      else {
        for (const i of r.images) out(`${i.name}@${i.digest}  pinned${i.tagged ? ', tagged' : ''}`);
        out(`imported ${r.manifests} manifests, ${r.blobs} blobs, ${formatSize(r.bytes)}${r.omitted > 0 ? `; ${r.omitted} digests left out of the archive were already here` : ''}`);
        if (r.signature.checked) out(`signature verified: ${r.signature.key} (${r.signature.file})`);
      }
      return EXIT.ok;
    });
  },
};
