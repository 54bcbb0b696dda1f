/**
 * Harbor's wire shapes → berth's snapshot types, applying Harbor's own
 * defaults and parsers (reference/harbor-api.md §1 table, §2a severity codes).
 * Pure: no I/O, so the same rules serve sync, an online fetch on a first
 * pull, and the tests.
 */
import { isIndexMediaType } from '../oci/mediatypes.js';
import { COSIGN_SIG_TAG, signatureTypeOfMediaType } from './signatures.js';
import {
  REPORT_MIME_ORDER,
  type ArtifactPolicyFacts,
  type CveAllowlist,
  type HarborArtifact,
  type HarborCveAllowlist,
  type HarborProject,
  type HarborVulnerabilityItem,
  type ProjectPolicy,
  type SeverityCode,
  type SignatureType,
  type ThresholdName,
  type Vulnerability,
} from './types.js';

/** Go's `isTrue` on a metadata value: "true" or "1", case-insensitive. */
export function isTrue(value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = value.toLowerCase();
  return v === 'true' || v === '1';
}

/**
 * Go's `strings.Title` on ASCII: upper-cases the first letter of each word and
 * leaves the rest alone, so "high" → "High" but "HIGH" stays "HIGH" (which
 * Harbor then does not recognise). Harbor lower-cases `severity` on write, so
 * this matters only for hand-edited databases; being exact costs nothing.
 */
function goTitle(s: string): string {
  return s.replace(/(^|[^A-Za-z0-9_])([a-z])/g, (_m, sep: string, ch: string) => sep + ch.toUpperCase());
}

/** `vuln.ParseSeverityVersion3`: the project threshold as Harbor parses (and prints) it. */
export function parseSeverityVersion3(value: string): ThresholdName {
  const title = goTitle(value);
  switch (title) {
    case 'None':
    case 'Low':
    case 'Medium':
    case 'High':
    case 'Critical':
      return title;
    case 'Negligible':
      return 'None';
    default:
      return 'Unknown';
  }
}

/** `vuln.Severity.Code()`: exact names only; anything unrecognised ranks 99 (fails closed). */
export function severityCode(severity: string): SeverityCode {
  switch (severity) {
    case 'None':
    case 'Unknown':
      return 0;
    case 'Negligible':
      return 1;
    case 'Low':
      return 2;
    case 'Medium':
      return 3;
    case 'High':
      return 4;
    case 'Critical':
      return 5;
    default:
      return 99;
  }
}

export function normaliseAllowlist(list: HarborCveAllowlist | undefined): CveAllowlist {
  if (!list) return { items: [], expiresAt: null };
  const items = [...new Set(list.items.map((i) => i.cve_id))].sort();
  return { items, expiresAt: list.expires_at ?? null };
}

/** A project with Harbor's getters applied to its string metadata (§1 table). */
export function normaliseProject(p: HarborProject): ProjectPolicy {
  const meta = p.metadata ?? {};
  const severity = parseSeverityVersion3(meta['severity'] ?? '');
  const reuse = meta['reuse_sys_cve_allowlist'];
  return {
    name: p.name,
    projectId: p.project_id,
    public: isTrue(meta['public']),
    registryId: p.registry_id ?? 0,
    preventVul: isTrue(meta['prevent_vul']),
    severity,
    severityThreshold: severityCode(severity),
    contentTrustCosign: isTrue(meta['enable_content_trust_cosign']),
    contentTrustNotation: isTrue(meta['enable_content_trust']),
    // Absent means "reuse the system list"; present, only "true"/"1" does.
    reuseSysAllowlist: reuse === undefined ? true : isTrue(reuse),
    projectAllowlist: normaliseAllowlist(p.cve_allowlist),
  };
}

/** Harbor de-duplicates report items by `id-package-version`; order them for a stable hash. */
export function dedupeVulnerabilities(items: ReadonlyArray<HarborVulnerabilityItem | Vulnerability>): Vulnerability[] {
  const seen = new Map<string, Vulnerability>();
  for (const v of items) {
    const key = `${v.id}-${v.package}-${v.version}`;
    if (!seen.has(key)) seen.set(key, { id: v.id, package: v.package, version: v.version, severity: v.severity });
  }
  return [...seen.values()].sort((a, b) => cmp(a.id, b.id) || cmp(a.package, b.package) || cmp(a.version, b.version));
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The scan-overview (or report) mime type Harbor's pull check would judge, if any. */
export function pickReportMime(keys: Iterable<string>): string | undefined {
  const have = new Set(keys);
  return REPORT_MIME_ORDER.find((m) => have.has(m));
}

/**
 * Whether an artifact is itself a signature, from what Harbor's JSON for it
 * shows: the config media type or artifactType Harbor keys accessories by, or
 * cosign's `sha256-<hex>.sig` tag (H:src/server/middleware/cosign, subject).
 * Sync also marks any digest that some synced artifact lists as its
 * signature accessory, and enforcement also reads the manifest's own bytes
 * (signatures.ts), which covers the rest.
 */
export function signatureTypeOf(a: Pick<HarborArtifact, 'media_type' | 'artifact_type' | 'tags'>): SignatureType | null {
  for (const t of [a.media_type, a.artifact_type]) {
    const type = signatureTypeOfMediaType(t);
    if (type) return type;
  }
  if ((a.tags ?? []).some((tag) => COSIGN_SIG_TAG.test(tag.name))) return 'signature.cosign';
  return null;
}

function isSignatureType(t: string): t is SignatureType {
  return t === 'signature.cosign' || t === 'signature.notation';
}

/**
 * The facts §12 needs, from `GET …/artifacts/{digest}?with_scan_overview&with_accessory&with_tag`
 * and (when the scan succeeded) the vulnerability items of the same report.
 * `vulnerabilities` must be the items of the report whose mime type
 * `pickReportMime` chose from the overview.
 */
export function artifactFacts(
  project: string,
  repository: string,
  art: HarborArtifact,
  vulnerabilities: ReadonlyArray<HarborVulnerabilityItem>,
): ArtifactPolicyFacts {
  const overview = art.scan_overview ?? {};
  const mime = pickReportMime(Object.keys(overview));
  const entry = mime === undefined ? undefined : overview[mime];
  // An overview entry without a status is a report Harbor could not assemble;
  // its own code marks such reports "Error", which blocks.
  const scanStatus = entry === undefined ? null : (entry.scan_status ?? 'Error');
  const accessories = [...new Set((art.accessories ?? []).map((a) => a.type).filter(isSignatureType))].sort();
  return {
    project,
    repository,
    digest: art.digest,
    type: art.type,
    mediaType: art.manifest_media_type,
    isIndex: isIndexMediaType(art.manifest_media_type),
    scannable: art.addition_links?.['vulnerabilities'] !== undefined,
    scanStatus,
    vulnerabilities: scanStatus === 'Success' ? dedupeVulnerabilities(vulnerabilities) : [],
    accessories,
    isSignature: signatureTypeOf(art) !== null,
  };
}
