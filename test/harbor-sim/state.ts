/**
 * The Harbor simulator's state: projects, allowlists, users and robots, repositories
 * and the artifacts in them, with the operations tests and handlers need.
 *
 * Pure bookkeeping: no HTTP and no registry traffic here. Pushing content into the
 * backing Distribution is index.ts/content.ts; answering requests is api.ts and
 * registry-front.ts. The types are in model.ts (re-exported here).
 */
import { randomUUID } from 'node:crypto';
import {
  MIME_GENERIC_REPORT,
  SCANNABLE_MANIFEST_TYPES,
  SIGNATURE_TYPES,
  type AddProjectOptions,
  type AddRobotOptions,
  type Allowlist,
  type Artifact,
  type NewManifest,
  type Project,
  type Repository,
  type Robot,
  type Role,
  type ScanInput,
  type ScanReport,
  type User,
  type Label,
} from './model.js';

export * from './model.js';

export class SimStateError extends Error {}

export class HarborState {
  readonly projects = new Map<string, Project>();
  readonly users = new Map<string, User>();
  readonly robots = new Map<string, Robot>();
  readonly repositories = new Map<string, Repository>();
  readonly artifacts = new Map<number, Artifact>();
  readonly labels = new Map<number, Label>();
  readonly retentions = new Map<number, unknown>();
  systemAllowlist: Allowlist;
  private seq = 0;
  private allowlistSeq = 0;
  private registrySeq = 0;

  constructor() {
    const now = new Date();
    this.systemAllowlist = { id: ++this.allowlistSeq, projectId: 0, items: [], expiresAt: null, creationTime: now, updateTime: now };
  }

  private nextId(): number {
    return ++this.seq;
  }

  // ---- projects and allowlists ----

  addProject(name: string, opts: AddProjectOptions = {}): Project {
    if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/.test(name)) throw new SimStateError(`addProject: invalid project name ${JSON.stringify(name)}`);
    if (this.projects.has(name)) throw new SimStateError(`addProject: project ${name} exists`);
    const now = new Date();
    const id = this.projects.size + 1;
    const metadata: Record<string, string> = { ...(opts.metadata ?? {}) };
    // Harbor always stores `public` on create (default "false"); every other key only if sent.
    if (opts.public !== undefined) metadata.public = String(opts.public);
    else metadata.public ??= 'false';
    const project: Project = {
      id,
      name,
      ownerId: 1,
      ownerName: 'admin',
      creationTime: now,
      updateTime: now,
      metadata,
      allowlist: {
        id: ++this.allowlistSeq,
        projectId: id,
        items: [...(opts.cveAllowlist?.items ?? [])],
        expiresAt: opts.cveAllowlist?.expiresAt ?? null,
        creationTime: now,
        updateTime: now,
      },
      registryId: opts.registryId ?? (opts.upstream ? ++this.registrySeq : 0),
      upstream: opts.upstream ? { ...opts.upstream } : null,
      immutableRules: [],
      preheatPolicies: [],
    };
    this.projects.set(name, project);
    return project;
  }

  projectByName(name: string): Project | undefined {
    return this.projects.get(name);
  }

  projectById(id: number): Project | undefined {
    for (const p of this.projects.values()) if (p.id === id) return p;
    return undefined;
  }

  requireProject(name: string): Project {
    const p = this.projects.get(name);
    if (!p) throw new SimStateError(`no project ${name}`);
    return p;
  }

  /** Like Harbor: metadata edits do not touch the project's update_time. */
  setMetadata(project: string, key: string, value: string | undefined): void {
    const p = this.requireProject(project);
    if (value === undefined) delete p.metadata[key];
    else p.metadata[key] = value;
  }

  setSystemAllowlist(items: string[], expiresAt: number | null = null): void {
    this.systemAllowlist = { ...this.systemAllowlist, items: [...items], expiresAt, updateTime: new Date() };
  }

  setProjectAllowlist(project: string, items: string[], expiresAt: number | null = null): void {
    const p = this.requireProject(project);
    p.allowlist = { ...p.allowlist, items: [...items], expiresAt, updateTime: new Date() };
  }

  /**
   * Harbor's ReuseSysCVEAllowlist(): true when the key is missing, otherwise the
   * value parsed as "true"/"1" (so "false" and any unparsable value pick the project's list).
   */
  reusesSystemAllowlist(p: Project): boolean {
    const v = p.metadata.reuse_sys_cve_allowlist;
    return v === undefined ? true : isTrue(v);
  }

  /** The effective list: system or project, never merged (the system one carries the project's id). */
  effectiveAllowlist(p: Project): Allowlist {
    return this.reusesSystemAllowlist(p) ? { ...this.systemAllowlist, projectId: p.id } : p.allowlist;
  }

  // ---- principals ----

  addUser(name: string, password: string, opts: { admin?: boolean; projects?: Record<string, Role> } = {}): User {
    if (name.startsWith('robot$')) throw new SimStateError(`addUser: ${name} looks like a robot name`);
    const user: User = { id: this.users.size + 1, name, password, admin: opts.admin ?? false, roles: new Map(Object.entries(opts.projects ?? {})) };
    this.users.set(name, user);
    return user;
  }

  addRobot(name: string, secret: string, opts: AddRobotOptions): Robot {
    if (!name.startsWith('robot$')) throw new SimStateError(`addRobot: ${name} must start with robot$`);
    const projectRobot = name.slice('robot$'.length).includes('+');
    const robot: Robot = {
      id: this.robots.size + 1,
      name,
      secret,
      level: projectRobot ? 'project' : 'system',
      permissions: opts.permissions.map((p) => ({ ...p, access: p.access.map((a) => ({ ...a })) })),
      disabled: opts.disabled ?? false,
      expiresAt: opts.expiresAt ?? -1,
      creationTime: new Date(),
    };
    this.robots.set(name, robot);
    return robot;
  }

  updateRobot(name: string, change: { disabled?: boolean; expiresAt?: number; secret?: string }): void {
    const r = this.robots.get(name);
    if (!r) throw new SimStateError(`no robot ${name}`);
    if (change.disabled !== undefined) r.disabled = change.disabled;
    if (change.expiresAt !== undefined) r.expiresAt = change.expiresAt;
    if (change.secret !== undefined) r.secret = change.secret;
  }

  // ---- repositories and artifacts ----

  ensureRepository(project: Project, repo: string): Repository {
    const full = `${project.name}/${repo}`;
    let r = this.repositories.get(full);
    if (!r) {
      const now = new Date();
      r = { id: this.repositories.size + 1, projectId: project.id, name: full, creationTime: now, updateTime: now, pullCount: 0 };
      this.repositories.set(full, r);
    }
    return r;
  }

  repositoriesOf(project: Project): Repository[] {
    return [...this.repositories.values()].filter((r) => r.projectId === project.id);
  }

  /** Registers a manifest in a repository (idempotent per repository and digest). */
  registerManifest(project: Project, repo: string, m: NewManifest): Artifact {
    const repository = this.ensureRepository(project, repo);
    const existing = this.findByDigest(repository.name, m.digest);
    if (existing) return existing;
    const art: Artifact = {
      id: this.nextId(),
      projectId: project.id,
      repositoryId: repository.id,
      repositoryName: repository.name,
      digest: m.digest,
      size: m.size,
      type: m.type,
      mediaType: m.mediaType,
      manifestMediaType: m.manifestMediaType,
      artifactType: m.artifactType ?? '',
      pushTime: new Date(),
      pullTime: null,
      extraAttrs: m.extraAttrs ?? {},
      annotations: m.annotations ?? {},
      references: m.references ?? [],
      tags: [],
      labelIds: [],
      scan: null,
      scannableOverride: undefined,
      accessory: null,
    };
    this.artifacts.set(art.id, art);
    repository.updateTime = art.pushTime;
    return art;
  }

  /** Points `tag` at `art`, moving it off any other artifact of the same repository. */
  tagArtifact(art: Artifact, tag: string): void {
    for (const other of this.artifactsIn(art.repositoryName)) {
      other.tags = other.tags.filter((t) => t.name !== tag);
    }
    art.tags.push({ id: this.nextId(), name: tag, pushTime: new Date(), pullTime: null });
  }

  artifactsIn(repositoryName: string): Artifact[] {
    return [...this.artifacts.values()].filter((a) => a.repositoryName === repositoryName);
  }

  findByDigest(repositoryName: string, digest: string): Artifact | undefined {
    return this.artifactsIn(repositoryName).find((a) => a.digest === digest);
  }

  /** By tag or by digest, the way Harbor's GetByReference resolves a reference. */
  resolve(repositoryName: string, reference: string): Artifact | undefined {
    // A tag can never hold ':', so anything with one is a digest.
    if (reference.includes(':')) return this.findByDigest(repositoryName, reference);
    return this.artifactsIn(repositoryName).find((a) => a.tags.some((t) => t.name === reference));
  }

  requireArtifact(project: string, repo: string, reference: string): Artifact {
    const p = this.requireProject(project);
    const art = this.resolve(`${p.name}/${repo}`, reference);
    if (!art) throw new SimStateError(`no artifact ${project}/${repo} ${reference}`);
    return art;
  }

  children(art: Artifact): Artifact[] {
    return art.references.map((r) => this.artifacts.get(r.childId)).filter((a): a is Artifact => a !== undefined);
  }

  /** Is this artifact referenced as a child of some index? */
  isChild(art: Artifact): boolean {
    for (const a of this.artifacts.values()) if (a.references.some((r) => r.childId === art.id)) return true;
    return false;
  }

  accessoriesOf(art: Artifact): Artifact[] {
    return [...this.artifacts.values()].filter((a) => a.accessory?.subjectArtifactId === art.id);
  }

  markAccessory(accessory: Artifact, subject: Artifact, type: string): void {
    accessory.accessory = { id: this.nextId(), type, subjectArtifactId: subject.id, creationTime: new Date() };
  }

  isSignature(art: Artifact): boolean {
    return art.accessory !== null && SIGNATURE_TYPES.includes(art.accessory.type);
  }

  /**
   * Harbor's scan checker: accessories are never scannable; an IMAGE is when its
   * manifest type is one the scanner takes; an index is when any child is.
   */
  isScannable(art: Artifact): boolean {
    if (art.scannableOverride !== undefined) return art.scannableOverride;
    if (art.accessory) return false;
    if (art.type === 'IMAGE' && SCANNABLE_MANIFEST_TYPES.includes(art.manifestMediaType)) return true;
    return this.children(art).some((c) => this.isScannable(c));
  }

  /** Reports the policy and the overview see: the artifact's own, else (an index) its children's. */
  reportsFor(art: Artifact): ScanReport[] {
    if (art.scan) return [art.scan];
    return this.children(art)
      .map((c) => c.scan)
      .filter((s): s is ScanReport => s !== null);
  }

  setScan(art: Artifact, input: ScanInput | null): void {
    if (input === null) {
      art.scan = null;
      return;
    }
    const now = new Date();
    const done = input.status === 'Success' || input.status === 'Error' || input.status === 'Stopped';
    art.scan = {
      status: input.status,
      mimeType: input.mimeType ?? MIME_GENERIC_REPORT,
      vulnerabilities: (input.vulnerabilities ?? []).map((v) => ({ ...v })),
      reportId: randomUUID(),
      startTime: new Date(now.getTime() - 2000),
      endTime: done ? now : null,
    };
  }

  setLabels(art: Artifact, names: string[]): void {
    art.labelIds = names.map((name) => {
      for (const l of this.labels.values()) if (l.name === name) return l.id;
      const label: Label = { id: this.nextId(), name, creationTime: new Date() };
      this.labels.set(label.id, label);
      return label.id;
    });
  }

  setRetention(project: string, policy: Record<string, unknown>): number {
    const p = this.requireProject(project);
    const id = this.retentions.size + 1;
    this.retentions.set(id, { id, ...policy, scope: { level: 'project', ref: p.id } });
    p.metadata.retention_id = String(id);
    return id;
  }
}

/** Harbor's isTrue(): "true" or "1", case-insensitive. */
export function isTrue(v: string | undefined): boolean {
  if (v === undefined) return false;
  const l = v.toLowerCase();
  return l === 'true' || l === '1';
}
