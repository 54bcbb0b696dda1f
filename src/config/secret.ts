/**
 * A *_file secret, read where it is used rather than when the config loads:
 * `berth status`, `gc` or `configure` never send a credential, and the
 * operator running them may not be allowed to read the daemon's secrets
 * (a mode 0600 file, systemd's LoadCredential=). `berth serve` reads every
 * one at start-up (unreadableSecrets) so the daemon still fails fast.
 *
 * The value never leaves through JSON, String() or util.inspect: each prints
 * "<redacted>", so a config logged or printed whole carries no secret.
 */
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { loadSiteKey, SiteKeyError } from '../peers/auth.js';
import { ConfigError } from './errors.js';
import { show } from './values.js';

export const REDACTED = '<redacted>';

/** What both kinds of secret print as, however they are printed. */
abstract class Redacted {
  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

export class Secret extends Redacted {
  /**
   * @param file where the *_file key was set (ConfigError.file)
   * @param key the dotted *_file key ("harbor.password_file")
   * @param path the file holding the secret, absolute
   */
  constructor(
    readonly file: string,
    readonly key: string,
    readonly path: string,
  ) {
    super();
  }

  // A private field, so it stays writable on the frozen config.
  #value: string | undefined;

  /**
   * The secret, read on first use and kept. One trailing newline is dropped
   * (echo and most editors add it). A ConfigError names the key, the file and
   * the path when it cannot be read; the contents never reach a message.
   */
  reveal(): string {
    if (this.#value !== undefined) return this.#value;
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      const uid = process.getuid?.();
      const hint = (code === 'EACCES' || code === 'EPERM') && uid !== undefined ? ` (not readable by uid ${uid})` : '';
      throw new ConfigError(this.file, this.key, `cannot read ${show(this.path)}: ${code}${hint}`);
    }
    const value = text.replace(/\r?\n$/, '');
    if (value === '') throw new ConfigError(this.file, this.key, `${show(this.path)} is empty`);
    this.#value = value;
    return value;
  }

}

/**
 * `[peers] key_file`: the site key, a Secret of bytes rather than text. Read
 * where it is used like any secret (and by `berth serve` at start-up through
 * unreadableSecrets), with loadSiteKey's rules: surrounding whitespace
 * removed, at least 32 bytes left. Prints as "<redacted>" like Secret.
 */
export class SiteKey extends Redacted {
  /**
   * @param file where key_file was set (ConfigError.file)
   * @param key the dotted key ("peers.key_file")
   * @param path the key file, absolute
   */
  constructor(
    readonly file: string,
    readonly key: string,
    readonly path: string,
  ) {
    super();
  }

  #value: Buffer | undefined;

  /**
   * The key bytes, read on first use and kept. A ConfigError names the key, the
   * file and the path when the file cannot be read or is too short; the
   * contents never reach a message.
   */
  reveal(): Buffer {
    if (this.#value !== undefined) return this.#value;
    try {
      this.#value = loadSiteKey(this.path);
    } catch (err) {
      if (!(err instanceof SiteKeyError)) throw err;
      // SiteKeyError says "site key file <path>: <problem>"; the key name says the first half here.
      const problem = err.message.slice(`site key file ${err.file}: `.length);
      const code = (err.cause as NodeJS.ErrnoException | undefined)?.code;
      const uid = process.getuid?.();
      const hint = (code === 'EACCES' || code === 'EPERM') && uid !== undefined ? ` (uid ${uid})` : '';
      throw new ConfigError(this.file, this.key, `${show(this.path)} ${problem}${hint}`);
    }
    return this.#value;
  }

}
