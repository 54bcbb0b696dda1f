/**
 * Two families of types: what Harbor's v2.0 API sends (snake_case, the field
 * names of `api/v2.0/swagger.yaml`; see reference/harbor-api.md §1, §3, §4),
 * and berth's own normalised policy snapshot, which is what enforcement reads
 * online and offline. Only the fields berth consumes are typed; Harbor sends
 * more. The wire shapes are produced by `wire.ts`, which checks each field it
 * keeps, so nothing downstream trusts an unchecked cast.
 */

// ---------------------------------------------------------------- Harbor wire

/** `cve_allowlist` of a project, or the system one (`project_id` 0). */
export interface HarborCveAllowlist {
  id?: number;
  project_id?: number;
  /** Unix seconds; null or absent: never expires. */
  expires_at?: number | null;
  items: Array<{ cve_id: string }>;
  creation_time?: string;
  update_time?: string;
}

export interface HarborProject {
  project_id: number;
  name: string;
  /** > 0 for a proxy-cache project; absent (omitempty) otherwise. */
  registry_id?: number;
  owner_name?: string;
  repo_count?: number;
  creation_time?: string;
  update_time?: string;
  /** Every value is a string; any key may be missing (§1 table gives the defaults). */
  metadata?: Record<string, string>;
  /** The project's own list, not the effective one. */
  cve_allowlist?: HarborCveAllowlist;
}

export interface HarborRepository {
  id?: number;
  project_id?: number;
  /** Full name including the project: "library/nginx". */
  name: string;
  artifact_count?: number;
  update_time?: string;
}

export interface HarborTag {
  id?: number;
  name: string;
  immutable?: boolean;
  push_time?: string;
}

/** A P2P preheat policy with its JSON-string `filters` already decoded. */
export interface HarborPreheatPolicy {
  name: string;
  enabled: boolean;
  filters: { type: string; value: unknown }[];
}

export interface HarborLabel {
  id: number;
  name: string;
  scope?: string;
  project_id?: number;
}

export type AccessoryType = 'signature.cosign' | 'signature.notation' | 'accelerator.nydus' | 'sbom.harbor' | 'subject.accessory';

export interface HarborAccessory {
  id?: number;
  artifact_id?: number;
  subject_artifact_id?: number;
  subject_artifact_repo?: string;
  subject_artifact_digest?: string;
  digest: string;
  /** One of AccessoryType, kept as a string: newer Harbors may add types. */
  type: string;
  size?: number;
}

export interface HarborScanOverviewEntry {
  report_id?: string;
  /** Success, Pending, Running, Scheduled, Error, Stopped… */
  scan_status?: string;
  severity?: string;
  start_time?: string;
  end_time?: string;
  complete_percent?: number;
  summary?: { total?: number; fixable?: number; summary?: Record<string, number> };
}

export interface HarborReference {
  parent_id?: number;
  child_id?: number;
  child_digest: string;
  platform?: { architecture?: string; os?: string; variant?: string };
}

export interface HarborArtifact {
  id?: number;
  /** IMAGE, CHART, CNAB, UNKNOWN, … */
  type: string;
  /** The config media type. */
  media_type?: string;
  manifest_media_type: string;
  artifact_type?: string;
  project_id?: number;
  repository_id?: number;
  repository_name?: string;
  digest: string;
  size?: number;
  push_time?: string;
  tags?: HarborTag[] | null;
  labels?: HarborLabel[] | null;
  references?: HarborReference[] | null;
  accessories?: HarborAccessory[] | null;
  /** `vulnerabilities` is present only when the artifact is scannable. */
  addition_links?: Record<string, { href: string; absolute?: boolean }>;
  /** Keyed by report mime type; absent when there is no report. */
  scan_overview?: Record<string, HarborScanOverviewEntry>;
}

export interface HarborVulnerabilityItem {
  id: string;
  package: string;
  version: string;
  fix_version?: string;
  /** "Critical", "High", … as the scanner adapter reports it; anything else ranks 99. */
  severity: string;
}

export interface HarborVulnerabilityReport {
  generated_at?: string;
  severity?: string;
  vulnerabilities: HarborVulnerabilityItem[];
}

/** The report mime types Harbor keys scan overviews and reports by (§3, §2a). */
export const REPORT_MIME = {
  /** Harbor's native adapter type, older installations. */
  native: 'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0',
  /** The generic type current Trivy adapters return (Harbor >= 2.2). */
  generic: 'application/vnd.security.vulnerability.report; version=1.1',
} as const;

/**
 * The order Harbor's pull-time check (`GetVulnerable`) looks for a report in:
 * native first, then generic. berth asks for and picks reports in the same
 * order so it judges the report Harbor would judge.
 */
export const REPORT_MIME_ORDER: readonly string[] = [REPORT_MIME.native, REPORT_MIME.generic];

// ------------------------------------------------------ berth's snapshot types

/** Severity codes of `vuln.Severity.Code()`: None/Unknown 0 … Critical 5; unrecognised 99. */
export type SeverityCode = 0 | 1 | 2 | 3 | 4 | 5 | 99;

/** What `ParseSeverityVersion3` yields for a project threshold; printed verbatim in messages. */
export type ThresholdName = 'None' | 'Unknown' | 'Low' | 'Medium' | 'High' | 'Critical';

export interface CveAllowlist {
  /** CVE ids, sorted, unique. */
  items: string[];
  /** Unix **seconds**, as Harbor stores it; null: never expires. Expired when now >= expiresAt. */
  expiresAt: number | null;
}

/** One project's policy with Harbor's defaults applied for missing metadata keys (§1). */
export interface ProjectPolicy {
  name: string;
  projectId: number;
  public: boolean;
  /** > 0: a proxy-cache project. */
  registryId: number;
  preventVul: boolean;
  /** The threshold as Harbor prints it in its messages ("High", "None", "Unknown"). */
  severity: ThresholdName;
  /** Code of `severity`, 0..5: block when the worst remaining CVE ranks >= this. */
  severityThreshold: SeverityCode;
  /** enable_content_trust_cosign */
  contentTrustCosign: boolean;
  /** enable_content_trust (Notation since Harbor 2.9) */
  contentTrustNotation: boolean;
  /** reuse_sys_cve_allowlist; absent in metadata means true. */
  reuseSysAllowlist: boolean;
  /** The project's own list (used only when reuseSysAllowlist is false). */
  projectAllowlist: CveAllowlist;
}

export type SignatureType = 'signature.cosign' | 'signature.notation';

export interface Vulnerability {
  id: string;
  package: string;
  version: string;
  severity: string;
}

/** Everything §12 needs about one digest in one repository. */
export interface ArtifactPolicyFacts {
  project: string;
  /** Repository name without the project ("team/app" for "proj/team/app"). */
  repository: string;
  digest: string;
  /** Harbor's artifact type: IMAGE, CNAB, CHART, UNKNOWN… */
  type: string;
  /** The manifest media type. */
  mediaType: string;
  isIndex: boolean;
  /** `addition_links.vulnerabilities` was present. */
  scannable: boolean;
  /** The report's scan status; null when Harbor has no report at all. */
  scanStatus: string | null;
  /** The full list when scanStatus is Success (else empty), unique by id-package-version, sorted. */
  vulnerabilities: Vulnerability[];
  /** Signature accessories attached to this exact digest, sorted, unique. */
  accessories: SignatureType[];
  /** This digest is itself a cosign or notation signature: exempt from every check. */
  isSignature: boolean;
}

export interface PolicySnapshot {
  /** Epoch ms of the sync that produced this snapshot. */
  syncedAt: number;
  systemAllowlist: CveAllowlist;
  /** Keyed by project name. */
  projects: Record<string, ProjectPolicy>;
  /** Keyed by `artifactKey(project, repository, digest)`. */
  artifacts: Record<string, ArtifactPolicyFacts>;
  /**
   * Epoch ms each project's policy was last fetched successfully. Differs from
   * syncedAt when a later sync could not reach that one project and kept the
   * older policy. Not part of the bundle hash.
   */
  projectSyncedAt: Record<string, number>;
}

/** The artifact identity sync works on: what berth cached or pinned from Harbor. */
export interface ArtifactRef {
  project: string;
  repository: string;
  digest: string;
}

/** Snapshot key of an artifact: accessories and reports are per repository in Harbor. */
export function artifactKey(project: string, repository: string, digest: string): string {
  return `${project}/${repository}@${digest}`;
}

/**
 * Splits a Harbor repository path ("proj/team/app") into project and
 * repository-within-project, or null when there is no project part.
 */
export function splitHarborName(name: string): { project: string; repository: string } | null {
  const slash = name.indexOf('/');
  if (slash <= 0 || slash === name.length - 1) return null;
  return { project: name.slice(0, slash), repository: name.slice(slash + 1) };
}
