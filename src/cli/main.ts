#!/usr/bin/env node
/**
 * berth <command> [flags]. Exit codes: 0 ok, 1 failure, 2 bad usage or bad
 * config (with the offending key named).
 */
import { createRequire } from 'node:module';
import { EXIT, UsageError, err, out, type Command } from './command.js';
import { ConfigError } from './common.js';
import { serveCommand } from './serve.js';
import { configCommand } from './config-cmd.js';
import { configureCommand } from './configure.js';
import { doctorCommand } from './doctor.js';
import { prefetchCommand } from './prefetch.js';
import { exportCommand } from './export-cmd.js';
import { importCommand } from './import-cmd.js';
import { inventoryCommand, keygenCommand } from './airgap-cmds.js';
import { gcCommand, verifyCommand, unpinCommand } from './maintenance-cmds.js';
import { statusCommand } from './status.js';
import { syncCommand, auditCommand } from './harbor-cmds.js';

const COMMANDS: Command[] = [serveCommand, configCommand, prefetchCommand, exportCommand, importCommand, inventoryCommand, keygenCommand, statusCommand, verifyCommand, gcCommand, unpinCommand, syncCommand, auditCommand, configureCommand, doctorCommand];

function version(): string {
  const require = createRequire(import.meta.url);
  return (require('../../package.json') as { version: string }).version;
}

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: berth <command> [flags]',
    '',
    'A node-local pull-through caching mirror for container images.',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --config FILE and --help.',
    'Run `berth <command> --help` for its flags.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === 'version') {
    out(version());
    return EXIT.ok;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    err(`berth: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    out(command.help);
    return EXIT.ok;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`berth ${command.name}: ${e.message}`);
      return EXIT.usage;
    }
    if (e instanceof UsageError) {
      err(`berth ${command.name}: ${e.message}\n\n${command.help}`);
      return EXIT.usage;
    }
    err(`berth ${command.name}: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT.failure;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    err(`berth: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = EXIT.failure;
  },
);
