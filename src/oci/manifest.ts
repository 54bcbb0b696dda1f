/**
 * What a manifest or index refers to: the digests a pin must keep and a
 * prefetch must fetch. Unknown shapes give no children rather than an error,
 * because berth stores manifests verbatim and must not reject what the
 * upstream accepted.
 */
import { isDigest } from './digest.js';

/** The largest manifest berth takes from anywhere (the upstream, an import): Distribution's own limit. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface ParsedManifest {
  /** Index entries (for an index / manifest list). */
  manifests: Descriptor[];
  /** Config and layers (for an image manifest). */
  blobs: Descriptor[];
  subject?: Descriptor;
}

function descriptor(v: unknown): Descriptor | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const d = v as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) return undefined;
  const out: Descriptor = { digest: d.digest };
  if (typeof d.mediaType === 'string') out.mediaType = d.mediaType;
  if (typeof d.size === 'number') out.size = d.size;
  if (d.platform && typeof d.platform === 'object') out.platform = d.platform as Descriptor['platform'];
  return out;
}

function descriptors(v: unknown): Descriptor[] {
  if (!Array.isArray(v)) return [];
  return v.map(descriptor).filter((d): d is Descriptor => d !== undefined);
}

export function parseManifest(body: Uint8Array): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    return { manifests: [], blobs: [] };
  }
  if (!doc || typeof doc !== 'object') return { manifests: [], blobs: [] };
  const m = doc as Record<string, unknown>;
  const blobs = descriptors(m.layers);
  const config = descriptor(m.config);
  if (config) blobs.unshift(config);
  const out: ParsedManifest = { manifests: descriptors(m.manifests), blobs };
  const subject = descriptor(m.subject);
  if (subject) out.subject = subject;
  return out;
}

/** Every digest the manifest names directly (index entries, config, layers). */
export function manifestChildren(body: Uint8Array): string[] {
  const p = parseManifest(body);
  return [...new Set([...p.manifests, ...p.blobs].map((d) => d.digest))];
}
