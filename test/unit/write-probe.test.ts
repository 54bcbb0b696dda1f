/**
 * The /readyz write probe (src/store/write-probe.ts) on a real directory, as root too: a tmp/ that
 * is gone or is a regular file fails it with the reason; a success is remembered for okMs (a
 * clock the test moves), a failure is not; concurrent asks share one probe; nothing is left behind.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { writeProbe } from '../../src/store/write-probe.js';
import { tempDirFor } from '../harness/procs.js';

t.test('a writable directory passes and is left as it was', async (t) => {
  const dir = await tempDirFor(t, 'berth-write-probe');
  const probe = writeProbe(dir);
  t.equal(await probe(), null);
  t.same(fs.readdirSync(dir), [], 'the probe file is removed');
});

t.test('tmp/ gone or a regular file: the reason; back to null once fixed, at the next ask', async (t) => {
  const work = await tempDirFor(t, 'berth-write-probe');
  const dir = path.join(work, 'tmp');
  fs.mkdirSync(dir);
  let clock = 0;
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => lines.push(JSON.parse(l) as { level: number; msg: string }) });
  const probe = writeProbe(dir, { okMs: 5000, now: () => clock, logger });

  t.equal(await probe(), null, 'writable');
  fs.renameSync(dir, `${dir}.away`);
  clock = 4999;
  t.equal(await probe(), null, 'a success holds for okMs: no probe');
  clock = 5000;
  t.equal(await probe(), 'cache directory not writable: tmp/ is missing (ENOENT)', 'then it probes again');

  fs.writeFileSync(dir, 'not a directory\n');
  fs.accessSync(dir, fs.constants.W_OK); // what /readyz asked before, and root is told yes
  t.equal(await probe(), 'cache directory not writable: tmp/ is not a directory (ENOTDIR)', 'a failure is not remembered');

  fs.rmSync(dir);
  fs.renameSync(`${dir}.away`, dir);
  t.equal(await probe(), null, 'fixed: ready at once, the clock unmoved');
  t.same(fs.readdirSync(dir), []);
  t.same(
    lines.map((l) => [l.level, l.msg]),
    [
      [40, 'cache directory not writable: tmp/ is missing (ENOENT)'],
      [40, 'cache directory not writable: tmp/ is not a directory (ENOTDIR)'],
      [30, 'cache directory writable again'],
    ],
    'each change logged once',
  );
});

t.test('asks while a probe is under way share it', async (t) => {
  const dir = await tempDirFor(t, 'berth-write-probe');
  const probe = writeProbe(dir, { okMs: 0 });
  const a = probe();
  const b = probe();
  t.equal(a, b, 'one probe');
  t.same(await Promise.all([a, b]), [null, null]);
  const c = probe();
  t.not(c, a, 'a new ask after it ended probes again (okMs 0)');
  t.equal(await c, null);
});
