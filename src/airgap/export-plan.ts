/**
 * What an export will write, known once its images are resolved and before
 * the first byte: the tar's size (headers, data padded to 512, end marker),
 * the blobs and manifests in it. The pre-flight checks the destination
 * against it and the progress bar counts towards it.
 */
import type { ImageContents } from '../cache/prefetch.js';

export interface ExportPlan {
  /** The tar's size, to within index.json's estimate (over, never under). */
  bytes: number;
  blobs: number;
  manifests: number;
}

const BLOCK = 512;
const entryBytes = (size: number) => BLOCK + Math.ceil(size / BLOCK) * BLOCK;

/** The tar exportImages writes for these images: each manifest and blob once, oci-layout, index.json. */
export function planExport(resolved: ImageContents[]): ExportPlan {
  const seen = new Set<string>();
  const plan: ExportPlan = { bytes: entryBytes(64), blobs: 0, manifests: 0 };
  let indexJson = 128;
  for (const c of resolved) {
    for (const m of c.manifests) {
      if (seen.has(m.digest)) continue;
      seen.add(m.digest);
      plan.manifests++;
      plan.bytes += entryBytes(m.size);
    }
    for (const b of c.blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      plan.blobs++;
      plan.bytes += entryBytes(b.size);
    }
    // One index.json entry: media type, digest, size and the name annotation.
    indexJson += 512 + c.ref.registry.length + c.ref.repository.length + (c.ref.tag?.length ?? 71);
  }
  plan.bytes += entryBytes(indexJson) + 2 * BLOCK;
  return plan;
}
