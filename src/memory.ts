/**
 * Gives back the memory start-up and bursts of work leave behind: a
 * memory-reducing full GC (V8's low-memory notification: it compacts the heap,
 * releases its empty pages and shrinks the young generation, which a plain
 * gc() does not) and then glibc's malloc_trim(0), both through the optional
 * berth-sendfile addon's trim(). Without the addon nothing is trimmed.
 *
 * Once when start-up is over (the listener up, the upstream warm-up done,
 * then STARTUP_QUIET_MS without a registry request), and once each time the
 * daemon goes idle after registry requests: an unref'd timer looks every
 * IDLE_CHECK_MS whether one came since its last look, and trims after a whole
 * window without any (and no fill running). Probes and scrapes (/healthz,
 * /readyz, /metrics) do not count: they come all the time and leave little.
 * A request costs one counter increment; a trim blocks the main thread for
 * tens of milliseconds, so it never runs per request (docs/performance.md,
 * Memory).
 */
import { createRequire } from 'node:module';
import type { Logger } from 'pino';

/** How often the idle timer looks for requests; a trim comes one to two windows after the last one. */
export const IDLE_CHECK_MS = 15_000;
/**
 * The start-up trim waits this long without a registry request: traffic right after a start
 * (a restart under load) should not take a ~40 ms pause and a shrunken heap while it warms up
 * (docs/performance.md, Memory); the idle timer trims after that burst instead.
 */
export const STARTUP_QUIET_MS = 500;

/** The addon's trim(): returns whether malloc_trim released memory. */
export type TrimFn = () => boolean;

/** berth-sendfile's trim(), or null with the reason (not built, an older build without trim). */
export function loadTrim(): { trim: TrimFn | null; reason: string } {
  try {
    const addon = createRequire(import.meta.url)('berth-sendfile') as { trim?: unknown };
    if (typeof addon.trim !== 'function') return { trim: null, reason: 'the berth-sendfile addon has no trim()' };
    return { trim: addon.trim as TrimFn, reason: '' };
  } catch (err) {
    return { trim: null, reason: (err instanceof Error ? err.message : String(err)).split('\n')[0]! };
  }
}

export interface MemoryTrim {
  /** Trims now and logs it; false when there is no trim(). */
  now(reason: string): boolean;
  /**
   * Start-up is over: trims after quietMs without a registry request or a fill (true), or
   * leaves it to the idle timer (false).
   */
  afterStartup(quietMs?: number): Promise<boolean>;
  /** One registry request seen (O(1): the idle timer compares counts). */
  touch(): void;
  /** What the idle timer runs: trims when requests came before the last look and none since. */
  check(): void;
  /** Stops the idle timer. */
  stop(): void;
}

export interface MemoryTrimOptions {
  logger: Logger;
  /** The trim to run; default berth-sendfile's. null: no addon, nothing trimmed. */
  trim?: TrimFn | null;
  /** True while work runs that no request count shows (a fill): the idle trim waits. */
  busy?: () => boolean;
  checkMs?: number;
}

const mib = (bytes: number): number => Math.round((bytes / 2 ** 20) * 10) / 10;

export function memoryTrim(opts: MemoryTrimOptions): MemoryTrim {
  const { logger } = opts;
  let trim: TrimFn | null;
  if (opts.trim === undefined) {
    const loaded = loadTrim();
    trim = loaded.trim;
    if (!trim) logger.debug({ reason: loaded.reason }, 'memory is not trimmed when idle: the berth-sendfile addon is not available');
  } else {
    trim = opts.trim;
  }
  const busy = opts.busy ?? (() => false);
  let requests = 0;
  let seen = 0;
  let trimmedAt = 0;
  // Start-up left memory that no trim has given back yet.
  let pending = false;
  let timer: NodeJS.Timeout | null = null;
  let startupTimer: NodeJS.Timeout | null = null;
  let settleStartup: ((trimmed: boolean) => void) | null = null;

  const now = (reason: string): boolean => {
    if (!trim) return false;
    trimmedAt = requests;
    pending = false;
    const before = process.memoryUsage.rss();
    const t0 = performance.now();
    let released: boolean;
    try {
      released = trim();
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'memory trim failed; not trimming again');
      trim = null;
      if (timer) clearInterval(timer);
      timer = null;
      return false;
    }
    logger.info({ reason, rssBeforeMiB: mib(before), rssAfterMiB: mib(process.memoryUsage.rss()), mallocReleased: released, ms: Math.round(performance.now() - t0) }, 'memory trimmed');
    return true;
  };

  const check = (): void => {
    if (requests !== seen) {
      seen = requests; // requests came in this window: not idle yet
    } else if ((pending || requests !== trimmedAt) && !busy()) {
      now('idle');
    }
  };
  const afterStartup = (quietMs = STARTUP_QUIET_MS): Promise<boolean> => {
    if (!trim) return Promise.resolve(false);
    pending = true;
    const at = requests;
    return new Promise((resolve) => {
      settleStartup = resolve;
      startupTimer = setTimeout(() => {
        startupTimer = null;
        settleStartup = null;
        resolve(requests === at && !busy() && now('start-up'));
      }, quietMs);
    });
  };
  if (trim) {
    timer = setInterval(check, opts.checkMs ?? IDLE_CHECK_MS);
    timer.unref();
  }

  return {
    now,
    afterStartup,
    check,
    touch() {
      requests++;
    },
    stop() {
      if (startupTimer) clearTimeout(startupTimer);
      settleStartup?.(false);
      startupTimer = null;
      settleStartup = null;
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
