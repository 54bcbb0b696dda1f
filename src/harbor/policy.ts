/**
 * Harbor's pull-time policy chain (reference/harbor-api.md §2, §12 steps 1–3),
 * evaluated on a synced snapshot so the same answer comes online and offline.
 * It follows `contenttrust.ContentTrust` then `vulnerable.Middleware` in
 * H:src/server/middleware, in their order, with their message texts.
 *
 * Unknown artifacts (no facts in the snapshot): when the project enforces
 * nothing, the facts are not needed and the pull is allowed. Otherwise
 * `evaluate` refuses with reason 'unknown-artifact'. Online, the caller should
 * not get there: fetch the facts first (`fetchArtifactFacts` in sync.ts) and
 * evaluate those; Harbor itself would answer 404 for an artifact it does not
 * have, and a proxy-cache project's first pull is not yet an artifact in
 * Harbor, which berth (stricter than Harbor, see docs/harbor.md) refuses too.
 * Offline the refusal is the fail-closed answer: berth cannot show that an
 * image it knows nothing about satisfies the project's policy.
 */
import { dedupeVulnerabilities, severityCode } from './normalise.js';
import type { ArtifactPolicyFacts, CveAllowlist, ProjectPolicy, SignatureType } from './types.js';

export type DenyReason = 'cosign' | 'notation' | 'vuln-severity' | 'vuln-not-scanned' | 'vuln-scan-status' | 'unknown-artifact';

export type Decision = { allow: true } | { allow: false; reason: DenyReason; message: string };

const ALLOW: Decision = Object.freeze({ allow: true });

/** Whether any check of the chain is switched on for the project (else no facts are needed). */
export function projectEnforces(project: ProjectPolicy): boolean {
  return project.contentTrustCosign || project.contentTrustNotation || project.preventVul;
}

/**
 * The allowlist Harbor applies for the project: the system one unless the
 * project opted out of reusing it; the two are never merged. An expired list
 * (now >= expires_at, in whole seconds as Harbor compares) is ignored
 * entirely, judged with the clock at pull time.
 */
export function effectiveAllowlist(project: ProjectPolicy, system: CveAllowlist, now: number): ReadonlySet<string> {
  const list = project.reuseSysAllowlist ? system : project.projectAllowlist;
  if (isAllowlistExpired(list, now)) return new Set();
  return new Set(list.items);
}

export function isAllowlistExpired(list: CveAllowlist, now: number): boolean {
  return list.expiresAt !== null && Math.floor(now / 1000) >= list.expiresAt;
}

function policyText(project: ProjectPolicy): string {
  return `configured policy in 'Prevent images with vulnerability severity of "${project.severity}" or higher from running.'`;
}

function deny(reason: DenyReason, message: string): Decision {
  return { allow: false, reason, message };
}

/**
 * Harbor's decision for pulling `artifact` (a manifest GET or HEAD by tag or
 * digest, resolved to this digest) from `project`. `now` is epoch ms.
 * `manifestSignature`: what the manifest's own bytes show it to be
 * (`manifestSignatureType`, signatures.ts), when berth holds them.
 */
export function evaluate(
  project: ProjectPolicy,
  artifact: ArtifactPolicyFacts | undefined,
  systemAllowlist: CveAllowlist,
  now: number,
  manifestSignature: SignatureType | null = null,
): Decision {
  if (!projectEnforces(project)) return ALLOW;
  // SkipPolicyChecking: a signature is pulled to verify the image it signs.
  // Harbor's facts or the manifest's own content may say so; the content
  // holds even where berth has no facts (offline, never synced).
  if (artifact?.isSignature === true || manifestSignature !== null) return ALLOW;
  if (artifact === undefined) {
    return deny(
      'unknown-artifact',
      `The image cannot be pulled: its policy facts are not known to this mirror and the project '${project.name}' enforces a policy. ` +
        'To continue with pull, retry once the mirror can reach Harbor.',
    );
  }
  // Content trust: an accessory on this very digest; an index's signature
  // does not cover its children. Cosign is checked before notation.
  if (project.contentTrustCosign && !artifact.accessories.includes('signature.cosign')) {
    return deny('cosign', 'The image is not signed by cosign.');
  }
  if (project.contentTrustNotation && !artifact.accessories.includes('signature.notation')) {
    return deny('notation', 'The image is not signed by notation.');
  }

  if (!project.preventVul) return ALLOW;
  if (!artifact.scannable) return ALLOW;
  if (artifact.scanStatus === null) {
    return deny(
      'vuln-not-scanned',
      `current image without vulnerability scanning cannot be pulled due to ${policyText(project)} To continue with pull, please contact your project administrator for help.`,
    );
  }
  // Harbor checks an index's children when they are pulled by digest.
  if (artifact.isIndex && (artifact.type === 'IMAGE' || artifact.type === 'CNAB')) return ALLOW;
  if (artifact.scanStatus !== 'Success') {
    return deny(
      'vuln-scan-status',
      `current image with "${artifact.scanStatus}" status of vulnerability scanning cannot be pulled due to ${policyText(project)} To continue with pull, please contact your project administrator for help.`,
    );
  }

  const allowlist = effectiveAllowlist(project, systemAllowlist, now);
  let remaining = 0;
  let worst = -1;
  for (const v of dedupeVulnerabilities(artifact.vulnerabilities)) {
    if (allowlist.has(v.id)) continue;
    remaining++;
    // An empty severity ranks 99 here. Harbor's loop would instead reset its
    // running maximum on "" (order-dependent); no scanner sends "", and
    // failing closed is the safe reading.
    worst = Math.max(worst, severityCode(v.severity));
  }
  if (remaining > 0 && worst >= project.severityThreshold) {
    const thing = remaining > 1 ? 'vulnerabilities' : 'vulnerability';
    return deny(
      'vuln-severity',
      `current image with ${remaining} ${thing} cannot be pulled due to ${policyText(project)} ` +
        'To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.',
    );
  }
  return ALLOW;
}
