/**
 * The bench's stand-in for tap's `t`: the harness registers stops and temp
 * dir removals with `teardown(fn)`; the bench runs them, last registered
 * first, when it ends, and on SIGINT/SIGTERM (children would otherwise be
 * SIGKILLed by their parent-death signal with their temp dirs left behind).
 */
import type { Teardown } from '../test/harness/procs.js';

export class Scope implements Teardown {
  private readonly fns: Array<() => unknown> = [];
  private closing: Promise<void> | null = null;

  /** True once `close()` has begun (a signal arrived, or the run ended). */
  get closed(): boolean {
    return this.closing !== null;
  }

  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }

  /** Runs every teardown (LIFO); a failing one is reported and does not stop the rest. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.fns.length > 0) {
        const fn = this.fns.pop();
        try {
          await fn?.();
        } catch (err) {
          process.stderr.write(`bench: teardown failed: ${err instanceof Error ? err.message : String(err)}\n`);
        }
      }
    })();
    return this.closing;
  }

  /** A child scope whose teardowns run when it is closed, or with the parent at the latest. */
  child(): Scope {
    const c = new Scope();
    this.teardown(() => c.close());
    return c;
  }

  /** Closes the scope and exits on SIGINT/SIGTERM (exit code 130/143). */
  closeOnSignals(): void {
    for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(sig, () => {
        process.stderr.write(`\nbench: ${sig}: stopping what the bench started\n`);
        void this.close().finally(() => process.exit(code));
      });
    }
  }
}
