/**
 * The management API under `/api/v2.0` (reference §0, §1, §4, §11 B): ping, health,
 * systeminfo, projects (visibility, with_detail, public=, q, pagination), project by
 * name or id, metadatas, summary, the system allowlist, immutable rules, preheat
 * policies, retentions, and a PUT for projects so tests can change policy over HTTP.
 * Repository and artifact routes live in api-artifacts.ts.
 *
 * Permission checks run before existence checks (RequireProjectAccess): a project
 * named by a name that does not exist is a 401 for anonymous and a 403 for anyone
 * else; by an id, callers with rights over every project get the 404.
 */
import { routeArtifacts } from './api-artifacts.js';
import { authenticateBasic, canProject, isAuthenticated, isSysAdmin, principalName, type Principal } from './auth.js';
import { HarborError, readBody, type Exchange } from './http.js';
import { parseSeverityVersion3 } from './policy.js';
import { listHeaders, matches, pageOf, parsePage, parseQ, sortItems } from './query.js';
import { projectJson, systemAllowlistJson } from './render.js';
import { isTrue, type HarborState, type Project, type Role } from './state.js';

export interface ApiContext {
  state: HarborState;
  principal: Principal;
  url: string;
  version: string;
}

const ROLE_IDS: Record<Role, number> = { projectAdmin: 1, developer: 2, guest: 3, maintainer: 4 };

/** go-swagger's boolean query parsing; a bad value is a 422 like any validation failure. */
export function boolParam(params: URLSearchParams, name: string, dflt: boolean | undefined): boolean | undefined {
  const raw = params.get(name);
  if (raw === null) return dflt;
  const v = raw.toLowerCase();
  if (['true', '1', 't', 'yes', 'y', 'on', 'ok', 'enabled', 'selected', 'checked'].includes(v)) return true;
  if (['false', '0', 'f', 'no', 'n', 'off', 'disabled', ''].includes(v)) return false;
  throw new HarborError('UNPROCESSABLE_ENTITY', `validation failure list:\n${name} in query must be of type boolean: "${raw}"`);
}

export interface ProjectRef {
  byId: boolean;
  id: number;
  name: string;
}

/** `{project_name_or_id}`: an integer is an id unless `X-Is-Resource-Name: true`. */
export function projectRefOf(ex: Exchange, value: string, nameOnly = false): ProjectRef {
  const asName = nameOnly || ex.header('x-is-resource-name')?.toLowerCase() === 'true';
  if (!asName && /^-?\d+$/.test(value)) return { byId: true, id: Number(value), name: value };
  return { byId: false, id: 0, name: value };
}

/** RequireProjectAccess, then the existence check. */
export function requireProject(ctx: ApiContext, ref: ProjectRef, resource: string, action: string): Project {
  const project = ref.byId ? ctx.state.projectById(ref.id) : ctx.state.projectByName(ref.name);
  // HasProjectPermission looks a name up first and says "no" when it is not there.
  const permitted = !ref.byId && !project ? false : canProject(ctx.principal, project, resource, action);
  if (!permitted) {
    if (!isAuthenticated(ctx.principal)) throw new HarborError('UNAUTHORIZED', 'unauthorized');
    throw new HarborError('FORBIDDEN', 'forbidden');
  }
  if (!project) throw new HarborError('NOT_FOUND', `project ${ref.name} not found`);
  return project;
}

function requireAuthenticated(ctx: ApiContext): void {
  if (!isAuthenticated(ctx.principal)) throw new HarborError('UNAUTHORIZED', 'unauthorized');
}

function requireSysAdmin(ctx: ApiContext): void {
  requireAuthenticated(ctx);
  if (!isSysAdmin(ctx.principal)) throw new HarborError('FORBIDDEN', principalName(ctx.principal) ?? 'forbidden');
}

function roleIds(ctx: ApiContext, p: Project): number[] | null {
  if (ctx.principal.kind !== 'user') return null;
  const role = ctx.principal.roles.get(p.name);
  return role ? [ROLE_IDS[role]] : null;
}

function visibleProjects(ctx: ApiContext, publicFilter: boolean | undefined): Project[] {
  const all = [...ctx.state.projects.values()];
  const isPublic = (p: Project): boolean => isTrue(p.metadata.public);
  const byPublic = (p: Project): boolean => publicFilter === undefined || isPublic(p) === publicFilter;
  const pr = ctx.principal;
  switch (pr.kind) {
    case 'anonymous':
    case 'token':
      return publicFilter === false ? [] : all.filter(isPublic);
    case 'user':
      if (pr.admin) return all.filter(byPublic);
      return all.filter((p) => byPublic(p) && (pr.roles.has(p.name) || (publicFilter !== false && isPublic(p))));
    case 'robot': {
      // A robot with a namespace:"*" permission sees everything, like an admin (project.go ListProjects).
      if (pr.permissions.some((x) => x.kind === 'project' && x.namespace === '*')) return all.filter(byPublic);
      const names = new Set(pr.permissions.map((x) => x.namespace));
      return all.filter((p) => byPublic(p) && (names.has(p.name) || (publicFilter !== false && isPublic(p))));
    }
  }
}

function listProjects(ex: Exchange, ctx: ApiContext): void {
  const params = ex.url.searchParams;
  const page = parsePage(params);
  const q = parseQ(params.get('q'));
  const publicFilter = boolParam(params, 'public', undefined);
  const detail = boolParam(params, 'with_detail', true) ?? true;
  const nameParam = params.get('name');
  const owner = params.get('owner');
  const fields: Record<string, (p: Project) => string | number> = {
    name: (p) => p.name,
    project_id: (p) => p.id,
    registry_id: (p) => p.registryId,
    owner_id: (p) => p.ownerId,
    public: (p) => String(isTrue(p.metadata.public)),
  };
  let items = visibleProjects(ctx, publicFilter).filter(
    (p) =>
      (!nameParam || p.name.includes(nameParam)) &&
      (!owner || p.ownerName === owner) &&
      [...q].every(([k, cond]) => {
        const get = fields[k];
        return get === undefined || matches(get(p), cond);
      }),
  );
  const total = items.length;
  if (total === 0) {
    ex.json(200, [], { 'X-Total-Count': '0' });
    return;
  }
  items = pageOf(sortItems(items, params.get('sort'), { name: (p) => p.name, project_id: (p) => p.id, creation_time: (p) => p.creationTime.getTime(), update_time: (p) => p.updateTime.getTime() }, 'name'), page);
  ex.json(
    200,
    items.map((p) => projectJson(ctx.state, p, { detail, roleIds: roleIds(ctx, p) })),
    listHeaders(ex.rawPath, params, total, page),
  );
}

async function updateProject(ex: Exchange, ctx: ApiContext, ref: ProjectRef): Promise<void> {
  const p = requireProject(ctx, ref, 'project', 'update');
  let body: { metadata?: Record<string, unknown>; cve_allowlist?: { items?: Array<{ cve_id?: unknown }>; expires_at?: unknown } };
  try {
    body = JSON.parse((await readBody(ex.req)).toString('utf8')) as typeof body;
  } catch {
    throw new HarborError('BAD_REQUEST', 'bad request: invalid JSON body');
  }
  for (const [key, raw] of Object.entries(body.metadata ?? {})) {
    if (raw === null || raw === undefined) continue;
    let value = String(raw);
    // The metadata handlers normalise booleans and the severity (project_metadata.go).
    if (key === 'severity') value = parseSeverityVersion3(value).toLowerCase();
    else if (['public', 'enable_content_trust', 'enable_content_trust_cosign', 'prevent_vul', 'auto_scan', 'auto_sbom_generation', 'reuse_sys_cve_allowlist'].includes(key)) {
      const b = boolParam(new URLSearchParams({ [key]: value }), key, undefined);
      value = String(b);
    }
    p.metadata[key] = value;
  }
  if (body.cve_allowlist) {
    const items = (body.cve_allowlist.items ?? []).map((i) => String(i.cve_id ?? '')).filter((s) => s.length > 0);
    const exp = body.cve_allowlist.expires_at;
    ctx.state.setProjectAllowlist(p.name, items, typeof exp === 'number' ? exp : null);
  }
  ex.empty(200);
}

async function putSystemAllowlist(ex: Exchange, ctx: ApiContext): Promise<void> {
  requireSysAdmin(ctx);
  let body: { items?: Array<{ cve_id?: unknown }>; expires_at?: unknown };
  try {
    body = JSON.parse((await readBody(ex.req)).toString('utf8')) as typeof body;
  } catch {
    throw new HarborError('BAD_REQUEST', 'bad request: invalid JSON body');
  }
  const items = (body.items ?? []).map((i) => String(i.cve_id ?? '')).filter((s) => s.length > 0);
  ctx.state.setSystemAllowlist(items, typeof body.expires_at === 'number' ? body.expires_at : null);
  ex.empty(200);
}

function systemInfo(ex: Exchange, ctx: ApiContext): void {
  const anonymous = { auth_mode: 'db_auth', primary_auth_mode: false, self_registration: false, banner_message: '' };
  if (!isAuthenticated(ctx.principal)) {
    ex.json(200, anonymous);
    return;
  }
  const host = new URL(ctx.url).host;
  ex.json(200, {
    ...anonymous,
    harbor_version: ctx.version,
    external_url: ctx.url,
    registry_url: host,
    has_ca_root: false,
    project_creation_restriction: 'adminonly',
    read_only: false,
    registry_storage_provider_name: 'filesystem',
    notification_enable: true,
    current_time: new Date().toISOString(),
  });
}

function health(ex: Exchange): void {
  const components = ['core', 'database', 'jobservice', 'portal', 'redis', 'registry', 'registryctl', 'trivy'].map((name) => ({ name, status: 'healthy' }));
  ex.json(200, { status: 'healthy', components });
}

function paged(ex: Exchange, items: unknown[]): void {
  const params = ex.url.searchParams;
  const page = parsePage(params);
  ex.json(200, pageOf(items, page), listHeaders(ex.rawPath, params, items.length, page));
}

/**
 * Splits the path into segments the way Harbor's router sees them: a single-encoded
 * slash (%2F) separates segments (so a repository name must be encoded twice), and
 * each segment is then decoded once.
 */
export function apiSegments(rawPath: string): string[] | null {
  try {
    return rawPath
      .replace(/%2f/gi, '/')
      .split('/')
      .map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
}

export async function handleApi(ex: Exchange, state: HarborState, url: string, version: string): Promise<void> {
  const principal = authenticateBasic(state, ex.header('authorization'));
  ex.user = principalName(principal);
  const ctx: ApiContext = { state, principal, url, version };
  const all = apiSegments(ex.rawPath);
  if (!all) throw new HarborError('BAD_REQUEST', 'bad request: invalid path encoding');
  const seg = all.slice(3); // '', 'api', 'v2.0'
  const method = ex.req.method ?? 'GET';
  const get = method === 'GET' || method === 'HEAD';
  const route = seg.join('/');

  if (route === 'ping' && get) {
    ex.text(200, 'Pong');
    return;
  }
  if (route === 'health' && get) return health(ex);
  if (route === 'systeminfo' && get) return systemInfo(ex, ctx);
  if (route === 'system/CVEAllowlist') {
    if (method === 'PUT') return putSystemAllowlist(ex, ctx);
    if (!get) throw new HarborError('METHOD_NOT_ALLOWED', 'method not allowed');
    requireAuthenticated(ctx);
    ex.json(200, systemAllowlistJson(state.systemAllowlist));
    return;
  }
  if (route === 'projects' && method === 'HEAD' && ex.url.searchParams.has('project_name')) {
    const name = ex.url.searchParams.get('project_name') ?? '';
    requireProject(ctx, { byId: false, id: 0, name }, 'project', 'read');
    ex.empty(200);
    return;
  }
  if (route === 'projects' && get) return listProjects(ex, ctx);
  if (seg[0] === 'retentions' && seg.length === 2 && get) {
    const policy = state.retentions.get(Number(seg[1])) as { scope?: { ref?: number } } | undefined;
    const project = policy?.scope?.ref !== undefined ? state.projectById(policy.scope.ref) : undefined;
    if (!project || !canProject(principal, project, 'tag-retention', 'read')) {
      if (!isAuthenticated(principal)) throw new HarborError('UNAUTHORIZED', 'unauthorized');
      if (!isSysAdmin(principal)) throw new HarborError('FORBIDDEN', 'forbidden');
      throw new HarborError('NOT_FOUND', `retention policy ${seg[1] ?? ''} not found`);
    }
    ex.json(200, policy);
    return;
  }
  if (seg[0] === 'projects' && seg.length >= 2) {
    const nameOrId = seg[1] ?? '';
    const rest = seg.slice(2);
    if (rest.length === 0) {
      const ref = projectRefOf(ex, nameOrId);
      if (method === 'PUT') return updateProject(ex, ctx, ref);
      if (!get) throw new HarborError('METHOD_NOT_ALLOWED', 'method not allowed');
      const p = requireProject(ctx, ref, 'project', 'read');
      ex.json(200, projectJson(state, p, { detail: true, roleIds: roleIds(ctx, p) }));
      return;
    }
    if (!get) throw new HarborError('METHOD_NOT_ALLOWED', 'method not allowed');
    if (rest[0] === 'metadatas' && (rest.length === 1 || (rest.length === 2 && rest[1] === ''))) {
      const p = requireProject(ctx, projectRefOf(ex, nameOrId), 'metadata', 'list');
      ex.json(200, p.metadata);
      return;
    }
    if (rest[0] === 'metadatas' && rest.length === 2) {
      const p = requireProject(ctx, projectRefOf(ex, nameOrId), 'metadata', 'read');
      const key = rest[1] ?? '';
      const value = p.metadata[key];
      if (value === undefined) throw new HarborError('NOT_FOUND', `metadata ${key} not found`);
      ex.json(200, { [key]: value });
      return;
    }
    if (rest.length === 1 && rest[0] === 'summary') {
      const p = requireProject(ctx, projectRefOf(ex, nameOrId), 'project', 'read');
      const summary: Record<string, unknown> = { repo_count: state.repositoriesOf(p).length };
      if (canProject(principal, p, 'quota', 'read')) summary.quota = { hard: { storage: -1 }, used: { storage: 0 } };
      if (p.registryId > 0) {
        // The upstream endpoint with its credential removed (getProjectRegistrySummary).
        const type = p.upstream?.type ?? 'docker-hub';
        summary.registry = {
          id: p.registryId, name: `${type}-${p.registryId}`, type, url: p.upstream?.url ?? 'https://hub.docker.com', insecure: false,
          status: 'healthy', description: '', creation_time: new Date(0).toISOString(), update_time: new Date(0).toISOString(),
        };
      }
      ex.json(200, summary);
      return;
    }
    if (rest.length === 1 && rest[0] === 'immutabletagrules') {
      const p = requireProject(ctx, projectRefOf(ex, nameOrId), 'immutable-tag', 'list');
      return paged(ex, p.immutableRules);
    }
    if (rest.length === 2 && rest[0] === 'preheat' && rest[1] === 'policies') {
      const p = requireProject(ctx, projectRefOf(ex, nameOrId, true), 'preheat-policy', 'list');
      return paged(ex, p.preheatPolicies);
    }
    if (rest[0] === 'repositories') return routeArtifacts(ex, ctx, projectRefOf(ex, nameOrId, true), rest.slice(1));
  }
  if (!get) throw new HarborError('METHOD_NOT_ALLOWED', `the Harbor simulator does not implement ${method} ${ex.url.pathname}`);
  throw new HarborError('NOT_FOUND', `path ${ex.url.pathname} was not found`);
}
