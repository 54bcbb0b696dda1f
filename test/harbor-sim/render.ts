/**
 * JSON bodies with Harbor's v2.0 field names (reference §1, §3, §4). go-swagger omits
 * empty optional fields (`tags`, `references`, `accessories`, `labels`, `scan_overview`,
 * `addition_links` when there are none) but always writes time fields, zero or not.
 */
import { isoTime } from './http.js';
import { mergeScanStatus, parseSeverityVersion3, severityCode, uniqueVulnerabilities } from './policy.js';
import {
  MIME_GENERIC_REPORT,
  MIME_NATIVE_REPORT,
  type Allowlist,
  type Artifact,
  type HarborState,
  type Project,
  type Repository,
  type ScanReport,
} from './state.js';

/** Harbor's icon digest for IMAGE artifacts (H:src/lib/icon/const.go). */
const ICON_IMAGE = 'sha256:0048162a053eef4d4ce3fe7518615bef084403614f8bca43b40ae2e762e11e06';
const SCANNER = { name: 'Trivy', vendor: 'Aqua Security', version: 'v0.58.0' };
export const DEFAULT_ACCEPT_VULNERABILITIES = [MIME_GENERIC_REPORT, MIME_NATIVE_REPORT];

/** A project's own allowlist as the project endpoints show it: Harbor loses its timestamps (JSONCopy). */
export function projectAllowlistJson(a: Allowlist): Record<string, unknown> {
  return {
    id: a.id,
    project_id: a.projectId,
    items: a.items.map((cve_id) => ({ cve_id })),
    ...(a.expiresAt !== null ? { expires_at: a.expiresAt } : {}),
    creation_time: isoTime(null),
    update_time: isoTime(null),
  };
}

/** `/system/CVEAllowlist`: real timestamps, `expires_at` null when it never expires. */
export function systemAllowlistJson(a: Allowlist): Record<string, unknown> {
  return {
    id: a.id,
    project_id: 0,
    expires_at: a.expiresAt,
    items: a.items.map((cve_id) => ({ cve_id })),
    creation_time: isoTime(a.creationTime),
    update_time: isoTime(a.updateTime),
  };
}

/** Metadata as the GET answers show it: severity re-normalised (negligible → none, unknown → "unknown"). */
export function metadataJson(metadata: Record<string, string>): Record<string, string> {
  const out = { ...metadata };
  if (out.severity !== undefined) out.severity = parseSeverityVersion3(out.severity).toLowerCase();
  return out;
}

export function projectJson(state: HarborState, p: Project, opts: { detail: boolean; roleIds: number[] | null }): Record<string, unknown> {
  return {
    project_id: p.id,
    owner_id: p.ownerId,
    name: p.name,
    ...(p.registryId > 0 ? { registry_id: p.registryId } : {}),
    creation_time: isoTime(p.creationTime),
    update_time: isoTime(p.updateTime),
    owner_name: opts.detail ? p.ownerName : undefined,
    current_user_role_ids: opts.roleIds,
    ...(opts.roleIds && opts.roleIds.length > 0 ? { current_user_role_id: Math.max(...opts.roleIds) } : {}),
    repo_count: state.repositoriesOf(p).length,
    ...(opts.detail ? { metadata: metadataJson(p.metadata), cve_allowlist: projectAllowlistJson(p.allowlist) } : {
      // With with_detail=false Harbor returns early: a zero-valued allowlist, no metadata.
      cve_allowlist: { creation_time: isoTime(null), update_time: isoTime(null) },
    }),
  };
}

export function repositoryJson(r: Repository, visibleArtifacts: number): Record<string, unknown> {
  return {
    id: r.id,
    project_id: r.projectId,
    name: r.name,
    artifact_count: visibleArtifacts,
    pull_count: r.pullCount,
    creation_time: isoTime(r.creationTime),
    update_time: isoTime(r.updateTime),
  };
}

/** `library/a/b` → `/api/v2.0/projects/library/repositories/a%252Fb/artifacts/<digest>` (slash encoded twice). */
export function artifactHref(art: Artifact, suffix: string): string {
  const slash = art.repositoryName.indexOf('/');
  const project = art.repositoryName.slice(0, slash);
  const repo = art.repositoryName.slice(slash + 1).replace(/\//g, '%252F');
  return `/api/v2.0/projects/${project}/repositories/${repo}/artifacts/${art.digest}${suffix}`;
}

function overviewOf(report: ScanReport): Record<string, unknown> {
  const base = {
    report_id: report.reportId,
    scan_status: report.status,
    start_time: isoTime(report.startTime),
    end_time: isoTime(report.endTime),
    duration: report.endTime ? Math.max(0, Math.round((report.endTime.getTime() - report.startTime.getTime()) / 1000)) : 0,
  };
  if (report.status !== 'Success' && report.status !== 'Stopped') return base;
  const counts: Record<string, number> = {};
  let severity = 'None';
  for (const v of report.vulnerabilities) {
    counts[v.severity] = (counts[v.severity] ?? 0) + 1;
    if (severityCode(v.severity) > severityCode(severity)) severity = v.severity;
  }
  return {
    ...base,
    severity,
    complete_percent: 100,
    scanner: SCANNER,
    summary: { total: report.vulnerabilities.length, fixable: report.vulnerabilities.filter((v) => v.fix_version).length, summary: counts },
  };
}

/** The reports of an index's children folded into one, as Harbor's summary merger does. */
function mergedReport(reports: ScanReport[]): ScanReport | null {
  const [first, ...rest] = reports;
  if (!first) return null;
  if (rest.length === 0) return first;
  return {
    status: reports.map((r) => r.status).reduce((a, b) => mergeScanStatus(a, b)),
    mimeType: first.mimeType,
    vulnerabilities: uniqueVulnerabilities(reports.map((r) => r.vulnerabilities)),
    reportId: Buffer.from(reports.map((r) => r.reportId).join('|')).toString('base64'),
    startTime: new Date(Math.min(...reports.map((r) => r.startTime.getTime()))),
    endTime: reports.every((r) => r.endTime) ? new Date(Math.max(...reports.map((r) => r.endTime?.getTime() ?? 0))) : null,
  };
}

/** The report under the first accepted mime type that has one (X-Accept-Vulnerabilities order). */
export function reportFor(state: HarborState, art: Artifact, accept: string[]): ScanReport | null {
  const merged = mergedReport(state.reportsFor(art));
  if (!merged) return null;
  return accept.includes(merged.mimeType) ? merged : null;
}

export function parseAccept(header: string | undefined): string[] {
  if (!header) return DEFAULT_ACCEPT_VULNERABILITIES;
  // The mime types themselves hold "; version=…", so split on commas only.
  const list = header.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  return list.length > 0 ? list : DEFAULT_ACCEPT_VULNERABILITIES;
}

/** `additions/vulnerabilities`: the full report keyed by mime type, `{}` when there is none. */
export function vulnerabilitiesAddition(state: HarborState, art: Artifact, accept: string[]): Record<string, unknown> {
  const report = reportFor(state, art, accept);
  if (!report || (report.status !== 'Success' && report.status !== 'Stopped')) return {};
  let severity = 'None';
  for (const v of report.vulnerabilities) if (severityCode(v.severity) > severityCode(severity)) severity = v.severity;
  return {
    [report.mimeType]: {
      generated_at: isoTime(report.endTime),
      scanner: SCANNER,
      severity,
      vulnerabilities: report.vulnerabilities.map((v) => ({
        id: v.id,
        package: v.package,
        version: v.version,
        fix_version: v.fix_version ?? '',
        severity: v.severity,
        status: '',
        description: v.description ?? '',
        links: v.links ?? [],
        artifact_digests: [art.digest],
        preferred_cvss: { score_v3: null, score_v2: null, vector_v3: '', vector_v2: '' },
        cwe_ids: [],
        vendor_attributes: {},
      })),
    },
  };
}

export function accessoryJson(state: HarborState, acc: Artifact): Record<string, unknown> {
  const info = acc.accessory;
  const subject = info ? state.artifacts.get(info.subjectArtifactId) : undefined;
  return {
    id: info?.id ?? 0,
    artifact_id: acc.id,
    subject_artifact_id: info?.subjectArtifactId ?? 0,
    subject_artifact_repo: subject?.repositoryName ?? acc.repositoryName,
    subject_artifact_digest: subject?.digest ?? '',
    size: acc.size,
    digest: acc.digest,
    type: info?.type ?? '',
    icon: '',
    creation_time: isoTime(info?.creationTime ?? acc.pushTime),
  };
}

export interface ArtifactJsonOptions {
  withTag: boolean;
  withLabel: boolean;
  withScanOverview: boolean;
  withAccessory: boolean;
  withImmutableStatus: boolean;
  accept: string[];
}

export function artifactJson(state: HarborState, art: Artifact, o: ArtifactJsonOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: art.id,
    type: art.type,
    media_type: art.mediaType,
    manifest_media_type: art.manifestMediaType,
    project_id: art.projectId,
    repository_id: art.repositoryId,
    repository_name: art.repositoryName,
    digest: art.digest,
    size: art.size,
    push_time: isoTime(art.pushTime),
    pull_time: isoTime(art.pullTime),
  };
  if (art.artifactType) out.artifact_type = art.artifactType;
  if (art.type === 'IMAGE') out.icon = ICON_IMAGE;
  if (Object.keys(art.extraAttrs).length > 0) out.extra_attrs = art.extraAttrs;
  if (Object.keys(art.annotations).length > 0) out.annotations = art.annotations;
  if (art.references.length > 0) {
    out.references = art.references.map((r) => ({
      parent_id: art.id,
      child_id: r.childId,
      child_digest: r.childDigest,
      ...(r.platform ? { platform: r.platform } : {}),
    }));
  }
  if (o.withTag && art.tags.length > 0) {
    out.tags = art.tags.map((t) => ({
      id: t.id,
      repository_id: art.repositoryId,
      artifact_id: art.id,
      name: t.name,
      push_time: isoTime(t.pushTime),
      pull_time: isoTime(t.pullTime),
      ...(o.withImmutableStatus ? { immutable: false } : {}),
    }));
  }
  const links: Record<string, { href: string; absolute: boolean }> = {};
  if (art.type === 'IMAGE' && !art.references.length && !art.accessory) {
    links.build_history = { href: artifactHref(art, '/additions/build_history'), absolute: false };
  }
  // Present only when the artifact is scannable (assembler/report.go): berth's offline "scannable" flag.
  if (state.isScannable(art)) links.vulnerabilities = { href: artifactHref(art, '/additions/vulnerabilities'), absolute: false };
  if (Object.keys(links).length > 0) out.addition_links = links;
  if (o.withLabel && art.labelIds.length > 0) {
    out.labels = art.labelIds.map((id) => {
      const l = state.labels.get(id);
      return { id, name: l?.name ?? '', description: '', color: '', scope: 'g', project_id: 0, creation_time: isoTime(l?.creationTime ?? null), update_time: isoTime(l?.creationTime ?? null) };
    });
  }
  if (o.withScanOverview && state.isScannable(art)) {
    const report = reportFor(state, art, o.accept);
    if (report) out.scan_overview = { [report.mimeType]: overviewOf(report) };
  }
  if (o.withAccessory) {
    const accs = state.accessoriesOf(art);
    if (accs.length > 0) out.accessories = accs.map((a) => accessoryJson(state, a));
  }
  return out;
}
