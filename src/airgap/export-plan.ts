/**
 * What an export will write, known before the first byte: the tar's exact
 * size (a 512-byte header per entry, data padded to 512, the two zero
 * blocks that end it; every name berth writes fits the header, so no long
 * names), the blobs and manifests in it. The pre-flight checks the
 * destination against it and the progress bar counts towards it.
 */
export interface ExportPlan {
  /** The tar's size in bytes. */
  bytes: number;
  blobs: number;
  manifests: number;
}

const BLOCK = 512;

/** The size of a tar holding entries of these sizes, as tar-stream writes it. */
export function tarBytes(sizes: readonly number[]): number {
  let bytes = 2 * BLOCK;
  for (const size of sizes) bytes += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
  return bytes;
}
