/**
 * An LRU of at most `max` entries whose memory grows with its entries.
 * lru-cache's own `max` allocates its arrays for all `max` entries up front
 * (100 000 keys: ~2.7 MiB, held from start by a daemon that has served
 * nothing; docs/performance.md, Memory). Counting each entry as size 1
 * against `maxSize` bounds it the same, evicting the least recently used.
 */
import { LRUCache } from 'lru-cache';

export function growingLru<K extends {}, V extends {}>(max: number, opts: { ttl?: number } = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...opts, maxSize: max, sizeCalculation: () => 1 });
}
