import t from 'tap';
import { formatDuration, formatSize, parseDuration, parseSize } from '../../src/config/units.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

t.test('parseDuration accepts every documented form', async (t) => {
  const cases: [string, number][] = [
    ['500ms', 500],
    ['90s', 90 * S],
    ['5m', 5 * M],
    ['72h', 72 * H],
    ['2d', 2 * D],
    ['1h30m', H + 30 * M],
    ['2d12h', 2 * D + 12 * H],
    ['1m30s250ms', M + 30 * S + 250],
    ['1d1h1m1s1ms', D + H + M + S + 1],
    ['1.5h', 90 * M],
    ['0.5s', 500],
    ['0', 0],
    ['000', 0],
    ['0s', 0],
    [' 5m ', 5 * M],
  ];
  for (const [input, ms] of cases) t.equal(parseDuration(input), ms, input);
});

t.test('parseDuration refuses what it cannot read exactly', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty string is not a duration/],
    ['   ', /empty string is not a duration/],
    ['-5s', /negative/],
    ['90', /has no unit/],
    ['1.5', /has no unit/],
    ['5x', /is not a duration \(use e\.g\./],
    ['5 m', /is not a duration/],
    ['5M', /is not a duration/],
    ['abc', /is not a duration/],
    ['.5s', /is not a duration/],
    ['1.s', /is not a duration/],
    ['+5s', /is not a duration/],
    ['5m5m', /largest to smallest, each once/],
    ['30s1m', /largest to smallest/],
    ['0.5ms', /finer than a millisecond/],
    ['1.0001s', /finer than a millisecond/],
    ['200000000000d', /too long \(over 9007199254740991ms\)/],
    ['1'.repeat(70) + 's', /too long to be a duration/],
  ];
  for (const [input, message] of cases) t.throws(() => parseDuration(input), message, JSON.stringify(input));
});

t.test('parseSize accepts every documented form', async (t) => {
  const cases: [string, number][] = [
    ['512MiB', 512 * 2 ** 20],
    ['50GiB', 50 * 2 ** 30],
    ['1.5GiB', 1.5 * 2 ** 30],
    ['100MB', 100_000_000],
    ['10KiB', 10_240],
    ['10KB', 10_000],
    ['1024', 1024],
    ['1024B', 1024],
    ['1TiB', 2 ** 40],
    ['2TB', 2e12],
    ['1PiB', 2 ** 50],
    ['1PB', 1e15],
    ['3GB', 3e9],
    ['0', 0],
    ['20 GiB', 20 * 2 ** 30],
    ['0.5KiB', 512],
    ['1.5KB', 1500],
    [' 8MiB ', 8 * 2 ** 20],
    [String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
  ];
  for (const [input, bytes] of cases) t.equal(parseSize(input), bytes, input);
});

t.test('parseSize refuses negative, empty, garbage, ambiguous, fractional bytes and overflow', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty string is not a size/],
    ['-5GiB', /negative/],
    ['-1', /negative/],
    ['12XB', /"12XB" is not a size \(use e\.g\. "512MiB", "20GiB"\)/],
    ['GiB', /is not a size/],
    ['five', /is not a size/],
    ['1e9', /is not a size/],
    ['0x10', /is not a size/],
    ['1,024', /is not a size/],
    ['512M', /ambiguous: write "512MiB" \(1024-based\) or "512MB" \(1000-based\)/],
    ['1g', /ambiguous: write "1GiB"/],
    ['1.5 m', /ambiguous: write "1.5MiB"/],
    ['10k', /ambiguous/],
    ['10kib', /ambiguous/],
    ['1.5', /not a whole number of bytes/],
    ['1.1KiB', /not a whole number of bytes/],
  ];
  for (const [input, message] of cases) t.throws(() => parseSize(input), message, JSON.stringify(input));
  t.equal(parseSize('7PiB'), 7 * 2 ** 50, '7PiB still fits');
  t.throws(() => parseSize('9PiB'), /too large \(over 9007199254740991 bytes\)/);
  t.throws(() => parseSize(String(Number.MAX_SAFE_INTEGER + 2)), /too large/);
  t.throws(() => parseSize('9'.repeat(80)), /too long to be a size/);
});

t.test('errors are plain Errors and quote long input bounded', async (t) => {
  const err = t.throws(() => parseSize('x'.repeat(50)));
  t.type(err, Error);
  t.ok(err instanceof Error && err.message.length < 120);
});

t.test('formatSize', async (t) => {
  t.equal(formatSize(0), '0B');
  t.equal(formatSize(812), '812B');
  t.equal(formatSize(1024), '1KiB');
  t.equal(formatSize(20 * 2 ** 30), '20GiB');
  t.equal(formatSize(1.5 * 2 ** 30), '1.5GiB');
  t.equal(formatSize(1_300_000_000), '1.21GiB');
  t.equal(formatSize(2 ** 20 - 1), '1MiB', 'no "1024KiB" after rounding');
  t.equal(formatSize(3 * 2 ** 50), '3PiB');
  t.equal(formatSize(2 ** 60), '1024PiB', 'no unit past PiB');
  t.equal(formatSize(-2048), '-2KiB');
  t.throws(() => formatSize(NaN), RangeError);
  t.throws(() => formatSize(Infinity), RangeError);
  for (const s of ['512MiB', '50GiB', '1.5GiB', '1TiB', '10KiB']) t.equal(formatSize(parseSize(s)), s, `${s} round-trips`);
});

t.test('formatDuration', async (t) => {
  t.equal(formatDuration(0), '0s');
  t.equal(formatDuration(500), '500ms');
  t.equal(formatDuration(90 * S), '1m30s');
  t.equal(formatDuration(72 * H), '3d');
  t.equal(formatDuration(H + 30 * M), '1h30m');
  t.equal(formatDuration(D + 5), '1d5ms');
  t.equal(formatDuration(1.4), '1ms', 'rounds to whole milliseconds');
  t.equal(formatDuration(-5 * S), '-5s');
  t.equal(formatDuration(3 * H + 12 * M + 5 * S + 41, 2), '3h12m', 'maxParts keeps the largest parts');
  t.equal(formatDuration(3 * H + 5 * S, 2), '3h', 'maxParts counts zero units in between');
  t.equal(formatDuration(300, 1), '300ms');
  t.throws(() => formatDuration(NaN), RangeError);
  for (const s of ['500ms', '90s', '5m', '72h', '1h30m', '2d', '1d2h3m4s5ms']) {
    t.equal(parseDuration(formatDuration(parseDuration(s))), parseDuration(s), `${s} round-trips`);
  }
});
