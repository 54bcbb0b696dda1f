/**
 * The simulator's own copy of Harbor's pull-time policy chain (reference §2): the
 * content-trust middleware, then the vulnerability middleware, for manifest GET and
 * HEAD. Written from Harbor's middlewares, independently of berth's src/harbor, so the
 * two can be checked against each other.
 *
 * Harbor's order (H:src/server/registry/route.go): contenttrust.ContentTrust →
 * vulnerable.Middleware. Inside the vulnerability check (vulnerable.go):
 *   prevent_vul off → allow; bypass (scanner / signing client / the artifact is a
 *   signature) → allow; not scannable → allow; no report → block; an index of type
 *   IMAGE/CNAB → allow; status not Success → block; highest remaining severity ≥
 *   threshold → block, N counting every CVE left after the allowlist.
 */
import { ACCESSORY_COSIGN, ACCESSORY_NOTATION, isTrue, INDEX_MANIFEST_TYPES, type Artifact, type HarborState, type Project, type Vulnerability } from './state.js';

export type Verdict = { allow: true } | { allow: false; message: string };

/** Harbor's Severity.Code(): unrecognised strings rank 99 so they always block. */
export function severityCode(s: string): number {
  switch (s) {
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

/**
 * Go's strings.Title: upper-cases the first letter of each word and leaves the rest
 * alone, so "HIGH" stays "HIGH" (and then maps to Unknown, as in Harbor).
 */
function goTitle(s: string): string {
  return s.replace(/(^|[^\p{L}\p{N}_])(\p{Ll})/gu, (_m, sep: string, ch: string) => sep + ch.toUpperCase());
}

/** ParseSeverityVersion3: the project's threshold as Harbor names it in its messages. */
export function parseSeverityVersion3(str: string): string {
  const s = goTitle(str);
  switch (s) {
    case 'None':
    case 'Low':
    case 'Medium':
    case 'High':
    case 'Critical':
      return s;
    case 'Negligible':
      return 'None';
    default:
      return 'Unknown';
  }
}

/** vuln.MergeScanStatus for the reports of an index's children. */
export function mergeScanStatus(a: string, b: string): string {
  if (a === 'Running' || b === 'Running') return 'Running';
  if (a === 'Success' || b === 'Success') return 'Success';
  const rank = (s: string): number => ({ Pending: 0, Scheduled: 1, Running: 2, Stopped: 3, Error: 3, Success: 3 })[s] ?? -1;
  return rank(a) > rank(b) ? a : b;
}

/** The vulnerability list with Harbor's de-duplication key `id-package-version`. */
export function uniqueVulnerabilities(lists: Vulnerability[][]): Vulnerability[] {
  const seen = new Set<string>();
  const out: Vulnerability[] = [];
  for (const list of lists) {
    for (const v of list) {
      const key = `${v.id}-${v.package}-${v.version}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(v);
    }
  }
  return out;
}

function isIndex(art: Artifact): boolean {
  return INDEX_MANIFEST_TYPES.includes(art.manifestMediaType);
}

const policyText = (threshold: string): string =>
  `due to configured policy in 'Prevent images with vulnerability severity of "${threshold}" or higher from running.'`;

export interface PullContext {
  /** Harbor's SkipPolicyChecking for the caller: a token holding scanner-pull, or push with a cosign/notation User-Agent. */
  callerBypass: boolean;
  /** Milliseconds since the epoch: allowlist expiry is evaluated at pull time. */
  now: number;
}

function contentTrust(state: HarborState, project: Project, art: Artifact, ctx: PullContext): Verdict {
  const exempt = ctx.callerBypass || state.isSignature(art);
  const required: Array<[string, string]> = [];
  if (isTrue(project.metadata.enable_content_trust_cosign)) required.push([ACCESSORY_COSIGN, 'cosign']);
  if (isTrue(project.metadata.enable_content_trust)) required.push([ACCESSORY_NOTATION, 'notation']);
  for (const [type, name] of required) {
    if (exempt) continue;
    // Only accessories attached to this very digest count: an index's signature does not cover its children.
    const signed = state.accessoriesOf(art).some((a) => a.accessory?.type === type);
    if (!signed) return { allow: false, message: `The image is not signed by ${name}.` };
  }
  return { allow: true };
}

function vulnerability(state: HarborState, project: Project, art: Artifact, ctx: PullContext): Verdict {
  if (!isTrue(project.metadata.prevent_vul)) return { allow: true };
  if (ctx.callerBypass || state.isSignature(art)) return { allow: true };
  if (!state.isScannable(art)) return { allow: true };

  const allowlist = state.effectiveAllowlist(project);
  const expired = allowlist.expiresAt !== null && ctx.now / 1000 >= allowlist.expiresAt;
  const allowed = new Set(expired ? [] : allowlist.items);
  const threshold = parseSeverityVersion3(project.metadata.severity ?? '');

  const reports = state.reportsFor(art);
  if (reports.length === 0) {
    return {
      allow: false,
      message: `current image without vulnerability scanning cannot be pulled ${policyText(threshold)} To continue with pull, please contact your project administrator for help.`,
    };
  }
  if (isIndex(art) && (art.type === 'IMAGE' || art.type === 'CNAB')) return { allow: true };

  const status = reports.map((r) => r.status).reduce((a, b) => mergeScanStatus(a, b));
  if (status !== 'Success') {
    return {
      allow: false,
      message: `current image with "${status}" status of vulnerability scanning cannot be pulled ${policyText(threshold)} To continue with pull, please contact your project administrator for help.`,
    };
  }

  const remaining = uniqueVulnerabilities(reports.map((r) => r.vulnerabilities)).filter((v) => !allowed.has(v.id));
  let highest: string | null = null;
  for (const v of remaining) {
    if (highest === null || severityCode(v.severity) > severityCode(highest)) highest = v.severity;
  }
  if (highest !== null && severityCode(highest) >= severityCode(threshold)) {
    const n = remaining.length;
    return {
      allow: false,
      message: `current image with ${n} ${n > 1 ? 'vulnerabilities' : 'vulnerability'} cannot be pulled ${policyText(threshold)} To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.`,
    };
  }
  return { allow: true };
}

/** Content trust first, then vulnerability prevention, as Harbor chains them. */
export function evaluatePull(state: HarborState, project: Project, art: Artifact, ctx: PullContext): Verdict {
  const trust = contentTrust(state, project, art, ctx);
  if (!trust.allow) return trust;
  return vulnerability(state, project, art, ctx);
}
