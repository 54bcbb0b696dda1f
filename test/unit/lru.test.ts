/**
 * growingLru: bounded like lru-cache's `max`, without allocating for `max`
 * entries up front (the mirror's 100 000-entry link cache was ~2.7 MiB of an
 * idle daemon's RSS).
 */
import t from 'tap';
import { growingLru } from '../../src/cache/lru.js';

t.test('holds at most max entries and evicts the least recently used', async (t) => {
  const lru = growingLru<string, true>(3);
  for (const k of ['a', 'b', 'c']) lru.set(k, true);
  t.ok(lru.get('a'), 'a is there (and now the most recently used)');
  lru.set('d', true);
  t.equal(lru.size, 3);
  t.notOk(lru.has('b'), 'b, the least recently used, went');
  t.ok(lru.has('a') && lru.has('c') && lru.has('d'));
  for (let i = 0; i < 1000; i++) lru.set(`k${i}`, true);
  t.equal(lru.size, 3, 'still 3 after 1000 more');
  t.ok(lru.has('k999') && lru.has('k998') && lru.has('k997'));
});

t.test('allocates with its entries, not for max up front', async (t) => {
  const before = process.memoryUsage().arrayBuffers;
  const lrus = Array.from({ length: 4 }, () => growingLru<string, true>(1_000_000, { ttl: 60_000 }));
  const grown = process.memoryUsage().arrayBuffers - before;
  // lru-cache's own max: 1 000 000 would be 3 Uint32Arrays of 4 MB each per cache, 48 MB for the four.
  t.ok(grown < 1_000_000, `4 empty caches bounded at 1 000 000 took ${grown} bytes of ArrayBuffers`);
  lrus[0]!.set('x', true);
  t.ok(lrus[0]!.has('x'));
});
