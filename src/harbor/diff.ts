/**
 * The bundle hash and the human lines `berth sync` prints. Harbor gives no
 * change signal for policy edits (no webhook, `update_time` unchanged, §10),
 * so berth hashes what it enforces on and says what moved.
 */
import { createHash } from 'node:crypto';
import type { ArtifactPolicyFacts, CveAllowlist, PolicySnapshot, ProjectPolicy } from './types.js';

/** Bumped when the meaning of the snapshot changes; stored bundles of another format are discarded. */
export const SNAPSHOT_FORMAT = 1;

/** JSON with object keys sorted at every depth, so equal bundles hash equal. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/**
 * sha256 (hex) of what enforcement reads: the system allowlist, the project
 * policies and the artifact facts. Sync times are left out, so a sync that
 * finds nothing new yields the same hash.
 */
export function snapshotHash(s: Pick<PolicySnapshot, 'systemAllowlist' | 'projects' | 'artifacts'>): string {
  const bundle = { format: SNAPSHOT_FORMAT, systemAllowlist: s.systemAllowlist, projects: s.projects, artifacts: s.artifacts };
  return createHash('sha256').update(canonicalJson(bundle)).digest('hex');
}

function expiry(at: number | null): string {
  return at === null ? 'never' : new Date(at * 1000).toISOString();
}

function allowlistLines(what: string, a: CveAllowlist, b: CveAllowlist): string[] {
  const lines: string[] = [];
  const before = new Set(a.items);
  const after = new Set(b.items);
  const added = b.items.filter((id) => !before.has(id));
  const removed = a.items.filter((id) => !after.has(id));
  if (added.length || removed.length) {
    lines.push(`${what}: ${[...added.map((id) => `+${id}`), ...removed.map((id) => `-${id}`)].join(' ')}`);
  }
  if (a.expiresAt !== b.expiresAt) lines.push(`${what} expires_at ${expiry(a.expiresAt)} -> ${expiry(b.expiresAt)}`);
  return lines;
}

/** Project fields under Harbor's metadata key names, as an operator knows them from the UI/API. */
const PROJECT_FIELDS: Array<[string, (p: ProjectPolicy) => string]> = [
  ['public', (p) => String(p.public)],
  ['registry_id', (p) => String(p.registryId)],
  ['prevent_vul', (p) => String(p.preventVul)],
  ['severity', (p) => p.severity],
  ['enable_content_trust_cosign', (p) => String(p.contentTrustCosign)],
  ['enable_content_trust', (p) => String(p.contentTrustNotation)],
  ['reuse_sys_cve_allowlist', (p) => String(p.reuseSysAllowlist)],
];

function projectLines(a: ProjectPolicy, b: ProjectPolicy): string[] {
  const lines: string[] = [];
  for (const [key, get] of PROJECT_FIELDS) {
    if (get(a) !== get(b)) lines.push(`project ${b.name}: ${key} ${get(a)} -> ${get(b)}`);
  }
  return [...lines, ...allowlistLines(`project ${b.name}: allowlist`, a.projectAllowlist, b.projectAllowlist)];
}

function vulnSet(f: ArtifactPolicyFacts): string {
  return f.vulnerabilities.map((v) => `${v.id}-${v.package}-${v.version}-${v.severity}`).join('\n');
}

function plural(n: number): string {
  return n === 1 ? '1 vulnerability' : `${n} vulnerabilities`;
}

function artifactLines(key: string, a: ArtifactPolicyFacts, b: ArtifactPolicyFacts): string[] {
  const lines: string[] = [];
  const n = b.vulnerabilities.length;
  const was = a.vulnerabilities.length;
  if (n !== was) lines.push(`artifact ${key}: ${plural(n)} (was ${was})`);
  else if (vulnSet(a) !== vulnSet(b)) lines.push(`artifact ${key}: vulnerability list changed (${plural(n)})`);
  if (a.scanStatus !== b.scanStatus) lines.push(`artifact ${key}: scan status ${a.scanStatus ?? 'none'} -> ${b.scanStatus ?? 'none'}`);
  if (a.scannable !== b.scannable) lines.push(`artifact ${key}: scannable ${a.scannable} -> ${b.scannable}`);
  if (a.accessories.join() !== b.accessories.join()) {
    lines.push(`artifact ${key}: signatures [${a.accessories.join(', ')}] -> [${b.accessories.join(', ')}]`);
  }
  if (a.isSignature !== b.isSignature) lines.push(`artifact ${key}: is a signature ${a.isSignature} -> ${b.isSignature}`);
  if (a.type !== b.type || a.mediaType !== b.mediaType) lines.push(`artifact ${key}: type ${a.type} ${a.mediaType} -> ${b.type} ${b.mediaType}`);
  return lines;
}

function describeArtifact(f: ArtifactPolicyFacts): string {
  const scan = f.scanStatus === null ? 'no scan report' : `scan ${f.scanStatus}`;
  const sigs = f.accessories.length ? `, signed: ${f.accessories.join(', ')}` : '';
  return `${plural(f.vulnerabilities.length)}, ${scan}${sigs}`;
}

/** One line per difference between two snapshots, in a stable order. */
export function describeChanges(prev: PolicySnapshot | null | undefined, next: PolicySnapshot): string[] {
  if (!prev) {
    return [`first sync: ${Object.keys(next.projects).length} projects, ${Object.keys(next.artifacts).length} artifacts`];
  }
  const lines = allowlistLines('system allowlist', prev.systemAllowlist, next.systemAllowlist);
  for (const name of [...new Set([...Object.keys(prev.projects), ...Object.keys(next.projects)])].sort()) {
    const a = prev.projects[name];
    const b = next.projects[name];
    if (a && b) lines.push(...projectLines(a, b));
    else if (b) lines.push(`project ${name}: added`);
    else lines.push(`project ${name}: removed`);
  }
  for (const key of [...new Set([...Object.keys(prev.artifacts), ...Object.keys(next.artifacts)])].sort()) {
    const a = prev.artifacts[key];
    const b = next.artifacts[key];
    if (a && b) lines.push(...artifactLines(key, a, b));
    else if (b) lines.push(`artifact ${key}: added (${describeArtifact(b)})`);
    else lines.push(`artifact ${key}: removed`);
  }
  return lines;
}
