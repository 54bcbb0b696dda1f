/**
 * One decision for a manifest GET/HEAD of Harbor content, on top of the
 * §12 chain in policy.ts: which snapshot entry applies, how old it may be
 * (`offline_grace`), and what `on_expired` means once it is older.
 *
 *  - Staleness is judged per project (`projectSyncedAt`), so a project whose
 *    policy could not be refreshed expires even while others sync fine.
 *  - on_expired = "deny": an expired project's content is refused outright,
 *    whatever its last known policy said (the policy may have been switched
 *    on since).
 *  - on_expired = "allow": the expiry itself refuses nothing; the last known
 *    policy keeps being enforced (what Harbor does with a stale cache, §12.6),
 *    so a known-vulnerable image stays refused.
 *  - A project absent from the snapshot is refused: berth cannot tell what
 *    Harbor would do. Online, the caller fetches it (client.getProject) and
 *    adds it before deciding, as for artifacts (`fetchArtifactFacts`).
 */
import { evaluate, type Decision, type DenyReason } from './policy.js';
import { artifactKey, type ArtifactPolicyFacts, type PolicySnapshot, type SignatureType } from './types.js';

export type EnforceReason = DenyReason | 'policy-expired' | 'unknown-project';

export type EnforceDecision = { allow: true } | { allow: false; reason: EnforceReason; message: string };

export interface EnforceInput {
  snapshot: PolicySnapshot | null;
  project: string;
  repository: string;
  digest: string;
  /** Epoch ms, the node's clock. */
  now: number;
  offlineGraceMs: number;
  onExpired: 'deny' | 'allow';
  /** Facts fetched from Harbor just now; preferred to the snapshot's. */
  facts?: ArtifactPolicyFacts;
  /** What the manifest's own bytes show (`manifestSignatureType`); a signature is exempt (policy.ts). */
  manifestSignature?: SignatureType | null;
}

function hours(ms: number): string {
  return `${Math.floor(ms / 3_600_000)}h${String(Math.floor((ms % 3_600_000) / 60_000)).padStart(2, '0')}m`;
}

export function decide(input: EnforceInput): EnforceDecision {
  const { snapshot, project, now } = input;
  const policy = snapshot?.projects[project];
  if (!snapshot || !policy) {
    return {
      allow: false,
      reason: 'unknown-project',
      message: `The image cannot be pulled: the policy of project '${project}' is not known to this mirror. To continue with pull, retry once the mirror can reach Harbor.`,
    };
  }
  const syncedAt = snapshot.projectSyncedAt[project] ?? snapshot.syncedAt;
  const age = now - syncedAt;
  if (age > input.offlineGraceMs && input.onExpired === 'deny') {
    return {
      allow: false,
      reason: 'policy-expired',
      message: `The image cannot be pulled: the policy of project '${project}' was last synced from Harbor ${hours(age)} ago, longer than the allowed ${hours(input.offlineGraceMs)}. To continue with pull, restore the mirror's connection to Harbor.`,
    };
  }
  const facts = input.facts ?? snapshot.artifacts[artifactKey(project, input.repository, input.digest)];
  const decision: Decision = evaluate(policy, facts, snapshot.systemAllowlist, now, input.manifestSignature ?? null);
  return decision;
}
