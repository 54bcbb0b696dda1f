/** Refusals an upstream's own policy gave (Harbor's 412), kept so that they hold offline. */
import type { Statement } from 'better-sqlite3';
import type { DB } from './db.js';

export class Refusals {
  private readonly st: {
    put: Statement<[string, string, string, string, number, number]>;
    get: Statement<[string, string, string], { message: string; at: number }>;
    clear: Statement<[string, string, string]>;
  };

  constructor(db: DB, private readonly now: () => number) {
    this.st = {
      put: db.prepare(
        `INSERT INTO refusals (registry, repository, reference, message, at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (registry, repository, reference) DO UPDATE SET at = excluded.at,
           message = CASE WHEN ? THEN excluded.message ELSE refusals.message END`,
      ),
      get: db.prepare('SELECT message, at FROM refusals WHERE registry = ? AND repository = ? AND reference = ?'),
      clear: db.prepare('DELETE FROM refusals WHERE registry = ? AND repository = ? AND reference = ?'),
    };
  }

  /** Records a refusal (keeps an earlier message when this one has none, as for HEAD). */
  put(registry: string, repository: string, reference: string, message: string | undefined): void {
    this.st.put.run(registry, repository, reference, message ?? '', this.now(), message ? 1 : 0);
  }

  get(registry: string, repository: string, reference: string): { message: string; at: number } | undefined {
    return this.st.get.get(registry, repository, reference);
  }

  clear(registry: string, repository: string, reference: string): void {
    this.st.clear.run(registry, repository, reference);
  }
}
