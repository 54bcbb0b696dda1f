/**
 * The audit record of manifest requests and the counters the daemon
 * persists for `berth status`. Both are deferred writes (db.ts): an audit
 * entry waits at most half a second (another process's `berth audit` should
 * see a refusal at once), or until a burst reaches 1000 entries.
 */
import type { Statement } from 'better-sqlite3';
import type { Batch, DB, Deferred } from './db.js';

export interface AuditEntry {
  at: number;
  registry: string;
  repository: string;
  reference: string;
  digest: string | null;
  method: string;
  /** cache | filled | stale | refused | unauthorized | error */
  decision: string;
  reason: string | null;
  client: string | null;
  username: string | null;
}

/** The image an entry names: `registry/repository:tag`, or `registry/repository@digest`. */
export function auditImage(e: Pick<AuditEntry, 'registry' | 'repository' | 'reference'>): string {
  return `${e.registry}/${e.repository}${e.reference.includes(':') ? '@' : ':'}${e.reference}`;
}

/** The newest entries kept in memory while the disk refuses writes. */
const BACKLOG = 10_000;

export class AuditLog implements Deferred {
  private pending: AuditEntry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly st: {
    insert: Statement<[AuditEntry]>;
    since: Statement<[number, number], AuditEntry & { id: number }>;
    count: Statement<[number], { n: number }>;
    summary: Statement<[number], { decision: string; n: number }>;
    pruneAge: Statement<[number]>;
    pruneCount: Statement<[number]>;
  };

  /** `flushSoon`: asks the index to write every deferred batch now. */
  constructor(db: DB, private readonly flushSoon: () => void) {
    this.st = {
      insert: db.prepare(
        'INSERT INTO audit (at, registry, repository, reference, digest, method, decision, reason, client, username) VALUES (@at, @registry, @repository, @reference, @digest, @method, @decision, @reason, @client, @username)',
      ),
      since: db.prepare('SELECT * FROM (SELECT * FROM audit WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?) ORDER BY at, id'),
      count: db.prepare('SELECT COUNT(*) AS n FROM audit WHERE at >= ?'),
      summary: db.prepare('SELECT decision, COUNT(*) AS n FROM audit WHERE at >= ? GROUP BY decision ORDER BY decision'),
      pruneAge: db.prepare('DELETE FROM audit WHERE at < ?'),
      pruneCount: db.prepare('DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?)'),
    };
  }

  record(entry: AuditEntry): void {
    this.pending.push(entry);
    if (this.pending.length >= 1000) this.flushSoon();
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flushSoon();
      }, 500);
      this.timer.unref();
    }
  }

  take(): Batch | null {
    if (this.pending.length === 0) return null;
    const batch = this.pending;
    this.pending = [];
    return {
      write: () => {
        for (const a of batch) this.st.insert.run(a);
      },
      putBack: () => {
        this.pending = [...batch, ...this.pending].slice(-BACKLOG);
      },
    };
  }

  /** The newest `limit` entries of the audit record since `since` (epoch ms), listed oldest first. */
  since(since: number, limit: number): (AuditEntry & { id: number })[] {
    return this.st.since.all(since, limit);
  }

  /** How many entries the record holds since `since` (epoch ms). */
  count(since: number): number {
    return this.st.count.get(since)?.n ?? 0;
  }

  summary(since: number): { decision: string; n: number }[] {
    return this.st.summary.all(since);
  }

  /** Keeps the audit record bounded by age and count. */
  prune(olderThan: number, keepRows: number): number {
    return this.st.pruneAge.run(olderThan).changes + this.st.pruneCount.run(keepRows).changes;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** Counters the daemon persists so that `berth status` can report them from another process. */
export class Counters implements Deferred {
  private readonly pending = new Map<string, number>();
  private readonly st: { bump: Statement<[string, number]>; all: Statement<[], { name: string; value: number }> };

  constructor(db: DB) {
    this.st = {
      bump: db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value'),
      all: db.prepare('SELECT name, value FROM counters'),
    };
  }

  /** Adds to a persisted counter; written with the next batch. */
  bump(name: string, n = 1): void {
    this.pending.set(name, (this.pending.get(name) ?? 0) + n);
  }

  all(): Record<string, number> {
    return Object.fromEntries(this.st.all.all().map((r) => [r.name, r.value]));
  }

  take(): Batch | null {
    if (this.pending.size === 0) return null;
    const batch = [...this.pending];
    this.pending.clear();
    return {
      write: () => {
        for (const [name, n] of batch) this.st.bump.run(name, n);
      },
      putBack: () => {
        for (const [name, n] of batch) this.bump(name, n);
      },
    };
  }
}
