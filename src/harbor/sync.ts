/**
 * One policy sync: the system allowlist, the projects (Harbor's defaults
 * applied), and the facts of every artifact berth holds from Harbor, built
 * into a snapshot with a bundle hash and change lines (reference §10, §12).
 *
 * Failure rules, so a flaky WAN degrades instead of erasing policy:
 *  - the system allowlist or the project listing failing fails the sync
 *    (the caller keeps its previous snapshot);
 *  - one project or artifact failing keeps its previous entry, if any, and
 *    is reported in `errors`;
 *  - an artifact Harbor answers 404 for is dropped (enforcement then treats
 *    it as unknown, see policy.ts).
 */
import PQueue from 'p-queue';
import { isDigest } from '../oci/digest.js';
import type { CallOptions, HarborClient } from './client.js';
import { describeChanges, snapshotHash } from './diff.js';
import { HarborError } from './errors.js';
import { artifactFacts, isTrue, normaliseAllowlist, normaliseProject } from './normalise.js';
import {
  artifactKey,
  type ArtifactPolicyFacts,
  type ArtifactRef,
  type CveAllowlist,
  type HarborProject,
  type HarborVulnerabilityItem,
  type PolicySnapshot,
  type ProjectPolicy,
} from './types.js';

export interface SyncOptions {
  /** Projects to sync; empty: every project the account can see. Projects of `artifacts` are always added. */
  projects: string[];
  /** What berth has cached or pinned from Harbor. */
  artifacts: ArtifactRef[];
  /** Epoch ms: the snapshot's syncedAt. */
  now: number;
  /** The last snapshot: for change lines, and kept entries when one item fails. */
  previous?: PolicySnapshot | null;
  /** Parallel per-project/per-artifact requests. Default 4 (a thin WAN, a shared Harbor). */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface SyncResult {
  snapshot: PolicySnapshot;
  hash: string;
  /** The hash differs from `previous`'s (always true without a previous snapshot). */
  changed: boolean;
  changes: string[];
  /** Items that could not be fetched this time; their previous entries were kept. */
  errors: string[];
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The facts plus the digests of the signatures attached to the artifact. */
async function fetchArtifact(client: HarborClient, ref: ArtifactRef, call: CallOptions): Promise<{ facts: ArtifactPolicyFacts; signatures: string[] }> {
  if (!isDigest(ref.digest)) throw new HarborError('HARBOR_PROTOCOL', `artifact facts need a sha256 digest, not ${JSON.stringify(ref.digest).slice(0, 80)}`);
  const art = await client.getArtifact(ref.project, ref.repository, ref.digest, { ...call, withScanOverview: true, withAccessory: true, withTag: true });
  if (art.digest !== ref.digest) {
    throw new HarborError('HARBOR_PROTOCOL', `harbor answered artifact ${art.digest} for ${ref.project}/${ref.repository}@${ref.digest}`);
  }
  let items: HarborVulnerabilityItem[] = [];
  if (artifactFacts(ref.project, ref.repository, art, []).scanStatus === 'Success') {
    const answer = await client.getVulnerabilities(ref.project, ref.repository, ref.digest, call);
    // A Success overview without the report would read as "no findings":
    // refuse to record that rather than allow on a half answer.
    if (answer === null) throw new HarborError('HARBOR_PROTOCOL', `harbor has a successful scan of ${ref.project}/${ref.repository}@${ref.digest} but no report`);
    items = answer.report.vulnerabilities;
  }
  const signatures = (art.accessories ?? []).filter((a) => a.type === 'signature.cosign' || a.type === 'signature.notation').map((a) => a.digest);
  return { facts: artifactFacts(ref.project, ref.repository, art, items), signatures };
}

/**
 * The facts of one artifact, straight from Harbor: what an online first pull
 * evaluates before the next sync. Throws HarborError (HARBOR_NOT_FOUND when
 * Harbor has no such artifact in that repository).
 */
export async function fetchArtifactFacts(client: HarborClient, ref: ArtifactRef, call: CallOptions = {}): Promise<ArtifactPolicyFacts> {
  return (await fetchArtifact(client, ref, call)).facts;
}

/** The same snapshot with one artifact's facts added or replaced (after an online fetch). */
export function withArtifact(snapshot: PolicySnapshot, facts: ArtifactPolicyFacts): PolicySnapshot {
  return { ...snapshot, artifacts: { ...snapshot.artifacts, [artifactKey(facts.project, facts.repository, facts.digest)]: facts } };
}

async function systemAllowlist(client: HarborClient, call: CallOptions, errors: string[]): Promise<CveAllowlist> {
  try {
    return normaliseAllowlist(await client.getSystemAllowlist(call));
  } catch (err) {
    // Anonymous callers may not read it. An empty list is the strict reading:
    // nothing is exempted that Harbor might not exempt.
    if (!client.authenticated && err instanceof HarborError && err.code === 'HARBOR_AUTH') {
      errors.push('system allowlist: not readable without credentials; treated as empty');
      return { items: [], expiresAt: null };
    }
    throw err;
  }
}

export async function syncPolicies(client: HarborClient, opts: SyncOptions): Promise<SyncResult> {
  const call: CallOptions = opts.signal ? { signal: opts.signal } : {};
  const previous = opts.previous ?? null;
  const errors: string[] = [];
  const queue = new PQueue({ concurrency: Math.max(1, opts.concurrency ?? 4) });
  const aborted = (): boolean => opts.signal?.aborted === true;

  const system = await systemAllowlist(client, call, errors);

  // Projects: the listing (all visible) or each named one, plus every
  // project an artifact comes from, since its policy is needed to enforce.
  const fetched = new Map<string, HarborProject>();
  const wanted = new Set([...opts.projects, ...opts.artifacts.map((a) => a.project)]);
  if (opts.projects.length === 0) {
    for (const p of await client.listProjects(call)) fetched.set(p.name, p);
  }
  const listed = new Map(fetched);
  const toGet = [...wanted].filter((name) => {
    const p = listed.get(name);
    if (!p) return true;
    // A listing that left out the allowlist of a project that uses its own
    // list would silently enforce "no exemptions": ask for the project itself.
    const reuse = p.metadata?.['reuse_sys_cve_allowlist'];
    return reuse !== undefined && !isTrue(reuse) && !p.cve_allowlist;
  });
  const projects: Record<string, ProjectPolicy> = {};
  const projectSyncedAt: Record<string, number> = {};
  await Promise.all(
    toGet.map((name) =>
      queue.add(async () => {
        try {
          fetched.set(name, await client.getProject(name, call));
        } catch (err) {
          if (aborted()) throw err;
          const kept = previous?.projects[name];
          if (kept) {
            // Last known policy beats the listing's partial view (Harbor
            // itself serves from a stale cache the same way).
            fetched.delete(name);
            projects[name] = kept;
            projectSyncedAt[name] = previous?.projectSyncedAt[name] ?? previous?.syncedAt ?? 0;
          }
          errors.push(`project ${name}: ${reason(err)}${kept ? ' (kept the previous policy)' : ''}`);
        }
      }),
    ),
  );
  for (const [name, p] of fetched) {
    projects[name] = normaliseProject(p);
    projectSyncedAt[name] = opts.now;
  }

  // Artifacts, each with its own requests; a digest that some artifact lists
  // as its signature accessory is itself exempt as a signature.
  const artifacts: Record<string, ArtifactPolicyFacts> = {};
  const signatureDigests = new Set<string>();
  const refs = new Map(opts.artifacts.map((r) => [artifactKey(r.project, r.repository, r.digest), r]));
  await Promise.all(
    [...refs].map(([key, ref]) =>
      queue.add(async () => {
        try {
          const { facts, signatures } = await fetchArtifact(client, ref, call);
          artifacts[key] = facts;
          for (const d of signatures) signatureDigests.add(d);
        } catch (err) {
          if (aborted()) throw err;
          if (err instanceof HarborError && err.code === 'HARBOR_NOT_FOUND') return;
          const kept = previous?.artifacts[key];
          if (kept) artifacts[key] = kept;
          errors.push(`artifact ${key}: ${reason(err)}${kept ? ' (kept the previous facts)' : ''}`);
        }
      }),
    ),
  );
  for (const [key, facts] of Object.entries(artifacts)) {
    // Being a signature is a property of the (content-addressed) manifest, so
    // it sticks even when this sync could not re-read the subject that lists it.
    const signature = signatureDigests.has(facts.digest) || previous?.artifacts[key]?.isSignature === true;
    // A copy: kept entries are shared with the previous snapshot.
    if (!facts.isSignature && signature) artifacts[key] = { ...facts, isSignature: true };
  }

  const snapshot: PolicySnapshot = { syncedAt: opts.now, systemAllowlist: system, projects, artifacts, projectSyncedAt };
  const hash = snapshotHash(snapshot);
  const changed = previous === null || snapshotHash(previous) !== hash;
  return { snapshot, hash, changed, changes: describeChanges(previous, snapshot), errors: errors.sort() };
}
