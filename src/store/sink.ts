/**
 * The native blob sink of the optional `berth-sendfile` addon
 * (native/sendfile/src/sink.c): a fill's chunks are copied into the addon's
 * blocks as they arrive, and a thread of the addon hashes them (SHA-256) and
 * writes them to the temp file in batches. The socket reads die young (no
 * queue keeps them), and neither the hash nor the writes run on the main
 * thread or libuv's pool. BlobWriter (blobs.ts) uses it when the addon has it
 * and keeps its own JavaScript path otherwise (no addon, not Linux, or
 * BERTH_NATIVE_SINK=0 in the environment). docs/performance.md, "The fill's
 * native sink".
 */
import { createRequire } from 'node:module';

export interface SinkAddon {
  /** Opens a sink writing to (a dup of) `fd`; events: (1, bytesOnDisk) a batch is in the file, (2, errno, batchBytes) a batch failed. */
  sinkOpen(fd: number, onEvent: (kind: number, a: number, b: number) => void): unknown;
  /** Copies `chunk` in; false when the sink took nothing (closed, digested or given up). */
  sinkWrite(handle: unknown, chunk: Uint8Array): boolean;
  /** After a failed batch: write it again at the same offset (true) or give up (false). */
  sinkResume(handle: unknown, retry: boolean): void;
  /** The hex SHA-256 of every byte written; only when all of them are on disk, once. */
  sinkDigest(handle: unknown): string;
  sinkClose(handle: unknown): void;
}

export const SINK_FLUSHED = 1;
export const SINK_ERROR = 2;

let loaded: SinkAddon | null | undefined;

function load(): SinkAddon | null {
  const req = createRequire(import.meta.url);
  // The checkout's own build first (dist/store -> native/sendfile; the package ships native/), then the dependency.
  for (const id of ['../../native/sendfile/index.cjs', 'berth-sendfile']) {
    try {
      const a = req(id) as Partial<SinkAddon>;
      if (typeof a.sinkOpen === 'function' && typeof a.sinkWrite === 'function') return a as SinkAddon;
    } catch {
      // not built here: the next, or the JavaScript path
    }
  }
  return null;
}

/** The addon's sink, or null: BlobWriter then hashes and writes in JavaScript. */
export function nativeSink(): SinkAddon | null {
  if (process.env['BERTH_NATIVE_SINK'] === '0') return null;
  if (loaded === undefined) loaded = load();
  return loaded;
}
