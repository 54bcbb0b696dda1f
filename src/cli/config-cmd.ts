import type { Command } from './command.js';
import { EXIT, err, out } from './command.js';
import { CONFIG_FLAG, configFrom, parse } from './common.js';
import { redactedConfig, unreadableSecrets } from '../config/load.js';

export const configCommand: Command = {
  name: 'config',
  options: CONFIG_FLAG,
  summary: 'check the configuration and print it (secrets redacted)',
  help: `Usage: berth config [--config FILE]

Loads the configuration the way \`berth serve\` would (file, then
BERTH_<SECTION>_<KEY> environment overrides), validates every key, and
prints the effective configuration as JSON with secrets redacted.
A BERTH_* variable that names no key (Kubernetes sets BERTH_PORT and the
like for a Service named berth…) is ignored with a warning on stderr, and
so is a password_file this user cannot read (serve reads them at start;
other commands only when an upstream or Harbor asks for credentials).
Exit 0 when valid; exit 2 naming the offending key and file otherwise.

Options:
  --config FILE   configuration file (default: $BERTH_CONFIG, else
                  /etc/berth/berth.toml if it exists, else built-in defaults)
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, CONFIG_FLAG);
    const config = configFrom(values.config);
    // Whoever runs this may not be the user the daemon runs as: a secret they cannot read is worth
    // saying, not a reason to call the config invalid (serve refuses to start without it).
    for (const e of unreadableSecrets(config)) err(`berth: warning: ${e.message}; berth serve needs it`);
    out(JSON.stringify(redactedConfig(config), null, 2));
    return EXIT.ok;
  },
};
