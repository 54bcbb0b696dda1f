/**
 * A Harbor v2.0 simulator for tests: the management API, the token service and the
 * `/v2` front with Harbor's pull-time policy chain, in front of a real Distribution
 * that holds the content. Facts from ../../../shared/reference/harbor-api.md.
 *
 *   const harbor = await startHarborSim(t);
 *   harbor.addProject('team', { metadata: { prevent_vul: 'true', severity: 'high' } });
 *   harbor.addRobot('robot$edge-sync', 'secret', { permissions: [...] });
 *   const digest = await harbor.pushImage('team', 'app', 'v1', image);
 *   harbor.setScan('team', 'app', digest, { status: 'Success', vulnerabilities: [...] });
 *   // skopeo inspect docker://<harbor.host>/team/app:v1 → 412 PROJECTPOLICYVIOLATION
 *
 * Layout: state.ts (data), auth.ts (principals, permissions, tokens, /service/token),
 * policy.ts (the §2 chain), api.ts + api-artifacts.ts (/api/v2.0), render.ts (JSON
 * bodies), registry-front.ts (/v2), content.ts (signatures and image records), query.ts
 * (pagination, q=, Link), proxy.ts (proxy-cache projects with an `upstream`). Not
 * simulated: pushes through /v2, webhooks, sessions, OIDC, quotas.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pushImage as skopeoPush, type TestImage } from '../harness/images.js';
import { tempDirFor, type Teardown } from '../harness/procs.js';
import { startRegistry, type Registry } from '../harness/registry.js';
import { signingMaterial } from '../harness/token-server.js';
import { handleApi } from './api.js';
import { handleTokenService, signToken, TOKEN_ISSUER, TOKEN_SERVICE, type SigningKey } from './auth.js';
import { fetchManifest, pushCosignTagSignature, pushSignature, registerTestImage, type Backing } from './content.js';
import { Exchange, HarborError } from './http.js';
import { UpstreamClient, type ProxyDeps } from './proxy.js';
import { handleV2 } from './registry-front.js';
import {
  HarborState,
  type AddProjectOptions,
  type AddRobotOptions,
  type Project,
  type Role,
  type ScanInput,
} from './state.js';

export { HarborState, MIME_GENERIC_REPORT, MIME_NATIVE_REPORT } from './state.js';
export { ROBOT_ACCESS } from './grants.js';
export type { Project, RobotPermission, ScanInput, UpstreamConfig, Vulnerability } from './state.js';

export interface HarborSimOptions {
  /** `expires_in` of /service/token answers, in seconds (Harbor's default: 30 minutes). */
  tokenExpiresIn?: number;
  /** `harbor_version` in /systeminfo. */
  version?: string;
}

export interface SimRequest {
  seq: number;
  at: number;
  kind: 'api' | 'v2' | 'token' | 'other';
  method: string;
  /** Path as sent, without the query string. */
  path: string;
  /** Path and query as sent. */
  uri: string;
  status: number;
  /** The caller the request ran as (user, robot, token subject), null for anonymous. */
  user: string | null;
}

export interface HarborSim {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT` */
  host: string;
  port: number;
  /** The Distribution holding the content. */
  registry: Registry;
  /** The system administrator (pushes go in with it). */
  admin: { username: string; password: string };
  state: HarborState;
  /** Closes the listener and stops the backing registry; state is kept. */
  stop(): Promise<void>;
  /** Starts both again on the same ports. */
  start(): Promise<void>;
  requests(filter?: { kind?: SimRequest['kind']; since?: number }): SimRequest[];
  mark(): number;
  waitForRequests(pred: (reqs: SimRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  /** Handler failures (500s) and failed proxy-cache copies, for asserting the simulator itself did not break. */
  errors(): string[];
  /** Resolves once every background proxy-cache copy has finished (and its artifacts are recorded). */
  proxyIdle(): Promise<void>;

  addProject(name: string, opts?: AddProjectOptions): Project;
  setMetadata(project: string, key: string, value: string | undefined): void;
  setSystemAllowlist(items: string[], expiresAt?: number | null): void;
  setProjectAllowlist(project: string, items: string[], expiresAt?: number | null): void;
  addUser(name: string, password: string, opts?: { admin?: boolean; projects?: Record<string, Role> }): void;
  addRobot(name: string, secret: string, opts: AddRobotOptions): void;
  updateRobot(name: string, change: { disabled?: boolean; expiresAt?: number; secret?: string }): void;
  /** Pushes with skopeo into `<project>/<repo>:<tag>` and records the artifacts; returns the top digest. */
  pushImage(project: string, repo: string, tag: string, image: TestImage): Promise<string>;
  /** `reference` is a digest or a tag; null removes the report. */
  setScan(project: string, repo: string, reference: string, scan: ScanInput | null): void;
  /** Overrides the derived scannable flag (undefined restores it). */
  setScannable(project: string, repo: string, reference: string, scannable: boolean | undefined): void;
  /** Attaches a signature; pushes a real signature manifest unless `accessoryDigest` names one already in the repository. Returns its digest. */
  addAccessory(project: string, repo: string, subject: string, type: 'signature.cosign' | 'signature.notation', accessoryDigest?: string): Promise<string>;
  /**
   * Signs `subject` the way `cosign sign` does by default: the `sha256-<hex>.sig` tag (no OCI
   * `subject`), simplesigning layers, an image config; Harbor renders it as an IMAGE whose only
   * hint of being a signature is that tag. Signing again appends a signature and moves the tag;
   * the earlier manifest stays a `signature.cosign` accessory, untagged. Returns the new digest.
   */
  cosignSign(project: string, repo: string, subject: string): Promise<string>;
  setLabels(project: string, repo: string, reference: string, labels: string[]): void;
  setImmutableRules(project: string, rules: unknown[]): void;
  setPreheatPolicies(project: string, policies: unknown[]): void;
  setRetention(project: string, policy: Record<string, unknown>): number;
}

function kindOf(path: string): SimRequest['kind'] {
  if (path.startsWith('/api/')) return 'api';
  if (path === '/v2' || path.startsWith('/v2/')) return 'v2';
  if (path.startsWith('/service/token')) return 'token';
  return 'other';
}

export async function startHarborSim(t: Teardown, opts: HarborSimOptions = {}): Promise<HarborSim> {
  const mat = await signingMaterial();
  const key: SigningKey = { key: mat.key, x5c: mat.x5c, certPem: mat.certPem };
  const dir = await tempDirFor(t, 'harbor-sim');
  const certFile = path.join(dir, 'token.crt');
  await writeFile(certFile, mat.certPem);
  const tokenExpiresIn = opts.tokenExpiresIn ?? 1800;
  const version = opts.version ?? 'v2.13.2-8b2e4c5a';

  const state = new HarborState();
  const admin = { username: 'admin', password: randomBytes(9).toString('base64url') };
  state.addUser(admin.username, admin.password, { admin: true });

  const recorded: SimRequest[] = [];
  const waiters = new Set<() => void>();
  const failures: string[] = [];
  const onHead = (ex: Exchange, status: number): void => {
    const uri = ex.req.url ?? '/';
    recorded.push({ seq: recorded.length, at: Date.now(), kind: kindOf(ex.rawPath), method: ex.req.method ?? '', path: ex.rawPath, uri, status, user: ex.user });
    for (const w of waiters) w();
  };

  // Tokens the simulator uses on the backing registry, reused while they have a minute left.
  const internalTokens = new Map<string, { token: string; until: number }>();
  const internalToken = (scope: { type: string; name: string }, actions: string[]): string => {
    const k = `${scope.type}:${scope.name}:${actions.join(',')}`;
    const hit = internalTokens.get(k);
    if (hit && hit.until > Date.now()) return hit.token;
    const token = signToken(key, 'harbor-core', [{ ...scope, actions }], 600);
    internalTokens.set(k, { token, until: Date.now() + 540_000 });
    return token;
  };

  let url = '';
  let registry: Registry | null = null;
  const proxyJobs = new Map<string, Promise<void>>();
  const proxies = new Map<string, ProxyDeps>();
  let backing: (Backing & { host: string }) | null = null;
  const proxyFor = (project: Project): ProxyDeps | null => {
    if (!project.upstream || !backing) return null;
    let deps = proxies.get(project.name);
    if (!deps || deps.upstream.cfg.url !== project.upstream.url) {
      deps = { state, backing, pushCreds: `${admin.username}:${admin.password}`, upstream: new UpstreamClient(project.upstream), jobs: proxyJobs, failures };
      proxies.set(project.name, deps);
    }
    return deps;
  };
  const server = http.createServer((req, res) => {
    const ex = new Exchange(req, res, onHead);
    const run = async (): Promise<void> => {
      const p = ex.rawPath;
      if (p.startsWith('/api/v2.0/') || p === '/api/v2.0') await handleApi(ex, state, url, version);
      else if (p === '/service/token') handleTokenService(ex, state, key, tokenExpiresIn);
      else if (p === '/v2' || p.startsWith('/v2/')) {
        if (!registry) throw new Error('backing registry not started');
        await handleV2(ex, { state, key, url, backing: { host: '127.0.0.1', port: registry.port }, internalToken, proxyFor });
      } else ex.error(404, 'NOT_FOUND', `path ${p} was not found`);
    };
    run().catch((err: unknown) => {
      if (err instanceof HarborError) {
        if (!res.headersSent) ex.fail(err);
        return;
      }
      failures.push(`${req.method ?? ''} ${req.url ?? ''}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      // Harbor rewrites every 5xx to this envelope.
      if (!res.headersSent) ex.error(500, 'UNKNOWN', 'internal server error');
      else res.destroy();
    });
  });

  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.removeListener('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const port = await listen(0);
  url = `http://127.0.0.1:${port}`;
  let listening = true;
  const closeServer = (): Promise<void> =>
    new Promise((resolve) => {
      if (!listening) {
        resolve();
        return;
      }
      listening = false;
      server.close(() => resolve());
      server.closeAllConnections();
    });
  t.teardown(closeServer);

  registry = await startRegistry(t, { token: { realm: `${url}/service/token`, service: TOKEN_SERVICE, issuer: TOKEN_ISSUER, certFile } });
  const reg = registry;
  backing = { url: reg.url, host: reg.host, token: (repository, actions) => internalToken({ type: 'repository', name: repository }, actions) };
  const content: Backing = backing;
  const proxyIdle = async (): Promise<void> => {
    while (proxyJobs.size > 0) await Promise.all([...proxyJobs.values()]);
  };
  // Registered last, so it runs first: copies finish before the registry they write to stops.
  t.teardown(proxyIdle);

  const artifactOf = (project: string, repo: string, reference: string) => state.requireArtifact(project, repo, reference);

  const waitForRequests = (pred: (reqs: SimRequest[]) => boolean, timeoutMs = 10_000): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => pred(recorded.map((r) => ({ ...r })));
      if (check()) {
        resolve();
        return;
      }
      const waiter = (): void => {
        if (!check()) return;
        clearTimeout(timer);
        waiters.delete(waiter);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        const tail = recorded.slice(-20).map((r) => `${r.method} ${r.uri} ${r.status}`).join('\n');
        reject(new Error(`harbor-sim waitForRequests: not met within ${timeoutMs} ms; last requests:\n${tail}`));
      }, timeoutMs);
      waiters.add(waiter);
    });

  return {
    url,
    host: `127.0.0.1:${port}`,
    port,
    registry: reg,
    admin,
    state,
    async stop() {
      await closeServer();
      await reg.stop();
    },
    async start() {
      await reg.start();
      if (!listening) {
        await listen(port);
        listening = true;
      }
    },
    requests: (filter = {}) =>
      recorded.filter((r) => (filter.kind === undefined || r.kind === filter.kind) && (filter.since === undefined || r.seq >= filter.since)).map((r) => ({ ...r })),
    mark: () => recorded.length,
    waitForRequests,
    errors: () => [...failures],
    proxyIdle,

    addProject: (name, o) => state.addProject(name, o),
    setMetadata: (p, k, v) => state.setMetadata(p, k, v),
    setSystemAllowlist: (items, expiresAt = null) => state.setSystemAllowlist(items, expiresAt),
    setProjectAllowlist: (p, items, expiresAt = null) => state.setProjectAllowlist(p, items, expiresAt),
    addUser: (name, password, o) => void state.addUser(name, password, o),
    addRobot: (name, secret, o) => void state.addRobot(name, secret, o),
    updateRobot: (name, change) => state.updateRobot(name, change),
    async pushImage(project, repo, tag, image) {
      const p = state.requireProject(project);
      const digest = await skopeoPush(image.layoutDir, image.tag, reg, `${project}/${repo}:${tag}`, { creds: `${admin.username}:${admin.password}` });
      const top = await registerTestImage(state, p, repo, tag, image);
      if (top.digest !== digest) throw new Error(`pushImage: registry has ${digest}, layout says ${top.digest}`);
      return digest;
    },
    setScan: (project, repo, reference, scan) => state.setScan(artifactOf(project, repo, reference), scan),
    setScannable: (project, repo, reference, scannable) => {
      artifactOf(project, repo, reference).scannableOverride = scannable;
    },
    async addAccessory(project, repo, subjectRef, type, accessoryDigest) {
      const p = state.requireProject(project);
      const subject = artifactOf(project, repo, subjectRef);
      const repository = `${p.name}/${repo}`;
      const m = accessoryDigest ? await fetchManifest(content, repository, accessoryDigest) : await pushSignature(content, repository, subject, type);
      const acc = state.registerManifest(p, repo, { digest: m.digest, size: m.size, type: 'UNKNOWN', mediaType: 'application/vnd.oci.empty.v1+json', manifestMediaType: m.mediaType, artifactType: m.artifactType });
      state.markAccessory(acc, subject, type);
      // cosign finds its signature by this tag, so the simulator serves it (pushSignature tagged it in the registry).
      if (!accessoryDigest && type === 'signature.cosign') state.tagArtifact(acc, `sha256-${subject.digest.slice('sha256:'.length)}.sig`);
      return acc.digest;
    },
    async cosignSign(project, repo, subjectRef) {
      const p = state.requireProject(project);
      const subject = artifactOf(project, repo, subjectRef);
      const m = await pushCosignTagSignature(content, `${p.name}/${repo}`, subject);
      const acc = state.registerManifest(p, repo, { digest: m.digest, size: m.size, type: 'IMAGE', mediaType: m.artifactType, manifestMediaType: m.mediaType, artifactType: m.artifactType, extraAttrs: { architecture: '', os: '', created: '0001-01-01T00:00:00Z', author: '', config: {} } });
      state.markAccessory(acc, subject, 'signature.cosign');
      state.tagArtifact(acc, `sha256-${subject.digest.slice('sha256:'.length)}.sig`);
      return acc.digest;
    },
    setLabels: (project, repo, reference, labels) => state.setLabels(artifactOf(project, repo, reference), labels),
    setImmutableRules: (project, rules) => {
      state.requireProject(project).immutableRules = rules;
    },
    setPreheatPolicies: (project, policies) => {
      state.requireProject(project).preheatPolicies = policies;
    },
    setRetention: (project, policy) => state.setRetention(project, policy),
  };
}
