/** Platforms as "os/arch[/variant]", matched against index entries. */
import type { Descriptor } from './manifest.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

export function parsePlatform(s: string): Platform {
  const [os, architecture, variant, extra] = s.split('/');
  if (!os || !architecture || extra !== undefined || !/^[a-z0-9]+$/.test(os) || !/^[a-z0-9_]+$/.test(architecture) || (variant !== undefined && !/^[a-z0-9]+$/.test(variant))) {
    throw new TypeError(`invalid platform ${JSON.stringify(s)} (use e.g. "linux/amd64" or "linux/arm64/v8")`);
  }
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

export function formatPlatform(p: { os?: string; architecture?: string; variant?: string } | undefined): string {
  if (!p) return 'unknown';
  return [p.os ?? '?', p.architecture ?? '?', ...(p.variant ? [p.variant] : [])].join('/');
}

/** The platform this node runs (what containerd pulls by default). */
export function hostPlatform(): Platform {
  return { os: 'linux', architecture: ARCH[process.arch] ?? process.arch };
}

/** Whether an index entry is for a wanted platform; a wanted variant must match, an unspecified one matches any. */
export function platformMatches(entry: Descriptor, wanted: Platform): boolean {
  const p = entry.platform;
  if (!p) return false;
  if (p.os !== wanted.os || p.architecture !== wanted.architecture) return false;
  if (wanted.variant === undefined) return true;
  // arm64 images rarely name their variant: v8 is the only one.
  return (p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined)) === wanted.variant;
}
