/**
 * Durations and sizes as operators write them in berth.toml and BERTH_* variables.
 *
 * Duration grammar: one or more `<number><unit>` parts with no spaces, units
 * d (24h), h, m, s, ms, each used once and from largest to smallest, so
 * "1h30m", "2d12h", "1.5h" and "500ms" parse and a typo like "5m5m" does not.
 * A bare "0" is zero; any other bare number is refused because "90" could be
 * seconds or milliseconds. Fractions are allowed as long as the total is a
 * whole number of milliseconds.
 *
 * Size grammar: `<number>[ ]<unit>` with B, KB/MB/GB/TB/PB (1000-based) or
 * KiB/MiB/GiB/TiB/PiB (1024-based); a bare integer is bytes. Units are case
 * sensitive; "512M" and "1g" are refused as ambiguous instead of guessed.
 *
 * Arithmetic is done in BigInt so "1.1KiB" is seen to be 1126.4 bytes (refused)
 * rather than rounded by a float, and overflow past 2^53 is caught exactly.
 */

const MAX_INPUT = 64;
const MAX = BigInt(Number.MAX_SAFE_INTEGER);

const DURATION_HINT = '(use e.g. "500ms", "90s", "5m", "1h30m", "2d")';
const SIZE_HINT = '(use e.g. "512MiB", "20GiB")';

const DURATION_UNITS = [
  ['d', 86_400_000n],
  ['h', 3_600_000n],
  ['m', 60_000n],
  ['s', 1_000n],
  ['ms', 1n],
] as const;

const SIZE_UNITS: ReadonlyMap<string, bigint> = new Map([
  ['', 1n],
  ['B', 1n],
  ['KB', 1000n],
  ['MB', 1000n ** 2n],
  ['GB', 1000n ** 3n],
  ['TB', 1000n ** 4n],
  ['PB', 1000n ** 5n],
  ['KiB', 1024n],
  ['MiB', 1024n ** 2n],
  ['GiB', 1024n ** 3n],
  ['TiB', 1024n ** 4n],
  ['PiB', 1024n ** 5n],
]);

/** Echoes user input in a message, bounded so a pasted blob cannot flood a log line. */
function show(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}

/** `digits[.digits]` times `unit`, exactly, or null when it is not whole. */
function scale(intPart: string, fracPart: string, unit: bigint): bigint | null {
  const numerator = BigInt(intPart + fracPart) * unit;
  const denominator = 10n ** BigInt(fracPart.length);
  return numerator % denominator === 0n ? numerator / denominator : null;
}

/** Parses a duration such as "90s" or "1h30m" into milliseconds; throws an Error saying why not. */
export function parseDuration(input: string): number {
  const s = input.trim();
  if (s === '') throw new Error(`empty string is not a duration ${DURATION_HINT}`);
  if (s.length > MAX_INPUT) throw new Error(`${show(s)} is too long to be a duration`);
  if (s.startsWith('-')) throw new Error(`${show(s)} is negative; a duration must be 0 or more`);
  if (/^0+$/.test(s)) return 0;
  if (/^\d+(?:\.\d+)?$/.test(s)) throw new Error(`${show(s)} has no unit ${DURATION_HINT}`);
  if (!/^(?:\d+(?:\.\d+)?(?:ms|d|h|m|s))+$/.test(s)) throw new Error(`${show(s)} is not a duration ${DURATION_HINT}`);

  let total = 0n;
  let next = 0; // index into DURATION_UNITS: each part must use a smaller unit than the last
  for (const part of s.matchAll(/(\d+)(?:\.(\d+))?(ms|d|h|m|s)/g)) {
    const [, intPart = '', fracPart = '', unit] = part;
    const at = DURATION_UNITS.findIndex(([name]) => name === unit);
    if (at < next) throw new Error(`${show(s)}: units must go from largest to smallest, each once ${DURATION_HINT}`);
    next = at + 1;
    const ms = scale(intPart, fracPart, DURATION_UNITS[at]![1]);
    if (ms === null) throw new Error(`${show(s)} is finer than a millisecond`);
    total += ms;
  }
  if (total > MAX) throw new Error(`${show(s)} is too long (over ${Number.MAX_SAFE_INTEGER}ms)`);
  return Number(total);
}

/** Parses a size such as "20GiB", "100MB" or "1024" into bytes; throws an Error saying why not. */
export function parseSize(input: string): number {
  const s = input.trim();
  if (s === '') throw new Error(`empty string is not a size ${SIZE_HINT}`);
  if (s.length > MAX_INPUT) throw new Error(`${show(s)} is too long to be a size`);
  if (s.startsWith('-')) throw new Error(`${show(s)} is negative; a size must be 0 or more`);
  const m = /^(\d+)(?:\.(\d+))? ?([A-Za-z]*)$/.exec(s);
  const unitName = m?.[3] ?? '';
  const unit = SIZE_UNITS.get(unitName);
  if (!m || unit === undefined) {
    if (m && /^[kmgtp]i?b?$/i.test(unitName)) {
      const n = s.slice(0, s.length - unitName.length).trim();
      const letter = unitName[0]!.toUpperCase();
      throw new Error(`${show(s)} is ambiguous: write "${n}${letter}iB" (1024-based) or "${n}${letter}B" (1000-based)`);
    }
    throw new Error(`${show(s)} is not a size ${SIZE_HINT}`);
  }
  const bytes = scale(m[1]!, m[2] ?? '', unit);
  if (bytes === null) throw new Error(`${show(s)} is not a whole number of bytes`);
  if (bytes > MAX) throw new Error(`${show(s)} is too large (over ${Number.MAX_SAFE_INTEGER} bytes)`);
  return Number(bytes);
}

const FORMAT_SIZE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const;

/**
 * Bytes for people: "20GiB", "1.5GiB", "812B". Exact values round-trip
 * through parseSize; others are shown to two decimals.
 */
export function formatSize(bytes: number): string {
  if (!Number.isFinite(bytes)) throw new RangeError(`formatSize: ${bytes} is not a finite number`);
  if (bytes < 0) return `-${formatSize(-bytes)}`;
  let value = Math.round(bytes);
  let i = 0;
  // Step up while the rounded figure would reach 1024 ("1024.00KiB" reads worse than "1MiB").
  while (i < FORMAT_SIZE_UNITS.length - 1 && Number((value / 1024).toFixed(2)) >= 1) {
    value /= 1024;
    i++;
  }
  const text = Number.isInteger(value) ? String(value) : String(Number(value.toFixed(2)));
  return `${text}${FORMAT_SIZE_UNITS[i]}`;
}

/**
 * Milliseconds for people: "1h30m", "500ms", "2d3h". With `maxParts` only the
 * largest parts are kept ("3h12m" rather than "3h12m5s41ms" for a snapshot age);
 * without it the result round-trips through parseDuration.
 */
export function formatDuration(ms: number, maxParts = Infinity): string {
  if (!Number.isFinite(ms)) throw new RangeError(`formatDuration: ${ms} is not a finite number`);
  if (ms < 0) return `-${formatDuration(-ms, maxParts)}`;
  let rest = BigInt(Math.round(ms));
  const parts: string[] = [];
  // Counted from the first non-zero unit and without gaps, so 3h0m5s cut to two parts is "3h", not "3h5s".
  let used = 0;
  for (const [name, size] of DURATION_UNITS) {
    const n = rest / size;
    rest %= size;
    if (used === 0 && n === 0n) continue;
    if (used++ >= maxParts) break;
    if (n > 0n) parts.push(`${n}${name}`);
  }
  return parts.length === 0 ? '0s' : parts.join('');
}
