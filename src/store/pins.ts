/** Pins: images (and all they reference) that eviction never takes. */
import type { Statement } from 'better-sqlite3';
import type { DB } from './db.js';
import { PINNED_CLOSURE } from './schema.js';

export interface PinRow {
  image: string;
  digest: string;
  created_at: number;
}

export class Pins {
  private readonly st: {
    drop: Statement<[string]>;
    add: Statement<[string, string, number]>;
    unpin: Statement<[string, string]>;
    all: Statement<[], PinRow>;
    bytes: Statement<[], { bytes: number }>;
  };

  constructor(private readonly db: DB, private readonly now: () => number) {
    this.st = {
      drop: db.prepare('DELETE FROM pins WHERE image = ?'),
      add: db.prepare('INSERT INTO pins (image, digest, created_at) VALUES (?, ?, ?)'),
      unpin: db.prepare('DELETE FROM pins WHERE image = ? OR digest = ?'),
      all: db.prepare('SELECT image, digest, created_at FROM pins ORDER BY image'),
      bytes: db.prepare(`${PINNED_CLOSURE} SELECT COALESCE(SUM(b.size), 0) AS bytes FROM blobs b JOIN keep k ON b.digest = k.d`),
    };
  }

  /** Pins an image reference to a digest; re-pinning a moved tag releases the old digest. */
  pin(image: string, digest: string): void {
    this.db.transaction(() => {
      this.st.drop.run(image);
      this.st.add.run(image, digest, this.now());
    })();
  }

  /** Removes the pins of an image reference (or of a digest). Returns how many. */
  unpin(imageOrDigest: string): number {
    return this.st.unpin.run(imageOrDigest, imageOrDigest).changes;
  }

  list(): PinRow[] {
    return this.st.all.all();
  }

  /** Bytes of blobs that pins keep. */
  pinnedBytes(): number {
    return this.st.bytes.get()?.bytes ?? 0;
  }
}
