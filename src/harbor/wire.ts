/**
 * Checks Harbor's JSON answers into the wire types of types.ts. Harbor omits
 * zero values (`omitempty`), so absent fields are normal and become
 * `undefined`; a present field of the wrong type is a protocol error (the
 * thing answering is not the Harbor API we know), reported with its path.
 */
import { HarborError } from './errors.js';
import type { HarborPreheatPolicy,
  HarborAccessory,
  HarborArtifact,
  HarborCveAllowlist,
  HarborLabel,
  HarborProject,
  HarborReference,
  HarborRepository,
  HarborScanOverviewEntry,
  HarborTag,
  HarborVulnerabilityItem,
  HarborVulnerabilityReport,
} from './types.js';

type Obj = Record<string, unknown>;

function fail(where: string, what: string): never {
  throw new HarborError('HARBOR_PROTOCOL', `harbor answer: ${where} ${what}`);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, where: string): Obj {
  if (!isObj(v)) fail(where, 'is not an object');
  return v;
}

function list(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) fail(where, 'is not an array');
  return v;
}

function reqStr(o: Obj, key: string, where: string): string {
  const v = o[key];
  if (typeof v !== 'string') fail(`${where}.${key}`, 'is missing or not a string');
  return v;
}

function reqNum(o: Obj, key: string, where: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${where}.${key}`, 'is missing or not a number');
  return v;
}

function optStr(o: Obj, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`${where}.${key}`, 'is not a string');
  return v;
}

function optNum(o: Obj, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${where}.${key}`, 'is not a number');
  return v;
}

/** Optional array of objects, each checked by `each`; null stays null (Harbor sends `"references": null`). */
function optList<T>(o: Obj, key: string, where: string, each: (v: unknown, where: string) => T): T[] | null | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (v === null) return null;
  return list(v, `${where}.${key}`).map((item, i) => each(item, `${where}.${key}[${i}]`));
}

function stringMap(v: unknown, where: string): Record<string, string> {
  const o = obj(v, where);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) {
    // Harbor's metadata values are strings; tolerate a JSON bool/number from a
    // hand-written proxy by stringifying it, the way Harbor's API would have.
    if (typeof val === 'string') out[k] = val;
    else if (typeof val === 'boolean' || typeof val === 'number') out[k] = String(val);
    else if (val !== null) fail(`${where}.${k}`, 'is not a string');
  }
  return out;
}

export function parseAllowlist(v: unknown, where = 'cve_allowlist'): HarborCveAllowlist {
  const o = obj(v, where);
  const rawItems = o['items'];
  const items =
    rawItems === undefined || rawItems === null
      ? []
      : list(rawItems, `${where}.items`).map((item, i) => ({ cve_id: reqStr(obj(item, `${where}.items[${i}]`), 'cve_id', `${where}.items[${i}]`) }));
  const out: HarborCveAllowlist = { items };
  const id = optNum(o, 'id', where);
  if (id !== undefined) out.id = id;
  const projectId = optNum(o, 'project_id', where);
  if (projectId !== undefined) out.project_id = projectId;
  out.expires_at = optNum(o, 'expires_at', where) ?? null;
  const updated = optStr(o, 'update_time', where);
  if (updated !== undefined) out.update_time = updated;
  return out;
}

export function parseProject(v: unknown, where = 'project'): HarborProject {
  const o = obj(v, where);
  const out: HarborProject = { project_id: reqNum(o, 'project_id', where), name: reqStr(o, 'name', where) };
  const registryId = optNum(o, 'registry_id', where);
  if (registryId !== undefined) out.registry_id = registryId;
  const owner = optStr(o, 'owner_name', where);
  if (owner !== undefined) out.owner_name = owner;
  const repoCount = optNum(o, 'repo_count', where);
  if (repoCount !== undefined) out.repo_count = repoCount;
  if (o['metadata'] !== undefined && o['metadata'] !== null) out.metadata = stringMap(o['metadata'], `${where}.metadata`);
  if (o['cve_allowlist'] !== undefined && o['cve_allowlist'] !== null) out.cve_allowlist = parseAllowlist(o['cve_allowlist'], `${where}.cve_allowlist`);
  return out;
}

export function parseRepository(v: unknown, where = 'repository'): HarborRepository {
  const o = obj(v, where);
  const out: HarborRepository = { name: reqStr(o, 'name', where) };
  const id = optNum(o, 'id', where);
  if (id !== undefined) out.id = id;
  const count = optNum(o, 'artifact_count', where);
  if (count !== undefined) out.artifact_count = count;
  const updated = optStr(o, 'update_time', where);
  if (updated !== undefined) out.update_time = updated;
  return out;
}

function parseTag(v: unknown, where: string): HarborTag {
  const o = obj(v, where);
  const out: HarborTag = { name: reqStr(o, 'name', where) };
  if (typeof o['immutable'] === 'boolean') out.immutable = o['immutable'];
  const pushed = optStr(o, 'push_time', where);
  if (pushed !== undefined) out.push_time = pushed;
  return out;
}

function parseLabel(v: unknown, where: string): HarborLabel {
  const o = obj(v, where);
  const out: HarborLabel = { id: reqNum(o, 'id', where), name: reqStr(o, 'name', where) };
  const scope = optStr(o, 'scope', where);
  if (scope !== undefined) out.scope = scope;
  return out;
}

function parseReference(v: unknown, where: string): HarborReference {
  const o = obj(v, where);
  return { child_digest: reqStr(o, 'child_digest', where) };
}

export function parseAccessory(v: unknown, where = 'accessory'): HarborAccessory {
  const o = obj(v, where);
  const out: HarborAccessory = { digest: reqStr(o, 'digest', where), type: reqStr(o, 'type', where) };
  const subject = optStr(o, 'subject_artifact_digest', where);
  if (subject !== undefined) out.subject_artifact_digest = subject;
  const subjectRepo = optStr(o, 'subject_artifact_repo', where);
  if (subjectRepo !== undefined) out.subject_artifact_repo = subjectRepo;
  return out;
}

function parseOverviewEntry(v: unknown, where: string): HarborScanOverviewEntry {
  const o = obj(v, where);
  const out: HarborScanOverviewEntry = {};
  const id = optStr(o, 'report_id', where);
  if (id !== undefined) out.report_id = id;
  const status = optStr(o, 'scan_status', where);
  if (status !== undefined) out.scan_status = status;
  const severity = optStr(o, 'severity', where);
  if (severity !== undefined) out.severity = severity;
  const end = optStr(o, 'end_time', where);
  if (end !== undefined) out.end_time = end;
  return out;
}

export function parseArtifact(v: unknown, where = 'artifact'): HarborArtifact {
  const o = obj(v, where);
  const out: HarborArtifact = {
    type: optStr(o, 'type', where) ?? 'UNKNOWN',
    manifest_media_type: reqStr(o, 'manifest_media_type', where),
    digest: reqStr(o, 'digest', where),
  };
  const id = optNum(o, 'id', where);
  if (id !== undefined) out.id = id;
  const mediaType = optStr(o, 'media_type', where);
  if (mediaType !== undefined) out.media_type = mediaType;
  const artifactType = optStr(o, 'artifact_type', where);
  if (artifactType !== undefined) out.artifact_type = artifactType;
  const repoName = optStr(o, 'repository_name', where);
  if (repoName !== undefined) out.repository_name = repoName;
  const pushed = optStr(o, 'push_time', where);
  if (pushed !== undefined) out.push_time = pushed;
  const tags = optList(o, 'tags', where, parseTag);
  if (tags !== undefined) out.tags = tags;
  const labels = optList(o, 'labels', where, parseLabel);
  if (labels !== undefined) out.labels = labels;
  const refs = optList(o, 'references', where, parseReference);
  if (refs !== undefined) out.references = refs;
  const accessories = optList(o, 'accessories', where, parseAccessory);
  if (accessories !== undefined) out.accessories = accessories;
  if (isObj(o['addition_links'])) {
    const links: Record<string, { href: string }> = {};
    for (const [k, link] of Object.entries(o['addition_links'])) {
      if (isObj(link) && typeof link['href'] === 'string') links[k] = { href: link['href'] };
    }
    out.addition_links = links;
  }
  if (o['scan_overview'] !== undefined && o['scan_overview'] !== null) {
    const overview: Record<string, HarborScanOverviewEntry> = {};
    for (const [mime, entry] of Object.entries(obj(o['scan_overview'], `${where}.scan_overview`))) {
      overview[mime] = parseOverviewEntry(entry, `${where}.scan_overview[${mime}]`);
    }
    out.scan_overview = overview;
  }
  return out;
}

function parseVulnerabilityItem(v: unknown, where: string): HarborVulnerabilityItem {
  const o = obj(v, where);
  const out: HarborVulnerabilityItem = {
    id: reqStr(o, 'id', where),
    // Harbor's item has these as plain strings; an OS-less finding still has "".
    package: optStr(o, 'package', where) ?? '',
    version: optStr(o, 'version', where) ?? '',
    severity: optStr(o, 'severity', where) ?? '',
  };
  const fix = optStr(o, 'fix_version', where);
  if (fix !== undefined) out.fix_version = fix;
  return out;
}

/** The body of `…/additions/vulnerabilities`: a map from report mime type to report (or `{}`). */
export function parseVulnerabilityReports(v: unknown, where = 'vulnerabilities'): Record<string, HarborVulnerabilityReport> {
  const out: Record<string, HarborVulnerabilityReport> = {};
  for (const [mime, raw] of Object.entries(obj(v, where))) {
    const at = `${where}[${mime}]`;
    const o = obj(raw, at);
    const items = o['vulnerabilities'] === undefined || o['vulnerabilities'] === null ? [] : list(o['vulnerabilities'], `${at}.vulnerabilities`);
    const report: HarborVulnerabilityReport = { vulnerabilities: items.map((item, i) => parseVulnerabilityItem(item, `${at}.vulnerabilities[${i}]`)) };
    const severity = optStr(o, 'severity', at);
    if (severity !== undefined) report.severity = severity;
    const generated = optStr(o, 'generated_at', at);
    if (generated !== undefined) report.generated_at = generated;
    out[mime] = report;
  }
  return out;
}

/** A preheat policy; `filters` arrives as a JSON string (harbor-api.md §5). A filter list that does not parse matches nothing. */
export function parsePreheatPolicy(v: unknown, where = 'preheat policy'): HarborPreheatPolicy {
  const o = obj(v, where);
  const name = reqStr(o, 'name', where);
  const enabled = o.enabled === true;
  let filters: HarborPreheatPolicy['filters'] = [];
  const raw = o.filters;
  try {
    const parsed: unknown = typeof raw === 'string' ? JSON.parse(raw) : raw;
    if (Array.isArray(parsed)) {
      filters = parsed
        .filter((f): f is { type: string; value: unknown } => typeof f === 'object' && f !== null && typeof (f as { type?: unknown }).type === 'string')
        .map((f) => ({ type: f.type, value: f.value }));
    }
  } catch {
    return { name, enabled: false, filters: [] };
  }
  return { name, enabled, filters };
}
