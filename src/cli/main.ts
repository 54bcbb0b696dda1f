#!/usr/bin/env node
/**
 * berth <command> [flags]. Exit codes: 0 ok, 1 failure, 2 bad usage or bad
 * config (with the offending key named).
 */
import { createRequire } from 'node:module';
import { EXIT, UsageError, err, out, quietOnClosedPipe, type Command } from './command.js';
import { ConfigError } from './common.js';
import { COMMANDS } from './commands.js';

function version(): string {
  const require = createRequire(import.meta.url);
  return (require('../../package.json') as { version: string }).version;
}

async function usage(): Promise<string> {
  const commands = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'Usage: berth <command> [flags]',
    '',
    'A node-local pull-through caching mirror for container images.',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --config FILE and --help.',
    'Run `berth <command> --help` for its flags.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  // Not the daemon: its stdout is the log, and a lost log reader must not stop it with 0.
  if (name !== 'serve' || rest.includes('--help') || rest.includes('-h')) quietOnClosedPipe();
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(await usage());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === 'version') {
    out(version());
    return EXIT.ok;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) {
    err(`berth: unknown command ${JSON.stringify(name)}\n\n${await usage()}`);
    return EXIT.usage;
  }
  const command = await load();
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
