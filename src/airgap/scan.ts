/**
 * The pre-scan of an archive before import writes anything: reads each
 * 512-byte tar header, checks its checksum, seeks over the entry's data
 * (padded to 512) to the next, until the end-of-archive marker (two zero
 * blocks). It reads only headers (plus pax and GNU long-name records), so
 * it is cheap even for a large archive, and it proves the file or volume
 * set whole: a missing, short or misordered volume breaks the header chain
 * or leaves the end marker out. It yields every entry (name, size) for the
 * pre-flight. The import that follows re-reads the same bytes and checks
 * every digest itself; the scan is not a substitute for that.
 */
import type { VolumeSet } from './volumes.js';

const BLOCK = 512;
/** pax and GNU long-name records are small; a bigger one is not an archive berth reads. */
const MAX_META = 1024 * 1024;

export class ScanError extends Error {
  readonly code = 'SCAN';
}

export interface ScannedEntry {
  name: string;
  size: number;
  /** tar typeflag ('0' a file, '5' a directory, …); '0' for the old '\0'. */
  type: string;
  /** Where the entry's data starts in the archive. */
  offset: number;
}

export interface ScanResult {
  entries: ScannedEntry[];
  /** Bytes up to and including the end marker. */
  end: number;
}

/** What the scan reads: a VolumeSet, or anything with the same few methods. */
export type Scannable = Pick<VolumeSet, 'size' | 'read' | 'where' | 'explainShort'>;

const pad = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

export function scanArchive(src: Scannable): ScanResult {
  const entries: ScannedEntry[] = [];
  const total = src.size;
  let at = 0;
  let longName: string | null = null;
  let pax: Record<string, string> = {};
  const need = (n: number) => {
    if (at + n > total) throw new ScanError(src.explainShort(at + n));
  };
  for (;;) {
    need(BLOCK);
    const h = src.read(at, BLOCK);
    if (isZero(h)) {
      need(2 * BLOCK);
      if (!isZero(src.read(at + BLOCK, BLOCK))) throw new ScanError(`the archive is corrupt at ${src.where(at + BLOCK)}: one zero block, then more data`);
      return { entries, end: at + 2 * BLOCK };
    }
    if (!checksumOk(h)) {
      throw new ScanError(`no tar header at ${src.where(at)} where the archive's next entry should start: a volume is out of order, from another archive, or corrupt`);
    }
    const type = h[156] === 0 ? '0' : String.fromCharCode(h[156]!);
    const size = readSize(h.subarray(124, 136));
    if (size === null) throw new ScanError(`the tar header at ${src.where(at)} has no readable size`);
    need(BLOCK + pad(size));
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
      if (size > MAX_META) throw new ScanError(`a tar ${type === 'x' || type === 'g' ? 'pax' : 'long name'} record at ${src.where(at)} is ${size} bytes`);
      const data = src.read(at + BLOCK, size);
      if (type === 'x') pax = parsePax(data, src.where(at));
      else if (type === 'L') longName = cString(data);
      at += BLOCK + pad(size);
      continue;
    }
    let name = longName ?? pax.path ?? headerName(h);
    if (name === '') name = headerName(h);
    const realSize = pax.size !== undefined ? Number(pax.size) : size;
    if (!Number.isSafeInteger(realSize) || realSize < 0) throw new ScanError(`the pax size at ${src.where(at)} is not a size`);
    // Only regular files carry data; links and directories say 0 whatever their field holds.
    const dataSize = type === '0' || type === '7' ? realSize : type === '1' || type === '2' || type === '5' ? 0 : realSize;
    if (dataSize !== size) need(BLOCK + pad(dataSize));
    entries.push({ name, size: dataSize, type, offset: at + BLOCK });
    at += BLOCK + pad(dataSize);
    longName = null;
    pax = {};
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/** The header's checksum: its bytes summed with the checksum field read as spaces (unsigned, or signed as some old tars wrote). */
function checksumOk(h: Buffer): boolean {
  const field = h.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const want = parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return want === unsigned || want === signed;
}

/** Octal, or base-256 (high bit set) for sizes past 8 GiB. */
function readSize(f: Buffer): number | null {
  if (f[0]! & 0x80) {
    let n = 0;
    for (let i = 1; i < f.length; i++) n = n * 256 + f[i]!;
    n += (f[0]! & 0x7f) * 256 ** (f.length - 1);
    return Number.isSafeInteger(n) ? n : null;
  }
  const s = f.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : null;
}

function cString(b: Buffer): string {
  const z = b.indexOf(0);
  return b.subarray(0, z === -1 ? b.length : z).toString('utf8');
}

function headerName(h: Buffer): string {
  const name = cString(h.subarray(0, 100));
  const ustar = h.subarray(257, 262).toString('latin1') === 'ustar';
  const prefix = ustar ? cString(h.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/** pax records: "LEN key=value\n", LEN counting the whole record. */
function parsePax(data: Buffer, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length && data[i] !== 0) {
    const sp = data.indexOf(0x20, i);
    const len = sp === -1 ? NaN : Number(data.subarray(i, sp).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= sp - i || i + len > data.length) throw new ScanError(`a pax record at ${where} is malformed`);
    const rec = data.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}
