/** The shape every `berth <command>` has, and the exit codes SPEC fixes. */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

export interface Command {
  name: string;
  summary: string;
  /** Full --help text. */
  help: string;
  run(argv: string[]): Promise<number>;
}

export class UsageError extends Error {
  readonly code = 'USAGE';
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

export function err(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : text + '\n');
}
