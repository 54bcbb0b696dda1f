/**
 * Export/import progress off a terminal: plain lines, one per 10% of the
 * bytes or every 5 s of the (injected) clock, and a last line with the
 * totals; a bar redrawn in place on a terminal; nothing when silent.
 */
import t from 'tap';
import { TransferProgress } from '../../src/cli/progress.js';

const MiB = 1024 * 1024;

function harness(o: { tty?: boolean; silent?: boolean } = {}) {
  const lines: string[] = [];
  let clock = 1_000_000;
  const p = new TransferProgress({ label: 'import', totalBytes: 100 * MiB, totalBlobs: 10, write: (s) => lines.push(s), now: () => clock, tty: o.tty ?? false, ...(o.silent ? { silent: true } : {}) });
  return { p, lines, advance: (ms: number) => (clock += ms) };
}

t.test('plain lines at each 10% of the bytes, with rate and ETA', async (t) => {
  const { p, lines, advance } = harness();
  advance(1000);
  p.update({ bytes: 5 * MiB, blobs: 1 });
  t.same(lines, [], 'under 10% and under 5 s: nothing yet');
  advance(1000);
  p.update({ bytes: 10 * MiB, blobs: 1 });
  t.same(lines, ['import  10%  10MiB/100MiB  1/10 blobs  5MiB/s  ETA 18s\n']);
  advance(500);
  p.update({ bytes: 15 * MiB, blobs: 2 });
  t.equal(lines.length, 1, 'the next 10% not reached, 5 s not passed');
  advance(500);
  p.update({ bytes: 31 * MiB, blobs: 3 });
  t.equal(lines.length, 2, 'past 30% (skipping 20%): one line, not two');
  t.equal(lines[1], 'import  31%  31MiB/100MiB  3/10 blobs  10.33MiB/s  ETA 7s\n');
});

t.test('a line every 5 s while it moves slowly', async (t) => {
  const { p, lines, advance } = harness();
  advance(4999);
  p.update({ bytes: MiB });
  t.equal(lines.length, 0);
  advance(1);
  p.update({ bytes: 2 * MiB });
  t.equal(lines.length, 1);
  t.match(lines[0], /^import {2}2% {2}2MiB\/100MiB {2}0\/10 blobs/);
  advance(5000);
  p.update({ bytes: 3 * MiB });
  t.equal(lines.length, 2);
});

t.test('the last line says done, with the totals; a failure adds none', async (t) => {
  const { p, lines, advance } = harness();
  advance(20_000);
  p.update({ bytes: 100 * MiB, blobs: 10 });
  t.same(lines, [], 'reaching 100% leaves the line to end()');
  p.end();
  t.same(lines, ['import  100%  100MiB/100MiB  10/10 blobs  done in 20s\n']);
  p.update({ bytes: 1 });
  p.end();
  t.equal(lines.length, 1, 'nothing after the end');
  const failed = harness();
  failed.advance(1000);
  failed.p.update({ bytes: 50 * MiB });
  failed.p.end(false);
  t.equal(failed.lines.length, 1, 'the 50% line, no "done"');
});

t.test('on a terminal: a bar redrawn in place, cleared at the end', async (t) => {
  const { p, lines, advance } = harness({ tty: true });
  advance(2000);
  p.update({ bytes: 50 * MiB, blobs: 5 });
  t.same(lines, ['\r\x1b[Kimport  [############------------]  50%  50MiB/100MiB  5/10 blobs  25MiB/s  ETA 2s']);
  advance(10);
  p.update({ bytes: 51 * MiB });
  t.equal(lines.length, 1, 'redrawn at most ten times a second');
  p.end();
  t.equal(lines[1], '\r\x1b[K');
});

t.test('silent (--json, --quiet): nothing', async (t) => {
  const { p, lines, advance } = harness({ silent: true });
  advance(10_000);
  p.update({ bytes: 60 * MiB });
  p.end();
  t.same(lines, []);
});

t.test('an estimated total (export) ends on the real one', async (t) => {
  const { p, lines, advance } = harness();
  advance(3000);
  p.update({ bytes: 99 * MiB, blobs: 9 });
  p.end(true, { bytes: 99 * MiB + 512, blobs: 10 });
  t.equal(lines[lines.length - 1], 'import  100%  99MiB/99MiB  10/10 blobs  done in 3s\n');
});
