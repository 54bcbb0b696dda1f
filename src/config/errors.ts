/**
 * A configuration problem, always naming where it came from (`file`: a path,
 * "built-in defaults" or "environment BERTH_…") and which key (`key`, dotted:
 * "cache.max_size", "upstream[1].url"; empty when the whole file is at fault).
 * The CLI exits 2 on it. Messages never carry a secret: callers pass only the
 * offending non-secret value, never the contents of a *_file.
 */
export class ConfigError extends Error {
  /** Stable code to match on; the message is for people. */
  readonly code = 'ECONFIG';
  readonly key: string;
  readonly file: string;
  /** The message without the "file: key: " prefix. */
  readonly problem: string;

  constructor(file: string, key: string, problem: string) {
    super(key === '' ? `${file}: ${problem}` : `${file}: ${key}: ${problem}`);
    this.name = 'ConfigError';
    this.file = file;
    this.key = key;
    this.problem = problem;
  }
}

/** The `file` of an error caused by a built-in default (a bug, or an odd $CACHE_DIRECTORY). */
export const BUILT_IN = 'built-in defaults';

/** The `file` of an error caused by an environment variable. */
export function envOrigin(name: string): string {
  return `environment ${name}`;
}

/**
 * Something the loader ignored and says so: a BERTH_* variable that names no
 * key. Returned rather than logged because the logger is made from the config;
 * the caller logs it (the daemon) or prints it (a command).
 */
export interface ConfigWarning {
  /** As ConfigError.file: "environment BERTH_PORT". */
  file: string;
  /** The dotted key the name would be ("server.port"). */
  key: string;
  /** "file: key: problem; ignored…", for people. */
  message: string;
}
