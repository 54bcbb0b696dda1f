/**
 * Giving memory back (src/memory.ts): the addon's trim() export, the trim
 * once on demand (start-up), the idle trim after a burst of registry
 * requests (once per burst, not while a fill runs), and no trim at all
 * without the addon or after a trim failed.
 */
import t from 'tap';
import pino from 'pino';
import { loadTrim, memoryTrim } from '../../src/memory.js';

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}
const trims = (lines: Record<string, unknown>[]) => lines.filter((l) => l.msg === 'memory trimmed').map((l) => l.reason);
// Never fires during a test: the tests run the timer's check() themselves.
const HOUR = 3_600_000;

const addon = loadTrim();
t.test("the addon's trim() runs V8's low-memory GC and malloc_trim and answers a boolean", { skip: addon.trim ? false : `the berth-sendfile addon is not built or has no trim(): ${addon.reason}` }, async (t) => {
  // Garbage for the GC to find, and malloc'd memory freed just before.
  let junk: unknown[] | null = Array.from({ length: 100_000 }, (_, i) => ({ i, s: `x${i}` }));
  t.ok(junk.length > 0);
  junk = null;
  const before = process.memoryUsage().heapTotal;
  t.type(addon.trim!(), 'boolean', 'trim() answers whether malloc_trim released memory');
  t.ok(process.memoryUsage().heapTotal <= before, `V8's heap did not grow (${before} -> ${process.memoryUsage().heapTotal} bytes)`);
});

t.test('now() trims once and logs it with the reason and RSS', async (t) => {
  const { logger, lines } = capture();
  let calls = 0;
  const m = memoryTrim({ logger, trim: () => (calls++, true), checkMs: HOUR });
  t.teardown(() => m.stop());
  t.equal(m.now('start-up'), true);
  t.equal(calls, 1);
  const line = lines.find((l) => l.msg === 'memory trimmed')!;
  t.match(line, { reason: 'start-up', mallocReleased: true, rssBeforeMiB: Number, rssAfterMiB: Number, ms: Number });
});

t.test('the start-up trim waits for a quiet moment; traffic right after a start leaves it to the idle timer', async (t) => {
  const { logger, lines } = capture();
  const m = memoryTrim({ logger, trim: () => true, checkMs: HOUR });
  t.teardown(() => m.stop());
  t.equal(await m.afterStartup(10), true, 'no request during the quiet time: trimmed');
  t.same(trims(lines), ['start-up']);
  m.check();
  m.check();
  t.same(trims(lines), ['start-up'], 'and the idle timer has nothing to add');

  const busy = capture();
  const n = memoryTrim({ logger: busy.logger, trim: () => true, checkMs: HOUR });
  t.teardown(() => n.stop());
  const decided = n.afterStartup(10);
  n.touch();
  t.equal(await decided, false, 'a registry request during the quiet time: not now');
  t.same(trims(busy.lines), []);
  n.check();
  n.check();
  t.same(trims(busy.lines), ['idle'], 'the idle timer trims after that burst');

  const fills = capture();
  let filling = true;
  const f = memoryTrim({ logger: fills.logger, trim: () => true, busy: () => filling, checkMs: HOUR });
  t.teardown(() => f.stop());
  t.equal(await f.afterStartup(10), false, 'a fill running (a prefetch): not now');
  f.check();
  t.same(trims(fills.lines), [], 'nor while it runs');
  filling = false;
  f.check();
  t.same(trims(fills.lines), ['idle'], 'start-up is trimmed once the fill is done, with no request at all');

  const stopped = capture();
  const s = memoryTrim({ logger: stopped.logger, trim: () => true, checkMs: HOUR });
  const pendingTrim = s.afterStartup(10);
  s.stop();
  t.equal(await pendingTrim, false, 'a daemon stopping before the quiet time is over is not trimmed');
});

t.test('the idle trim comes after a burst, once, and waits for fills', async (t) => {
  const { logger, lines } = capture();
  let busy = false;
  const m = memoryTrim({ logger, trim: () => false, busy: () => busy, checkMs: HOUR });
  t.teardown(() => m.stop());
  m.check();
  m.check();
  t.same(trims(lines), [], 'no requests yet: nothing to trim');
  m.touch();
  m.touch();
  m.check();
  t.same(trims(lines), [], 'requests in the last window: not idle yet');
  busy = true;
  m.check();
  t.same(trims(lines), [], 'a fill is running: not idle');
  busy = false;
  m.check();
  t.same(trims(lines), ['idle'], 'a quiet window after the burst: one trim');
  m.check();
  m.check();
  t.same(trims(lines), ['idle'], 'no new requests: no second trim');
  m.touch();
  m.check();
  m.check();
  t.same(trims(lines), ['idle', 'idle'], 'the next burst gets its own');
  m.now('start-up');
  m.touch();
  m.now('start-up');
  m.check();
  m.check();
  t.same(trims(lines), ['idle', 'idle', 'start-up', 'start-up'], 'requests before a trim on demand are covered by it');
});

t.test('without the addon nothing is trimmed, and a failing trim is not tried again', async (t) => {
  const { logger, lines } = capture();
  const none = memoryTrim({ logger, trim: null, checkMs: HOUR });
  none.touch();
  t.equal(none.now('start-up'), false, 'no trim(): now() says so');
  none.check();
  none.check();
  t.same(trims(lines), [], 'and logs no trim');
  none.stop();

  let calls = 0;
  const failing = memoryTrim({
    logger,
    trim: () => {
      calls++;
      throw new Error('boom');
    },
    checkMs: HOUR,
  });
  t.equal(failing.now('start-up'), false);
  t.ok(lines.some((l) => l.msg === 'memory trim failed; not trimming again' && l.err === 'boom'), 'the failure is logged');
  failing.touch();
  failing.check();
  failing.check();
  t.equal(failing.now('start-up'), false);
  t.equal(calls, 1, 'trim() was called once');
  failing.stop();
});
