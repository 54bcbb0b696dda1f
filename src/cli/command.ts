/** The shape every `berth <command>` has, and the exit codes SPEC fixes. */
import type { ParseArgsConfig } from 'node:util';

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** A command's flags, as node:util parseArgs takes them. */
export type Flags = NonNullable<ParseArgsConfig['options']>;

export interface Command {
  name: string;
  summary: string;
  /** Full --help text. */
  help: string;
  /** Every flag run() accepts: what test/unit/cli-help.test.ts holds the help to. */
  options: Flags;
  run(argv: string[]): Promise<number>;
}

export class UsageError extends Error {
  readonly code = 'USAGE';
}

/**
 * Output into a pipe whose reader went away (`berth audit | head`): stop quietly with 0, as the
 * reader has what it wanted, instead of dying on an unhandled EPIPE with a stack trace. Any other
 * failure to write stdout is said in one line, exit 1.
 */
export function quietOnClosedPipe(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') process.stderr.write(`berth: cannot write the output: ${e.message}\n`);
    process.exit(e.code === 'EPIPE' ? EXIT.ok : EXIT.failure);
  });
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

export function err(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : text + '\n');
}
