/**
 * Split archives: one tar byte stream cut at fixed-size boundaries into
 * volumes `NAME.tar.000`, `NAME.tar.001`, … (volume i holds bytes
 * [i·SIZE, (i+1)·SIZE) of the tar), so `cat NAME.tar.0* > NAME.tar` gives
 * the plain tar back. Nothing in a volume marks it as one: the set is told
 * by its names, and checked whole by the header scan (scan.ts).
 *
 * `VolumeWriter` writes the stream to `.partial` files, opening each only
 * when its first byte arrives (a refused export leaves no file), fsyncing
 * and closing each before the next; `commit` renames them all. `VolumeSet`
 * reads a plain file or a set, in order, at any offset.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { formatSize } from '../config/units.js';

/** Smaller volumes than this are refused: thousands of files for one image help nobody. */
export const MIN_VOLUME_SIZE = 1024 * 1024;

const SUFFIX = /\.(\d{3,})$/;

/** `NAME.tar.007` for volume 7 of NAME.tar (three digits, more past 999). */
export function volumeName(base: string, i: number): string {
  return `${base}.${String(i).padStart(3, '0')}`;
}

export class VolumeError extends Error {
  readonly code = 'VOLUMES';
}

/**
 * A Writable that writes to `target` (no split) or to `target.000`,
 * `target.001`, … of at most `split` bytes each, all as `.partial` files
 * until `commit`.
 */
export class VolumeWriter extends Writable {
  /** Final names, in order, of the files written so far. */
  readonly files: string[] = [];
  private fh: fsp.FileHandle | null = null;
  private inVolume = 0;
  private aborted = false;
  private pending: Promise<void> | null = null;
  /** Bytes accepted so far (progress). */
  bytes = 0;
  onBytes: ((total: number) => void) | null = null;

  constructor(private readonly target: string, private readonly split?: number) {
    super({ highWaterMark: 1 << 20 });
    if (split !== undefined && split < MIN_VOLUME_SIZE) throw new VolumeError(`a volume must be at least ${formatSize(MIN_VOLUME_SIZE)}`);
  }

  private finalName(i: number): string {
    return this.split === undefined ? this.target : volumeName(this.target, i);
  }

  private async closeCurrent(): Promise<void> {
    if (!this.fh) return;
    const fh = this.fh;
    this.fh = null;
    await fh.sync();
    await fh.close();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pending = this.writeChunk(chunk);
    this.pending.then(() => cb(), cb);
  }

  private async writeChunk(chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      if (this.aborted) throw new VolumeError('the export was abandoned');
      if (this.split !== undefined && this.inVolume >= this.split) await this.closeCurrent();
      if (!this.fh) {
        const name = this.finalName(this.files.length);
        this.fh = await fsp.open(`${name}.partial`, 'w', 0o644);
        this.files.push(name);
        this.inVolume = 0;
      }
      const room = this.split === undefined ? chunk.length - at : Math.min(chunk.length - at, this.split - this.inVolume);
      let off = at;
      while (off < at + room) {
        const { bytesWritten } = await this.fh.write(chunk, off, at + room - off);
        off += bytesWritten;
      }
      at += room;
      this.inVolume += room;
      this.bytes += room;
      this.onBytes?.(this.bytes);
    }
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.closeCurrent().then(() => cb(), cb);
  }

  /**
   * Renames every `.partial` to its name once the stream has finished; with
   * a split, older volumes of the same name past the last one written are
   * removed (a set must not pick up a stale tail). Returns those removed.
   */
  async commit(): Promise<string[]> {
    for (const f of this.files) await fsp.rename(`${f}.partial`, f);
    const removed: string[] = [];
    if (this.split !== undefined) {
      const dir = path.dirname(this.target);
      const base = path.basename(this.target);
      for (const n of await fsp.readdir(dir)) {
        if (!n.startsWith(`${base}.`)) continue;
        const m = SUFFIX.exec(n.slice(base.length));
        if (!m || n.length !== base.length + m[0].length || Number(m[1]) < this.files.length) continue;
        await fsp.rm(path.join(dir, n), { force: true });
        removed.push(path.join(dir, n));
      }
    }
    await syncDir(path.dirname(this.target));
    return removed;
  }

  /** Closes and removes every `.partial` written. */
  async abort(): Promise<void> {
    this.aborted = true;
    await this.pending?.catch(() => undefined);
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
    for (const f of this.files) await fsp.rm(`${f}.partial`, { force: true });
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await fsp.open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Best effort: some filesystems (FAT on a stick) refuse to fsync a directory.
  }
}

interface Volume {
  file: string;
  start: number;
  size: number;
}

/**
 * A plain archive or a set of volumes, read in order as one byte range.
 * `open` checks what the names and sizes alone can tell; the header scan
 * tells the rest.
 */
export class VolumeSet {
  private fds: (number | null)[];

  private constructor(
    readonly volumes: Volume[],
    /** The set's name (`site.tar`), or the file for a plain archive. */
    readonly name: string,
    readonly split: boolean,
  ) {
    this.fds = volumes.map(() => null);
  }

  get size(): number {
    const last = this.volumes[this.volumes.length - 1]!;
    return last.start + last.size;
  }

  /** The volume size of a set of two or more (every volume but the last has it). */
  private get volumeSize(): number | undefined {
    return this.split && this.volumes.length > 1 ? this.volumes[0]!.size : undefined;
  }

  /**
   * Opens FILE, or the volumes of one set named in any order: same
   * `NAME.tar.` before a numeric suffix, contiguous from .000, every one but
   * the last of the same size.
   */
  static open(paths: string[]): VolumeSet {
    if (paths.length === 0) throw new VolumeError('name the archive: FILE, or every volume of a set (NAME.tar.000 NAME.tar.001 …)');
    const parsed = paths.map((p) => {
      const m = SUFFIX.exec(path.basename(p));
      return { file: p, base: m ? path.basename(p).slice(0, -m[0].length) : (null as string | null), n: m ? Number(m[1]) : -1 };
    });
    // One file with a number at the end that does not look like a volume (backup.20240101) is plain.
    if (parsed.length === 1 && parsed[0]!.n > 0 && !parsed[0]!.base!.endsWith('.tar')) parsed[0]!.base = null;
    const plain = parsed.filter((p) => p.base === null);
    if (plain.length > 0) {
      if (paths.length > 1) throw new VolumeError(`${plain[0]!.file} is not a volume (NAME.tar.000, .001, …): name one archive, or the volumes of one set`);
      const file = paths[0]!;
      return new VolumeSet([{ file, start: 0, size: sizeOf(file) }], file, false);
    }
    const base = parsed[0]!.base!;
    const other = parsed.find((p) => p.base !== base);
    if (other) throw new VolumeError(`${other.file} is not a volume of ${base} (a set's volumes share their name up to the number)`);
    parsed.sort((a, b) => a.n - b.n);
    for (let i = 1; i < parsed.length; i++) {
      if (parsed[i]!.n === parsed[i - 1]!.n) throw new VolumeError(`volume ${volumeName(base, parsed[i]!.n)} is named twice (${parsed[i - 1]!.file}, ${parsed[i]!.file})`);
    }
    const missing: string[] = [];
    let expect = 0;
    for (const p of parsed) {
      for (; expect < p.n; expect++) missing.push(volumeName(base, expect));
      expect = p.n + 1;
    }
    if (missing.length > 0) throw new VolumeError(`${missing.length === 1 ? 'volume' : 'volumes'} ${listNames(missing)} of ${base} ${missing.length === 1 ? 'is' : 'are'} missing (given ${listNames(parsed.map((p) => path.basename(p.file)))})`);
    const volumes: Volume[] = [];
    let start = 0;
    for (const p of parsed) {
      const size = sizeOf(p.file);
      volumes.push({ file: p.file, start, size });
      start += size;
    }
    const first = volumes[0]!.size;
    for (let i = 0; i < volumes.length; i++) {
      const v = volumes[i]!;
      const last = i === volumes.length - 1;
      if (v.size === 0) throw new VolumeError(`volume ${path.basename(v.file)} is empty`);
      if (!last && v.size !== first) throw new VolumeError(`volume ${path.basename(v.file)} is ${v.size} bytes where ${path.basename(volumes[0]!.file)} is ${first}: it is truncated or from another set`);
      if (last && v.size > first) throw new VolumeError(`volume ${path.basename(v.file)} is larger (${v.size} bytes) than ${path.basename(volumes[0]!.file)} (${first}): it is from another set`);
    }
    return new VolumeSet(volumes, base, true);
  }

  /** The volume holding byte `offset`, for messages. */
  where(offset: number): string {
    if (!this.split) return `byte ${offset} of ${this.name}`;
    const v = this.volumes.find((x) => offset >= x.start && offset < x.start + x.size) ?? this.volumes[this.volumes.length - 1]!;
    return `byte ${offset} (in volume ${path.basename(v.file)})`;
  }

  /** Why the archive needs bytes up to `needed` past the end of what was given. */
  explainShort(needed: number): string {
    const end = this.size;
    if (!this.split) return `the archive is truncated: ${this.name} ends at byte ${end}, the archive continues (to byte ${needed} at least)`;
    const last = this.volumes[this.volumes.length - 1]!;
    const n = this.volumes.length;
    const next = volumeName(this.name, n);
    const lastName = path.basename(last.file);
    if (this.volumeSize === undefined) return `volume ${next} is missing (or ${lastName} is truncated): the set ends at byte ${end}, the archive continues`;
    if (last.size === this.volumeSize) return `volume ${next} is missing: the set ends at byte ${end}, the archive continues`;
    return `volume ${lastName} is truncated (${last.size} bytes, the others ${this.volumeSize}): the set ends at byte ${end}, the archive continues`;
  }

  /** Volumes that start at or after `end` (the archive's end marker): they belong elsewhere. */
  after(end: number): Volume[] {
    return this.volumes.filter((v) => v.start >= end);
  }

  /** Reads up to `length` bytes at `position` across volumes; fewer only at the end of the set. */
  read(position: number, length: number): Buffer {
    const out = Buffer.alloc(Math.max(0, Math.min(length, this.size - position)));
    let done = 0;
    while (done < out.length) {
      const at = position + done;
      const i = this.volumes.findIndex((v) => at >= v.start && at < v.start + v.size);
      const v = this.volumes[i]!;
      this.fds[i] ??= fs.openSync(v.file, 'r');
      const n = fs.readSync(this.fds[i], out, done, Math.min(out.length - done, v.start + v.size - at), at - v.start);
      if (n === 0) throw new VolumeError(`${path.basename(v.file)} shrank while it was read`);
      done += n;
    }
    return out;
  }

  /** The whole archive as one stream, volume after volume; `onBytes` is told the running total. */
  stream(onBytes?: (total: number) => void): Readable {
    const files = this.volumes.map((v) => v.file);
    let total = 0;
    async function* chain(): AsyncGenerator<Buffer> {
      for (const f of files) {
        for await (const chunk of fs.createReadStream(f, { highWaterMark: 1 << 20 })) {
          total += (chunk as Buffer).length;
          onBytes?.(total);
          yield chunk as Buffer;
        }
      }
    }
    return Readable.from(chain(), { objectMode: false });
  }

  close(): void {
    for (const fd of this.fds) if (fd !== null) fs.closeSync(fd);
    this.fds = this.volumes.map(() => null);
  }
}

function sizeOf(file: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new VolumeError(`${file}: no such file`);
  }
  if (!st.isFile()) throw new VolumeError(`${file} is not a regular file`);
  return st.size;
}

function listNames(names: string[]): string {
  return names.length <= 6 ? names.join(', ') : `${names.slice(0, 5).join(', ')}, … (${names.length})`;
}
