/**
 * Harbor as berth's source of truth at the edge: which registries and
 * repositories it governs, who may read a private project (pull-secret
 * credentials checked against Harbor online, remembered as salted hashes
 * for offline use), and the §2 policy chain on every manifest berth serves,
 * first pulls included (stricter than Harbor's proxy cache, which lets an
 * uncached image through once).
 */
import type { Logger } from 'pino';
import PQueue from 'p-queue';
import type { HarborConfig, UpstreamConfig } from '../config/types.js';
import type { Database } from 'better-sqlite3';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import type { AccessRequest, PolicyGate } from '../cache/gate.js';
import { createHarborClient, type HarborClient } from './client.js';
import { isHarborUnreachable } from './errors.js';
import { decide } from './enforce.js';
import { normaliseProject } from './normalise.js';
import { fetchArtifactFacts, syncPolicies, withArtifact, type SyncResult } from './sync.js';
import { SnapshotStore, migrateHarbor } from './snapshot-store.js';
import { markedImages } from './prefetch-list.js';
import { CredentialCache } from './credentials.js';
import { manifestSignatureType } from './signatures.js';
import { splitHarborName, type ArtifactRef, type PolicySnapshot, type SignatureType } from './types.js';

/** A remembered pair is re-checked online when older than this (one token request, not one per pull). */
const RECHECK_MS = 5 * 60_000;
/** After Harbor failed to answer, how long online look-ups are skipped (answers stay fast offline). */
const OFFLINE_BACKOFF_MS = 30_000;

export const BASIC_CHALLENGE = { 'WWW-Authenticate': 'Basic realm="berth"' };

export interface HarborGateOptions {
  harbor: HarborConfig;
  upstreams: readonly UpstreamConfig[];
  /** The index's database: Harbor keeps its own tables there (snapshot, remembered credentials). */
  db: Database;
  /** Manifests berth holds that came through a registry: what sync fetches facts for. */
  heldManifests: (registry: string) => { repository: string; digest: string }[];
  /** The bytes of a cached manifest (to tell a signature by its content). */
  cachedManifest: (digest: string) => Buffer | undefined;
  logger: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** For tests: a client instead of one built from the config. */
  client?: HarborClient;
}

export class HarborGate implements PolicyGate {
  readonly client: HarborClient;
  private snapshot: PolicySnapshot | null;
  private readonly store: SnapshotStore;
  private readonly creds: CredentialCache;
  /** Upstream registry names whose repositories are "<project>/<repo>" on Harbor. */
  private readonly harborRegistries = new Set<string>();
  /** Upstream registry name -> Harbor proxy-cache project its content comes through. */
  private readonly viaProject = new Map<string, string>();
  private readonly queue = new PQueue({ concurrency: 1 });
  private timer: NodeJS.Timeout | null = null;
  private offlineUntil = 0;
  private readonly now: () => number;
  lastSync: { at: number; ok: boolean; error?: string; result?: SyncResult } | null = null;

  constructor(private readonly opts: HarborGateOptions) {
    const { harbor } = opts;
    this.now = opts.now ?? Date.now;
    this.client =
      opts.client ??
      createHarborClient({
        url: harbor.url,
        ...(harbor.username !== undefined ? { username: harbor.username } : {}),
        ...(harbor.password !== undefined ? { password: harbor.password } : {}),
        ...(harbor.caFile !== undefined ? { caFile: harbor.caFile } : {}),
        skipVerify: harbor.skipVerify,
        timeouts: { connectMs: 5000, headersMs: 30_000, bodyIdleMs: 60_000 },
      });
    const harborHost = new URL(harbor.url).host;
    for (const u of opts.upstreams) {
      if (new URL(u.url).host === harborHost) this.harborRegistries.add(u.registry);
      if (u.viaHarborProject) this.viaProject.set(u.registry, u.viaHarborProject);
    }
    migrateHarbor(opts.db);
    this.store = new SnapshotStore(opts.db);
    this.snapshot = this.store.load();
    this.creds = new CredentialCache({ ttlMs: harbor.offlineGraceMs, db: opts.db, ...(opts.metrics ? { metrics: opts.metrics } : {}) });
  }

  /** Harbor's project and repository for content berth serves as (registry, repository). */
  locate(registry: string, repository: string): { project: string; repository: string } | null {
    if (this.harborRegistries.has(registry)) return splitHarborName(repository);
    const proxy = this.viaProject.get(registry);
    return proxy ? { project: proxy, repository } : null;
  }

  /** The upstream registry name Harbor's own content is fetched under, if one is configured. */
  harborRegistry(): string | undefined {
    return [...this.harborRegistries][0];
  }

  /** Images Harbor marks for this site (labels, preheat policies); [] when none apply or Harbor is away. */
  async markedImages(): Promise<string[]> {
    const h = this.opts.harbor;
    const registry = this.harborRegistry();
    if (!registry || (h.prefetchLabels.length === 0 && !h.prefetchPreheat)) return [];
    try {
      return await markedImages(this.client, { registry, projects: h.projects, labels: h.prefetchLabels, preheat: h.prefetchPreheat }, this.opts.logger);
    } catch (err) {
      this.noteUnreachable(err);
      this.opts.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'cannot list the images Harbor marks for prefetch');
      return [];
    }
  }

  governs(registry: string, repository: string): boolean {
    return this.locate(registry, repository) !== null;
  }

  private online(): boolean {
    return this.now() >= this.offlineUntil;
  }

  private noteUnreachable(err: unknown): void {
    if (isHarborUnreachable(err)) this.offlineUntil = this.now() + OFFLINE_BACKOFF_MS;
  }

  private lastStoreCheck = 0;

  /**
   * The snapshot: re-read when another process (`berth sync`) saved a newer
   * one, made by a first sync when there is none yet and Harbor answers.
   */
  private async current(): Promise<PolicySnapshot | null> {
    const now = this.now();
    if (now - this.lastStoreCheck >= 1000) {
      this.lastStoreCheck = now;
      const stored = this.store.syncedAt();
      if (stored !== null && (!this.snapshot || stored > this.snapshot.syncedAt)) this.snapshot = this.store.load() ?? this.snapshot;
    }
    if (!this.snapshot && this.online()) await this.syncNow().catch(() => undefined);
    return this.snapshot;
  }

  async authorize(req: AccessRequest): Promise<void> {
    const loc = this.locate(req.registry, req.repository);
    if (!loc) return;
    const snapshot = await this.current();
    let project = snapshot?.projects[loc.project];
    if (!project && this.online()) {
      try {
        project = normaliseProject(await this.client.getProject(loc.project));
      } catch (err) {
        this.noteUnreachable(err);
      }
    }
    // A project berth knows nothing about is treated as private: fail closed.
    if (project?.public) return;
    const c = req.credentials;
    if (!c) throw new OciError('UNAUTHORIZED', 'authentication required: this repository is private', { project: loc.project }, BASIC_CHALLENGE);
    const now = this.now();
    // Before scrypt or Harbor: a user name with too many refused passwords waits (429).
    this.creds.admit(loc.project, c.username, c.password, now);
    const known = await this.creds.check(loc.project, c.username, c.password, now);
    const verifiedAt = this.creds.verifiedAt(loc.project, c.username);
    if (known === 'valid' && verifiedAt !== null && now - verifiedAt < RECHECK_MS) return;
    if (this.online()) {
      try {
        const ok = await this.client.checkPullCredentials(loc.project, loc.repository, c.username, c.password);
        if (ok) {
          await this.creds.remember(loc.project, c.username, c.password, now);
          return;
        }
        // Harbor revoked the pair berth remembers: forget it. A stranger's wrong password
        // (a mismatch) must not erase the real user's remembered pair.
        if (known === 'valid') this.creds.forget(loc.project, c.username);
        this.creds.failed(c.username, c.password, now);
        throw new OciError('UNAUTHORIZED', 'authentication required: Harbor did not accept these credentials for this repository', { project: loc.project }, BASIC_CHALLENGE);
      } catch (err) {
        if (err instanceof OciError) throw err;
        // Harbor could not answer the question (down, 5xx, a bad answer): what it accepted before stands.
        this.noteUnreachable(err);
      }
    }
    // Offline: only a pair Harbor accepted before, within offline_grace.
    if (known === 'valid') return;
    // Offline, only a mismatch judged the password; an unknown pair got no answer to learn from.
    if (known === 'mismatch') this.creds.failed(c.username, c.password, now);
    throw new OciError('UNAUTHORIZED', 'authentication required: Harbor cannot be reached to check these credentials', { project: loc.project }, BASIC_CHALLENGE);
  }

  async checkManifest(req: AccessRequest & { digest: string }): Promise<void> {
    const loc = this.locate(req.registry, req.repository);
    if (!loc) return;
    let snapshot = await this.current();
    const now = this.now();
    if (snapshot && !snapshot.projects[loc.project] && this.online()) {
      try {
        const p = normaliseProject(await this.client.getProject(loc.project));
        snapshot = { ...snapshot, projects: { ...snapshot.projects, [loc.project]: p }, projectSyncedAt: { ...snapshot.projectSyncedAt, [loc.project]: now } };
        this.snapshot = snapshot;
      } catch (err) {
        this.noteUnreachable(err);
      }
    }
    const key = `${loc.project}/${loc.repository}@${req.digest}`;
    let facts = snapshot?.artifacts[key];
    if (snapshot && !facts && this.online()) {
      // First pull of an artifact berth has no facts for: ask Harbor now.
      try {
        facts = await fetchArtifactFacts(this.client, { project: loc.project, repository: loc.repository, digest: req.digest });
        snapshot = withArtifact(snapshot, facts);
        this.snapshot = snapshot;
      } catch (err) {
        this.noteUnreachable(err);
      }
    }
    const input = { snapshot, project: loc.project, repository: loc.repository, digest: req.digest, now, offlineGraceMs: this.opts.harbor.offlineGraceMs, onExpired: this.opts.harbor.onExpired, ...(facts ? { facts } : {}) };
    let d = decide(input);
    // A signature is exempt, and its own bytes say so where the facts do not
    // (signatures.ts). Read only for a refusal: allowed pulls stay one decision.
    if (!d.allow) {
      const manifestSignature = this.cachedSignatureType(req.digest);
      if (manifestSignature) d = decide({ ...input, manifestSignature });
    }
    if (d.allow) return;
    this.opts.metrics?.policyDenials.inc({ reason: d.reason, project: loc.project });
    this.opts.logger.warn({ registry: req.registry, project: loc.project, repository: loc.repository, digest: req.digest, reason: d.reason, user: req.credentials?.username, message: d.message }, 'pull refused by policy');
    throw new OciError('PROJECTPOLICYVIOLATION', d.message, undefined, { 'X-Berth-Policy-Reason': d.reason });
  }

  /** What the cached bytes of a manifest show it to be (null: not a signature, or not cached). */
  private cachedSignatureType(digest: string): SignatureType | null {
    try {
      const body = this.opts.cachedManifest(digest);
      return body ? manifestSignatureType(body) : null;
    } catch (err) {
      this.opts.logger.warn({ digest, err: err instanceof Error ? err.message : String(err) }, 'cannot read a cached manifest to tell whether it is a signature');
      return null;
    }
  }

  /** Artifacts berth holds from Harbor: what sync fetches facts for. */
  private heldArtifacts(): ArtifactRef[] {
    const out: ArtifactRef[] = [];
    for (const registry of [...this.harborRegistries, ...this.viaProject.keys()]) {
      for (const l of this.opts.heldManifests(registry)) {
        const loc = this.locate(registry, l.repository);
        if (loc) out.push({ project: loc.project, repository: loc.repository, digest: l.digest });
      }
    }
    return out;
  }

  /** One sync now (coalesced with one under way); saves the snapshot and returns what changed. */
  syncNow(): Promise<SyncResult> {
    if (this.queue.size + this.queue.pending > 0) return this.queue.onIdle().then(() => this.lastSync?.result ?? Promise.reject(new Error(this.lastSync?.error ?? 'sync failed')));
    return this.queue.add(async () => {
      const started = this.now();
      try {
        const res = await syncPolicies(this.client, { projects: this.opts.harbor.projects, artifacts: this.heldArtifacts(), now: started, previous: this.snapshot });
        this.snapshot = res.snapshot;
        this.store.save(res.snapshot, res.hash);
        this.offlineUntil = 0;
        this.lastSync = { at: started, ok: true, result: res };
        this.opts.logger.info({ hash: res.hash, changed: res.changed, changes: res.changes.slice(0, 50), errors: res.errors, projects: Object.keys(res.snapshot.projects).length, artifacts: Object.keys(res.snapshot.artifacts).length }, 'policy sync');
        return res;
      } catch (err) {
        this.noteUnreachable(err);
        const error = err instanceof Error ? err.message : String(err);
        this.lastSync = { at: started, ok: false, error };
        this.opts.logger.warn({ err: error }, 'policy sync failed; keeping the last snapshot');
        throw err;
      }
    });
  }

  start(): void {
    const tick = () => void this.syncNow().catch(() => undefined);
    tick();
    this.timer = setInterval(tick, this.opts.harbor.syncIntervalMs);
    this.timer.unref();
  }

  snapshotSyncedAt(): number | null {
    return this.snapshot?.syncedAt ?? null;
  }

  /** Age of the policy snapshot in ms (null: never synced). */
  snapshotAge(): number | null {
    return this.snapshot ? this.now() - this.snapshot.syncedAt : null;
  }

  projectsState(): { name: string; public: boolean; preventVul: boolean; severity: string; cosign: boolean; notation: boolean; syncedAt: number | null }[] {
    const s = this.snapshot;
    if (!s) return [];
    return Object.values(s.projects).map((p) => ({
      name: p.name,
      public: p.public,
      preventVul: p.preventVul,
      severity: p.severity,
      cosign: p.contentTrustCosign,
      notation: p.contentTrustNotation,
      syncedAt: s.projectSyncedAt[p.name] ?? s.syncedAt,
    }));
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.queue.clear();
    await this.queue.onIdle().catch(() => undefined);
    await this.client.close();
  }
}
