/**
 * Wires the daemon's scrape-time gauges to the parts they read: the store's
 * limits, pins and quarantine, and (with [peers]) the peer byte counters at 0
 * so a site's panels show "nothing yet" rather than no data.
 */
import fs from 'node:fs';
import type { Runtime } from '../runtime.js';
import { LOW_WATERMARK } from '../cache/evict.js';

/** Entries in the quarantine directory (0 when it does not exist yet). */
export function countQuarantined(dir: string): number {
  try {
    return fs.readdirSync(dir).length;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

export function watchDaemon(rt: Pick<Runtime, 'config' | 'metrics' | 'index' | 'layout' | 'site'>): void {
  const { metrics, index, layout, config } = rt;
  const maxBytes = config.cache.maxSizeBytes;
  metrics.watchStore({
    maxBytes,
    lowWatermarkBytes: Math.floor(maxBytes * LOW_WATERMARK),
    pinCount: () => index.pins.list().length,
    pinnedBytes: () => index.pins.pinnedBytes(),
    quarantined: () => countQuarantined(layout.quarantineDir),
  });
  if (rt.site) for (const direction of ['received', 'sent'] as const) metrics.peerBytes.inc({ direction }, 0);
}
