/**
 * Harbor's `/v2` front (reference §2, §7, §11 C): v2auth, then for manifest GET/HEAD
 * the content-trust and vulnerability middlewares, then the request is passed to the
 * backing Distribution with a token the simulator mints for itself, and the answer is
 * streamed back untouched (Docker-Content-Digest, Etag, 304 on If-None-Match all come
 * from Distribution). Blobs and tags/list are never policy-checked.
 *
 * v2auth (H:src/server/middleware/v2auth/auth.go):
 *  - `/v2/` unauthenticated → 401 `Bearer realm=…/service/token,service="harbor-registry"`;
 *  - GET/HEAD on a repository without an Authorization header → 401 with a scoped
 *    Bearer challenge, even for public projects;
 *  - an Authorization header that does not grant the action → 401 `Basic realm="harbor"`;
 *  - the error message is "<msg>: <msg>" (Harbor wraps the error in itself).
 */
import http from 'node:http';
import { ANONYMOUS, authenticateBasic, canProject, isAuthenticated, isSysAdmin, principalName, TOKEN_SERVICE, verifyToken, type Principal, type SigningKey } from './auth.js';
import { type Exchange } from './http.js';
import { evaluatePull } from './policy.js';
import { libraryRedirect, proxyBlob, proxyManifest, type ProxyDeps } from './proxy.js';
import type { HarborState, Project } from './state.js';

export interface FrontDeps {
  state: HarborState;
  key: SigningKey;
  /** The simulator's own URL (the token realm is `<url>/service/token`). */
  url: string;
  backing: { host: string; port: number };
  internalToken(scope: { type: string; name: string }, actions: string[]): string;
  /** The proxy-cache machinery of a project that has an upstream; null for other projects. */
  proxyFor(project: Project): ProxyDeps | null;
}

const API_VERSION = { 'Docker-Distribution-Api-Version': 'registry/2.0' };

function principalFor(ex: Exchange, deps: FrontDeps): Principal {
  const auth = ex.header('authorization') ?? '';
  const bearer = /^Bearer\s+(\S+)$/i.exec(auth);
  if (bearer?.[1]) return verifyToken(deps.key, bearer[1]) ?? ANONYMOUS;
  return authenticateBasic(deps.state, auth);
}

/** Harbor's wrapped error text: UnauthorizedError(err).WithMessage(err.Error()). */
const twice = (msg: string): string => `${msg}: ${msg}`;

function bearerChallenge(deps: FrontDeps, scope?: string): string {
  return `Bearer realm="${deps.url}/service/token",service="${TOKEN_SERVICE}"${scope ? `,scope="${scope}"` : ''}`;
}

interface RepoRoute {
  name: string;
  kind: 'manifests' | 'blobs' | 'uploads' | 'tags' | 'referrers';
  reference: string;
}

function parseRepoRoute(path: string): RepoRoute | null {
  const patterns: Array<[RegExp, RepoRoute['kind']]> = [
    [/^\/v2\/(.+)\/manifests\/([^/]+)$/, 'manifests'],
    [/^\/v2\/(.+)\/blobs\/uploads\/?(.*)$/, 'uploads'],
    [/^\/v2\/(.+)\/blobs\/([^/]+)$/, 'blobs'],
    [/^\/v2\/(.+)\/tags\/(list)$/, 'tags'],
    [/^\/v2\/(.+)\/referrers\/([^/]+)$/, 'referrers'],
  ];
  for (const [re, kind] of patterns) {
    const m = re.exec(path);
    if (m?.[1]) return { name: m[1], kind, reference: m[2] ?? '' };
  }
  return null;
}

const ACTION_OF: Record<string, string> = { GET: 'pull', HEAD: 'pull', POST: 'push', PUT: 'push', PATCH: 'push', DELETE: 'delete' };
const SCOPE_ACTIONS: Record<string, string> = { pull: 'pull', push: 'pull,push', delete: 'delete' };

/** Streams the request to the backing Distribution and its answer back. */
function proxy(ex: Exchange, deps: FrontDeps, token: string, onDone?: (status: number) => void): Promise<void> {
  return new Promise((resolve) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    for (const h of ['accept', 'range', 'if-none-match', 'if-modified-since', 'user-agent']) {
      const v = ex.header(h);
      if (v !== undefined) headers[h] = v;
    }
    const up = http.request({ host: deps.backing.host, port: deps.backing.port, method: ex.req.method, path: ex.req.url, headers }, (ures) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ures.headers)) {
        if (v === undefined || ['connection', 'keep-alive', 'transfer-encoding', 'x-request-id'].includes(k)) continue;
        out[k] = v;
      }
      const status = ures.statusCode ?? 502;
      ex.writeHead(status, out);
      ures.pipe(ex.res);
      ures.once('end', () => {
        onDone?.(status);
        resolve();
      });
      ures.once('error', () => {
        ex.res.destroy();
        resolve();
      });
    });
    up.once('error', (err) => {
      if (!ex.res.headersSent) ex.error(500, 'UNKNOWN', 'internal server error');
      else ex.res.destroy(err);
      resolve();
    });
    // A client that goes away must not leave the backing request hanging.
    ex.res.once('close', () => {
      if (!ex.res.writableFinished) up.destroy();
    });
    up.end();
  });
}

export async function handleV2(ex: Exchange, deps: FrontDeps): Promise<void> {
  const { state } = deps;
  const method = ex.req.method ?? 'GET';
  const path = ex.url.pathname;
  const hasAuthHeader = (ex.header('authorization') ?? '') !== '';

  if (path === '/v2' || path === '/v2/') {
    const principal = principalFor(ex, deps);
    ex.user = principalName(principal);
    if (!isAuthenticated(principal)) {
      const challenge = hasAuthHeader ? 'Basic realm="harbor"' : bearerChallenge(deps);
      ex.error(401, 'UNAUTHORIZED', twice('unauthorized'), { ...API_VERSION, 'Www-Authenticate': challenge });
      return;
    }
    ex.json(200, {}, API_VERSION);
    return;
  }

  if (path === '/v2/_catalog') {
    const principal = principalFor(ex, deps);
    ex.user = principalName(principal);
    if (!isSysAdmin(principal)) {
      ex.error(401, 'UNAUTHORIZED', twice('unauthorized to list catalog'), { ...API_VERSION, 'Www-Authenticate': 'Basic realm="harbor"' });
      return;
    }
    await proxy(ex, deps, deps.internalToken({ type: 'registry', name: 'catalog' }, ['*']));
    return;
  }

  const route = parseRepoRoute(path);
  const action = ACTION_OF[method];
  if (!route || !action) {
    ex.error(404, 'NOT_FOUND', `path ${path} was not found`);
    return;
  }
  const scope = `repository:${route.name}:${SCOPE_ACTIONS[action] ?? action}`;
  // #11271: a CLI's first GET/HEAD carries no credentials and must be challenged, public project or not.
  if (!hasAuthHeader && (method === 'GET' || method === 'HEAD')) {
    const msg = 'authorize header needed to send HEAD to repository';
    ex.error(401, 'UNAUTHORIZED', twice(msg), { ...API_VERSION, 'Www-Authenticate': bearerChallenge(deps, scope) });
    return;
  }
  const projectName = route.name.split('/')[0] ?? '';
  const project = state.projectByName(projectName);
  const principal = principalFor(ex, deps);
  ex.user = principalName(principal);
  if (!project) {
    // The project lookup fails inside v2auth: its NotFound error becomes a 401 with an empty challenge.
    ex.error(401, 'UNAUTHORIZED', twice(`project ${projectName} not found`), { ...API_VERSION, 'Www-Authenticate': '' });
    return;
  }
  if (!canProject(principal, project, 'repository', action)) {
    const challenge = hasAuthHeader ? 'Basic realm="harbor"' : bearerChallenge(deps, scope);
    ex.error(401, 'UNAUTHORIZED', twice(`unauthorized to access repository: ${route.name}, action: ${action}`), { ...API_VERSION, 'Www-Authenticate': challenge });
    return;
  }
  if (action !== 'pull') {
    ex.error(405, 'METHOD_NOT_ALLOWED', 'the Harbor simulator takes no pushes through /v2; use HarborSim.pushImage');
    return;
  }

  const cache = deps.proxyFor(project);
  if (cache) {
    const rest = path.slice(`/v2/${route.name}/`.length);
    if (libraryRedirect(ex, project, cache.upstream.cfg, route.name, rest)) return;
    if (route.kind === 'manifests' && (await proxyManifest(ex, cache, project, route.name, route.reference)) === 'answered') return;
    if (route.kind === 'blobs' && (await proxyBlob(ex, cache, project, route.name, route.reference)) === 'answered') return;
  }

  const pullToken = deps.internalToken({ type: 'repository', name: route.name }, ['pull']);
  if (route.kind !== 'manifests') {
    await proxy(ex, deps, pullToken);
    return;
  }

  const art = state.resolve(route.name, route.reference);
  if (!art) {
    const repoKnown = state.repositories.has(route.name);
    const sep = route.reference.includes(':') ? '@' : ':';
    ex.error(404, 'NOT_FOUND', repoKnown ? `artifact ${route.name}${sep}${route.reference} not found` : `repository ${route.name} not found`);
    return;
  }
  const ua = ex.header('user-agent') ?? '';
  const callerBypass =
    principal.kind === 'token' &&
    (canProject(principal, project, 'repository', 'scanner-pull') ||
      (canProject(principal, project, 'repository', 'push') && (ua.includes('cosign') || ua.includes('notation'))));
  const verdict = evaluatePull(state, project, art, { callerBypass, now: Date.now() });
  if (!verdict.allow) {
    ex.error(412, 'PROJECTPOLICYVIOLATION', verdict.message);
    return;
  }
  await proxy(ex, deps, pullToken, (status) => {
    if (method === 'GET' && status === 200) {
      art.pullTime = new Date();
      const repo = state.repositories.get(route.name);
      if (repo) repo.pullCount++;
    }
  });
}
