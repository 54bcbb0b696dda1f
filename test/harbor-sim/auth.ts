/**
 * Who a request runs as, and what it may do (reference §0, §6, §7).
 *
 * Harbor tries Basic credentials as a robot (`robot$…`) or a user; anything that fails
 * (unknown name, wrong secret, disabled or expired robot) is NOT a 401 by itself: the
 * request continues as anonymous and the permission check then answers 401 or 403.
 * On `/v2` a Bearer token from `/service/token` is a third kind of caller, whose
 * rights are the token's access map keyed by project name.
 *
 * Tokens are RS256 JWTs carrying the harness certificate in `x5c`, so the backing
 * Distribution (configured with that certificate) accepts the very same tokens.
 */
import { createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { type Exchange } from './http.js';
import { isTrue, type HarborState, type Project, type Role, type RobotPermission } from './state.js';

export const TOKEN_SERVICE = 'harbor-registry';
export const TOKEN_ISSUER = 'harbor-token-issuer';

export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'user'; name: string; admin: boolean; roles: Map<string, Role> }
  | { kind: 'robot'; name: string; permissions: RobotPermission[] }
  | { kind: 'token'; name: string; access: Map<string, Set<string>>; issuedAt: number };

export const ANONYMOUS: Principal = { kind: 'anonymous' };

export const principalName = (p: Principal): string | null => (p.kind === 'anonymous' ? null : p.name);

export function isAuthenticated(p: Principal): boolean {
  return p.kind !== 'anonymous' && p.name !== '';
}

export function isSysAdmin(p: Principal): boolean {
  return p.kind === 'user' && p.admin;
}

export function parseBasic(header: string | undefined): { user: string; pass: string } | null {
  if (!header) return null;
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m?.[1]) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return null;
  return { user: decoded.slice(0, i), pass: decoded.slice(i + 1) };
}

/** Basic credentials → principal; every failure falls back to anonymous, as in Harbor. */
export function authenticateBasic(state: HarborState, header: string | undefined, nowMs = Date.now()): Principal {
  const basic = parseBasic(header);
  if (!basic) return ANONYMOUS;
  if (basic.user.startsWith('robot$')) {
    const robot = state.robots.get(basic.user);
    if (!robot || robot.secret !== basic.pass || robot.disabled) return ANONYMOUS;
    if (robot.expiresAt !== -1 && robot.expiresAt <= Math.floor(nowMs / 1000)) return ANONYMOUS;
    return { kind: 'robot', name: robot.name, permissions: robot.permissions };
  }
  const user = state.users.get(basic.user);
  if (!user || user.password !== basic.pass) return ANONYMOUS;
  return { kind: 'user', name: user.name, admin: user.admin, roles: user.roles };
}

/** What anyone, anonymous included, may do in a public project (H:src/common/rbac/project/util.go). */
const PUBLIC_PROJECT: ReadonlyArray<readonly [string, string]> = [
  ['project', 'read'],
  ['label', 'read'],
  ['label', 'list'],
  ['repository', 'list'],
  ['repository', 'pull'],
  ['scan', 'read'],
  ['scanner', 'read'],
  ['tag', 'list'],
  ['artifact', 'read'],
  ['artifact', 'list'],
  ['artifact-addition', 'read'],
  ['accessory', 'list'],
  ['artifact-label', 'list'],
];

const READ_ACTIONS = new Set(['read', 'list', 'pull']);

function roleAllows(role: Role, resource: string, action: string): boolean {
  switch (role) {
    case 'projectAdmin':
      return true;
    case 'maintainer':
      return resource !== 'project' || READ_ACTIONS.has(action);
    case 'developer':
      return READ_ACTIONS.has(action) || action === 'push' || action === 'create';
    case 'guest':
      return READ_ACTIONS.has(action);
  }
}

function robotAllows(perms: RobotPermission[], projectName: string | null, resource: string, action: string): boolean {
  const held = (r: string, a: string): boolean =>
    perms.some(
      (p) =>
        p.kind === 'project' &&
        (p.namespace === '*' || (projectName !== null && p.namespace === projectName)) &&
        p.access.some((x) => x.resource === r && x.action === a && x.effect !== 'deny'),
    );
  // push implies pull on repositories (rbac_util.go).
  return held(resource, action) || (resource === 'repository' && action === 'pull' && held('repository', 'push'));
}

/**
 * Can `p` do `action` on `resource` of a project? `project` is undefined when the
 * caller named a project by id that does not exist: only callers with rights over
 * every project (admins, `namespace:"*"` robots) get past that, to a 404.
 */
export function canProject(p: Principal, project: Project | undefined, resource: string, action: string): boolean {
  if (project && isTrue(project.metadata.public) && PUBLIC_PROJECT.some(([r, a]) => r === resource && a === action)) return true;
  switch (p.kind) {
    case 'anonymous':
      return false;
    case 'user': {
      // Only robots made for scanners hold scanner-pull (it bypasses the policies); not even an admin does.
      if (action === 'scanner-pull') return false;
      if (p.admin) return true;
      const role = project ? p.roles.get(project.name) : undefined;
      return role !== undefined && roleAllows(role, resource, action);
    }
    case 'robot':
      return robotAllows(p.permissions, project?.name ?? null, resource, action);
    case 'token':
      if (!project || resource !== 'repository') return false;
      // Harbor refuses tokens minted before the project (re)appeared under this name.
      if (p.issuedAt < Math.floor(project.creationTime.getTime() / 1000)) return false;
      return p.access.get(project.name)?.has(action) ?? false;
  }
}

/** Every registry action the caller holds on a project: Harbor grants these whatever was asked for. */
export function registryActions(p: Principal, project: Project | undefined): string[] {
  if (!project) return [];
  return ['pull', 'push', 'delete', 'scanner-pull'].filter((a) => canProject(p, project, 'repository', a));
}

export interface SigningKey {
  key: KeyObject;
  x5c: string;
  certPem: string;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

export function signToken(k: SigningKey, sub: string, access: AccessEntry[], expiresIn: number, nowMs = Date.now()): string {
  const now = Math.floor(nowMs / 1000);
  const header = { typ: 'JWT', alg: 'RS256', x5c: [k.x5c] };
  const claims = {
    iss: TOKEN_ISSUER,
    sub,
    aud: TOKEN_SERVICE,
    exp: now + expiresIn,
    nbf: now - 1,
    iat: now,
    jti: randomBytes(12).toString('base64url').slice(0, 16),
    access,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('sha256', Buffer.from(input), k.key))}`;
}

interface Claims {
  sub?: unknown;
  aud?: unknown;
  exp?: unknown;
  nbf?: unknown;
  iat?: unknown;
  access?: unknown;
}

/** A Bearer token this simulator issued and that is still valid, as a principal; null otherwise. */
export function verifyToken(k: SigningKey, token: string, nowMs = Date.now()): Principal | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [h, c, s] = parts as [string, string, string];
  const pub = createPublicKey(k.certPem);
  if (!verify('sha256', Buffer.from(`${h}.${c}`), pub, Buffer.from(s, 'base64url'))) return null;
  let claims: Claims;
  try {
    claims = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as Claims;
  } catch {
    return null;
  }
  const now = Math.floor(nowMs / 1000);
  if (claims.aud !== TOKEN_SERVICE || typeof claims.exp !== 'number' || claims.exp <= now) return null;
  if (typeof claims.nbf === 'number' && claims.nbf > now + 1) return null;
  const access = new Map<string, Set<string>>();
  if (Array.isArray(claims.access)) {
    for (const e of claims.access as Array<Partial<AccessEntry>>) {
      if (e.type !== 'repository' || typeof e.name !== 'string' || !Array.isArray(e.actions)) continue;
      // Keyed by project: repository:p/a:pull also covers p/b, as in Harbor's v2token context.
      const projectName = e.name.split('/')[0] ?? '';
      const set = access.get(projectName) ?? new Set<string>();
      for (const a of e.actions) {
        if (a === '*') ['pull', 'push', 'delete'].forEach((x) => set.add(x));
        else if (typeof a === 'string') set.add(a);
      }
      access.set(projectName, set);
    }
  }
  return {
    kind: 'token',
    name: typeof claims.sub === 'string' ? claims.sub : '',
    access,
    issuedAt: typeof claims.iat === 'number' ? claims.iat : 0,
  };
}

function parseScope(scope: string): { type: string; name: string } | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last) };
}

/**
 * `GET /service/token` (H:src/core/service/token): service must be harbor-registry
 * (400 otherwise, plain text); unauthenticated without a scope → 401 with an empty
 * body; the actions granted are everything the caller holds, not the intersection
 * with what was asked; `POST` → 405 so containerd falls back to GET.
 */
export function handleTokenService(ex: Exchange, state: HarborState, key: SigningKey, expiresIn: number): void {
  if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') {
    ex.empty(405, { Allow: 'GET' });
    return;
  }
  const service = ex.url.searchParams.get('service') ?? '';
  if (service !== TOKEN_SERVICE) {
    ex.text(400, `Unable to handle service: ${service}\n`);
    return;
  }
  const principal = authenticateBasic(state, ex.header('authorization'));
  ex.user = principalName(principal);
  const scopes = ex.url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
  if (!isAuthenticated(principal) && scopes.length === 0) {
    ex.empty(401);
    return;
  }
  const access: AccessEntry[] = [];
  for (const s of scopes) {
    const parsed = parseScope(s);
    if (!parsed) continue;
    if (parsed.type === 'registry' && parsed.name === 'catalog') {
      access.push({ type: 'registry', name: 'catalog', actions: isSysAdmin(principal) ? ['*'] : [] });
    } else if (parsed.type === 'repository') {
      const project = state.projectByName(parsed.name.split('/')[0] ?? '');
      access.push({ type: 'repository', name: parsed.name, actions: registryActions(principal, project) });
    }
  }
  const now = Date.now();
  ex.json(200, {
    token: signToken(key, principalName(principal) ?? '', access, expiresIn, now),
    access_token: '',
    expires_in: expiresIn,
    issued_at: new Date(now).toISOString().replace(/\.\d{3}Z$/, 'Z'),
  });
}
