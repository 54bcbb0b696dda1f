import type { Command } from './command.js';
import { EXIT, out } from './command.js';
import { CONFIG_FLAG, configFrom, parse } from './common.js';
import { redactedConfig } from '../config/load.js';

export const configCommand: Command = {
  name: 'config',
  summary: 'check the configuration and print it (secrets redacted)',
  help: `Usage: berth config [--config FILE]

Loads the configuration the way \`berth serve\` would (file, then
BERTH_<SECTION>_<KEY> environment overrides), validates every key, and
prints the effective configuration as JSON with secrets redacted.
A BERTH_* variable that names no key (Kubernetes sets BERTH_PORT and the
like for a Service named berth…) is ignored with a warning on stderr.
Exit 0 when valid; exit 2 naming the offending key and file otherwise.

Options:
  --config FILE   configuration file (default: $BERTH_CONFIG, else
                  /etc/berth/berth.toml if it exists, else built-in defaults)
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, CONFIG_FLAG);
    out(JSON.stringify(redactedConfig(configFrom(values.config)), null, 2));
    return EXIT.ok;
  },
};
