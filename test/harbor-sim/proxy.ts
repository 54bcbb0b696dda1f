/**
 * Proxy-cache projects (reference §2c, §8, §11 C.7): a project with an upstream
 * registry serves `<project>/<remote repo>` from that upstream, caches what it served
 * in the background, and only applies its policies to what it already holds:
 *
 *  - docker-hub upstreams: a repository without a slash is 301-redirected to `library/…`;
 *  - manifest by a digest held locally → local (policies apply);
 *  - otherwise HEAD upstream: unreachable → local (policies apply) or 404; 404 → 404;
 *    same digest as the local copy → local (policies apply); else the upstream manifest
 *    is streamed as is, with NO policy check, and copied into the backing registry
 *    (skopeo) and recorded as artifacts afterwards — asynchronously, as Harbor does;
 *  - blobs: local when the backing registry has them, else streamed from upstream.
 */
import { Readable } from 'node:stream';
import { run } from '../harness/procs.js';
import { type Exchange } from './http.js';
import { registerFromRegistry, type Backing } from './content.js';
import type { HarborState, Project, UpstreamConfig } from './state.js';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** A minimal registry client for the upstream: Bearer challenge → token → retry, tokens cached per scope. */
export class UpstreamClient {
  private readonly tokens = new Map<string, string>();
  constructor(readonly cfg: UpstreamConfig) {}

  private async tokenFor(challenge: string, scope: string): Promise<string | null> {
    const realm = /realm="([^"]+)"/.exec(challenge)?.[1];
    const service = /service="([^"]+)"/.exec(challenge)?.[1];
    if (!realm) return null;
    const u = new URL(realm);
    if (service) u.searchParams.set('service', service);
    u.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (this.cfg.username !== undefined) headers.authorization = `Basic ${Buffer.from(`${this.cfg.username}:${this.cfg.password ?? ''}`).toString('base64')}`;
    const res = await fetch(u, { headers, signal: AbortSignal.timeout(5000) });
    if (!res.ok) return null;
    const body = (await res.json()) as { token?: string; access_token?: string };
    return body.token ?? body.access_token ?? null;
  }

  async request(method: string, repo: string, tail: string, extra: Record<string, string> = {}): Promise<Response> {
    const scope = `repository:${repo}:pull`;
    const url = `${this.cfg.url}/v2/${repo}/${tail}`;
    const send = (tok: string | undefined): Promise<Response> =>
      fetch(url, { method, headers: { ...extra, ...(tok ? { authorization: `Bearer ${tok}` } : {}) }, redirect: 'follow', signal: AbortSignal.timeout(10_000) });
    let res = await send(this.tokens.get(scope));
    const challenge = res.headers.get('www-authenticate') ?? '';
    if (res.status === 401 && /^Bearer/i.test(challenge)) {
      await res.body?.cancel();
      const tok = await this.tokenFor(challenge, scope);
      if (tok) {
        this.tokens.set(scope, tok);
        res = await send(tok);
      }
    }
    return res;
  }
}

export interface ProxyDeps {
  state: HarborState;
  backing: Backing & { host: string };
  /** `user:password` the copy job pushes into the backing registry with (through the simulator's token service). */
  pushCreds: string;
  upstream: UpstreamClient;
  /** Background copy jobs by `<repo>@<digest>`, so tests can wait for the cache to settle. */
  jobs: Map<string, Promise<void>>;
  failures: string[];
}

/** What the caller should do after `proxyManifest`: answered already, or fall through to the local path. */
export type ProxyOutcome = 'answered' | 'local';

const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-encoding']);

async function streamBack(ex: Exchange, res: Response): Promise<void> {
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    if (!hopByHop.has(k)) headers[k] = v;
  });
  // fetch has decoded a compressed body, so the upstream's length no longer holds.
  if (res.headers.has('content-encoding')) delete headers['content-length'];
  ex.writeHead(res.status, headers);
  if (!res.body || ex.head) {
    await res.body?.cancel();
    ex.res.end();
    return;
  }
  await new Promise<void>((resolve) => {
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
    body.once('error', () => {
      ex.res.destroy();
      resolve();
    });
    body.once('end', resolve);
    body.pipe(ex.res);
  });
}

/** Answers the docker-hub `library/` redirect; true when it did. */
export function libraryRedirect(ex: Exchange, project: Project, cfg: UpstreamConfig, name: string, rest: string): boolean {
  const remote = name.slice(project.name.length + 1);
  if (cfg.type !== 'docker-hub' || remote.includes('/')) return false;
  const query = ex.url.search;
  ex.empty(301, { Location: `/v2/${project.name}/library/${remote}/${rest}${query}` });
  return true;
}

function cacheInBackground(deps: ProxyDeps, project: Project, remote: string, digest: string, tag: string | null): void {
  const key = `${project.name}/${remote}@${digest}`;
  if (deps.jobs.has(key)) return;
  const cfg = deps.upstream.cfg;
  const src = `docker://${new URL(cfg.url).host}/${remote}@${digest}`;
  const dest = `docker://${deps.backing.host}/${project.name}/${remote}${tag ? `:${tag}` : `@${digest}`}`;
  const job = (async () => {
    const args = ['copy', '--all', '--preserve-digests', '--src-tls-verify=false', '--dest-tls-verify=false', '--dest-creds', deps.pushCreds];
    if (cfg.username !== undefined) args.push('--src-creds', `${cfg.username}:${cfg.password ?? ''}`);
    const res = await run('skopeo', [...args, src, dest], { timeoutMs: 120_000 });
    if (res.code !== 0) throw new Error(`proxy cache copy ${src} -> ${dest} failed: ${res.stderr}`);
    await registerFromRegistry(deps.state, deps.backing, project, remote, digest, tag);
  })()
    .catch((err: unknown) => {
      deps.failures.push(err instanceof Error ? err.message : String(err));
    })
    .finally(() => deps.jobs.delete(key));
  deps.jobs.set(key, job);
}

/** Manifest GET/HEAD on a proxy project; see the head comment for the decision table. */
export async function proxyManifest(ex: Exchange, deps: ProxyDeps, project: Project, name: string, reference: string): Promise<ProxyOutcome> {
  const remote = name.slice(project.name.length + 1);
  const local = deps.state.resolve(name, reference);
  if (local && reference.includes(':')) return 'local';
  let head: Response;
  try {
    head = await deps.upstream.request('HEAD', remote, `manifests/${reference}`, { accept: ACCEPT });
  } catch {
    return 'local'; // upstream unreachable: serve what is cached, under the policies
  }
  if (head.status === 404) {
    if (local && project.metadata.proxy_cache_local_on_not_found === 'true') return 'local';
    ex.error(404, 'NOT_FOUND', `artifact ${name}${reference.includes(':') ? '@' : ':'}${reference} not found`);
    return 'answered';
  }
  if (!head.ok) return 'local';
  const digest = head.headers.get('docker-content-digest') ?? '';
  if (local && local.digest === digest) return 'local';
  if (ex.head) {
    await streamBack(ex, head);
    return 'answered';
  }
  let res: Response;
  try {
    res = await deps.upstream.request('GET', remote, `manifests/${reference}`, { accept: ex.header('accept') ?? ACCEPT });
  } catch {
    return 'local';
  }
  const served = res.headers.get('docker-content-digest') ?? digest;
  await streamBack(ex, res);
  if (res.ok && served) cacheInBackground(deps, project, remote, served, reference.includes(':') ? null : reference);
  return 'answered';
}

/** Blob GET/HEAD on a proxy project: local when the backing registry has it, else from upstream. */
export async function proxyBlob(ex: Exchange, deps: ProxyDeps, project: Project, name: string, digest: string): Promise<ProxyOutcome> {
  const local = await fetch(`${deps.backing.url}/v2/${name}/blobs/${digest}`, {
    method: 'HEAD',
    headers: { authorization: `Bearer ${deps.backing.token(name, ['pull'])}` },
  });
  if (local.ok) return 'local';
  const remote = name.slice(project.name.length + 1);
  try {
    const res = await deps.upstream.request(ex.head ? 'HEAD' : 'GET', remote, `blobs/${digest}`);
    await streamBack(ex, res);
    return 'answered';
  } catch {
    return 'local';
  }
}
