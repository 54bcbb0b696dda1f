/**
 * The loopback CPU floor of a cold fill (measure 2): on these shared cores a
 * direct download costs the client's CPU and the upstream's per GiB; any
 * mirror in between that checks the digest adds at least SHA-256 of every
 * byte. If the cores are the limit, time goes with CPU spent, so the best
 * ratio such a mirror could reach against the direct download is
 * (client + upstream) / (client + upstream + hash). A bound computed from
 * measured costs, not a measurement of berth: a mirror also receives and
 * sends every byte (its socket I/O is left out, so the real bound is lower).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';

export interface FloorCosts {
  /** The bench client's CPU-s per GiB downloading straight from the upstream. */
  client: number;
  /** The upstream's CPU-s per GiB serving it. */
  upstream: number;
  /** SHA-256 of the bytes, CPU-s per GiB. */
  hash: number;
}

/** (client + upstream) / (client + upstream + hash): the best cold-fill ratio against the direct download. */
export function hashBound(c: FloorCosts): number {
  for (const [k, v] of Object.entries(c)) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`hashBound: ${k} must be a CPU cost >= 0, got ${v}`);
  }
  const direct = c.client + c.upstream;
  if (direct + c.hash === 0) throw new Error('hashBound: no CPU measured');
  return direct / (direct + c.hash);
}

/** The file Distribution's filesystem driver keeps a blob in. */
export function registryBlobFile(registryDataDir: string, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return path.join(registryDataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

/**
 * SHA-256 of `file` (from the page cache once read) in 64 KiB updates, as a
 * fill gets its chunks: the CPU-seconds the updates and the digest took in
 * this process (process.cpuUsage around them, not the reads), and the digest.
 */
export function hashCpu(file: string): { cpuS: number; bytes: number; digest: string } {
  const CHUNK = 64 * 1024;
  const buf = Buffer.allocUnsafe(16 * CHUNK);
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  let micros = 0;
  let bytes = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      const c0 = process.cpuUsage();
      for (let off = 0; off < n; off += CHUNK) h.update(buf.subarray(off, Math.min(n, off + CHUNK)));
      const c = process.cpuUsage(c0);
      micros += c.user + c.system;
      bytes += n;
    }
  } finally {
    closeSync(fd);
  }
  const c0 = process.cpuUsage();
  const digest = `sha256:${h.digest('hex')}`;
  const c = process.cpuUsage(c0);
  micros += c.user + c.system;
  return { cpuS: micros / 1e6, bytes, digest };
}
