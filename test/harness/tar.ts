/** Whole-tar reads and writes for the air-gap tests: archives taken apart, altered and put back. */
import fs from 'node:fs';
import tar from 'tar-stream';

export interface ReadEntry {
  name: string;
  type: string;
  data: Buffer;
}

export interface WriteEntry {
  name: string;
  /** 'file' (the default), 'symlink', 'link' or 'directory'. */
  type?: string;
  data?: Buffer;
  linkname?: string;
}

/** Every entry of a tar, in order. */
export async function readTar(file: string): Promise<ReadEntry[]> {
  const extract = tar.extract();
  const entries: ReadEntry[] = [];
  const done = new Promise<void>((res, rej) => {
    extract.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        entries.push({ name: h.name, type: h.type ?? 'file', data: Buffer.concat(chunks) });
        next();
      });
    });
    extract.on('finish', res);
    extract.on('error', rej);
  });
  fs.createReadStream(file).pipe(extract);
  await done;
  return entries;
}

/** A tar of these entries, in order (a file's size is its data's length). */
export async function writeTar(file: string, entries: WriteEntry[]): Promise<void> {
  const pack = tar.pack();
  const out = fs.createWriteStream(file);
  pack.pipe(out);
  for (const e of entries) {
    const type = (e.type ?? 'file') as tar.Header['type'];
    await new Promise<void>((res, rej) => {
      const header = { name: e.name, type, ...(e.linkname ? { linkname: e.linkname } : {}), ...(type === 'file' ? { size: e.data?.length ?? 0 } : {}) };
      pack.entry(header, e.data ?? Buffer.alloc(0), (err) => (err ? rej(err) : res()));
    });
  }
  pack.finalize();
  await new Promise<void>((res) => out.on('close', () => res()));
}
