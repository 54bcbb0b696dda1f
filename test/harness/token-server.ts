/**
 * A small Docker-style token server (the flow docker.io and Harbor use):
 * the registry answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`,
 * the client fetches a JWT from the realm and retries with it.
 *
 * The JWT is RS256, signed with a key whose self-signed certificate travels in
 * the header's `x5c`; Distribution's `auth.token.rootcertbundle` holds the same
 * certificate, so the chain check succeeds (Distribution 2.8 accepts `x5c` or `kid`).
 *
 * Endpoints:
 *  - `GET /token?service=S&scope=repository:NAME:pull,push` (scope may repeat, or hold
 *    several space-separated scopes), optional Basic auth.
 *  - `POST /token` (OAuth2 form: grant_type=password|refresh_token, username, password,
 *    refresh_token, service, scope), which containerd uses when it has credentials.
 * A known user gets what it asked for out of pull+push; anonymous gets at most `pull`
 * (only when `anonymousPull`); a wrong password or unknown user is 401. Scopes that
 * are not `repository:` scopes are ignored (granted nothing).
 */
import { createPrivateKey, randomBytes, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { cleanup, makeTempDir, runOk, type Teardown } from './procs.js';

export interface TokenRequest {
  /** All requested scopes, space-joined; null when none was asked for. */
  scope: string | null;
  /** The Basic-auth (or OAuth form) user name, null for anonymous. */
  user: string | null;
  /** Date.now() when the request arrived. */
  at: number;
  /** HTTP status the token server answered. */
  status: number;
  method: string;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenServerOptions {
  /** user -> password */
  users?: Record<string, string>;
  /** Anonymous clients get `pull` (default true). */
  anonymousPull?: boolean;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
  /** `service` / `aud` value (default 'berth-test-registry'). */
  service?: string;
  /** `iss` value (default 'berth-test-token-issuer'). */
  issuer?: string;
  /**
   * Optional override of the grant: gets the authenticated user (null = anonymous),
   * the repository name and the requested actions; returns the granted actions.
   */
  grant?: (user: string | null, repository: string, requested: string[]) => string[];
}

export interface TokenServer {
  url: string;
  realm: string;
  service: string;
  issuer: string;
  certFile: string;
  keyFile: string;
  requests: TokenRequest[];
  /** Signs a token directly (no HTTP), e.g. to call the registry from a test. */
  issue(user: string | null, access: AccessEntry[], expiresIn?: number): string;
  close(): Promise<void>;
}

interface SigningMaterial {
  key: KeyObject;
  keyPem: string;
  certPem: string;
  x5c: string;
}

let material: Promise<SigningMaterial> | null = null;

/**
 * One RSA key + self-signed cert per test process, made with openssl in a
 * scratch dir that is removed at once (kept in memory; each token server
 * writes its own copy of the files into its own temp dir).
 */
export function signingMaterial(): Promise<SigningMaterial> {
  material ??= (async () => {
    const dir = await makeTempDir('berth-token-key');
    try {
      const keyFile = path.join(dir, 'token.key');
      const certFile = path.join(dir, 'token.crt');
      await runOk('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
        '-subj', '/CN=berth-test-token', '-days', '2',
        '-keyout', keyFile, '-out', certFile,
      ]);
      const keyPem = await readFile(keyFile, 'utf8');
      const certPem = await readFile(certFile, 'utf8');
      const x5c = new X509Certificate(certPem).raw.toString('base64');
      return { key: createPrivateKey(keyPem), keyPem, certPem, x5c };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  })();
  return material;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

function parseScope(scope: string): { type: string; name: string; actions: string[] } | null {
  // repository:NAME:ACTIONS — the name never contains ':' (host:port is not part of it),
  // but be lenient and split on the first and the last colon.
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a.length > 0),
  };
}

function parseBasic(header: string | undefined): { user: string; pass: string } | null | 'malformed' {
  if (!header) return null;
  const m = /^Basic\s+(\S+)$/i.exec(header);
  if (!m?.[1]) return 'malformed';
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return 'malformed';
  return { user: decoded.slice(0, i), pass: decoded.slice(i + 1) };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (b: Buffer) => parts.push(b));
    req.once('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.once('error', reject);
  });
}

export async function startTokenServer(t: Teardown, opts: TokenServerOptions = {}): Promise<TokenServer> {
  const mat = await signingMaterial();
  const dir = await makeTempDir('berth-token');
  t.teardown(() => cleanup(dir));
  const certFile = path.join(dir, 'token.crt');
  const keyFile = path.join(dir, 'token.key');
  await writeFile(certFile, mat.certPem);
  await writeFile(keyFile, mat.keyPem, { mode: 0o600 });
  const users = opts.users ?? {};
  const anonymousPull = opts.anonymousPull ?? true;
  const expiresDefault = opts.expiresIn ?? 300;
  const service = opts.service ?? 'berth-test-registry';
  const issuer = opts.issuer ?? 'berth-test-token-issuer';
  const requests: TokenRequest[] = [];
  const refreshTokens = new Map<string, string>();

  const issue = (user: string | null, access: AccessEntry[], expiresIn = expiresDefault): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [mat.x5c] };
    const claims = {
      iss: issuer,
      sub: user ?? '',
      aud: service,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), mat.key);
    return `${input}.${b64url(sig)}`;
  };

  const grantFor = (user: string | null, scopes: string[]): AccessEntry[] => {
    const access: AccessEntry[] = [];
    for (const s of scopes) {
      const p = parseScope(s);
      if (!p || p.type !== 'repository') continue;
      let actions: string[];
      if (opts.grant) actions = opts.grant(user, p.name, p.actions);
      else {
        const allowed = user !== null ? ['pull', 'push'] : anonymousPull ? ['pull'] : [];
        actions = p.actions.filter((a) => allowed.includes(a));
      }
      access.push({ type: 'repository', name: p.name, actions: [...new Set(actions)] });
    }
    return access;
  };

  const answer = (res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
    res.end(text);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const at = Date.now();
    const u = new URL(req.url ?? '/', 'http://x');
    const record = (scopes: string[], user: string | null, status: number): void => {
      requests.push({ scope: scopes.length ? scopes.join(' ') : null, user, at, status, method: req.method ?? '' });
    };
    if (u.pathname !== '/token') {
      answer(res, 404, { errors: [{ code: 'NOT_FOUND', message: 'not found' }] });
      return;
    }
    let user: string | null = null;
    let scopes: string[];
    if (req.method === 'GET') {
      scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
      const basic = parseBasic(req.headers.authorization);
      if (basic === 'malformed' || (basic && users[basic.user] !== basic.pass)) {
        record(scopes, basic === 'malformed' ? null : basic.user, 401);
        answer(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
          'www-authenticate': 'Basic realm="berth-test-token"',
        });
        return;
      }
      if (basic) user = basic.user;
      const token = issue(user, grantFor(user, scopes));
      record(scopes, user, 200);
      answer(res, 200, {
        token,
        access_token: token,
        expires_in: expiresDefault,
        issued_at: new Date(at).toISOString(),
      });
      return;
    }
    if (req.method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
      const grantType = form.get('grant_type');
      if (grantType === 'password') {
        const name = form.get('username') ?? '';
        if (users[name] === undefined || users[name] !== form.get('password')) {
          record(scopes, name || null, 401);
          answer(res, 401, { error: 'invalid_grant', error_description: 'bad credentials' });
          return;
        }
        user = name;
      } else if (grantType === 'refresh_token') {
        const known = refreshTokens.get(form.get('refresh_token') ?? '');
        if (known === undefined) {
          record(scopes, null, 401);
          answer(res, 401, { error: 'invalid_grant', error_description: 'unknown refresh token' });
          return;
        }
        user = known;
      } else {
        record(scopes, null, 400);
        answer(res, 400, { error: 'unsupported_grant_type' });
        return;
      }
      const token = issue(user, grantFor(user, scopes));
      const response: Record<string, unknown> = {
        access_token: token,
        expires_in: expiresDefault,
        issued_at: new Date(at).toISOString(),
        scope: scopes.join(' '),
      };
      if (form.get('access_type') === 'offline') {
        const rt = randomBytes(16).toString('hex');
        refreshTokens.set(rt, user);
        response.refresh_token = rt;
      }
      record(scopes, user, 200);
      answer(res, 200, response);
      return;
    }
    answer(res, 405, { errors: [{ code: 'UNSUPPORTED', message: 'method not allowed' }] });
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) answer(res, 500, { error: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closed;
  };
  t.teardown(close);

  return {
    url,
    realm: `${url}/token`,
    service,
    issuer,
    certFile,
    keyFile,
    requests,
    issue,
    close,
  };
}

