/**
 * Typed reads from one merged table (a section, or one [[upstream]] entry).
 * Each value remembers where it came from, so every error names the key and
 * the file, the default, or the environment variable that set it.
 */
import { accessSync, constants } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError } from './errors.js';
import { Secret, SiteKey } from './secret.js';
import { formatDuration, parseDuration, parseSize } from './units.js';
import { show } from './values.js';

export interface Entry {
  value: unknown;
  /** ConfigError.file for this value. */
  origin: string;
}

/** setTimeout fires at once for anything longer (it stores a signed 32-bit count). */
export const TIMER_MAX_MS = 2 ** 31 - 1;

function describe(v: unknown): string {
  if (typeof v === 'string') return `string ${show(v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `integer ${v}` : `float ${v}`;
  if (typeof v === 'bigint') return `integer ${v}`;
  if (typeof v === 'boolean') return `boolean ${v}`;
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'object' && v !== null) return 'a table';
  return typeof v;
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Fields {
  /**
   * @param prefix dotted path of this table ("cache", "upstream[0]")
   * @param origin where the table itself came from, for keys that are missing
   */
  constructor(
    readonly prefix: string,
    private readonly entries: ReadonlyMap<string, Entry>,
    readonly origin: string,
    private readonly cwd: string,
  ) {}

  key(name: string): string {
    return `${this.prefix}.${name}`;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  fail(name: string, problem: string): never {
    throw new ConfigError(this.entries.get(name)?.origin ?? this.origin, this.key(name), problem);
  }

  /** Unknown keys first: a misspelt key should not surface as some other key's complaint. */
  checkKnown(known: readonly string[]): void {
    for (const name of this.entries.keys()) {
      if (known.includes(name)) continue;
      if (name === 'password' && known.includes('password_file')) {
        this.fail(name, `a secret is not accepted here; write it to a file (mode 0600) and set ${this.key('password_file')}`);
      }
      this.fail(name, `unknown key (known: ${known.join(', ')})`);
    }
  }

  string(name: string): string | undefined {
    const entry = this.entries.get(name);
    if (entry === undefined) return undefined;
    if (typeof entry.value !== 'string') this.fail(name, `expected a string, got ${describe(entry.value)}`);
    if (entry.value === '') this.fail(name, 'must not be empty (leave the key out instead)');
    return entry.value;
  }

  required(name: string, example: string): string {
    const s = this.string(name);
    if (s === undefined) this.fail(name, `missing (e.g. ${name} = ${show(example)})`);
    return s;
  }

  /** A string checked and normalised by `check`, whose Error message becomes the problem. */
  checked<T>(name: string, s: string, check: (s: string) => T): T {
    try {
      return check(s);
    } catch (err) {
      this.fail(name, reason(err));
    }
  }

  bool(name: string): boolean {
    const v = this.entries.get(name)?.value;
    if (typeof v !== 'boolean') this.fail(name, `expected true or false, got ${describe(v)}`);
    return v;
  }

  list(name: string): string[] {
    const v = this.entries.get(name)?.value;
    if (!Array.isArray(v)) this.fail(name, `expected an array of strings, got ${describe(v)}`);
    const out: string[] = [];
    v.forEach((item: unknown, i) => {
      if (typeof item !== 'string' || item === '') this.fail(name, `item ${i}: expected a non-empty string, got ${describe(item)}`);
      if (out.includes(item)) this.fail(name, `${show(item)} is listed twice`);
      out.push(item);
    });
    return out;
  }

  /**
   * An inline table (`kubernetes = { namespace = "berth", … }`) as Fields of its
   * own, so its keys are named in full ("peers.kubernetes.namespace").
   */
  table(name: string, example: string): Fields | undefined {
    const entry = this.entries.get(name);
    if (entry === undefined) return undefined;
    const v = entry.value;
    if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Date) {
      this.fail(name, `expected an inline table, got ${describe(v)} (e.g. ${name} = ${example})`);
    }
    const entries = new Map<string, Entry>(Object.entries(v).map(([key, value]) => [key, { value, origin: entry.origin }]));
    return new Fields(this.key(name), entries, entry.origin, this.cwd);
  }

  /**
   * @param positive zero is refused (a zero timeout or interval makes no sense)
   * @param timer the value feeds setTimeout, so it must fit TIMER_MAX_MS
   */
  duration(name: string, { positive = false, timer = false } = {}): number {
    const s = this.required(name, '90s');
    const ms = this.checked(name, s, parseDuration);
    if (positive && ms === 0) this.fail(name, 'must be more than 0');
    if (timer && ms > TIMER_MAX_MS) this.fail(name, `${show(s)} is too long (at most ${formatDuration(TIMER_MAX_MS)}, Node's timer limit)`);
    return ms;
  }

  size(name: string, { min = 0 } = {}): number {
    const s = this.required(name, '20GiB');
    const bytes = this.checked(name, s, parseSize);
    if (bytes < min) this.fail(name, `${show(s)} is too small (at least ${min} bytes)`);
    return bytes;
  }

  /** A path, relative ones taken from the working directory like any command-line path. */
  path(name: string): string | undefined {
    const s = this.string(name);
    return s === undefined ? undefined : resolve(this.cwd, s);
  }

  /**
   * A directory berth writes its data in (the cache): not in a kernel
   * filesystem (/proc, /sys, /dev: Node's recursive mkdir loops for ever under
   * /proc), and no NUL byte (no system call takes one).
   */
  dataDir(name: string): string | undefined {
    const s = this.string(name);
    if (s === undefined) return undefined;
    if (s.includes('\0')) this.fail(name, 'contains a NUL byte');
    const dir = resolve(this.cwd, s);
    const kernel = ['/proc', '/sys', '/dev'].find((k) => dir === k || dir.startsWith(`${k}/`));
    if (kernel) this.fail(name, `${show(dir)} is in ${kernel}, a kernel filesystem: give a directory on a disk (e.g. /var/cache/berth)`);
    return dir;
  }

  /** A path to a file the daemon will read later (certificate, CA): checked now so the error names the key. */
  readablePath(name: string): string | undefined {
    const path = this.path(name);
    if (path === undefined) return undefined;
    try {
      accessSync(path, constants.R_OK);
    } catch (err) {
      this.fail(name, `cannot read ${show(path)}: ${(err as NodeJS.ErrnoException).code ?? reason(err)}`);
    }
    return path;
  }

  /** A list of paths to files read later (airgap.trust), each checked like readablePath. */
  readablePathList(name: string): string[] {
    return this.list(name).map((s, i) => {
      const path = resolve(this.cwd, s);
      try {
        accessSync(path, constants.R_OK);
      } catch (err) {
        this.fail(name, `item ${i}: cannot read ${show(path)}: ${(err as NodeJS.ErrnoException).code ?? reason(err)}`);
      }
      return path;
    });
  }

  /**
   * A *_file secret, not read here: it is read where it is used (see Secret),
   * so commands that never send it work for users who may not read it.
   */
  secret(name: string): Secret | undefined {
    const path = this.path(name);
    if (path === undefined) return undefined;
    return new Secret(this.entries.get(name)?.origin ?? this.origin, this.key(name), path);
  }

  /** A site key file ([peers] key_file): a secret of bytes, read where it is used like secret(). */
  siteKey(name: string): SiteKey | undefined {
    const path = this.path(name);
    if (path === undefined) return undefined;
    return new SiteKey(this.entries.get(name)?.origin ?? this.origin, this.key(name), path);
  }
}
