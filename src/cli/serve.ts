import type { Command } from './command.js';
import { EXIT } from './command.js';
import { CONFIG_FLAG, configFrom, parse } from './common.js';
import { createLogger } from '../log.js';
import { unreadableSecrets, type ConfigWarning } from '../config/load.js';
import { startDaemon } from '../daemon.js';
import { notifyReady } from '../host/notify.js';

export const serveCommand: Command = {
  name: 'serve',
  options: CONFIG_FLAG,
  summary: 'run the mirror daemon in the foreground',
  help: `Usage: berth serve [--config FILE]

Runs the mirror in the foreground (systemd-friendly): the OCI registry API
for containerd's hosts.toml mirror requests, plus /healthz, /readyz and
/metrics on the same listener; with [server] metrics_listen, /metrics and
/healthz also on that address of their own (for a scraper: docs/monitoring.md).
SIGTERM or SIGINT stops accepting, lets blob
transfers under way finish for [server] drain_timeout, then exits 0.
Every password_file is read at start: one that cannot be read stops it
with exit 2, naming the key and the file.

Options:
  --config FILE   configuration file (default: $BERTH_CONFIG, else
                  /etc/berth/berth.toml if it exists, else built-in defaults)
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, CONFIG_FLAG);
    // The logger comes from the config, so the loader's warnings wait for it.
    const warnings: ConfigWarning[] = [];
    const config = configFrom(values.config, (w) => warnings.push(w));
    // Commands read a secret when they need it; the daemon needs them all, so it reads them now and a
    // password_file it cannot read stops it here (exit 2, naming the key) rather than failing pulls later.
    const [unreadable] = unreadableSecrets(config);
    if (unreadable) throw unreadable;
    const logger = createLogger(config.log.level);
    for (const w of warnings) logger.warn({ variable: w.file.replace(/^environment /, ''), key: w.key }, w.message);
    const daemon = await startDaemon(config, logger);
    void notifyReady(logger, { status: `serving on ${daemon.url}` });
    await new Promise<void>((resolve) => {
      const onSignal = (signal: NodeJS.Signals) => {
        logger.info({ signal }, 'signal received');
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        daemon.stop().then(resolve, (e: unknown) => {
          logger.error({ err: e }, 'error while stopping');
          resolve();
        });
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
    logger.flush();
    return EXIT.ok;
  },
};
